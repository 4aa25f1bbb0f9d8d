"""Batch layer assets: `bytes_hourly` and `user_quota_limit`, hourly partitions.

One multi-asset so both tables come from one Spark scan of the hour's lake files.
A multi-hour backfill runs as one Spark run (single-run policy): every hour of the
run's time window is computed in the same job and replaced in one transaction.
"""

import time
from contextlib import ExitStack

import dagster as dg

from antenna_platform import batch, quality, spark_slots, transient
from assets.checks import (
    BATCH_CHECK_SPECS,
    BYTES_HOURLY_VALID,
    EVENTS_VALID,
    QUOTA_VALID,
    check_result,
)
from assets.freshness import BATCH_FRESHNESS
from assets.lake import device_events
from assets.partitions import HOURLY
from assets.tables import BYTES_HOURLY_SCHEMA, USER_QUOTA_LIMIT_SCHEMA
from resources.lake import LakeResource
from resources.postgres import PostgresResource
from resources.spark import SparkResource

DEPS = [device_events.key, dg.AssetKey("user_metadata")]
# The pool of the batch's Spark step: its limit (ANTENNA_BATCH_POOL_LIMIT, default 1) is
# `concurrency.pools.default_limit` in dagster.yaml. Backfills, scheduled hours and
# late-data reruns queue for it instead of running Spark side by side; inside the step,
# spark_slots enforces the same limit where Dagster's claim races (see that module).
SPARK_POOL = spark_slots.SPARK_POOL
# Transient failures (Postgres unreachable for a moment, Spark failing to start) are
# retried; anything else fails at once (Failure(allow_retries=False)), a failed blocking
# check included: the same data fails the same way.
TRANSIENT_RETRIES = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "bytes_hourly",
            deps=DEPS,
            group_name="batch",
            kinds={"spark", "postgres"},
            description="Exact hourly bytes per antenna, user email and app, from the lake.",
            metadata={
                "dagster/column_schema": BYTES_HOURLY_SCHEMA,
                "dagster/table_name": "public.bytes_hourly",
            },
            freshness_policy=BATCH_FRESHNESS,
        ),
        dg.AssetSpec(
            "user_quota_limit",
            deps=DEPS,
            group_name="batch",
            kinds={"spark", "postgres"},
            description="Users whose bytes in the hour are strictly above their quota.",
            metadata={
                "dagster/column_schema": USER_QUOTA_LIMIT_SCHEMA,
                "dagster/table_name": "public.user_quota_limit",
            },
            freshness_policy=BATCH_FRESHNESS,
        ),
    ],
    check_specs=BATCH_CHECK_SPECS,
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=SPARK_POOL,
    retry_policy=TRANSIENT_RETRIES,
    name="batch_hourly",
)
def batch_hourly(
    context: dg.AssetExecutionContext,
    pyspark: SparkResource,
    postgres: PostgresResource,
    lake: LakeResource,
):
    try:
        with ExitStack() as stack:
            limit = spark_slot_limit(context.instance)
            if limit:
                slot_conn = stack.enter_context(postgres.connect(autocommit=True))
                stack.enter_context(spark_slots.spark_slot(slot_conn, limit, log=context.log.info))
            yield from _compute(context, pyspark, postgres, lake)
    except dg.Failure:
        raise
    except Exception as exc:
        if transient.is_transient(exc):
            raise  # TRANSIENT_RETRIES runs the step again
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise dg.Failure(
            description=f"{type(exc).__name__}: {first} (not retried: not a transient error)",
            allow_retries=False,
        ) from exc


def spark_slot_limit(instance: dg.DagsterInstance) -> int | None:
    """The `spark` pool's limit as Dagster holds it (dagster.yaml's default, or a limit set
    in the UI); None when the pool is unlimited."""
    try:
        slots = instance.event_log_storage.get_concurrency_info(SPARK_POOL).slot_count
    except Exception:  # noqa: BLE001 - storage without pools: fall back to the default
        slots = 0
    return slots or instance.global_op_concurrency_default_limit or None


def _compute(
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
            # not retried: the same data fails the same way
            raise dg.Failure(
                description=f"blocking checks failed: {', '.join(failed)}; nothing written, "
                f"the previous rows of {len(hours)} hour(s) are kept",
                allow_retries=False,
            )
        written = batch.replace_hours(conn, results)
    summary = batch.summarize(results)
    context.log.info(
        f"{len(hours)} hour(s), {summary['events']} events, {written} rows written, "
        f"{summary['users_over_quota']} users over quota"
    )
    # Each hour's materialization carries that hour's numbers; the run's figures (timings,
    # how many hours the run covered) go on every hour under their own names.
    for res in results:
        key = f"{res.hour:%Y-%m-%d-%H:00}"
        context.add_asset_metadata(hour_metadata(res), asset_key="bytes_hourly", partition_key=key)
        context.add_asset_metadata(
            quota_metadata(res), asset_key="user_quota_limit", partition_key=key
        )
    run_figures = {
        "run_hours": len(hours),
        "run_spark_seconds": spark_seconds,
        "run_pandera_seconds": pandera_seconds,
    }
    yield dg.MaterializeResult(asset_key="bytes_hourly", metadata=run_figures)
    yield dg.MaterializeResult(asset_key="user_quota_limit", metadata={"run_hours": len(hours)})


def hour_metadata(res: batch.HourResult) -> dict[str, object]:
    """One hour of bytes_hourly: its rows, events, bytes and top tables."""
    summary = batch.summarize([res])
    return {
        "dagster/row_count": len(res.bytes_rows),
        "events": res.events,
        "total_bytes": res.total_bytes,
        "lake_files": res.files,
        "unknown_device_events": res.unknown_events,
        "unknown_device_bytes": res.unknown_bytes,
        "top_antennas": dg.MetadataValue.md(summary["top_antennas"]),
        "top_users": dg.MetadataValue.md(summary["top_users"]),
        "top_apps": dg.MetadataValue.md(summary["top_apps"]),
    }


def quota_metadata(res: batch.HourResult) -> dict[str, object]:
    """One hour of user_quota_limit: who was over quota, by how much."""
    over = [(f"{q[0]}", q[1] - q[2]) for q in res.quota_rows]
    return {
        "dagster/row_count": len(res.quota_rows),
        "users_over_quota": len(res.quota_rows),
        "over_quota": dg.MetadataValue.md(batch.markdown_table(("user", "bytes over"), over)),
    }
