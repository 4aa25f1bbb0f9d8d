"""SQL of the speed layer: partition claims, one micro-batch commit, hour reports and
compaction swaps. The order of a commit is in `checkpoint.commit`.

Two fences guard every transaction that writes for a partition:
- the claim (`partition_claims`): each claim of a partition has a strictly increasing
  owner epoch; a commit, compaction swap or cleanup first locks the partition's claim
  row and checks that the caller still holds the newest epoch, so a worker that paused
  while its partitions moved can neither commit, delete nor compact;
- the offsets: the stored `next_offset` must still be where the batch was read from, so
  a batch committed twice (an interrupt landing right after COMMIT) aborts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from antenna_platform.lake import LakeFile
from antenna_platform.stream.dead_letters import COPY_COLUMNS, DeadLetter, DeadLetters, encode_copy


class FencedError(RuntimeError):
    """A newer claim or moved offsets: drop what is in hand and re-claim the partitions."""


@dataclass(frozen=True)
class StoredClaim:
    """A partition's newest claim as stored (read under its row lock)."""

    epoch: int
    generation: int
    owner: str  # the worker that holds it (host/pid/uuid)
    released: bool  # given up on a clean stop: anyone may claim it
    lease_age_s: float  # seconds since its holder last proved it was alive


@dataclass(frozen=True)
class OffsetState:
    next_offset: int
    max_event_ts: int | None  # epoch seconds
    topic_id: str | None = None  # the broker's topic id when these offsets were committed


def utc_naive(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def naive_to_epoch(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.replace(tzinfo=UTC).timestamp())


def load_offsets(
    conn: psycopg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, OffsetState]:
    rows = conn.execute(
        "select partition, next_offset, max_event_ts, topic_id from stream_offsets "
        "where consumer_group = %s and topic = %s and partition = any(%s)",
        (group, topic, list(partitions)),
    ).fetchall()
    return {r[0]: OffsetState(int(r[1]), naive_to_epoch(r[2]), r[3]) for r in rows}


def lock_claims(
    conn: psycopg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, StoredClaim]:
    """Lock the partitions' claim rows (created if missing) in partition order; inside a
    transaction. A claimer and a committer of the same partition serialize here."""
    parts = sorted(set(partitions))
    conn.execute(
        "insert into partition_claims (consumer_group, topic, partition, epoch, generation, "
        "owner, released) select %s, %s, p, 0, -1, '', true from unnest(%s::int[]) as p "
        "on conflict do nothing",
        (group, topic, parts),
    )
    rows = conn.execute(
        "select partition, epoch, generation, owner, released, "
        "extract(epoch from (clock_timestamp() at time zone 'utc') - renewed_at) "
        "from partition_claims "
        "where consumer_group = %s and topic = %s and partition = any(%s) "
        "order by partition for update",
        (group, topic, parts),
    ).fetchall()
    return {r[0]: StoredClaim(int(r[1]), int(r[2]), r[3], r[4], float(r[5])) for r in rows}


def write_claims(
    conn: psycopg.Connection,
    group: str,
    topic: str,
    epochs: Mapping[int, int],
    generation: int,
    owner: str,
) -> None:
    """Record new claims (rows locked by `lock_claims` in the same transaction)."""
    conn.execute(
        "update partition_claims c set epoch = m.e, generation = %s, owner = %s, "
        "released = false, claimed_at = (clock_timestamp() at time zone 'utc'), "
        "renewed_at = (clock_timestamp() at time zone 'utc') "
        "from unnest(%s::int[], %s::bigint[]) as m(p, e) "
        "where c.consumer_group = %s and c.topic = %s and c.partition = m.p",
        (generation, owner, list(epochs), list(epochs.values()), group, topic),
    )


def check_claims(
    conn: psycopg.Connection, group: str, topic: str, epochs: Mapping[int, int]
) -> None:
    """Inside the transaction that does the work: lock the claim rows and check that the
    caller holds the newest claim of every partition (and renew its lease)."""
    stored = lock_claims(conn, group, topic, list(epochs))
    for p, epoch in sorted(epochs.items()):
        s = stored[p]
        if s.epoch != epoch or s.released:
            raise FencedError(
                f"partition {p}: claimed by {s.owner or 'nobody'} with epoch {s.epoch} "
                f"(generation {s.generation}); this worker holds epoch {epoch}"
            )
    renew_leases(conn, group, topic, list(epochs))


def renew_leases(
    conn: psycopg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> None:
    """The holder is alive: restart its claims' lease (rows locked by the caller)."""
    conn.execute(
        "update partition_claims set renewed_at = (clock_timestamp() at time zone 'utc') "
        "where consumer_group = %s and topic = %s and partition = any(%s)",
        (group, topic, sorted(partitions)),
    )


def release_claims(
    conn: psycopg.Connection, group: str, topic: str, epochs: Mapping[int, int]
) -> None:
    """Give claims up on a clean stop, so the next worker need not wait for the lease."""
    conn.execute(
        "update partition_claims c set released = true "
        "from unnest(%s::int[], %s::bigint[]) as m(p, e) "
        "where c.consumer_group = %s and c.topic = %s and c.partition = m.p and c.epoch = m.e",
        (list(epochs), list(epochs.values()), group, topic),
    )


APPLICATION = "antenna-stream"  # application_name prefix of the stream's sessions


def reap_stuck_sessions(conn: psycopg.Connection, older_than_s: float) -> list[int]:
    """End other stream sessions whose transaction has been open for `older_than_s`.

    A worker frozen in the middle of a transaction keeps its row locks: Postgres' idle-in-
    transaction timeout ends it only when it waits for its client between statements,
    not when it is blocked sending results to (or reading COPY data from) a client that
    no longer reads. A stream transaction lasts milliseconds to seconds (its statements
    are bounded by `statement_timeout`), so one open that long belongs to a stopped
    worker; ending it rolls it back (the worker's claim is fenced anyway)."""
    rows = conn.execute(
        "select pid, pg_terminate_backend(pid) from pg_stat_activity "
        "where datname = current_database() and pid <> pg_backend_pid() "
        "and application_name like %s "
        "and xact_start < now() - make_interval(secs => %s)",
        (f"{APPLICATION}%", older_than_s),
    ).fetchall()
    return [r[0] for r in rows if r[1]]


def fence(
    conn: psycopg.Connection, group: str, topic: str, expected: Mapping[int, int | None]
) -> None:
    """Check that the partitions' stored offsets are where the batch started (call after
    `check_claims`, which holds the partitions' row locks)."""
    stored = {p: s.next_offset for p, s in load_offsets(conn, group, topic, list(expected)).items()}
    for p, exp in expected.items():
        if stored.get(p) != exp:
            raise FencedError(
                f"partition {p}: stored offset {stored.get(p)}, batch read from {exp}"
            )


def upsert_bytes(conn: psycopg.Connection, rows: Sequence[tuple[int, str, str, int]]) -> None:
    """Add deltas to the running 5-minute totals (rows sorted by key: one lock order)."""
    if not rows:
        return
    cache: dict[int, datetime] = {}
    params = []
    for ws, ident, typ, value in rows:
        dt = cache.get(ws)
        if dt is None:
            dt = cache[ws] = utc_naive(ws)
        params.append((dt, ident, typ, value))
    with conn.cursor() as cur:
        cur.executemany(
            'insert into bytes ("timestamp", id, type, value) values (%s, %s, %s, %s) '
            'on conflict ("timestamp", id, type) do update '
            "set value = bytes.value + excluded.value",
            params,
        )


_DEAD_COLUMNS = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
_COPY_DEAD = f"copy dead_letter_batches ({_DEAD_COLUMNS}) from stdin (format binary)"


def insert_dead_letters(
    conn: psycopg.Connection, topic: str, rows: DeadLetters | Sequence[DeadLetter]
) -> None:
    """Binary COPY into `dead_letter_batches` (read as the view `dead_letter`): a flood of
    garbage costs one round trip and a few table rows per batch (`dead_letters.encode_copy`).

    Written once because the commit's fence (`check_claims`, `fence`, same transaction)
    admits each offset once, as it does every `bytes` delta; the table has no key to
    check it again (see `warehouse`), so the rejects of a recreated topic, whose log
    starts again at offset 0, are kept beside the old topic's.
    """
    if not len(rows):
        return
    with conn.cursor() as cur, cur.copy(_COPY_DEAD) as copy:
        copy.write(encode_dead_letters(topic, rows))


def encode_dead_letters(topic: str, rows: DeadLetters | Sequence[DeadLetter]) -> bytes:
    """The binary COPY stream `insert_dead_letters` sends (columns `COPY_COLUMNS`)."""
    dead = rows if isinstance(rows, DeadLetters) else DeadLetters.from_rows(rows)
    return encode_copy(topic, dead)


def bump_hours(
    conn: psycopg.Connection,
    hours: set[int],
    late: Counter[int],
    unknown: Counter[int],
    rejects: Counter[int],
) -> None:
    """Mark hours as changed (version + 1) and add their late/unknown/reject counts."""
    all_hours = sorted(hours | set(late) | set(unknown) | set(rejects))
    if not all_hours:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "insert into lake_hours (hour, late_events, unknown_ids, rejects, version) "
            "values (%s, %s, %s, %s, 1) on conflict (hour) do update set "
            "late_events = lake_hours.late_events + excluded.late_events, "
            "unknown_ids = lake_hours.unknown_ids + excluded.unknown_ids, "
            "rejects = lake_hours.rejects + excluded.rejects, "
            "version = lake_hours.version + 1, updated_at = now() at time zone 'utc'",
            [(utc_naive(h), late[h], unknown[h], rejects[h]) for h in all_hours],
        )


def save_offsets(
    conn: psycopg.Connection, group: str, topic: str, offsets: Mapping[int, OffsetState]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into stream_offsets (consumer_group, topic, partition, next_offset, "
            "max_event_ts, topic_id) values (%s, %s, %s, %s, %s, %s) on conflict "
            "(consumer_group, topic, partition) do update set next_offset = excluded.next_offset, "
            "max_event_ts = excluded.max_event_ts, topic_id = excluded.topic_id, "
            "updated_at = now() at time zone 'utc'",
            [
                (
                    group,
                    topic,
                    p,
                    s.next_offset,
                    None if s.max_event_ts is None else utc_naive(s.max_event_ts),
                    s.topic_id,
                )
                for p, s in sorted(offsets.items())
            ],
        )


def low_event_time(
    conn: psycopg.Connection, group: str, topic: str, idle_s: float = 300.0
) -> int | None:
    """Min over the partitions with data of their max event time (the group's low mark).

    A partition that has committed nothing for `idle_s` (no traffic reaches it) does not
    hold the mark back, unless every partition is idle: its events, if any arrive later,
    are late ones (counted, in the lake, and the batch recomputes their hour)."""
    row = conn.execute(
        "select coalesce(min(max_event_ts) filter (where updated_at >= "
        "(now() at time zone 'utc') - make_interval(secs => %s)), min(max_event_ts)) "
        "from stream_offsets where consumer_group = %s and topic = %s",
        (idle_s, group, topic),
    ).fetchone()
    return naive_to_epoch(row[0]) if row else None


def hours_to_report(
    conn: psycopg.Connection, before: datetime | None
) -> list[tuple[datetime, int, dict[str, int]]]:
    """Lock changed, unreported hours ending at or before `before` (None: all of them).

    Returns (hour, version, metadata). Call inside a transaction, then `mark_reported`.
    `skip locked` leaves hours that another worker is reporting or writing right now.
    """
    rows = conn.execute(
        "select hour, version, late_events, unknown_ids, rejects from lake_hours "
        "where version > reported_version "
        "and (%s::timestamp is null or hour + interval '1 hour' <= %s::timestamp) "
        "order by hour for update skip locked",
        (before, before),
    ).fetchall()
    out = []
    for hour, version, late, unknown, rejects in rows:
        files, nrows, nbytes, size = conn.execute(
            "select count(*), coalesce(sum(rows), 0), coalesce(sum(bytes_sum), 0), "
            "coalesce(sum(size_bytes), 0) from lake_files where hour = %s",
            (hour,),
        ).fetchone()
        meta = {
            "rows": int(nrows),
            "files": int(files),
            "bytes": int(nbytes),
            "size_bytes": int(size),
            "rejects": int(rejects),
            "late_events": int(late),
            "unknown_ids": int(unknown),
        }
        out.append((hour, int(version), meta))
    return out


def mark_reported(conn: psycopg.Connection, hour: datetime, version: int) -> None:
    conn.execute(
        "update lake_hours set reported_version = %s, reported_at = now() at time zone 'utc' "
        "where hour = %s",
        (version, hour),
    )


def compaction_candidates(
    conn: psycopg.Connection,
    partition: int,
    before: datetime,
    limit: int = 4,
    max_open_files: int = 32,
) -> list[tuple[datetime, list[str]]]:
    """Hours of one Kafka partition to merge: those ending before `before` with more than
    one file, and any hour (the open one too) that has gathered more than
    `max_open_files` small files, so a slow trickle of events never piles up files."""
    rows = conn.execute(
        "select hour, array_agg(path order by path) from lake_files "
        "where kafka_partition = %s group by hour "
        "having count(*) > 1 and (hour + interval '1 hour' <= %s or count(*) > %s) "
        "order by hour limit %s",
        (partition, before, max_open_files, limit),
    ).fetchall()
    return [(r[0], list(r[1])) for r in rows]


def replace_files(conn: psycopg.Connection, old: Sequence[str], new: LakeFile) -> None:
    """Swap `old` manifest rows for `new` (inside the caller's transaction)."""
    gone = conn.execute(
        "delete from lake_files where path = any(%s) returning path", (list(old),)
    ).fetchall()
    if len(gone) != len(old):
        raise FencedError("compaction: the manifest changed under us")
    conn.execute(
        "insert into lake_files (path, hour, kafka_partition, rows, bytes_sum, size_bytes) "
        "values (%s, %s, %s, %s, %s, %s)",
        (new.path, new.hour, new.kafka_partition, new.rows, new.bytes_sum, new.size_bytes),
    )
