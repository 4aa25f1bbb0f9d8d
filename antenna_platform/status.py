"""What an operator asks first: are the services up, is the stream keeping up, what is built."""

from __future__ import annotations

from typing import Any

from antenna_platform import services
from antenna_platform.config import ConfigError, Settings, redact_url


def _lake_size(settings: Settings) -> dict[str, int]:
    root = settings.lake_dir / "device_events"
    files = size = 0
    if root.is_dir():
        for p in root.rglob("*.parquet"):
            files += 1
            size += p.stat().st_size
    return {"files": files, "bytes": size}


def _stream_and_batch(settings: Settings) -> dict[str, Any]:
    from antenna_platform.warehouse import connect  # noqa: PLC0415

    out: dict[str, Any] = {}
    with connect(settings) as conn:
        out["partitions"] = [
            {
                "partition": r[0],
                "committed_offset": r[1],
                "max_event_time": r[2],
                "updated_at": r[3],
            }
            for r in conn.execute(
                "select partition, next_offset, max_event_ts, updated_at from stream_offsets "
                "where consumer_group = %s and topic = %s order by partition",
                (settings.consumer_group, settings.topic),
            ).fetchall()
        ]
        out["rejects_last_hour"] = conn.execute(
            "select count(*) from dead_letter "
            "where received_at > (now() at time zone 'utc') - interval '1 hour'"
        ).fetchone()[0]
        out["last_batch_hour"] = conn.execute(
            'select max("timestamp") from bytes_hourly'
        ).fetchone()[0]
    return out


def _lag(settings: Settings, committed: dict[int, int]) -> dict[int, int]:
    """Per-partition lag = end offset on the broker - committed offset in Postgres."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=5000,
    )
    try:
        parts = consumer.partitions_for_topic(settings.topic) or set()
        tps = [TopicPartition(settings.topic, p) for p in parts]
        ends = consumer.end_offsets(tps) if tps else {}
        return {tp.partition: end - committed.get(tp.partition, 0) for tp, end in ends.items()}
    finally:
        consumer.close()


def collect(settings: Settings) -> dict[str, Any]:
    pg, kafka = services.postgres_state(settings), services.broker_state(settings)
    report: dict[str, Any] = {
        "database_url": redact_url(settings.database_url),
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
        "lake_dir": str(settings.lake_dir),
        "dagster_home": str(settings.dagster_home),
        "topic": settings.topic,
        "services": {
            s.name: {
                "embedded": s.embedded,
                "running": s.running,
                "address": s.address,
                "pid": s.pid,
            }
            for s in (pg, kafka)
        },
        "lake": _lake_size(settings),
    }
    if pg.running:
        try:
            report.update(_stream_and_batch(settings))
        except ConfigError as exc:
            report["database_error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. tables not provisioned yet
            report["database_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if kafka.running:
        try:
            committed = {
                p["partition"]: p["committed_offset"] for p in report.get("partitions", [])
            }
            report["lag"] = _lag(settings, committed)
        except Exception as exc:  # noqa: BLE001
            report["kafka_error"] = f"{type(exc).__name__}: {exc}"
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"database   {report['database_url']}",
        f"kafka      {report['kafka_bootstrap_servers']}  topic {report['topic']!r}",
        f"lake       {report['lake_dir']}  ({report['lake']['files']} files, "
        f"{report['lake']['bytes'] / 1e6:.1f} MB)",
        f"dagster    {report['dagster_home']}",
    ]
    for name, s in report["services"].items():
        kind = "embedded" if s["embedded"] else "external"
        lines.append(f"{name:10s} {'running' if s['running'] else 'DOWN'} ({kind}) {s['address']}")
    lag = report.get("lag", {})
    for p in report.get("partitions", []):
        lines.append(
            f"partition {p['partition']}: committed {p['committed_offset']}, "
            f"lag {lag.get(p['partition'], '?')}, max event time {p['max_event_time']}"
        )
    if "rejects_last_hour" in report:
        lines.append(f"rejects in the last hour: {report['rejects_last_hour']}")
        lines.append(f"last batch hour: {report['last_batch_hour']}")
    for key in ("database_error", "kafka_error"):
        if key in report:
            lines.append(f"{key.replace('_', ' ')}: {report[key]}")
    return "\n".join(lines)
