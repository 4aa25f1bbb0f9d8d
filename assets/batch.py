"""Batch layer assets: `bytes_hourly` and `user_quota_limit`, hourly partitions.

One multi-asset so both tables come from one Spark scan of the hour's lake files.
A multi-hour backfill runs as one Spark run (single-run policy): every hour of the
run's time window is computed in the same job and replaced in one transaction.
"""

import time

import dagster as dg

from antenna_platform import batch, quality
from assets.checks import (
    BATCH_CHECK_SPECS,
    BYTES_HOURLY_VALID,
    EVENTS_VALID,
    QUOTA_VALID,
    check_result,
)
from assets.lake import device_events
from assets.partitions import HOURLY
from resources.lake import LakeResource
from resources.postgres import PostgresResource
from resources.spark import SparkResource

DEPS = [device_events.key, dg.AssetKey("user_metadata")]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "bytes_hourly",
            deps=DEPS,
            group_name="batch",
            kinds={"spark", "postgres"},
            description="Exact hourly bytes per antenna, user email and app, from the lake.",
        ),
        dg.AssetSpec(
            "user_quota_limit",
            deps=DEPS,
            group_name="batch",
            kinds={"spark", "postgres"},
            description="Users whose bytes in the hour are strictly above their quota.",
        ),
    ],
    check_specs=BATCH_CHECK_SPECS,
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="batch_hourly",
)
def batch_hourly(
    context: dg.AssetExecutionContext,
    pyspark: SparkResource,
    postgres: PostgresResource,
    lake: LakeResource,
):
    window = context.partition_time_window
    hours = batch.hours_between(window.start, window.end)
    root = lake.root()
    spark = pyspark.spark_session
    with postgres.connect(autocommit=True) as conn:
        t0 = time.perf_counter()
        scan = batch.scan_hours(spark, conn, root, hours, validate=quality.validate_events)
        results = scan.results
        pandera_seconds = round(scan.validate_seconds, 2)
        spark_seconds = round(time.perf_counter() - t0 - scan.validate_seconds, 2)
        emails = [u[1] for u in batch.read_users(conn)]
        events_outcome = quality.check_events(results, scan.schema_errors)
        events_outcome.details["pandera_seconds"] = pandera_seconds
        if not events_outcome.passed:
            manifests = batch.read_manifest(
                conn, root, [r.hour for r in results if r.event_failures]
            )
            events_outcome.example = batch.example_bad_event(spark, manifests.values())
        outcomes = [
            (EVENTS_VALID, events_outcome),
            (BYTES_HOURLY_VALID, quality.check_bytes_hourly(results)),
            (QUOTA_VALID, quality.check_quota(results, emails)),
        ]
        for spec, outcome in outcomes:
            yield check_result(spec, outcome)
        failed = [spec.name for spec, o in outcomes if not o.passed]
        if failed:
            raise dg.Failure(
                description=f"blocking checks failed: {', '.join(failed)}; nothing written, "
                f"the previous rows of {len(hours)} hour(s) are kept",
            )
        written = batch.replace_hours(conn, results)
    summary = batch.summarize(results)
    context.log.info(
        f"{len(hours)} hour(s), {summary['events']} events, {written} rows written, "
        f"{summary['users_over_quota']} users over quota"
    )
    yield dg.MaterializeResult(
        asset_key="bytes_hourly",
        metadata={
            "hours": len(hours),
            "rows": summary["bytes_hourly_rows"],
            "spark_seconds": spark_seconds,
            "pandera_seconds": pandera_seconds,
            "events": summary["events"],
            "total_bytes": summary["total_bytes"],
            "lake_files": summary["files"],
            "empty_hours": summary["empty_hours"],
            "unknown_device_events": summary["unknown_device_events"],
            "unknown_device_bytes": summary["unknown_device_bytes"],
            "top_antennas": dg.MetadataValue.md(summary["top_antennas"]),
            "top_users": dg.MetadataValue.md(summary["top_users"]),
            "top_apps": dg.MetadataValue.md(summary["top_apps"]),
        },
    )
    yield dg.MaterializeResult(
        asset_key="user_quota_limit",
        metadata={
            "hours": len(hours),
            "rows": summary["users_over_quota"],
            "users_over_quota": summary["users_over_quota"],
            "over_quota": dg.MetadataValue.md(summary["over_quota"]),
        },
    )
