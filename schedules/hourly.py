"""When the batch runs: every hour for the hour that just closed, and again for an
already-computed hour when the stream reports late events in it."""

from __future__ import annotations

import dagster as dg

from assets.lake import device_events
from jobs.batch import hourly_batch_job

# Minutes after the hour closes. The stream reports an hour once its watermark (60 s by
# default) has passed the hour's end; anything later is caught by `late_data_sensor`.
DELAY_MINUTES = 10
BYTES_HOURLY = dg.AssetKey("bytes_hourly")

hourly_batch_schedule = dg.build_schedule_from_partitioned_job(
    hourly_batch_job,
    name="hourly_batch_schedule",
    minute_of_hour=DELAY_MINUTES,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"At :{DELAY_MINUTES:02d} UTC, the batch for the hour that just closed.",
)


def late_hours(instance: dg.DagsterInstance, after_storage_id: int, limit: int = 200):
    """(hours to recompute {partition: storage_id}, last storage id seen).

    An hour is recomputed when the stream reported it after the start of the batch
    run that last materialized it; hours the batch never computed are left to the
    schedule or a backfill.
    """
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=device_events.key, after_storage_id=after_storage_id),
        limit=limit,
        ascending=True,
    ).records
    last = max((r.storage_id for r in records), default=after_storage_id)
    newest: dict[str, tuple[int, float]] = {}
    for r in records:
        if r.partition_key:
            newest[r.partition_key] = (r.storage_id, r.timestamp)
    due: dict[str, int] = {}
    for pk, (storage_id, reported_at) in newest.items():
        done = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=BYTES_HOURLY, asset_partitions=[pk]), limit=1
        ).records
        if not done:
            continue
        # Compare with when the batch run *started* (it reads the manifest after that): a
        # run already under way when late files landed may have missed them.
        run = instance.get_run_record_by_id(done[0].run_id)
        started = run.start_time if run and run.start_time else done[0].timestamp
        if started < reported_at:
            due[pk] = storage_id
    return due, last


@dg.sensor(
    name="late_data_sensor",
    job=hourly_batch_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materializes an already-computed hour when the stream reports it again "
    "(late events landed in the lake).",
)
def late_data_sensor(context: dg.SensorEvaluationContext):
    if context.cursor is None:
        # First tick: start from now, not from the whole history of reported hours.
        latest = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=device_events.key), limit=1, ascending=False
        ).records
        start = latest[0].storage_id if latest else 0
        return dg.SensorResult(skip_reason=f"cursor initialised at {start}", cursor=str(start))
    due, last = late_hours(context.instance, int(context.cursor))
    requests = [
        dg.RunRequest(run_key=f"late-{pk}-{sid}", partition_key=pk, tags={"antenna/late": "1"})
        for pk, sid in sorted(due.items())
    ]
    if not requests:
        return dg.SensorResult(skip_reason="no late hours", cursor=str(last))
    return dg.SensorResult(run_requests=requests, cursor=str(last))
