"""Shape of the batch's Dagster layer: assets, checks, job, schedule, sensor cursor."""

from datetime import UTC, datetime

import dagster as dg

from antenna_platform.definitions import defs
from assets.batch import batch_hourly
from schedules.hourly import hourly_batch_schedule, late_data_sensor


def test_batch_assets_checks_and_policy():
    assert {k.to_user_string() for k in batch_hourly.keys} == {"bytes_hourly", "user_quota_limit"}
    assert {c.name for c in batch_hourly.check_keys} == {
        "hour_events_valid",
        "bytes_hourly_valid",
        "user_quota_limit_valid",
    }
    assert all(spec.blocking for spec in batch_hourly.check_specs)
    assert batch_hourly.backfill_policy == dg.BackfillPolicy.single_run()
    deps = {d.asset_key.to_user_string() for spec in batch_hourly.specs for d in spec.deps}
    assert deps == {"device_events", "user_metadata"}


def test_definitions_hold_job_schedule_sensor_and_spark_resource():
    job = defs.resolve_job_def("hourly_batch_job")
    assert job.partitions_def is not None
    assert defs.resolve_schedule_def("hourly_batch_schedule").default_status == (
        dg.DefaultScheduleStatus.RUNNING
    )
    assert defs.resolve_sensor_def("late_data_sensor") is not None
    assert "pyspark" in defs.resources


def test_schedule_requests_the_hour_that_just_closed():
    ctx = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 5, 14, 10, tzinfo=UTC)
    )
    assert hourly_batch_schedule.cron_schedule == "10 * * * *"
    reqs = list(hourly_batch_schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in reqs] == ["2026-03-05-13:00"]


def test_sensor_first_tick_starts_at_now():
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("2026-03-05-10:00", "2026-03-05-11:00"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key="device_events", partition=key)
            )
        result = late_data_sensor(dg.build_sensor_context(instance=instance))
        assert not result.run_requests
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("device_events")), limit=1
        ).records[0]
        assert result.cursor == str(latest.storage_id)
