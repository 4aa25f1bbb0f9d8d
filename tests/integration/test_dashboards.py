"""Dashboards: a real Superset (its own venv, gunicorn on a free port) over the test
Postgres, reading through the read-only role, checked through its API and in Chromium.

One Superset for the module (set up, imported and started once, about 30 s). Known rows
go into the batch and speed tables for hours relative to now, dbt builds the views in a
real Dagster run, and every chart's data is compared with numbers computed here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import requests
import yaml
from psycopg import sql

from antenna_platform import services
from antenna_platform.config import READER_ROLE, Settings, load_settings, with_database
from antenna_platform.dashboards import bundles, credentials, server
from antenna_platform.warehouse import provision
from tests.integration.test_dbt import (
    ANTENNAS,
    EMAIL,
    HEAVY,
    NAME,
    QUOTA,
    Dataset,
    Ev,
    load,
    make_events,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ANTENNA_TEST_ARTIFACTS") or ROOT / "test-artifacts")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_PASSWORD = "Admin-" + uuid.uuid4().hex[:12]


@dataclass
class Dashboards:
    settings: Settings
    batch: list[Ev]
    live: list[Ev]
    now: datetime  # naive UTC, when the rows were made

    @property
    def url(self) -> str:
        return self.settings.superset_url


def hour_of(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def window_of(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 5, second=0, microsecond=0)


def make_data(now: datetime) -> tuple[list[Ev], list[Ev]]:
    """Five closed hours before now and one 30 h back; live traffic in the last 2 h and
    26 h back (outside the live views' 24 hours)."""
    rng = random.Random(17)
    top = hour_of(now)
    hours = [top - timedelta(hours=k) for k in (1, 2, 3, 4, 5, 30)]
    batch = [e for h in hours for e in make_events(rng, h, 250, 3600)]
    batch += [Ev(h + timedelta(minutes=9), HEAVY, ANTENNAS[2], "FACEBOOK", 7000) for h in hours]
    live = make_events(rng, now - timedelta(hours=2), 400, 7000)
    live += make_events(rng, now - timedelta(hours=26), 60, 3000)
    return batch, live


@pytest.fixture(scope="module")
def dashboards(service_env, tmp_path_factory) -> Dashboards:
    """A provisioned database with known rows, dbt views built, Superset serving them."""
    if not server.installed():
        pytest.fail(f"Superset is not installed: {server.INSTALL_HINT}")
    admin_url = service_env["ANTENNA_DATABASE_URL"]
    db = f"dash_{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("superset_home")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    env = {
        "ANTENNA_HOME": str(home),
        "ANTENNA_DATABASE_URL": with_database(admin_url, db),
        "KAFKA_BOOTSTRAP_SERVERS": service_env["KAFKA_BOOTSTRAP_SERVERS"],
        "DAGSTER_HOME": str(home / "dagster"),
        "ANTENNA_SUPERSET_PORT": str(services.free_port()),
        "ANTENNA_SUPERSET_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings()
        try:
            provision(settings)  # tables, users and the read-only role, before dbt
            now = datetime.now(UTC).replace(tzinfo=None)
            batch, live = make_data(now)
            load(settings, Dataset(batch, live, now))
            from assets.dbt import serving_views
            from resources import build_resources

            built = dg.materialize(
                [serving_views],
                # the Definitions' resources: their EnvVars read this module's environment
                resources={k: v for k, v in build_resources().items() if k in ("dbt", "postgres")},
            )
            assert built.success
            server.start(settings)
            yield Dashboards(settings, batch, live, now)
        finally:
            server.stop(settings)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db))
                )


def api(d: Dashboards) -> requests.Session:
    """A session logged in as the admin through Superset's JWT login."""
    s = requests.Session()
    res = s.post(
        f"{d.url}/api/v1/security/login",
        json={"username": "admin", "password": ADMIN_PASSWORD, "provider": "db", "refresh": False},
        timeout=60,
    )
    assert res.status_code == 200, res.text
    s.headers["Authorization"] = f"Bearer {res.json()['access_token']}"
    return s


def listing(s: requests.Session, d: Dashboards, kind: str) -> list[dict]:
    q = json.dumps({"page_size": 100})
    res = s.get(f"{d.url}/api/v1/{kind}/", params={"q": q}, timeout=60)
    assert res.status_code == 200, res.text
    return res.json()["result"]


def chart_ids(s: requests.Session, d: Dashboards) -> dict[str, int]:
    """Chart id by the file name of its YAML (uuid -> id through the API)."""
    by_uuid = {
        c["uuid"]: c["id"]
        for c in s.get(
            f"{d.url}/api/v1/chart/",
            params={"q": json.dumps({"page_size": 100, "columns": ["id", "uuid"]})},
            timeout=60,
        ).json()["result"]
    }
    out = {}
    for path, text in bundles.read_bundle().items():
        if path.startswith("charts/"):
            out[Path(path).stem] = by_uuid[yaml.safe_load(text)["uuid"]]
    return out


def test_import_is_idempotent_and_updates_an_edited_chart(dashboards):
    d = dashboards
    s = api(d)
    before = {
        k: sorted(o["id"] for o in listing(s, d, k)) for k in ("dashboard", "chart", "dataset")
    }
    assert len(before["dashboard"]) == 4 and len(before["chart"]) == 16
    assert len(before["dataset"]) == 8
    assert [db["database_name"] for db in listing(s, d, "database")] == ["antenna"]

    server.setup(d.settings)  # the same bundle again
    again = {
        k: sorted(o["id"] for o in listing(s, d, k)) for k in ("dashboard", "chart", "dataset")
    }
    assert again == before  # nothing duplicated, same ids

    edited = bundles.read_bundle()
    chart = yaml.safe_load(edited["charts/quota_who_went_over.yaml"])
    chart["slice_name"] = "Over quota (edited in git)"
    edited["charts/quota_who_went_over.yaml"] = yaml.safe_dump(chart, sort_keys=False)
    cid = chart_ids(s, d)["quota_who_went_over"]
    try:
        server.setup(d.settings, ["quota"], bundle=edited)
        got = s.get(f"{d.url}/api/v1/chart/{cid}", timeout=60).json()["result"]
        assert got["slice_name"] == "Over quota (edited in git)"
        assert sorted(c["id"] for c in listing(s, d, "chart")) == before["chart"]
    finally:
        # back to the repository's bundle, through the Dagster asset this time
        from assets.dashboards import DASHBOARDS
        from resources import build_resources

        result = dg.materialize(
            DASHBOARDS,
            selection=["dashboards/quota"],
            resources={"postgres": build_resources()["postgres"]},
        )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["url"].value == f"{d.url}/superset/dashboard/quota/"
    got = s.get(f"{d.url}/api/v1/chart/{cid}", timeout=60).json()["result"]
    assert got["slice_name"] == "Who went over, and by how much"


def test_a_chart_edited_in_superset_exports_back_into_the_bundle(dashboards, tmp_path):
    """The round trip of the README: edit in the UI (here its API), export, merge, re-import."""
    from antenna_platform.dashboards.export import fetch_export, merge_export

    d = dashboards
    s = api(d)
    csrf = s.get(f"{d.url}/api/v1/security/csrf_token/", timeout=60).json()["result"]
    s.headers.update({"X-CSRFToken": csrf, "Referer": d.url})
    cid = chart_ids(s, d)["quota_breaches_per_hour"]
    bundle_dir = tmp_path / "assets"
    shutil.copytree(bundles.BUNDLE_DIR, bundle_dir)
    before = bundles.read_bundle(bundle_dir)
    try:
        res = s.put(f"{d.url}/api/v1/chart/{cid}", json={"slice_name": "Breaches (from the UI)"})
        assert res.status_code == 200, res.text
        merged = merge_export(fetch_export(d.settings, ["quota"]), bundle_dir)
        after = bundles.read_bundle(bundle_dir)
        assert merged["added"] == []  # every exported object was already in the bundle
        assert "charts/quota_breaches_per_hour.yaml" in merged["replaced"]
        assert set(after) == set(before)
        assert after[bundles.DATABASE_FILE] == before[bundles.DATABASE_FILE]  # no address, no pw
        chart = yaml.safe_load(after["charts/quota_breaches_per_hour.yaml"])
        assert chart["slice_name"] == "Breaches (from the UI)"
        assert chart["query_context"]  # what the data API and reports run
        server.setup(d.settings, ["quota"], bundle=after)  # the exported YAML imports as is
        res = s.get(f"{d.url}/api/v1/chart/{cid}/data/", params={"force": "true"}, timeout=120)
        assert res.status_code == 200
    finally:
        server.setup(d.settings, ["quota"])  # the repository's bundle again
    got = s.get(f"{d.url}/api/v1/chart/{cid}", timeout=60).json()["result"]
    assert got["slice_name"] == "Breaches per hour"


def ms(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)


def expected_charts(d: Dashboards) -> dict[str, object]:
    """What every chart must show, computed from the rows inserted, not from the views."""
    live = [e for e in d.live if window_of(e.ts) >= d.now - timedelta(hours=24)]
    by = defaultdict(lambda: defaultdict(int))
    for e in live:
        w = window_of(e.ts)
        by["live_antenna"][(w, e.antenna)] += e.bytes
        by["live_app"][(w, e.app)] += e.bytes
        by["live_user"][(w, EMAIL[e.user])] += e.bytes
        by["live_user_total"][EMAIL[e.user]] += e.bytes
    for e in d.batch:
        h = hour_of(e.ts)
        by["antenna"][(h, e.antenna)] += e.bytes
        by["app"][(h, e.app)] += e.bytes
        by["user"][(h, EMAIL[e.user])] += e.bytes
        by["user_total"][EMAIL[e.user]] += e.bytes
        by["hour"][h] += e.bytes
        by["day"][h.date()] += e.bytes
        by["day_apps"][(h.date(), e.app)] += e.bytes
    breaches = sorted((h, m) for (h, m), b in by["user"].items() if b > QUOTA[m])
    recent = hour_of(d.now) - timedelta(hours=23)
    per_hour = defaultdict(int)
    last_24 = defaultdict(int)
    for h, m in breaches:
        per_hour[h] += 1
        if h >= recent:
            last_24[m] += 1
    days = {}
    for day, total in by["day"].items():
        apps = {a: b for (dd, a), b in by["day_apps"].items() if dd == day}
        top = min(apps.items(), key=lambda kv: (-kv[1], kv[0]))
        users = {EMAIL[e.user] for e in d.batch if e.ts.date() == day}
        day_breaches = [(h, m) for h, m in breaches if h.date() == day]
        days[day] = (
            total,
            len(users),
            len({e.antenna for e in d.batch if e.ts.date() == day}),
            len(day_breaches),
            len({m for _, m in day_breaches}),
            *top,
        )

    def top10(totals):
        return sorted(((m, NAME[m], b) for m, b in totals.items()), key=lambda r: -r[2])[:10]

    return {
        "live_bytes_total": sum(e.bytes for e in live),
        "live_bytes_by_antenna": dict(by["live_antenna"]),
        "live_bytes_by_app": dict(by["live_app"]),
        "live_bytes_by_user": dict(by["live_user"]),
        "live_top_users": top10(by["live_user_total"]),
        "hourly_bytes_by_antenna": dict(by["antenna"]),
        "hourly_bytes_by_app": dict(by["app"]),
        "hourly_bytes_by_user": dict(by["user"]),
        "hourly_top_users": top10(by["user_total"]),
        "hourly_user_share": {
            (h, m): (b, b / sum(v for (h2, _), v in by["user"].items() if h2 == h))
            for (h, m), b in by["user"].items()
        },
        "quota_breaches_per_hour": dict(per_hour),
        "quota_who_went_over": [
            (
                h,
                m,
                by["user"][(h, m)] - QUOTA[m],
                sum(1 for h2, m2 in breaches if m2 == m and h - timedelta(hours=23) <= h2 <= h),
            )
            for h, m in sorted(
                breaches, key=lambda b: (b[0], by["user"][b] - QUOTA[b[1]]), reverse=True
            )
        ],
        "quota_hours_over_last_24h": dict(last_24),
        "daily_bytes": dict(by["day"]),
        "daily_users_and_breaches": {day: (v[1], v[3]) for day, v in days.items()},
        "daily_days": days,
    }


def got_chart(name: str, rows: list[dict]) -> object:
    """The chart's rows from the API in the shape of `expected_charts`."""
    if name == "live_bytes_total":
        return rows[0]["sum_bytes"]
    if name in ("live_bytes_by_antenna", "live_bytes_by_app", "live_bytes_by_user"):
        col = {"antenna": "antenna_id", "app": "app", "user": "email"}[name.rsplit("_", 1)[1]]
        return {(ms(r["window_start"]), r[col]): r["sum_bytes"] for r in rows}
    if name in ("hourly_bytes_by_antenna", "hourly_bytes_by_app", "hourly_bytes_by_user"):
        col = {"antenna": "antenna_id", "app": "app", "user": "email"}[name.rsplit("_", 1)[1]]
        return {(ms(r["hour"]), r[col]): r["sum_bytes"] for r in rows}
    if name in ("live_top_users", "hourly_top_users"):
        return [(r["email"], r["name"], r["sum_bytes"]) for r in rows]
    if name == "hourly_user_share":
        return {(ms(r["hour"]), r["email"]): (r["bytes"], r["share"]) for r in rows}
    if name == "quota_breaches_per_hour":
        return {ms(r["hour"]): r["breach_count"] for r in rows}
    if name == "quota_who_went_over":
        return [
            (ms(r["hour"]), r["email"], r["over_by_bytes"], r["hours_over_last_24h"]) for r in rows
        ]
    if name == "quota_hours_over_last_24h":
        return {r["email"]: r["breach_count"] for r in rows}
    if name == "daily_bytes":
        return {ms(r["day"]).date(): r["day_bytes"] for r in rows}
    if name == "daily_users_and_breaches":
        return {ms(r["day"]).date(): (r["day_users"], r["day_breaches"]) for r in rows}
    if name == "daily_days":
        keys = (
            "total_bytes",
            "active_users",
            "active_antennas",
            "breaches",
            "users_over_quota",
            "top_app",
            "top_app_bytes",
        )
        return {ms(r["day"]).date(): tuple(r[k] for k in keys) for r in rows}
    raise AssertionError(f"no expectation for chart {name}")


def test_every_chart_returns_the_independently_computed_numbers(dashboards):
    """Each chart's saved query (what reports and the data API run) through Superset,
    the read-only role and the dbt views, against sums made here from the rows."""
    d = dashboards
    s = api(d)
    expected = expected_charts(d)
    ids = chart_ids(s, d)
    assert set(ids) == set(expected)
    assert len(expected["quota_hours_over_last_24h"]) >= 1 and len(expected["daily_days"]) >= 1
    for name, cid in sorted(ids.items()):
        res = s.get(f"{d.url}/api/v1/chart/{cid}/data/", params={"force": "true"}, timeout=120)
        assert res.status_code == 200, (name, res.text[:300])
        (result,) = res.json()["result"]
        got = got_chart(name, result["data"])
        want = expected[name]
        if name == "hourly_user_share":
            assert got.keys() == want.keys(), name
            for k, (b, share) in want.items():
                assert got[k][0] == b and got[k][1] == pytest.approx(share), (name, k)
        else:
            assert got == want, name


def test_anonymous_access_is_refused(dashboards):
    d = dashboards
    anon = requests.Session()
    assert anon.get(f"{d.url}/api/v1/chart/", timeout=60).status_code == 401
    assert anon.get(f"{d.url}/api/v1/dashboard/quota", timeout=60).status_code == 401
    res = anon.get(f"{d.url}/superset/dashboard/quota/", allow_redirects=False, timeout=60)
    assert res.status_code in (302, 303) and "/login" in res.headers["Location"]
    body = {"datasource": {"id": 1, "type": "table"}, "queries": [{"metrics": ["count"]}]}
    assert anon.post(f"{d.url}/api/v1/chart/data", json=body, timeout=60).status_code == 401


def test_the_reader_role_reads_serving_only_and_cannot_write(dashboards):
    d = dashboards
    url = d.settings.database_url.replace(
        "postgresql://postgres@",
        f"postgresql://{READER_ROLE}:" + credentials.reader_password(d.settings) + "@",
    )
    with psycopg.connect(url, autocommit=True) as conn:
        # views dbt created after the grants: default privileges cover them
        assert conn.execute("select count(*) from serving.quota_breaches").fetchone()[0] > 0
        denied = [
            "select * from public.user_metadata",
            "select * from public.bytes",
            "insert into public.user_metadata values ('x', 'x', 'x@example.com', 1)",
            "update public.user_metadata set quota = 0",
            "delete from public.bytes_hourly",
            "create table serving.planted (x int)",
            "create view serving.planted as select 1 as x",
            "create table public.planted (x int)",
            "create schema planted",
        ]
        for stmt in denied:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    log = (credentials.superset_home(d.settings) / "superset.log").read_text()
    assert credentials.reader_password(d.settings) not in log and ADMIN_PASSWORD not in log


def chromium_path() -> str:
    path = os.environ.get("ANTENNA_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Chromium not found: run `make browser` (scripts/ensure_chromium.sh)")
    return path


RENDERED_JS = """
() => {
  const charts = [...document.querySelectorAll('[data-test-chart-id]')];
  if (charts.length === 0) return null;
  const state = charts.map(c => {
    const viz = c.getAttribute('data-test-viz-type');
    const error = c.querySelector('[role=alert], .ant-alert-error, [data-test=error-alert]');
    let drawn = false;
    if (viz.startsWith('echarts')) drawn = !!c.querySelector('canvas, svg');
    else if (viz === 'table') drawn = c.querySelectorAll('table tbody tr').length > 0;
    else if (viz.startsWith('big_number'))
      drawn = !!(c.querySelector('.header-line')?.textContent.trim());
    const id = c.getAttribute('data-test-chart-id');
    return {id, viz, drawn, error: error ? error.textContent : null};
  });
  return state.every(s => s.drawn || s.error) ? state : null;
}
"""


def test_every_dashboard_renders_in_chromium(dashboards):
    """Log in as a person would, open each dashboard, every chart drawn, no error box."""
    from playwright.sync_api import sync_playwright

    d = dashboards
    specs = bundles.dashboards()
    shots = ARTIFACTS / "dashboards"
    shots.mkdir(parents=True, exist_ok=True)
    expected_top = expected_charts(d)["live_top_users"][0][0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{d.url}/login/", timeout=120_000)
            page.fill("#username", "admin")
            page.fill("#password", ADMIN_PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url("**/superset/welcome/**", timeout=120_000)
            for slug, spec in specs.items():
                page.goto(server.dashboard_url(d.settings, slug), timeout=120_000)
                state = page.wait_for_function(RENDERED_JS, timeout=120_000).json_value()
                page.wait_for_load_state("networkidle", timeout=60_000)
                path = shots / f"{slug}.png"
                page.screenshot(path=str(path), full_page=True)
                assert len(state) == len(spec.chart_paths), (slug, state)
                assert [s for s in state if s["error"] or not s["drawn"]] == [], (slug, state)
                if slug == "live-traffic":  # the table shows the busiest user first
                    top = page.locator("[data-test-viz-type=table] table tbody tr").first
                    assert expected_top in top.inner_text()
                if os.environ.get("ANTENNA_UPDATE_SCREENSHOTS") == "1":
                    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, ROOT / "docs" / "img" / f"dashboard-{slug}.png")
        finally:
            browser.close()
