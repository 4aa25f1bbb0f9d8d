"""When the batch runs: as soon as the stream reports an hour (closed, or changed by late
events), with the schedule at :10 as the fallback. The rules are in
`antenna_platform.batch_triggers`; this module reads Dagster's records for them."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from dagster import DagsterRunStatus

from antenna_platform.batch_triggers import Cursor, Decision, Report, decide, run_covers
from assets.lake import device_events
from assets.partitions import HOURLY
from jobs.batch import hourly_batch_job
from schedules.runs import run_info

# Minutes after the hour closes. The stream reports an hour about 1-2 minutes after it
# ends (low watermark past the end, files compacted); the schedule catches what it did not
# report (an hour without events) or what went wrong.
DELAY_MINUTES = 10
BYTES_HOURLY = dg.AssetKey("bytes_hourly")
TRIGGER_TAG = "antenna/trigger"  # closed | late | schedule
STREAM_JOB = "device_stream_job"  # always running; never computes the batch
IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def batch_runs_in_progress(instance: dg.DagsterInstance) -> list[dict[str, str]]:
    """Tags of the queued or running runs that compute bytes_hourly: the batch job, an
    asset backfill, a `dagster asset materialize`."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS), limit=500)
    return [
        dict(run.tags)
        for run in runs
        if run.job_name != STREAM_JOB and run_info(instance, run).is_batch
    ]


def computed_by_run_started(instance: dg.DagsterInstance, partition: str) -> float | None:
    """When the run that last materialized this hour started (it read the manifest after
    that), or None if the hour was never computed."""
    done = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=BYTES_HOURLY, asset_partitions=[partition]), limit=1
    ).records
    if not done:
        return None
    run = instance.get_run_record_by_id(done[0].run_id) if done[0].run_id else None
    return run.start_time if run and run.start_time else done[0].timestamp


@dg.sensor(
    name="reported_hours_sensor",
    job=hourly_batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the batch for an hour as soon as the stream reports it: closed (the "
    "sooner batch), or changed by late events after it was computed. A report that lands "
    "while a run of that hour is under way is kept until that run ends.",
)
def reported_hours_sensor(context: dg.SensorEvaluationContext):
    instance = context.instance
    if context.cursor is None:
        # First tick: start from now, not from the whole history of reported hours.
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=device_events.key), limit=1, ascending=False
        ).records
        start = latest[0].storage_id if latest else 0
        return dg.SensorResult(
            skip_reason=f"cursor initialised at {start}", cursor=Cursor(after=start).dumps()
        )
    cursor = Cursor.loads(context.cursor)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=device_events.key, after_storage_id=cursor.after),
        limit=200,
        ascending=True,
    ).records
    cursor.add(
        Report(r.partition_key, r.storage_id, r.timestamp) for r in records if r.partition_key
    )
    busy = batch_runs_in_progress(instance) if cursor.pending else []
    requests = []
    for partition, report in sorted(cursor.pending.items()):
        computed = computed_by_run_started(instance, partition)
        decision = decide(report.reported_at, computed, any(run_covers(t, partition) for t in busy))
        if decision is Decision.RUN:
            requests.append(
                dg.RunRequest(
                    run_key=f"hour-{partition}-{report.storage_id}",
                    partition_key=partition,
                    tags={TRIGGER_TAG: "closed" if computed is None else "late"},
                )
            )
        if decision is not Decision.WAIT:
            del cursor.pending[partition]
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor.dumps())
    waiting = ", ".join(sorted(cursor.pending)) or "none"
    return dg.SensorResult(
        skip_reason=f"no hour to run; waiting on runs under way for: {waiting}",
        cursor=cursor.dumps(),
    )


@dg.schedule(
    name="hourly_batch_schedule",
    job=hourly_batch_job,
    cron_schedule=f"{DELAY_MINUTES} * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"At :{DELAY_MINUTES:02d} UTC, the hour that just closed, unless it was "
    "already computed after the stream's last report of it (or is being computed).",
)
def hourly_batch_schedule(context: dg.ScheduleEvaluationContext):
    when = context.scheduled_execution_time
    partition = HOURLY.get_partition_key_for_timestamp((when - timedelta(hours=1)).timestamp())
    instance = context.instance
    last = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=device_events.key, asset_partitions=[partition]), limit=1
    ).records
    busy = any(run_covers(t, partition) for t in batch_runs_in_progress(instance))
    decision = decide(
        last[0].timestamp if last else None, computed_by_run_started(instance, partition), busy
    )
    if decision is Decision.RUN:
        return dg.RunRequest(
            run_key=partition, partition_key=partition, tags={TRIGGER_TAG: "schedule"}
        )
    why = "a run of it is under way" if busy else "computed after the stream's last report"
    return dg.SkipReason(f"hour {partition}: {why}")
