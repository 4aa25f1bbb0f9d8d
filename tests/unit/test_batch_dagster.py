"""Shape of the batch's Dagster layer: assets, checks, pool, retries, job, schedule, sensor."""

import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from antenna_platform import services
from antenna_platform.batch_triggers import Cursor
from antenna_platform.config import load_settings
from antenna_platform.definitions import defs
from assets.batch import batch_hourly
from jobs.batch import hourly_batch_job
from schedules.hourly import hourly_batch_schedule, reported_hours_sensor


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


def test_batch_step_runs_in_the_spark_pool_with_retries_for_transient_errors():
    assert batch_hourly.op.pool == "spark"
    policy = batch_hourly.op.retry_policy
    assert policy is not None and policy.max_retries >= 1
    stream = defs.resolve_job_def("device_stream_job")
    assert all(node.definition.pool is None for node in stream.nodes)
    assert stream.tags["dagster/max_retries"] == "0"


def test_batch_tables_show_their_column_schema():
    graph = defs.resolve_asset_graph()
    for key, columns in {
        "bytes_hourly": ["timestamp", "id", "value", "type"],
        "user_quota_limit": ["email", "usage", "quota", "timestamp"],
        "bytes": ["timestamp", "id", "value", "type"],
    }.items():
        schema = graph.get(dg.AssetKey(key)).metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == columns


def test_definitions_hold_job_schedule_sensor_and_spark_resource():
    job = defs.resolve_job_def("hourly_batch_job")
    assert job.partitions_def is not None
    assert defs.resolve_schedule_def("hourly_batch_schedule").default_status == (
        dg.DefaultScheduleStatus.RUNNING
    )
    assert defs.resolve_sensor_def("reported_hours_sensor") is not None
    assert "pyspark" in defs.resources


@pytest.fixture
def resource_env(monkeypatch):
    """Creating a run record resolves the resources' EnvVars: give them the defaults."""
    for key, value in services.resource_env(load_settings({})).items():
        monkeypatch.setenv(key, value)


def _report(instance: dg.DagsterInstance, key: str, asset: str = "device_events") -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=key))


def _tick(instance, when: datetime):
    ctx = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return list(hourly_batch_schedule.evaluate_tick(ctx).run_requests or [])


def test_schedule_runs_the_hour_that_just_closed_unless_already_computed(resource_env):
    at = datetime(2026, 3, 5, 14, 10, tzinfo=UTC)
    assert hourly_batch_schedule.cron_schedule == "10 * * * *"
    with dg.instance_for_test() as instance:
        # never reported (no events in the hour) and never computed: run it
        assert [r.partition_key for r in _tick(instance, at)] == ["2026-03-05-13:00"]
        _report(instance, "2026-03-05-13:00", "bytes_hourly")  # the sooner batch did it
        assert _tick(instance, at) == []
        time.sleep(0.01)
        _report(instance, "2026-03-05-13:00")  # reported again after: late events
        assert [r.partition_key for r in _tick(instance, at)] == ["2026-03-05-13:00"]
        # a run of that hour under way: wait for it
        instance.create_run_for_job(
            defs.resolve_job_def(hourly_batch_job.name),
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "2026-03-05-13:00"},
        )
        assert _tick(instance, at) == []


def test_sensor_first_tick_starts_at_now():
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("2026-03-05-10:00", "2026-03-05-11:00"):
            _report(instance, key)
        result = reported_hours_sensor(dg.build_sensor_context(instance=instance))
        assert not result.run_requests
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("device_events")), limit=1
        ).records[0]
        assert Cursor.loads(result.cursor).after == latest.storage_id


def test_sensor_runs_a_reported_hour_at_once_and_waits_for_a_run_under_way(resource_env):
    with dg.DagsterInstance.ephemeral() as instance:
        first = reported_hours_sensor(dg.build_sensor_context(instance=instance))
        _report(instance, "2026-03-05-10:00")
        out = reported_hours_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert [r.partition_key for r in out.run_requests] == ["2026-03-05-10:00"]
        assert out.run_requests[0].tags["antenna/trigger"] == "closed"
        # the run of 10:00 is under way (a range run) when the hour is reported again
        instance.create_run_for_job(
            defs.resolve_job_def(hourly_batch_job.name),
            status=dg.DagsterRunStatus.STARTED,
            tags={
                "dagster/asset_partition_range_start": "2026-03-05-09:00",
                "dagster/asset_partition_range_end": "2026-03-05-11:00",
            },
        )
        _report(instance, "2026-03-05-10:00")
        waiting = reported_hours_sensor(
            dg.build_sensor_context(instance=instance, cursor=out.cursor)
        )
        assert not waiting.run_requests
        assert list(Cursor.loads(waiting.cursor).pending) == ["2026-03-05-10:00"]
