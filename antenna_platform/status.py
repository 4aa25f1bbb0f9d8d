"""`antenna status`: are the services up, is the stream keeping up, what is built.

Every figure is read from the services themselves: Postgres (offsets, dead letters,
lake manifest, batch tables), the broker (end offsets) and Dagster's instance (the
stream run's last heartbeat, the last materialized batch hour).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from antenna_platform import health, services
from antenna_platform.config import ConfigError, Settings, redact_url


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _dagster(settings: Settings) -> dict[str, Any]:
    """Last heartbeat of running stream runs and the last materialized batch hour."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        return {"dagster_error": "no Dagster instance yet (run `antenna up`)"}
    for key, value in services.dagster_env(settings).items():
        os.environ.setdefault(key, value)
    import dagster as dg  # noqa: PLC0415

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(
                job_name="device_stream_job",
                statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            ),
            limit=10,
        )
        stream_runs = []
        for run in runs:
            recs = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
            beat = datetime.fromtimestamp(recs[0].timestamp, UTC) if recs else None
            stream_runs.append(
                {"run_id": run.run_id, "status": run.status.value, "last_heartbeat": beat}
            )
        event = instance.get_latest_materialization_event(dg.AssetKey("bytes_hourly"))
        last_hour = None
        if event is not None and event.dagster_event is not None:
            last_hour = event.dagster_event.partition
    return {"stream_runs": stream_runs, "last_materialized_hour": last_hour}


def collect(settings: Settings) -> dict[str, Any]:
    from antenna_platform.dashboards import server as superset  # noqa: PLC0415

    pg, kafka = services.postgres_state(settings), services.broker_state(settings)
    states = [pg, kafka, superset.state(settings)] if settings.dashboard else [pg, kafka]
    report: dict[str, Any] = {
        "database_url": redact_url(settings.database_url),
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
        "lake_dir": str(settings.lake_dir),
        "dagster_home": str(settings.dagster_home),
        "topic": settings.topic,
        "consumer_group": settings.consumer_group,
        "services": {
            s.name: {"embedded": s.embedded, "running": s.running, "address": s.address}
            for s in states
        },
    }
    if settings.dashboard:
        report["superset_url"] = settings.superset_url
    if pg.running:
        try:
            report.update(health.activity(settings))
            if kafka.running:
                report["stream"] = health.stream_health(settings)
        except ConfigError as exc:
            report["database_error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. tables not provisioned yet
            report["error"] = f"{type(exc).__name__}: {_short(exc)}"
        try:
            report.update(_dagster(settings))
        except Exception as exc:  # noqa: BLE001
            report["dagster_error"] = f"{type(exc).__name__}: {_short(exc)}"
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"database   {report['database_url']}",
        f"kafka      {report['kafka_bootstrap_servers']}  topic {report['topic']!r}, "
        f"group {report['consumer_group']!r}",
        f"lake       {report['lake_dir']}",
        f"dagster    {report['dagster_home']}",
    ]
    for name, s in report["services"].items():
        kind = "embedded" if s["embedded"] else "external"
        lines.append(f"{name:10s} {'running' if s['running'] else 'DOWN'} ({kind}) {s['address']}")
    stream = report.get("stream")
    if stream:
        lines.append(
            f"stream     total lag {stream['total_lag']} messages, "
            f"max stalled {stream['max_stalled_seconds']} s"
        )
        for p in stream["partitions"]:
            lines.append(
                f"  partition {p['partition']}: committed {p['committed_offset']}, "
                f"end {p['end_offset']}, lag {p['lag']}, max event time {p['max_event_time']}"
            )
    for run in report.get("stream_runs", []):
        lines.append(
            f"stream run {run['run_id']} {run['status']}, heartbeat {run['last_heartbeat']}"
        )
    if "lake_manifest" in report:
        m = report["lake_manifest"]
        lines.append(f"lake files {m['files']} ({m['rows']:,} rows, {m['bytes'] / 1e6:.1f} MB)")
        lines.append(
            f"last hour  rejects {report['rejects_last_hour']}, "
            f"late events {report['late_events_last_hour']}"
        )
        lines.append(f"batch      last hour in bytes_hourly: {report['last_batch_hour']}")
    if "last_materialized_hour" in report:
        lines.append(f"           last materialized partition: {report['last_materialized_hour']}")
    for key in ("database_error", "error", "dagster_error"):
        if key in report:
            lines.append(f"{key.replace('_', ' ')}: {report[key]}")
    return "\n".join(lines)
