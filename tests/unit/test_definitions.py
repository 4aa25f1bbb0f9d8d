"""The Dagster layer's shape: what a person sees in the UI, loaded without any service."""

import dagster as dg

from antenna_platform.definitions import defs

SERVING = [
    "antenna_traffic_hourly",
    "app_usage_hourly",
    "daily_summary",
    "live_traffic_5min",
    "live_antenna_5min",
    "live_app_5min",
    "live_user_5min",
    "quota_breaches",
    "user_usage_hourly",
]
DASHBOARDS = ["live_traffic", "hourly_usage", "quota", "daily_summary"]


def test_asset_keys():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "devices",
        "bytes",
        "user_metadata",
        "device_events",
        "bytes_hourly",
        "user_quota_limit",
        *(f"serving/{m}" for m in SERVING),
        *(f"dashboards/{d}" for d in DASHBOARDS),
    }


def test_lineage_runs_from_the_lake_through_the_batch_to_every_view():
    graph = defs.resolve_asset_graph()
    for batch in ("bytes_hourly", "user_quota_limit"):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(batch)).parent_keys}
        assert {"device_events", "user_metadata"} <= parents
    allowed = {"bytes_hourly", "user_quota_limit", "user_metadata", "device_events", "bytes"}
    allowed |= {f"serving/{m}" for m in SERVING}

    def ancestors(key: dg.AssetKey) -> set[str]:
        out: set[str] = set()
        todo = [key]
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent.to_user_string() not in out:
                    out.add(parent.to_user_string())
                    todo.append(parent)
        return out

    for model in SERVING:
        key = dg.AssetKey(["serving", model])
        parents = {k.to_user_string() for k in graph.get(key).parent_keys}
        assert parents and parents <= allowed, (model, parents)
        assert "devices" in ancestors(key), model
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("device_events")).parent_keys} == {
        "devices"
    }
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("bytes")).parent_keys} == {"devices"}
    assert graph.get(dg.AssetKey("devices")).kinds >= {"kafka"}
    assert graph.get(dg.AssetKey("bytes")).kinds >= {"postgres"}


def test_hourly_partitions_are_shared():
    graph = defs.resolve_asset_graph()
    parts = {
        k: graph.get(dg.AssetKey(k)).partitions_def
        for k in ("device_events", "bytes_hourly", "user_quota_limit")
    }
    assert len({id(p) for p in parts.values()}) == 1
    pdef = parts["device_events"]
    assert isinstance(pdef, dg.HourlyPartitionsDefinition)
    assert pdef.timezone == "UTC"
    assert pdef.get_first_partition_key() == "2026-01-01-00:00"


def test_checks_jobs_schedules_sensors():
    checks = {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "device_events:stream_lag",
        "bytes_hourly:hour_events_valid",
        "bytes_hourly:bytes_hourly_valid",
        "user_quota_limit:user_quota_limit_valid",
        "bytes_hourly:freshness_check",
        "user_quota_limit:freshness_check",
    } <= checks
    assert sum(c.startswith("serving/") for c in checks) >= 6  # dbt tests as asset checks
    assert {j.name for j in defs.jobs} >= {
        "device_stream_job",
        "hourly_batch_job",
        "stream_health_job",
    }
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["hourly_batch_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING
    sensors = {s.name: s for s in defs.sensors}
    for name in (
        "device_stream_sensor",
        "reported_hours_sensor",
        "serving_automation",
        "batch_freshness_sensor",
        "run_failure_alerts",
        "run_recovery_alerts",
    ):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING


def test_stream_job_runs_in_process_and_has_no_runtime_limit():
    job = defs.resolve_job_def("device_stream_job")
    assert job.executor_def.name == "in_process"
    assert int(job.tags["dagster/max_runtime"]) >= 365 * 86400


def test_freshness_policies_on_the_batch_the_lake_and_the_views():
    from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

    graph = defs.resolve_asset_graph()
    for key in ("bytes_hourly", "user_quota_limit"):
        policy = graph.get(dg.AssetKey(key)).freshness_policy
        assert isinstance(policy, CronFreshnessPolicy)
        assert policy.deadline_cron == "20 * * * *"  # an hour is overdue 20 min after it closes
    for key in ("device_events", "bytes", *(f"serving/{m}" for m in SERVING)):
        policy = graph.get(dg.AssetKey.from_user_string(key)).freshness_policy
        assert isinstance(policy, TimeWindowFreshnessPolicy), key


def test_resources_name_the_environment_variables_they_read():
    """The UI's resource pages show these names; the values are resolved at run time."""
    from dagster._config.field_utils import EnvVar

    expected = {
        "postgres": {"database_url": "ANTENNA_DATABASE_URL"},
        "kafka": {
            "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
            "topic": "ANTENNA_TOPIC",
            "consumer_group": "ANTENNA_CONSUMER_GROUP",
        },
        "lake": {"lake_dir": "ANTENNA_LAKE_DIR"},
        "pyspark": {"spark_master": "SPARK_MASTER"},
    }
    for name, fields in expected.items():
        resource = defs.resources[name]
        for field, var in fields.items():
            value = getattr(resource, field)
            assert isinstance(value, EnvVar) and value.env_var_name == var, (name, field)
    # `antenna env` / the demo give the Dagster processes every one of them
    from antenna_platform import services
    from antenna_platform.config import load_settings
    from resources import ENV_VARS

    named = {v for fields in expected.values() for v in fields.values()}
    assert named == set(ENV_VARS) <= set(services.dagster_env(load_settings({})))


def test_dashboards_are_superset_assets_downstream_of_the_views_they_chart():
    graph = defs.resolve_asset_graph()
    expected = {
        "live_traffic": {"live_antenna_5min", "live_app_5min", "live_user_5min"},
        "hourly_usage": {"antenna_traffic_hourly", "app_usage_hourly", "user_usage_hourly"},
        "quota": {"quota_breaches"},
        "daily_summary": {"daily_summary"},
    }
    for name, views in expected.items():
        node = graph.get(dg.AssetKey(["dashboards", name]))
        assert node.group_name == "dashboards"
        assert node.kinds == {"superset"}
        assert {k.to_user_string() for k in node.parent_keys} == {f"serving/{v}" for v in views}
