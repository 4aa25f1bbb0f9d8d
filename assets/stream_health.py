"""`stream_lag`: reads the stream's figures from outside the stream, records them, judges them.

Unpartitioned check on the partitioned `device_events`; `stream_health_job` runs it
every five minutes. One reading of Postgres (committed offsets) and the broker (end
offsets) gives:
- an observation of `devices` (end offsets, consumer lag, stall, events/s produced and
  committed since the previous observation), which the UI plots over time, also while
  the stream is stuck or down;
- the check result: it fails (WARN) when a partition has had messages waiting longer
  than ANTENNA_STREAM_LAG_WARN_SECONDS without a commit, and (ERROR) with the reason when
  the broker cannot be read, never counting unknown lag as 0;
- the `stream_lag` alert incident, raised on failure and cleared when it passes again.
"""

import time

import dagster as dg

from antenna_platform import alerts, health
from assets.lake import device_events
from assets.stream import devices
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource

INCIDENT = "stream_lag"


def _previous_reading(instance: dg.DagsterInstance) -> tuple[float, int, int] | None:
    records = instance.fetch_observations(devices.key, limit=1).records
    if not records:
        return None
    meta = records[0].asset_observation.metadata
    try:
        return (
            records[0].timestamp,
            int(meta["end_offsets_total"].value),
            int(meta["committed_total"].value),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _table(report: dict) -> str:
    return "| partition | committed | end | lag | stalled s |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {p['partition']} | {p['committed_offset']} | {p['end_offset']} | {p['lag']} "
        f"| {p['stalled_seconds']} |"
        for p in report["partitions"]
    )


@dg.asset_check(
    asset=device_events.key,
    name="stream_lag",
    description="Fails (WARN) when a partition has had messages waiting longer than "
    "ANTENNA_STREAM_LAG_WARN_SECONDS without a commit, (ERROR) when the broker cannot be "
    "read; records the figures as an observation of `devices`.",
)
def stream_lag(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, kafka: KafkaResource
) -> dg.AssetCheckResult:
    settings = kafka.apply(postgres.settings())
    limit = settings.stream_lag_warn_seconds
    try:
        report = health.stream_health(settings)
    except health.BrokerUnreachable as exc:
        alerts.fire(settings, INCIDENT, "stream lag unknown", str(exc), echo=context.log.error)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"lag unknown: {exc}",
            metadata={"error": str(exc), "limit_seconds": limit},
        )
    stalled = report["max_stalled_seconds"]
    now = time.time()
    speed = health.rates(
        _previous_reading(context.instance),
        (now, report["end_offsets_total"], report["committed_total"]),
    )
    context.op_execution_context.log_event(
        dg.AssetObservation(
            asset_key=devices.key,
            metadata={
                "consumer_lag": report["total_lag"],
                "max_stalled_seconds": stalled if stalled is not None else -1.0,
                "end_offsets_total": report["end_offsets_total"],
                "committed_total": report["committed_total"],
                **{k: v for k, v in speed.items() if v is not None},
                "partitions": dg.MetadataValue.md(_table(report)),
            },
        )
    )
    ok = report["total_lag"] == 0 or (stalled is not None and stalled <= limit)
    if ok:
        alerts.clear(settings, INCIDENT, f"lag {report['total_lag']}", echo=context.log.info)
    else:
        alerts.fire(
            settings,
            INCIDENT,
            f"stream lagging: {report['total_lag']} messages waiting",
            f"a partition has had messages waiting {stalled} s without a commit (limit {limit} s)",
            echo=context.log.warning,
        )
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "total_lag": report["total_lag"],
            "max_stalled_seconds": stalled if stalled is not None else -1,
            "limit_seconds": limit,
            "partitions": dg.MetadataValue.md(_table(report)),
            **{k: v for k, v in health.activity(settings).items() if isinstance(v, int)},
        },
    )
