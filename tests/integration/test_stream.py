"""Speed layer end to end: real broker, Postgres, lake and Dagster runs.

Expected numbers are computed here from the produced payloads with plain Python;
the lake is read through its manifest with pyarrow.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from antenna_platform import simulator
from antenna_platform.warehouse import connect, provision
from jobs.streaming import device_stream_job
from resources import build_resources
from tests.topics import wait_for_partitions

pytestmark = pytest.mark.integration

HOUR = 3600


def past_start(hours_back: int = 4) -> datetime:
    now = int(time.time())
    return datetime.fromtimestamp(now - now % HOUR - hours_back * HOUR, UTC)


def make_payloads(events: int, seed: int, bad_ratio: float = 0.02, hours: float = 3):
    cfg = simulator.SimConfig(
        events=events, start=past_start(), hours=hours, seed=seed, bad_ratio=bad_ratio
    )
    return list(simulator.generate(cfg))


def produce(settings, payloads, partition: int | None = None) -> None:
    p = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "acks": "all",
            "enable.idempotence": True,  # a retried request must not duplicate messages
        }
    )
    # round robin, not librdkafka's sticky partitioner: for messages without a key it
    # sends to one random partition for 2 x linger.ms at a time, so a load produced in a
    # second or two is spread over a few dozen random picks: a run left 2 of 6 partitions
    # empty (150,000 events), and a test of partitions then tests fewer
    parts = wait_for_partitions(p, settings.topic, settings.topic_partitions)
    for i, (payload, _ok) in enumerate(payloads):
        while True:
            try:
                p.produce(
                    settings.topic,
                    value=payload,
                    partition=i % parts if partition is None else partition,
                )
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def expected(payloads):
    """(bytes rows, per-hour (count, sum), n valid, bad payloads), computed independently."""
    rows: Counter = Counter()
    hours: dict[int, list[int]] = {}
    bad = []
    n = 0
    for payload, ok in payloads:
        if not ok:
            bad.append(payload)
            continue
        e = orjson.loads(payload)
        ts, b = e["timestamp"], e["bytes"]
        ws = datetime.fromtimestamp(ts - ts % 300, UTC).replace(tzinfo=None)
        rows[(ws, e["antenna_id"], "antenna_total_bytes")] += b
        rows[(ws, e["id"], "user_total_bytes")] += b
        rows[(ws, e["app"], "app_total_bytes")] += b
        h = hours.setdefault(ts - ts % HOUR, [0, 0])
        h[0] += 1
        h[1] += b
        n += 1
    return dict(rows), {k: tuple(v) for k, v in hours.items()}, n, bad


def observed(settings):
    """What the platform holds: bytes rows, the lake read through its manifest (pyarrow) and
    as a plain reader reads it (DuckDB over device_events/**/*.parquet), dead letters,
    offsets."""
    import duckdb

    root = Path(settings.lake_dir)
    with connect(settings) as conn:
        bytes_rows = {
            (r[0], r[1], r[2]): int(r[3])
            for r in conn.execute('select "timestamp", id, type, value from bytes')
        }
        manifest = [r[0] for r in conn.execute("select path from lake_files")]
        dead = conn.execute(
            'select payload, reason, partition, "offset" from dead_letter where topic = %s '
            'order by partition, "offset"',
            (settings.topic,),
        ).fetchall()
        next_offsets = dict(
            conn.execute(
                "select partition, next_offset from stream_offsets where topic = %s",
                (settings.topic,),
            ).fetchall()
        )
    hours: dict[int, list[int]] = {}
    keys: list[tuple[int, int]] = []
    for rel in manifest:
        if not (root / rel).is_file():
            continue  # missing: assert_exact compares the manifest with the disk
        t = pq.read_table(root / rel)
        keys += zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist(), strict=True)
        secs = pc.cast(t["timestamp"], "int64").to_pylist()
        for us, b in zip(secs, t["bytes"].to_pylist(), strict=True):
            ts = us // 1_000_000
            h = hours.setdefault(ts - ts % HOUR, [0, 0])
            h[0] += 1
            h[1] += b
    dataset = root / "device_events"
    on_disk = (
        {p.relative_to(root).as_posix() for p in dataset.rglob("*")} if dataset.is_dir() else set()
    )
    on_disk = {p for p in on_disk if (root / p).is_file()}
    plain_hours: dict[int, tuple[int, int]] = {}
    plain_keys = 0
    if any(p.endswith(".parquet") for p in on_disk):
        con = duckdb.connect()
        rows = con.execute(
            "select epoch(timestamp)::bigint // 3600 * 3600 as h, count(*), sum(bytes), "
            "count(distinct (kafka_partition, kafka_offset)) "
            f"from read_parquet('{dataset}/**/*.parquet') group by h"
        ).fetchall()
        plain_hours = {int(h): (int(n), int(b)) for h, n, b, _ in rows}
        plain_keys = sum(int(r[3]) for r in rows)
    staging = root / "_staging"
    return {
        "bytes": bytes_rows,
        "hours": {k: tuple(v) for k, v in hours.items()},
        "lake_rows": len(keys),
        "lake_keys": keys,
        "unique_keys": len(set(keys)),
        "dead": [(bytes(r[0]) if r[0] is not None else None, r[1]) for r in dead],
        "dead_keys": [(r[2], r[3]) for r in dead],
        "offsets": int(sum(next_offsets.values())),
        "next_offsets": next_offsets,
        "manifest": set(manifest),
        "on_disk": on_disk,
        "plain_hours": plain_hours,
        "plain_keys": plain_keys,
        "staged": sorted(p.name for p in staging.iterdir()) if staging.is_dir() else [],
    }


def assert_exact(settings, payloads) -> dict:
    """Every event once in the lake (manifest and plain reader), in `bytes` and every
    reject once in the dead letters; offsets cover exactly what was written."""
    exp_rows, exp_hours, n_valid, bad = expected(payloads)
    got = observed(settings)
    assert got["lake_rows"] == n_valid
    assert got["unique_keys"] == n_valid, "duplicate (partition, offset) in the lake"
    assert got["hours"] == exp_hours
    missing = {k: v for k, v in exp_rows.items() if got["bytes"].get(k) != v}
    extra = {k: v for k, v in got["bytes"].items() if k not in exp_rows}
    assert not missing and not extra, (list(missing.items())[:5], list(extra.items())[:5])
    assert sorted(p or b"" for p, _ in got["dead"]) == sorted(b or b"" for b in bad)
    assert all(reason for _, reason in got["dead"])
    assert got["offsets"] == len(payloads)
    # lake and dead-letter (partition, offset) pairs are disjoint and cover every offset
    lake_keys, dead_keys = set(got["lake_keys"]), set(got["dead_keys"])
    assert len(dead_keys) == len(got["dead_keys"]), "a reject written twice"
    assert not lake_keys & dead_keys, "an offset is both in the lake and a dead letter"
    every = {(p, o) for p, n in got["next_offsets"].items() for o in range(n)}
    assert lake_keys | dead_keys == every, "offsets not covered exactly by lake + dead letters"
    # the lake directory itself is the committed dataset: what a plain reader sees
    assert got["on_disk"] == got["manifest"], "orphan, superseded or missing lake files"
    assert got["plain_hours"] == exp_hours, "a plain reader of device_events/ sees other rows"
    assert got["plain_keys"] == n_valid
    return got


def run_job(config: dict, instance=None):
    import dagster as dg

    return device_stream_job.execute_in_process(
        run_config={"ops": {"device_stream": {"config": config}}},
        resources=build_resources(),
        instance=instance or dg.DagsterInstance.ephemeral(),
    )


@pytest.mark.slow
def test_stream_job_is_exact_over_three_hours(make_platform):
    import dagster as dg

    settings = make_platform(partitions=3, ANTENNA_WATERMARK_SECONDS="86400")
    payloads = make_payloads(120_000, seed=7, bad_ratio=0.02)
    produce(settings, payloads)
    instance = dg.DagsterInstance.ephemeral()
    result = run_job({"stop_when_idle_s": 4, "give_up_after_s": 30}, instance)
    assert result.success
    got = assert_exact(settings, payloads)
    # compaction: one file per (hour, partition) once the partition's event time is 120 s
    # past the hour's end
    with connect(settings) as conn:
        per = conn.execute(
            "select hour, kafka_partition, count(*) from lake_files group by 1, 2"
        ).fetchall()
        tops = dict(conn.execute("select partition, max_event_ts from stream_offsets").fetchall())
    # (which partition got which hours depends on the producer's sticky partitioning)
    closed = [(h, p, n) for h, p, n in per if (tops[p] - h).total_seconds() >= HOUR + 120]
    assert closed and all(n == 1 for _, _, n in closed), (per, tops)
    # every hour of the lake was reported as a partition of device_events, with its rows
    mats = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("device_events")), limit=100
    ).records
    reported: dict[str, int] = {}
    for r in mats:
        meta = r.asset_materialization.metadata
        reported[r.partition_key] = meta["rows"].value
    exp = {
        datetime.fromtimestamp(h, UTC).strftime("%Y-%m-%d-%H:00"): c
        for h, (c, _) in got["hours"].items()
    }
    assert reported == exp
    # a rerun with nothing new changes nothing
    assert run_job({"stop_when_idle_s": 2, "give_up_after_s": 30}).success
    assert_exact(settings, payloads)


def hostile_payloads(n: int, seed: int) -> list[tuple[bytes, bool]]:
    """n malformed messages of many kinds (each rejected by a rule of the contract)."""
    import random

    rng = random.Random(seed)
    good = orjson.loads(make_payloads(1, seed=seed, bad_ratio=0)[0][0])
    kinds = [
        lambda: b"",
        lambda: b"\xff\xfe" + rng.randbytes(8),
        lambda: b"[1, 2, 3]",
        lambda: b"not json at all",
        lambda: orjson.dumps({**good, "bytes": -rng.randint(1, 99)}),
        lambda: orjson.dumps({**good, "bytes": rng.random()}),
        lambda: orjson.dumps({**good, "timestamp": good["timestamp"] * 1000}),
        lambda: orjson.dumps({**good, "timestamp": 4_000_000_000}),
        lambda: orjson.dumps({**good, "id": "1' or '1'='1"}),
        lambda: orjson.dumps({**good, "app": None}),
        lambda: orjson.dumps({k: v for k, v in good.items() if k != "antenna_id"}),
    ]
    return [(kinds[i % len(kinds)](), False) for i in range(n)]


@pytest.mark.slow
def test_flood_of_bad_messages_loses_no_good_event(make_platform):
    """100,000 malformed messages interleaved with 20,000 good ones: all good ones counted
    exactly, every bad one in the dead letter with its offset and reason."""
    import random

    settings = make_platform(partitions=3, ANTENNA_WATERMARK_SECONDS="86400")
    good = make_payloads(20_000, seed=13, bad_ratio=0)
    mixed = good + hostile_payloads(100_000, seed=13)
    random.Random(13).shuffle(mixed)
    produce(settings, mixed)
    assert run_job({"stop_when_idle_s": 4, "give_up_after_s": 60}).success
    got = assert_exact(settings, mixed)
    assert got["lake_rows"] == 20_000
    assert len(got["dead"]) == 100_000


def test_open_hour_files_are_merged_when_they_pile_up(platform, monkeypatch):
    """A trickle (many tiny commits) into the open hour is merged, and stays exact."""
    from antenna_platform.stream import engine, sinks
    from antenna_platform.stream.engine import Hooks, StreamEngine, StreamOptions

    monkeypatch.setattr(engine, "GROUP_COMMIT", 1)  # every batch its own commit, as a trickle

    now = int(time.time())
    payloads = list(simulator.generate(simulator.SimConfig(events=400, seed=5), now=now - 30))
    produce(platform, payloads, partition=0)
    hour = sinks.utc_naive(now - 30 - (now - 30) % HOUR)
    # 400 events in batches of 10: 40 files of partition 0 in the open hour
    StreamEngine(platform, StreamOptions(max_batch_events=10, stop_when_idle_s=3), Hooks()).run()
    with connect(platform) as conn:
        files = conn.execute("select hour, count(*) from lake_files group by hour").fetchall()
        assert not sinks.compaction_candidates(conn, 0, hour)
    assert files == [(hour, 1)]  # the open hour was merged, not left with 40 files
    assert_exact(platform, payloads)


def test_rejects_with_record_times_no_event_could_have_are_committed(platform):
    """A producer sets a record's time: rejects stamped in year 33658 and in 1970 are
    committed (their counts in the hour they were read, not in an hour `lake_hours`
    cannot hold), and the stream goes on past them."""
    from antenna_platform.stream import sinks
    from antenna_platform.stream.engine import Hooks, StreamEngine, StreamOptions

    now = int(time.time())
    event = next(simulator.generate(simulator.SimConfig(events=1, seed=5), now=now - 30))[0]
    p = Producer({"bootstrap.servers": platform.kafka_bootstrap_servers})
    wait_for_partitions(p, platform.topic, platform.topic_partitions)
    for value, stamp_ms in ((b"[1]", 10**15), (b"{nope", 1), (event, (now - 30) * 1000)):
        p.produce(platform.topic, value=value, partition=0, timestamp=stamp_ms)
    assert p.flush(30) == 0
    t0 = int(time.time())
    stats = StreamEngine(platform, StreamOptions(stop_when_idle_s=3), Hooks()).run()
    t1 = int(time.time())
    assert (stats.events, stats.rejects, stats.failures) == (1, 2, 0)
    read_in = {sinks.utc_naive(t - t % HOUR) for t in (t0, t1)}
    with connect(platform) as conn:
        dead = conn.execute('select "offset", reason from dead_letter order by 1').fetchall()
        hours = conn.execute("select hour, rejects from lake_hours where rejects > 0").fetchall()
    assert dead == [(0, "not a JSON object"), (1, "not valid JSON")]
    assert sum(n for _, n in hours) == 2 and {h for h, _ in hours} <= read_in


def test_dead_letters_at_reused_offsets_are_all_kept(platform):
    """A recreated topic's log starts again at offset 0: its rejects at offsets the old
    log's rejects had are new messages, kept beside the old rows (a key on (topic,
    partition, offset) dropped them), and the commit's transaction goes on."""
    from antenna_platform.stream import sinks

    recv = datetime(2026, 1, 1)
    with connect(platform, autocommit=True) as conn:
        with conn.transaction():
            sinks.insert_dead_letters(
                conn, "t", [(0, 1, b"a", "r", recv), (0, 2, b"it's; drop table x", "r", recv)]
            )
        with conn.transaction():
            sinks.insert_dead_letters(
                conn, "t", [(0, 2, b"again", "r2", recv), (0, 3, None, "empty message", recv)]
            )
            conn.execute("insert into lake_hours (hour, version) values (%s, 1)", (recv,))
        rows = conn.execute(
            'select partition, "offset", payload, reason from dead_letter where topic = %s '
            'order by "offset", reason',
            ("t",),
        ).fetchall()
        hours = conn.execute("select count(*) from lake_hours where hour = %s", (recv,)).fetchone()
    assert rows == [
        (0, 1, b"a", "r"),
        (0, 2, b"it's; drop table x", "r"),
        (0, 2, b"again", "r2"),
        (0, 3, None, "empty message"),
    ]
    assert hours == (1,)


def test_provision_moves_an_old_dead_letter_table_into_batches_and_keeps_the_rows(platform):
    """A database provisioned before change 12: `dead_letter` a table, one row a reject
    (here with the key and the BRIN index older versions had). `provision` moves its rows
    into `dead_letter_batches` and puts the view in its place: the same rows read back,
    NULL and empty payloads included; running it again changes nothing."""
    recv = datetime(2026, 1, 1)
    old = [
        ("t", 0, 7, b"x", "r", recv),
        ("t", 1, 8, None, "empty message", recv),
        ("u", 0, 9, b"", "r\u00e9", datetime(2026, 1, 2)),
    ]
    with connect(platform, autocommit=True) as conn:
        conn.execute("drop view if exists dead_letter")
        conn.execute("truncate dead_letter_batches")
        conn.execute(
            "create table dead_letter (topic text not null, partition integer not null, "
            '"offset" bigint not null, payload bytea, reason text not null, '
            "received_at timestamp not null default (now() at time zone 'utc'), "
            'primary key (topic, partition, "offset"))'
        )
        conn.execute("create index dead_letter_received_at on dead_letter using brin (received_at)")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into dead_letter "
                '(topic, partition, "offset", payload, reason, received_at) '
                "values (%s, %s, %s, %s, %s, %s)",
                old,
            )
    for _ in range(2):
        provision(platform)
        with connect(platform) as conn:
            kind = conn.execute(
                "select relkind from pg_class where oid = 'dead_letter'::regclass"
            ).fetchone()
            rows = conn.execute(
                'select topic, partition, "offset", payload, reason, received_at '
                'from dead_letter order by "offset"'
            ).fetchall()
            batches = conn.execute("select count(*) from dead_letter_batches").fetchone()
        assert kind == ("v",)
        assert rows == old
        assert batches == (3,)


def test_provision_moves_the_rows_of_an_old_stream_commit_still_open(platform):
    """An older stream's commit holds rows in the old `dead_letter` table when `provision`
    starts: the move waits for it (the drop's lock taken first) and its rows are moved,
    not dropped with the table."""
    import threading

    recv = datetime(2026, 1, 1)
    with connect(platform, autocommit=True) as conn:
        conn.execute("drop view if exists dead_letter")
        conn.execute(
            "create table dead_letter (topic text not null, partition integer not null, "
            '"offset" bigint not null, payload bytea, reason text not null, '
            "received_at timestamp not null)"
        )
    writer = connect(platform)
    writer.execute(
        'insert into dead_letter (topic, partition, "offset", payload, reason, received_at) '
        "values ('t', 0, 5, 'late', 'r', %s)",
        (recv,),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            provision(platform)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    with connect(platform, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "select count(*) from pg_locks where not granted "
                "and relation = 'dead_letter'::regclass"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "provision never waited for the open commit"
    writer.commit()
    writer.close()
    t.join(120)
    assert not t.is_alive() and not errors, errors
    with connect(platform) as conn:
        rows = conn.execute('select topic, "offset", payload from dead_letter').fetchall()
    assert rows == [("t", 5, b"late")]


_row = st.tuples(
    st.integers(0, 3),
    st.integers(0, 2**63 - 1),
    st.none() | st.binary(max_size=3000),
    st.sampled_from(["not valid JSON", "empty message"])
    | st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=20),
    st.sampled_from([datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 0, 1)]),
)


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(_row, max_size=40), limit=st.sampled_from([1, 100, 2**26]))
def test_dead_letters_read_back_through_the_view_as_written(platform, rows, limit):
    """Rejects written by `insert_dead_letters` (runs cut at partition, receive time and
    payload size: `limit` bytes, 1 making nearly a row a reject) read back from the view
    `dead_letter` one row each, payloads, NULLs and reasons as written."""
    from antenna_platform.stream import dead_letters, sinks

    topic = f"rt-{len(rows)}-{limit}"
    old, dead_letters.ROW_PAYLOAD_BYTES = dead_letters.ROW_PAYLOAD_BYTES, limit
    try:
        with connect(platform) as conn:
            conn.execute("delete from dead_letter_batches where topic = %s", (topic,))
            sinks.insert_dead_letters(conn, topic, rows)
            got = conn.execute(
                'select partition, "offset", payload, reason, received_at from dead_letter '
                "where topic = %s",
                (topic,),
            ).fetchall()
            conn.rollback()
    finally:
        dead_letters.ROW_PAYLOAD_BYTES = old
    assert Counter(got) == Counter(rows)
