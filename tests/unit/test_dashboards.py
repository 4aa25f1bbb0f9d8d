"""Dashboards as code without Superset running: settings, secrets, the YAML bundle."""

from __future__ import annotations

import json
import stat
import uuid

import pytest
import yaml

from antenna_platform.config import ConfigError, load_settings
from antenna_platform.dashboards import bundles, credentials

SLUGS = {"live-traffic", "hourly-usage", "quota", "daily-summary"}


@pytest.fixture(scope="module")
def bundle() -> dict[str, dict]:
    return {path: yaml.safe_load(text) for path, text in bundles.read_bundle().items()}


def test_dashboard_settings(tmp_path):
    s = load_settings({"ANTENNA_HOME": str(tmp_path)})
    assert s.dashboard and s.superset_port == 8088 and s.superset_url == "http://127.0.0.1:8088"
    off = load_settings({"ANTENNA_DASHBOARD": "0", "ANTENNA_SUPERSET_PORT": "18088"})
    assert not off.dashboard and off.superset_url == "http://127.0.0.1:18088"
    with pytest.raises(ConfigError, match="ANTENNA_DASHBOARD"):
        load_settings({"ANTENNA_DASHBOARD": "maybe"})
    secret = load_settings(
        {"ANTENNA_SUPERSET_ADMIN_PASSWORD": "adm1n-Secret", "ANTENNA_READER_PASSWORD": "r3ader"}
    )
    assert "adm1n-Secret" not in repr(secret) and "r3ader" not in repr(secret)


def test_generated_secrets_are_private_and_stable(tmp_path):
    s = load_settings({"ANTENNA_HOME": str(tmp_path)})
    first, generated = credentials.admin_password(s)
    again, generated_again = credentials.admin_password(s)
    assert generated and not generated_again and first == again and len(first) >= 24
    reader = credentials.reader_password(s)
    assert reader == credentials.reader_password(s) and reader != first
    key = credentials.secret_key_file(s)
    for path in (key, credentials.admin_password_file(s), tmp_path / "superset/reader_password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    given = load_settings({"ANTENNA_HOME": str(tmp_path), "ANTENNA_READER_PASSWORD": "from-env"})
    assert credentials.reader_password(given) == "from-env"
    assert credentials.admin_password(
        load_settings({"ANTENNA_HOME": str(tmp_path), "ANTENNA_SUPERSET_ADMIN_PASSWORD": "x"})
    ) == ("x", False)


def test_every_object_has_a_fixed_unique_uuid(bundle):
    ids = [d["uuid"] for p, d in bundle.items() if p != "metadata.yaml"]
    assert len(ids) == len(set(ids)) == len(bundle) - 1
    for value in ids:
        uuid.UUID(value)
    assert "type" not in bundle["metadata.yaml"]  # every importer accepts it then


def test_no_password_in_the_bundle(bundle):
    db = bundle[bundles.DATABASE_FILE]
    assert db["sqlalchemy_uri"].startswith("postgresql+psycopg2://antenna_reader:XXXXXXXXXX@")
    assert "password" not in db and db["allow_dml"] is False


def test_dashboards_charts_and_filters(bundle):
    specs = bundles.dashboards()
    assert set(specs) == SLUGS
    datasets = {d["uuid"]: d for p, d in bundle.items() if p.startswith("datasets/")}
    filters = {}
    for spec in specs.values():
        dash = bundle[spec.path]
        assert spec.chart_paths, spec.slug
        for node in dash["position"].values():
            if isinstance(node, dict) and node.get("type") == "CHART":
                assert isinstance(node["meta"]["chartId"], int)  # the importer needs one
        native = dash["metadata"]["native_filter_configuration"]
        filters[spec.slug] = {
            (f["filterType"], f["targets"][0].get("column", {}).get("name")) for f in native
        }
        for f in native:
            for target in f["targets"]:
                if target:
                    table = datasets[target["datasetUuid"]]
                    assert target["column"]["name"] in {c["column_name"] for c in table["columns"]}
    time = ("filter_time", None)
    assert filters == {
        "live-traffic": {
            time,
            ("filter_select", "antenna_id"),
            ("filter_select", "app"),
            ("filter_select", "email"),
        },
        "hourly-usage": {
            time,
            ("filter_select", "antenna_id"),
            ("filter_select", "app"),
            ("filter_select", "email"),
        },
        "quota": {time, ("filter_select", "email")},
        "daily-summary": {time},
    }
    assert bundle[specs["live-traffic"].path]["metadata"]["refresh_frequency"] == 30


def test_each_chart_query_context_matches_its_params(bundle):
    """Superset's data API, reports and thumbnails run the saved query_context: it must
    ask for what the chart shows (the browser builds its query from params)."""
    datasets = {d["uuid"]: d for p, d in bundle.items() if p.startswith("datasets/")}
    charts = {p: d for p, d in bundle.items() if p.startswith("charts/")}
    assert len(charts) == 16
    for path, chart in charts.items():
        params, qc = chart["params"], json.loads(chart["query_context"])
        dataset = datasets[chart["dataset_uuid"]]
        columns = {c["column_name"] for c in dataset["columns"]}
        metrics = {m["metric_name"] for m in dataset["metrics"]}
        assert chart["viz_type"] == params["viz_type"] == qc["form_data"]["viz_type"], path
        assert qc["form_data"] == params, path
        (query,) = qc["queries"]
        wanted = params.get("metrics") or ([params["metric"]] if "metric" in params else [])
        assert query["metrics"] == wanted and set(wanted) <= metrics, path
        names = [c if isinstance(c, str) else c["sqlExpression"] for c in query["columns"]]
        if params["viz_type"].startswith("echarts_timeseries"):
            assert names == [params["x_axis"], *params["groupby"]], path
        elif params.get("query_mode") == "raw":
            assert names == params["all_columns"], path
        else:
            assert names == params.get("groupby", []), path
        assert set(names) <= columns, path
        (time_filter,) = [f for f in query["filters"] if f["op"] == "TEMPORAL_RANGE"]
        assert time_filter["col"] == dataset["main_dttm_col"], path


def test_import_contents_aim_at_this_platform_as_the_reader(tmp_path):
    s = load_settings(
        {
            "ANTENNA_HOME": str(tmp_path),
            "ANTENNA_DATABASE_URL": "postgresql://owner:TopSecret@db.example:6432/wh?sslmode=require",
        }
    )
    contents = bundles.import_contents(s, ["quota"])
    assert "TopSecret" not in json.dumps(contents)
    db = yaml.safe_load(contents[bundles.DATABASE_FILE])
    assert db["sqlalchemy_uri"] == (
        "postgresql+psycopg2://antenna_reader:XXXXXXXXXX@db.example:6432/wh?sslmode=require"
    )
    assert set(contents) == {
        "metadata.yaml",
        bundles.DATABASE_FILE,
        "dashboards/quota.yaml",
        "datasets/antenna/quota_breaches.yaml",
        "charts/quota_breaches_per_hour.yaml",
        "charts/quota_who_went_over.yaml",
        "charts/quota_hours_over_last_24h.yaml",
    }
    everything = bundles.import_contents(s)
    assert set(everything) == set(bundles.read_bundle())
    with pytest.raises(KeyError, match="no dashboard"):
        bundles.import_contents(s, ["nope"])
