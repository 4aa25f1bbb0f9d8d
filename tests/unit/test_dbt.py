"""Serving layer wiring without a database: env mapping, manifest freshness, the asset
graph dagster-dbt builds from the manifest, and when the automation rebuilds the views."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from antenna_platform.config import ConfigError
from antenna_platform.dbt_env import (
    DBT_PROJECT_DIR,
    PASSWORD_VAR,
    dbt_env,
    dbt_environment,
    manifest_is_stale,
    manifest_path,
)
from assets.dbt import serving_views
from assets.lake import device_events
from assets.partitions import HOURLY
from assets.stream import speed_bytes
from resources import build_resources
from resources.dbt import DBT_PROJECT

VIEWS = {
    "antenna_traffic_hourly",
    "user_usage_hourly",
    "app_usage_hourly",
    "quota_breaches",
    "live_traffic_5min",
    "live_antenna_5min",
    "live_app_5min",
    "live_user_5min",
    "daily_summary",
}
STAGING = {"stg_user_metadata", "stg_bytes", "stg_bytes_hourly", "stg_user_quota_limit"}
LIVE = {"live_traffic_5min", "live_antenna_5min", "live_app_5min", "live_user_5min"}


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["serving", name])


def test_dbt_env_from_embedded_url():
    env = dbt_env("postgresql://postgres@127.0.0.1:55432/antenna")
    assert env == {
        "ANTENNA_DBT_HOST": "127.0.0.1",
        "ANTENNA_DBT_PORT": "55432",
        "ANTENNA_DBT_USER": "postgres",
        PASSWORD_VAR: "",
        "ANTENNA_DBT_DBNAME": "antenna",
        "ANTENNA_DBT_SSLMODE": "prefer",
    }


def test_dbt_env_decodes_credentials_and_query():
    env = dbt_env("postgres://ana%40corp:p%2Fw%3Ard@db.example.com/warehouse?sslmode=require")
    assert env["ANTENNA_DBT_USER"] == "ana@corp"
    assert env[PASSWORD_VAR] == "p/w:rd"
    assert env["ANTENNA_DBT_HOST"] == "db.example.com"
    assert env["ANTENNA_DBT_PORT"] == "5432"
    assert env["ANTENNA_DBT_DBNAME"] == "warehouse"
    assert env["ANTENNA_DBT_SSLMODE"] == "require"
    socket = dbt_env("postgresql://postgres@/antenna?host=/run/pg")
    assert socket["ANTENNA_DBT_HOST"] == "/run/pg"


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@h/db", "postgresql://u:secret@h:5432/", "postgresql:///db"]
)
def test_dbt_env_rejects_bad_urls_without_leaking_the_password(url):
    with pytest.raises(ConfigError) as err:
        dbt_env(url)
    assert "secret" not in str(err.value)


def test_dbt_environment_sets_then_restores(platform_settings_stub, monkeypatch):
    monkeypatch.setenv("ANTENNA_DBT_HOST", "before")
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    with dbt_environment(platform_settings_stub) as values:
        assert os.environ["ANTENNA_DBT_HOST"] == "10.0.0.5"
        assert os.environ[PASSWORD_VAR] == "pw"
        assert values["ANTENNA_DBT_DBNAME"] == "antenna"
    assert os.environ["ANTENNA_DBT_HOST"] == "before"
    assert PASSWORD_VAR not in os.environ


@pytest.fixture
def platform_settings_stub():
    from antenna_platform.config import load_settings

    return load_settings({"ANTENNA_DATABASE_URL": "postgresql://app:pw@10.0.0.5:6543/antenna"})


def test_manifest_staleness(tmp_path: Path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    (tmp_path / "dbt_project.yml").write_text("name: x")
    assert manifest_is_stale(tmp_path)  # missing
    manifest = manifest_path(tmp_path)
    manifest.parent.mkdir()
    manifest.write_text("{}")
    old = time.time() - 100
    os.utime(model, (old, old))
    os.utime(tmp_path / "dbt_project.yml", (old, old))
    assert not manifest_is_stale(tmp_path)
    os.utime(model, None)  # edited after the parse
    os.utime(manifest, (old + 1, old + 1))
    assert manifest_is_stale(tmp_path)


def test_project_manifest_is_fresh_and_lists_every_view():
    assert DBT_PROJECT.manifest_path == manifest_path(DBT_PROJECT_DIR)
    assert not manifest_is_stale()  # importing resources.dbt made sure of it
    manifest = json.loads(DBT_PROJECT.manifest_path.read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert set(models) == VIEWS | STAGING
    for name, node in models.items():
        # staging is inlined (ephemeral); generate_schema_name: "serving", not "serving_serving"
        assert node["config"]["materialized"] == ("ephemeral" if name in STAGING else "view")
        assert name in STAGING or node["schema"] == "serving"
        # the columns Superset depends on cannot change silently
        assert node["config"]["contract"]["enforced"] is (name in VIEWS), name
        if name in VIEWS:
            assert all(c["data_type"] for c in node["columns"].values()), name
    unit_tests = {t["name"]: t["model"] for t in manifest["unit_tests"].values()}
    assert unit_tests == {
        "quota_breaches_counts_the_24_hours_ending_with_each_breach": "quota_breaches",
        "daily_summary_breaks_a_top_app_tie_by_name": "daily_summary",
    }


def test_definitions_lineage_from_sources_to_every_view():
    from antenna_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    parents = {k: set(graph.get(k).parent_keys) for k in serving_views.keys}
    a = dg.AssetKey
    # the ephemeral staging models are no assets: lineage runs through them to the sources
    assert parents == {
        key("antenna_traffic_hourly"): {a("bytes_hourly")},
        key("app_usage_hourly"): {a("bytes_hourly")},
        key("user_usage_hourly"): {a("bytes_hourly"), a("user_metadata")},
        key("quota_breaches"): {a("user_quota_limit"), a("user_metadata")},
        # the live views read the speed layer's table
        key("live_traffic_5min"): {a("bytes")},
        key("live_antenna_5min"): {a("bytes")},
        key("live_app_5min"): {a("bytes")},
        key("live_user_5min"): {a("bytes"), a("user_metadata")},
        key("daily_summary"): {key(v) for v in VIEWS - {"daily_summary"} - LIVE},
    }

    def ancestors(k: dg.AssetKey) -> set[dg.AssetKey]:
        seen: set[dg.AssetKey] = set()
        todo = [k]
        while todo:
            for p in graph.get(todo.pop()).parent_keys:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    batch_defined = graph.has(a("bytes_hourly")) and graph.get(a("bytes_hourly")).is_materializable
    for view in serving_views.keys:
        assert graph.get(view).group_name == "serving"
        if batch_defined:  # everything comes from the topic: one lineage graph
            assert a("devices") in ancestors(view)


def test_dbt_tests_become_asset_checks_and_the_sensor_runs_by_default():
    from antenna_platform.definitions import defs

    checks = {(c.asset_key.path[-1], c.name) for c in serving_views.check_keys}
    assert (
        "quota_breaches",
        "relationships_quota_breaches_email__email__source_antenna_user_metadata_",
    ) in checks
    assert ("daily_summary", "unique_daily_summary_day") in checks
    assert {"unique_combination_antenna_traffic_hourly_hour__antenna_id"} <= {c[1] for c in checks}
    assert {c[0] for c in checks} == VIEWS
    sensor = defs.resolve_sensor_def("serving_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_views_rebuild_after_a_batch_hour_and_a_lake_hour():
    defs = dg.Definitions(
        assets=[
            serving_views,
            device_events,
            speed_bytes,
            dg.AssetSpec("bytes_hourly", partitions_def=HOURLY, deps=[device_events.key]),
            dg.AssetSpec("user_quota_limit", partitions_def=HOURLY, deps=[device_events.key]),
            dg.AssetSpec("user_metadata"),
        ],
        resources={k: v for k, v in build_resources().items() if k in ("dbt", "postgres")},
    )

    def requested(result) -> set[str]:
        return {k.path[-1] for k in serving_views.keys if result.get_num_requested(k)}

    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(first) == set()  # nothing new upstream: no run
        instance.report_runless_asset_event(
            dg.AssetMaterialization("bytes_hourly", partition="2026-11-20-22:00")
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization("user_quota_limit", partition="2026-11-20-22:00")
        )
        after_batch = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        # old hours that were never computed (before 22:00) do not hold the views back
        assert requested(after_batch) == VIEWS - LIVE
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=after_batch.cursor
        )
        assert requested(again) == set()
        # the stream closes an hour: it reports the lake partition and `bytes`
        instance.report_runless_asset_event(
            dg.AssetMaterialization("device_events", partition="2026-11-20-23:00")
        )
        instance.report_runless_asset_event(dg.AssetMaterialization("bytes"))
        after_lake = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=again.cursor
        )
        assert requested(after_lake) == LIVE


def test_prune_run_targets_keeps_the_newest(tmp_path: Path):
    from antenna_platform.dbt_env import prune_run_targets

    target = tmp_path / "target"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    (target / "parse-xyz").mkdir()  # not a run dir: one dash only
    for i in range(5):
        d = target / f"serving_views-abc{i}-def{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
    removed = prune_run_targets(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [f"serving_views-abc{i}-def{i}" for i in range(3)]
    assert sorted(p.name for p in target.iterdir()) == [
        "manifest.json",
        "parse-xyz",
        "serving_views-abc3-def3",
        "serving_views-abc4-def4",
    ]
