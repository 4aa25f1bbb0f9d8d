"""Stream health figures for operators: per-partition offsets and lag, stalls, rejects.

"Stalled seconds" of a partition is how long it has had messages waiting on the
broker without a commit: 0 when it is caught up, otherwise now minus the last
commit of that partition (`stream_offsets.updated_at`). It is what the
`stream_lag` asset check compares with `ANTENNA_STREAM_LAG_WARN_SECONDS`.

A broker that cannot be reached, a topic it does not know, or partitions whose end
offsets it does not report raise `BrokerUnreachable`: unknown lag is never taken for 0.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from antenna_platform.config import Settings


@dataclass(frozen=True)
class PartitionHealth:
    partition: int
    committed_offset: int | None  # next offset to read, as stored in Postgres
    end_offset: int | None  # high-water mark on the broker
    lag: int | None
    max_event_time: datetime | None
    last_commit: datetime | None
    stalled_seconds: float | None


class BrokerUnreachable(RuntimeError):
    """The broker's end offsets could not be read; the message says why (no secrets)."""


def partition_health(
    committed: dict[int, tuple[int, datetime | None, datetime | None]],
    end_offsets: dict[int, int],
    now: datetime,
) -> list[PartitionHealth]:
    """Combine stored offsets (partition -> (next_offset, max_event_ts, updated_at))
    with broker end offsets. Pure: unit-tested without services."""
    out = []
    for p in sorted(set(committed) | set(end_offsets)):
        nxt, max_ts, updated = committed.get(p, (None, None, None))
        end = end_offsets.get(p)
        lag = None if end is None else max(end - (nxt or 0), 0)
        if lag == 0:
            stalled = 0.0
        elif lag is None or updated is None:
            stalled = None  # never committed, or broker unknown
        else:
            stalled = max((now - updated).total_seconds(), 0.0)
        out.append(PartitionHealth(p, nxt, end, lag, max_ts, updated, stalled))
    return out


def stored_offsets(settings: Settings) -> dict[int, tuple[int, datetime | None, datetime | None]]:
    from antenna_platform.warehouse import connect  # noqa: PLC0415

    with connect(settings) as conn:
        rows = conn.execute(
            "select partition, next_offset, max_event_ts, updated_at from stream_offsets "
            "where consumer_group = %s and topic = %s",
            (settings.consumer_group, settings.topic),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def broker_end_offsets(
    settings: Settings, positions: dict[int, int] | None = None, timeout_s: float = 5.0
) -> dict[int, int]:
    """High-water marks of the topic's partitions, without joining any consumer group.

    Read from fetch responses rather than ListOffsets: Tansu 0.6 answers ListOffsets
    for the latest offset with the number of record batches, not the next offset.
    Fetching from the committed `positions` keeps the read small.
    """
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    where = f"KAFKA_BOOTSTRAP_SERVERS: the broker at {settings.kafka_bootstrap_servers}"
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=10000,
            bootstrap_timeout_ms=5000,  # an unreachable broker is reported in 5 s, not 30
            max_partition_fetch_bytes=4096,
            fetch_max_bytes=65536,
            auto_offset_reset="latest",
        )
    except KafkaError as exc:
        raise BrokerUnreachable(f"{where} cannot be reached ({type(exc).__name__})") from None
    try:
        try:
            parts = consumer.partitions_for_topic(settings.topic)
        except KafkaError as exc:
            raise BrokerUnreachable(
                f"{where} did not answer for topic {settings.topic!r} ({type(exc).__name__})"
            ) from None
        if not parts:
            raise BrokerUnreachable(f"{where} does not know topic {settings.topic!r}")
        tps = [TopicPartition(settings.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (positions or {}).get(tp.partition, 0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            consumer.poll(timeout_ms=200, max_records=1)
        ends = {tp.partition: hw for tp in tps if (hw := consumer.highwater(tp)) is not None}
        missing = sorted(set(parts) - set(ends))
        if missing:
            raise BrokerUnreachable(
                f"{where} reported no end offset for partitions {missing} of topic "
                f"{settings.topic!r} within {timeout_s:g} s"
            )
        return ends
    finally:
        consumer.close()


def activity(settings: Settings) -> dict[str, Any]:
    """Rejects and late events of the hours the stream touched in the last hour (read from
    `lake_hours`, one row an hour: `dead_letter` has no index to count by time), lake
    files, last hour built by the batch."""
    from antenna_platform.warehouse import connect  # noqa: PLC0415

    with connect(settings) as conn:
        rejects, late = conn.execute(
            "select coalesce(sum(rejects), 0), coalesce(sum(late_events), 0) from lake_hours "
            "where updated_at > (now() at time zone 'utc') - interval '1 hour'"
        ).fetchone()
        files, rows, size = conn.execute(
            "select count(*), coalesce(sum(rows), 0), coalesce(sum(size_bytes), 0) from lake_files"
        ).fetchone()
        last_batch = conn.execute('select max("timestamp") from bytes_hourly').fetchone()[0]
    return {
        "rejects_last_hour": int(rejects),
        "late_events_last_hour": int(late),
        "lake_manifest": {"files": int(files), "rows": int(rows), "bytes": int(size)},
        "last_batch_hour": last_batch,
    }


def stream_health(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Per-partition offsets, lag and stalls, plus totals (raises BrokerUnreachable)."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    stored = stored_offsets(settings)
    ends = broker_end_offsets(settings, {p: v[0] for p, v in stored.items()})
    parts = partition_health(stored, ends, now)
    stalls = [p.stalled_seconds for p in parts if p.lag]
    return {
        "partitions": [asdict(p) for p in parts],
        "total_lag": sum(p.lag or 0 for p in parts),
        "end_offsets_total": sum(p.end_offset or 0 for p in parts),
        "committed_total": sum(p.committed_offset or 0 for p in parts),
        "max_stalled_seconds": (
            None if any(s is None for s in stalls) else max(stalls, default=0.0)
        ),
    }


def rates(
    previous: tuple[float, int, int] | None, current: tuple[float, int, int]
) -> dict[str, float | None]:
    """Events/s produced to the topic and committed by the stream between two readings of
    (epoch seconds, end offsets total, committed total). None when unknown: no previous
    reading, or offsets that went back (a recreated topic, an in-memory broker restarted)."""
    out: dict[str, float | None] = {"produced_per_s": None, "consumed_per_s": None}
    if previous is None or current[0] <= previous[0]:
        return out
    dt = current[0] - previous[0]
    for name, i in (("produced_per_s", 1), ("consumed_per_s", 2)):
        delta = current[i] - previous[i]
        out[name] = round(delta / dt, 3) if delta >= 0 else None
    return out
