"""`stream_lag`: warns when the stream leaves messages waiting too long.

Unpartitioned check on the partitioned `device_events`; `stream_health_job` runs
it every five minutes. The figures of `antenna status` are its metadata.
"""

import dagster as dg

from antenna_platform import health
from assets.lake import device_events
from resources.postgres import PostgresResource


@dg.asset_check(
    asset=device_events.key,
    name="stream_lag",
    description="Fails (WARN) when a partition has had messages waiting longer than "
    "ANTENNA_STREAM_LAG_WARN_SECONDS without a commit.",
)
def stream_lag(postgres: PostgresResource) -> dg.AssetCheckResult:
    settings = postgres.settings()
    report = health.stream_health(settings)
    limit = settings.stream_lag_warn_seconds
    stalled = report["max_stalled_seconds"]
    ok = report["total_lag"] == 0 or (stalled is not None and stalled <= limit)
    table = (
        "| partition | committed | end | lag | stalled s |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {p['partition']} | {p['committed_offset']} | {p['end_offset']} | {p['lag']} "
            f"| {p['stalled_seconds']} |"
            for p in report["partitions"]
        )
    )
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "total_lag": report["total_lag"],
            "max_stalled_seconds": stalled if stalled is not None else -1,
            "limit_seconds": limit,
            "partitions": dg.MetadataValue.md(table),
            **{k: v for k, v in health.activity(settings).items() if isinstance(v, int)},
        },
    )
