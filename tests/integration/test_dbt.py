"""Serving layer: real Postgres, real dbt, run through Dagster.

Known events are turned into the speed/batch tables the way those layers define them,
then `dbt build` runs as a Dagster materialization. Every serving view is compared
with numbers computed here, straight from the events.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from antenna_platform.warehouse import SEED_USERS, connect, device_id
from assets.dbt import serving_views
from resources import build_resources

pytestmark = pytest.mark.integration

VIEWS = (
    "antenna_traffic_hourly",
    "user_usage_hourly",
    "app_usage_hourly",
    "quota_breaches",
    "live_traffic_5min",
    "live_antenna_5min",
    "live_app_5min",
    "live_user_5min",
    "daily_summary",
)
APPS = ("SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK")
ANTENNAS = tuple(f"{n}{n}{n}{n}{n}{n}{n}{n}-aaaa-bbbb-cccc-dddddddddddd" for n in range(1, 4))
QUOTA = {f"{name}@gmail.com": quota for name, quota in SEED_USERS}
EMAIL = {device_id(i): f"{name}@gmail.com" for i, (name, _) in enumerate(SEED_USERS, start=1)}
NAME = {f"{name}@gmail.com": name for name, _ in SEED_USERS}
# Batch hours: three in a row across midnight, then one 30 h after the first.
HOURS = (
    datetime(2026, 11, 20, 22),
    datetime(2026, 11, 20, 23),
    datetime(2026, 11, 21, 0),
    datetime(2026, 11, 22, 4),
)
# fede has a 5000-byte quota: heavy traffic puts fede over in every hour above.
HEAVY = device_id(4)


@dataclass(frozen=True)
class Ev:
    ts: datetime  # naive UTC
    user: str  # device id
    antenna: str
    app: str
    bytes: int


def make_events(rng: random.Random, start: datetime, n: int, span_s: int) -> list[Ev]:
    events = []
    for _ in range(n):
        user = device_id(rng.randint(1, 8))
        events.append(
            Ev(
                start + timedelta(seconds=rng.randrange(span_s)),
                user,
                rng.choice(ANTENNAS),
                rng.choice(APPS),
                rng.randint(0, 30000) if user != HEAVY else rng.randint(3000, 9000),
            )
        )
    return events


def batch_rows(events: list[Ev]) -> tuple[list[tuple], list[tuple]]:
    """bytes_hourly and user_quota_limit rows, as the issue defines the batch layer."""
    sums: dict[tuple, int] = defaultdict(int)
    for e in events:
        hour = e.ts.replace(minute=0, second=0, microsecond=0)
        sums[(hour, e.antenna, "antenna_total_bytes")] += e.bytes
        sums[(hour, EMAIL[e.user], "email_total_bytes")] += e.bytes
        sums[(hour, e.app, "app_total_bytes")] += e.bytes
    bytes_hourly = [(h, i, v, t) for (h, i, t), v in sums.items()]
    quota = [
        (i, v, QUOTA[i], h)
        for (h, i, t), v in sums.items()
        if t == "email_total_bytes" and v > QUOTA[i]
    ]
    return bytes_hourly, quota


def speed_rows(events: list[Ev]) -> list[tuple]:
    """bytes rows (5-minute windows), as the speed layer defines them."""
    sums: dict[tuple, int] = defaultdict(int)
    for e in events:
        w = e.ts.replace(minute=e.ts.minute - e.ts.minute % 5, second=0, microsecond=0)
        sums[(w, e.antenna, "antenna_total_bytes")] += e.bytes
        sums[(w, e.user, "user_total_bytes")] += e.bytes
        sums[(w, e.app, "app_total_bytes")] += e.bytes
    return [(w, i, v, t) for (w, i, t), v in sums.items()]


@dataclass
class Dataset:
    batch_events: list[Ev]
    live_events: list[Ev]
    now: datetime


def load(settings, data: Dataset) -> None:
    hourly, quota = batch_rows(data.batch_events)
    with connect(settings) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                'insert into bytes_hourly ("timestamp", id, value, type) values (%s, %s, %s, %s)',
                hourly,
            )
            cur.executemany(
                'insert into user_quota_limit (email, usage, quota, "timestamp") '
                "values (%s, %s, %s, %s)",
                quota,
            )
            cur.executemany(
                'insert into bytes ("timestamp", id, value, type) values (%s, %s, %s, %s)',
                speed_rows(data.live_events),
            )
        conn.commit()


@pytest.fixture
def dataset() -> Dataset:
    rng = random.Random(5)
    batch_events = [e for h in HOURS for e in make_events(rng, h, 400, 3600)]
    # make sure fede is in every batch hour, over quota
    batch_events += [Ev(h + timedelta(minutes=7), HEAVY, ANTENNAS[0], "SKYPE", 6000) for h in HOURS]
    now = datetime.now(UTC).replace(tzinfo=None)
    # live traffic: the last ~2 hours, plus traffic 25-26 h old that the view must leave out
    live = make_events(rng, now - timedelta(hours=2), 300, 7000)
    live += make_events(rng, now - timedelta(hours=26), 50, 3600)
    return Dataset(batch_events, live, now)


def build(**kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [serving_views],
        resources={k: v for k, v in build_resources().items() if k in ("dbt", "postgres")},
        **kwargs,
    )


def rows(settings, query: str) -> list[tuple]:
    with connect(settings) as conn:
        return conn.execute(query).fetchall()


def failed_checks(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}


def test_dbt_build_serving_views_match_independent_numbers(platform, dataset):
    load(platform, dataset)
    result = build()
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 30 and failed_checks(result) == set()
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == set(VIEWS)  # staging models are inlined, not assets

    views = rows(
        platform,
        "select table_schema, table_name from information_schema.views "
        "where table_schema in ('serving', 'staging')",
    )
    assert sorted(views) == sorted(("serving", v) for v in VIEWS)

    ev = dataset.batch_events

    def hour(e: Ev) -> datetime:
        return e.ts.replace(minute=0, second=0, microsecond=0)

    # antenna_traffic_hourly
    per_antenna: dict[tuple, int] = defaultdict(int)
    per_hour: dict[datetime, int] = defaultdict(int)
    for e in ev:
        per_antenna[(hour(e), e.antenna)] += e.bytes
        per_hour[hour(e)] += e.bytes
    got = rows(
        platform,
        "select hour, antenna_id, bytes, hour_total_bytes, share "
        "from serving.antenna_traffic_hourly",
    )
    assert len(got) == len(per_antenna) == len(HOURS) * len(ANTENNAS)
    for h, a, b, total, share in got:
        assert b == per_antenna[(h, a)] and total == per_hour[h]
        assert share == pytest.approx(per_antenna[(h, a)] / per_hour[h])
    for h in HOURS:
        assert sum(r[4] for r in got if r[0] == h) == pytest.approx(1.0)

    # app_usage_hourly
    per_app: dict[tuple, int] = defaultdict(int)
    for e in ev:
        per_app[(hour(e), e.app)] += e.bytes
    got = rows(
        platform, "select hour, app, bytes, hour_total_bytes, share from serving.app_usage_hourly"
    )
    assert {(h, a): b for h, a, b, _, _ in got} == per_app
    for h, _app, b, total, share in got:
        assert total == per_hour[h] and share == pytest.approx(b / per_hour[h])

    # user_usage_hourly
    per_user: dict[tuple, int] = defaultdict(int)
    for e in ev:
        per_user[(hour(e), EMAIL[e.user])] += e.bytes
    got = rows(
        platform,
        "select hour, user_id, name, email, bytes, quota, quota_pct, over_quota, share "
        "from serving.user_usage_hourly",
    )
    assert {(r[0], r[3]): r[4] for r in got} == per_user
    for h, uid, name, email, b, quota, pct, over, share in got:
        assert EMAIL[uid] == email and name == NAME[email] and quota == QUOTA[email]
        assert pct == pytest.approx(100 * b / QUOTA[email])
        assert over is (b > QUOTA[email])
        assert share == pytest.approx(b / per_hour[h])  # every device here is a known user
    got = [r[:8] for r in got]
    breaches = sorted((h, email) for (h, email), b in per_user.items() if b > QUOTA[email])
    assert sum(1 for r in got if r[7]) == len(breaches) > len(HOURS)  # fede plus others

    # quota_breaches, with the 24-hour history counted from the breaches themselves
    got = rows(
        platform,
        "select hour, email, name, bytes, quota, over_by_bytes, over_by_pct, "
        "hours_over_last_24h from serving.quota_breaches order by hour, email",
    )
    assert [(r[0], r[1]) for r in got] == breaches
    for h, email, name, b, quota, over_by, over_pct, recent in got:
        assert name == NAME[email] and b == per_user[(h, email)] and quota == QUOTA[email]
        assert over_by == b - quota and over_pct == pytest.approx(100 * (b - quota) / quota)
        assert recent == sum(
            1 for (h2, e2) in breaches if e2 == email and h - timedelta(hours=23) <= h2 <= h
        )
    fede = [r[7] for r in got if r[1] == "fede@gmail.com"]
    assert fede == [1, 2, 3, 1]

    # daily_summary
    by_day: dict[date, list[Ev]] = defaultdict(list)
    for e in ev:
        by_day[e.ts.date()].append(e)
    got = rows(
        platform,
        "select day, total_bytes, active_users, active_antennas, breaches, "
        "users_over_quota, top_app, top_app_bytes from serving.daily_summary order by day",
    )
    assert [r[0] for r in got] == sorted(by_day)
    for day, total, users, antennas, n_breaches, n_users_over, top_app, top_bytes in got:
        day_ev = by_day[day]
        app_bytes: dict[str, int] = defaultdict(int)
        for e in day_ev:
            app_bytes[e.app] += e.bytes
        best = min(app_bytes.items(), key=lambda kv: (-kv[1], kv[0]))
        day_breaches = [b for b in breaches if b[0].date() == day]
        assert total == sum(e.bytes for e in day_ev)
        assert users == len({e.user for e in day_ev})
        assert antennas == len({e.antenna for e in day_ev})
        assert n_breaches == len(day_breaches)
        assert n_users_over == len({b[1] for b in day_breaches})
        assert (top_app, top_bytes) == best

    # live_traffic_5min: the last 24 h of windows, three totals side by side
    cutoff = dataset.now - timedelta(hours=24)
    windows: dict[datetime, list[Ev]] = defaultdict(list)
    for e in dataset.live_events:
        w = e.ts.replace(minute=e.ts.minute - e.ts.minute % 5, second=0, microsecond=0)
        if w >= cutoff:
            windows[w].append(e)
    got = rows(
        platform,
        "select window_start, window_end, antenna_total_bytes, user_total_bytes, "
        "app_total_bytes, active_antennas, active_users, active_apps "
        "from serving.live_traffic_5min order by window_start",
    )
    assert [r[0] for r in got] == sorted(windows)
    for w, end, a_total, u_total, app_total, n_ant, n_users, n_apps in got:
        total = sum(e.bytes for e in windows[w])
        assert end == w + timedelta(minutes=5)
        assert a_total == u_total == app_total == total
        assert n_ant == len({e.antenna for e in windows[w]})
        assert n_users == len({e.user for e in windows[w]})
        assert n_apps == len({e.app for e in windows[w]})

    # the live views per antenna, app and user: same windows, one row per entity
    per_entity: dict[str, dict[tuple, int]] = {"antenna": {}, "app": {}, "user": {}}
    for w, evs in windows.items():
        for e in evs:
            for kind, entity in (("antenna", e.antenna), ("app", e.app), ("user", e.user)):
                k = (w, entity)
                per_entity[kind][k] = per_entity[kind].get(k, 0) + e.bytes
    got = rows(
        platform,
        "select window_start, window_end, antenna_id, bytes from serving.live_antenna_5min",
    )
    assert {(w, a): b for w, _, a, b in got} == per_entity["antenna"]
    assert all(end == w + timedelta(minutes=5) for w, end, _, _ in got)
    got = rows(platform, "select window_start, app, bytes from serving.live_app_5min")
    assert {(w, a): b for w, a, b in got} == per_entity["app"]
    got = rows(
        platform, "select window_start, user_id, name, email, bytes from serving.live_user_5min"
    )
    assert {(w, u): b for w, u, _, _, b in got} == per_entity["user"]
    assert all(email == EMAIL[u] and name == NAME[email] for _, u, name, email, _ in got)

    # a second build replaces the views and changes nothing
    before = {v: sorted(rows(platform, f"select * from serving.{v}")) for v in VIEWS}  # noqa: S608
    assert build().success
    after = {v: sorted(rows(platform, f"select * from serving.{v}")) for v in VIEWS}  # noqa: S608
    assert after == before


def test_planted_unknown_email_fails_the_relationships_checks(platform, dataset):
    load(platform, dataset)
    with connect(platform) as conn:
        conn.execute(
            'insert into user_quota_limit (email, usage, quota, "timestamp") '
            "values ('ghost@example.com', 9000, 100, %s)",
            (HOURS[0],),
        )
        conn.commit()
    result = build(raise_on_error=False)
    assert not result.success  # dbt build exits non-zero on a failing test
    failed = failed_checks(result)
    assert failed == {"relationships_quota_breaches_email__email__source_antenna_user_metadata_"}
    passed = {e.check_name for e in result.get_asset_check_evaluations() if e.passed}
    assert any(name.startswith("relationships_user_usage_hourly_email") for name in passed)
    # the view still shows the breach, without a name, so operators can see what is wrong
    assert rows(
        platform,
        "select name, over_by_bytes from serving.quota_breaches where email = 'ghost@example.com'",
    ) == [(None, 8900)]


@pytest.mark.slow
def test_views_after_the_real_batch_assets(platform, spark):
    """Lake files -> the batch assets (Spark) -> dbt: the whole hourly path, in Dagster."""
    from antenna_platform import lake
    from antenna_platform.contract import Event
    from assets.batch import batch_hourly
    from assets.lake import device_events

    rng = random.Random(11)
    hours = (datetime(2026, 11, 21, 23), datetime(2026, 11, 22, 0))
    unknown = "99999999-0000-0000-0000-000000000001"  # not in user_metadata
    evs = [e for h in hours for e in make_events(rng, h, 300, 3600)]
    evs += [Ev(h + timedelta(minutes=1), HEAVY, ANTENNAS[1], "FACETIME", 5500) for h in hours]
    evs += [Ev(hours[0] + timedelta(minutes=2), unknown, ANTENNAS[2], "SKYPE", 4321)]

    def epoch(dt: datetime) -> int:
        return int(dt.replace(tzinfo=UTC).timestamp())

    with connect(platform) as conn:
        lake.write_and_register(
            platform.lake_dir,
            conn,
            [Event(epoch(e.ts), e.user, e.antenna, e.bytes, e.app) for e in evs],
            name="dbt-e2e",
        )
    with dg.instance_for_test() as instance:
        for h in hours:
            batch = dg.materialize(
                [device_events, batch_hourly],
                partition_key=f"{h:%Y-%m-%d-%H:00}",
                selection=["bytes_hourly", "user_quota_limit"],
                resources=build_resources(),
                instance=instance,
            )
            assert batch.success
        result = build(instance=instance)
    assert result.success and failed_checks(result) == set()

    known = [e for e in evs if e.user in EMAIL]
    per_user: dict[tuple, int] = defaultdict(int)
    for e in known:
        per_user[(e.ts.replace(minute=0, second=0, microsecond=0), EMAIL[e.user])] += e.bytes
    got = rows(platform, "select hour, email, bytes, over_quota from serving.user_usage_hourly")
    assert {(h, m): b for h, m, b, _ in got} == per_user
    assert {(h, m) for h, m, _, over in got if over} == {
        k for k, b in per_user.items() if b > QUOTA[k[1]]
    }
    fede = rows(
        platform,
        "select hour, hours_over_last_24h from serving.quota_breaches "
        "where email = 'fede@gmail.com' order by hour",
    )
    assert fede == [(hours[0], 1), (hours[1], 2)]
    summary = rows(
        platform, "select day, total_bytes, active_users from serving.daily_summary order by day"
    )
    assert summary == [
        (
            h.date(),
            sum(e.bytes for e in evs if e.ts.date() == h.date()),  # unknown device included
            len({e.user for e in known if e.ts.date() == h.date()}),
        )
        for h in hours
    ]
