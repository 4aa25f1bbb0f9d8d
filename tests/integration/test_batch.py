"""The batch layer end to end: real lake files, real Postgres, local Spark, Dagster runs.

Expected rows are computed here in plain Python from the events the test wrote.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from antenna_platform import lake
from antenna_platform.config import Settings
from antenna_platform.contract import Event
from antenna_platform.warehouse import connect, device_id, load_user_metadata
from assets.batch import batch_hourly
from assets.lake import device_events
from resources import build_resources

pytestmark = pytest.mark.integration

H1 = datetime(2026, 11, 20, 10, tzinfo=UTC)
H2 = datetime(2026, 11, 20, 11, tzinfo=UTC)  # stays empty
H3 = datetime(2026, 11, 20, 12, tzinfo=UTC)
KEYS = [f"{h:%Y-%m-%d-%H:00}" for h in (H1, H2, H3)]
UNKNOWN = "99999999-0000-0000-0000-000000000001"
ANTENNAS = [f"11111111-1111-1111-1111-{i:012d}" for i in range(4)]
APPS = ["SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK"]
FEDE = device_id(4)  # quota 5000


def resources() -> dict[str, object]:
    """The Definitions' resources: EnvVar fields read the test's environment at run time."""
    return build_resources()


def make_events(hour: datetime, seed: int, n: int = 400) -> list[Event]:
    rnd = random.Random(seed)
    base = int(hour.timestamp())
    evs = [
        Event(
            base + rnd.randrange(3600),
            device_id(rnd.choice([1, 2, 3, 5, 6, 7, 12])),
            rnd.choice(ANTENNAS),
            rnd.randrange(0, 10000),
            rnd.choice(APPS),
        )
        for _ in range(n)
    ]
    # boundary seconds, a device unknown to user_metadata
    evs.append(Event(base, UNKNOWN, ANTENNAS[0], 777, "SKYPE"))
    evs.append(Event(base + 3599, device_id(1), ANTENNAS[1], 0, "TELEGRAM"))
    return evs


def fede_events(hour: datetime, total: int) -> list[Event]:
    base = int(hour.timestamp())
    return [
        Event(base + 10, FEDE, ANTENNAS[2], total - 1000, "FACEBOOK"),
        Event(base + 20, FEDE, ANTENNAS[3], 1000, "SKYPE"),
    ]


def expected(events: list[Event], users: dict[str, tuple[str, str, int]]):
    """(bytes_hourly rows, user_quota_limit rows) as plain Python computes them."""
    sums: dict[tuple, int] = defaultdict(int)
    for e in events:
        hour = datetime.fromtimestamp(e.ts - e.ts % 3600, UTC).replace(tzinfo=None)
        sums[(hour, e.antenna_id, "antenna_total_bytes")] += e.bytes
        sums[(hour, e.app, "app_total_bytes")] += e.bytes
        if e.id in users:
            sums[(hour, users[e.id][1], "email_total_bytes")] += e.bytes
    by_email = {v[1]: v[2] for v in users.values()}
    rows = sorted((h, i, v, t) for (h, i, t), v in sums.items())
    quota = sorted(
        (i, v, by_email[i], h)
        for (h, i, t), v in sums.items()
        if t == "email_total_bytes" and v > by_email[i]
    )
    return rows, quota


def table_rows(settings: Settings):
    with connect(settings) as conn:
        b = conn.execute(
            'select "timestamp", id, value, type from bytes_hourly order by 1, 2, 3, 4'
        ).fetchall()
        q = conn.execute(
            'select email, usage, quota, "timestamp" from user_quota_limit order by 1, 2, 3, 4'
        ).fetchall()
    return sorted(b), sorted(q)


def materialize_range_cmd(keys: list[str] = KEYS) -> list[str]:
    """The documented CLI backfill of a range of hours (one run), for subprocess tests."""
    return [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "antenna_platform.definitions",
        "--select",
        "bytes_hourly,user_quota_limit",
        "--partition-range",
        f"{keys[0]}...{keys[-1]}",
    ]


def write_hours(settings: Settings) -> list[Event]:
    """Three hours: H1 and H3 in several files each, H2 empty. Returns all events."""
    h1 = make_events(H1, 1) + fede_events(H1, 5000)  # fede exactly at quota: not over
    h3 = make_events(H3, 3) + fede_events(H3, 5001)  # one byte over
    with connect(settings) as conn:
        for i, chunk in enumerate((h1[:200], h1[200:] + h3[:100], h3[100:])):
            lake.write_and_register(settings.lake_dir, conn, chunk, name=f"p0-{i}")
    return h1 + h3


def materialize(instance: dg.DagsterInstance, key: str | None = None, tags=None, ok=True):
    result = dg.materialize(
        [device_events, batch_hourly],
        partition_key=key,
        tags=tags,
        resources=resources(),
        instance=instance,
        selection=["bytes_hourly", "user_quota_limit"],
        raise_on_error=False,
    )
    assert result.success is ok
    return result


def test_hours_exact_rerun_identical_and_empty_hour(platform, spark):
    events = write_hours(platform)
    users = load_user_metadata(platform)
    want_bytes, want_quota = expected(events, users)
    assert any(q[0] == "fede@gmail.com" for q in want_quota)  # the H3 one
    # A stale row in the empty hour must disappear.
    with connect(platform) as conn:
        conn.execute(
            "insert into bytes_hourly values (%s, 'stale', 1, 'app_total_bytes')",
            (H2.replace(tzinfo=None),),
        )
    instance = dg.DagsterInstance.ephemeral()
    for key in KEYS:
        result = materialize(instance, key)
        evals = result.get_asset_check_evaluations()
        assert len(evals) == 3 and all(e.passed for e in evals)
    got_bytes, got_quota = table_rows(platform)
    assert got_bytes == want_bytes
    assert got_quota == want_quota
    fede = [q for q in got_quota if q[0] == "fede@gmail.com"]
    assert [(q[1], q[2], q[3]) for q in fede] == [(5001, 5000, H3.replace(tzinfo=None))]

    # Metadata of the H1 run.
    mats = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("bytes_hourly"), asset_partitions=[KEYS[0]]),
        limit=1,
    ).records
    meta = mats[0].asset_materialization.metadata
    h1_events = [e for e in events if e.ts < int(H2.timestamp())]
    assert meta["events"].value == len(h1_events)
    assert meta["total_bytes"].value == sum(e.bytes for e in h1_events)
    assert meta["unknown_device_events"].value == 1
    assert "| antenna | bytes |" in meta["top_antennas"].value

    # Rerun of every hour: identical rows.
    for key in KEYS:
        materialize(instance, key)
    assert table_rows(platform) == (got_bytes, got_quota)


def test_single_run_backfill_equals_single_hours(platform, spark):
    events = write_hours(platform)
    instance = dg.DagsterInstance.ephemeral()
    for key in KEYS:
        materialize(instance, key)
    singles = table_rows(platform)
    with connect(platform) as conn:
        conn.execute("delete from bytes_hourly")
        conn.execute("delete from user_quota_limit")
    result = materialize(
        instance,
        tags={
            "dagster/asset_partition_range_start": KEYS[0],
            "dagster/asset_partition_range_end": KEYS[-1],
        },
    )
    # one run, one step, three partitions materialized per asset
    mats = result.asset_materializations_for_node("batch_hourly")
    assert sorted({m.partition for m in mats}) == KEYS
    assert table_rows(platform) == singles
    # each hour's materialization carries that hour's own numbers, computed here from events
    want_bytes, want_quota = expected(events, load_user_metadata(platform))
    per = {(m.asset_key.to_user_string(), m.partition): m.metadata for m in mats}
    for key, hour in zip(KEYS, (H1, H2, H3), strict=True):
        h = hour.replace(tzinfo=None)
        evs = [e for e in events if hour.timestamp() <= e.ts < hour.timestamp() + 3600]
        meta = per[("bytes_hourly", key)]
        assert meta["events"].value == len(evs)
        assert meta["total_bytes"].value == sum(e.bytes for e in evs)
        assert meta["dagster/row_count"].value == sum(1 for r in want_bytes if r[0] == h)
        assert meta["unknown_device_events"].value == sum(e.id == UNKNOWN for e in evs)
        assert meta["run_hours"].value == 3  # the run's own figure, under its own name
        quota = per[("user_quota_limit", key)]
        assert quota["dagster/row_count"].value == sum(1 for q in want_quota if q[3] == h)
    assert len({per[("bytes_hourly", k)]["total_bytes"].value for k in KEYS}) == 3
    assert per[("user_quota_limit", KEYS[1])]["users_over_quota"].value == 0  # the empty hour


def plant(
    settings: Settings, hour: datetime, rows: list[tuple[int, int]], name: str, apps=None
) -> None:
    """A manifest-registered file with (epoch seconds, bytes) rows, written bypassing
    the contract (as a buggy or foreign writer would)."""
    n = len(rows)
    table = pa.table(
        {
            "timestamp": pa.array([t * 1_000_000 for t, _ in rows], pa.int64()).cast(
                lake.SCHEMA.field("timestamp").type
            ),
            "id": [device_id(1)] * n,
            "antenna_id": [ANTENNAS[0]] * n,
            "bytes": pa.array([b for _, b in rows], pa.int64()),
            "app": pa.array(apps or ["SKYPE"] * n, pa.string()),
            "kafka_partition": pa.array([None] * n, pa.int32()),
            "kafka_offset": pa.array([None] * n, pa.int64()),
        },
        schema=lake.SCHEMA,
    )
    rel = f"{lake.hour_relpath(int(hour.timestamp()))}/{name}.parquet"
    with connect(settings, autocommit=True) as conn:
        lake.add_files(settings.lake_dir, conn, [(rel, table)])


# planted bad row, what the example shows, the Pandera check that must fail
BAD_ROWS = {
    "negative_bytes": ((5, -50, "SKYPE"), "-50", "bytes: greater_than_or_equal_to(0)"),
    "outside_hour": ((3600 + 5, 50, "SKYPE"), "11:00:05", "timestamp_inside_hour"),
    "null_app": ((7, 50, None), "'app': None", "app: not_nullable"),
}


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_check_fails_on_planted_bad_file_and_rows_are_kept(platform, spark, bad):
    write_hours(platform)
    instance = dg.DagsterInstance.ephemeral()
    materialize(instance, KEYS[0])
    before = table_rows(platform)
    base = int(H1.timestamp())
    (offset, value, app), shown, pandera_check = BAD_ROWS[bad]
    plant(platform, H1, [(base + offset, value), (base + 6, 10)], f"bad-{bad}", [app, "SKYPE"])
    result = materialize(instance, KEYS[0], ok=False)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    check = evals["hour_events_valid"]
    assert not check.passed
    assert check.metadata["pandera_passed"].value is False
    assert check.metadata["failed_checks"].value == pandera_check  # only this one failed
    assert check.metadata["failing_rows"].value == 1
    assert shown in check.metadata["example"].value
    assert table_rows(platform) == before
    # the same data fails the same way: a failed blocking check is not retried
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_reported_hours_run_at_once_and_late_data_reruns_a_computed_hour(platform, spark):
    from schedules.hourly import reported_hours_sensor

    events = write_hours(platform)
    instance = dg.DagsterInstance.ephemeral()

    def report(key: str) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="device_events", partition=key)
        )

    def tick(cursor: str | None) -> dg.SensorResult:
        return reported_hours_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))

    for key in KEYS:
        report(key)  # the history the stream reported before the sensor started
    first = tick(None)
    assert not first.run_requests and first.cursor  # starts from now, not the history
    # The stream closes H1: it runs at once (the sooner batch).
    report(KEYS[0])
    closed = tick(first.cursor)
    assert [(r.partition_key, r.tags["antenna/trigger"]) for r in closed.run_requests] == [
        (KEYS[0], "closed")
    ]
    materialize(instance, KEYS[0])
    assert not tick(closed.cursor).run_requests

    # Late events land in H1 (computed) and H3 (never computed): the stream reports both.
    late = [Event(int(H1.timestamp()) + 1800, device_id(2), ANTENNAS[1], 4242, "SKYPE")]
    with connect(platform) as conn:
        lake.write_and_register(platform.lake_dir, conn, late, name="p1-late")
    report(KEYS[0])
    report(KEYS[0])
    report(KEYS[2])
    result = tick(closed.cursor)
    assert [(r.partition_key, r.tags["antenna/trigger"]) for r in result.run_requests] == [
        (KEYS[0], "late"),
        (KEYS[2], "closed"),
    ]
    # The same cursor twice gives the same run keys (Dagster dedupes them); the next, nothing.
    assert [r.run_key for r in tick(closed.cursor).run_requests] == [
        r.run_key for r in result.run_requests
    ]
    assert not tick(result.cursor).run_requests

    materialize(instance, KEYS[0])
    want_bytes, _ = expected(events + late, load_user_metadata(platform))
    got_bytes, _ = table_rows(platform)
    h1 = H1.replace(tzinfo=None)
    assert [r for r in got_bytes if r[0] == h1] == [r for r in want_bytes if r[0] == h1]
    assert not tick(result.cursor).run_requests


def test_late_files_landing_during_the_first_run_of_an_hour_are_not_skipped(
    platform, spark, monkeypatch
):
    """Issue 10 item 6: the hour is reported again while its first batch run is under way
    (that run may have read the manifest before the late file): the sensor keeps the
    report until the run ends, then reruns the hour."""
    import threading

    from schedules.hourly import reported_hours_sensor

    events = write_hours(platform)
    with dg.instance_for_test() as instance:
        first = reported_hours_sensor(dg.build_sensor_context(instance=instance))
        # the first run sleeps inside its write transaction, after reading the manifest
        monkeypatch.setenv("ANTENNA_FAULT_SLEEP_IN_WRITE_S", "6")
        done: list[bool] = []
        runner = threading.Thread(
            target=lambda: done.append(materialize(instance, KEYS[0]).success), daemon=True
        )
        runner.start()
        deadline = time.monotonic() + 120
        while not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.1)
        late = [Event(int(H1.timestamp()) + 60, device_id(3), ANTENNAS[2], 777, "TELEGRAM")]
        with connect(platform) as conn:
            lake.write_and_register(platform.lake_dir, conn, late, name="p1-during")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="device_events", partition=KEYS[0])
        )
        during = reported_hours_sensor(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert runner.is_alive(), "the run ended before the check: raise its sleep"
        assert not during.run_requests  # a run of H1 is under way: wait for it
        runner.join(timeout=300)
        monkeypatch.delenv("ANTENNA_FAULT_SLEEP_IN_WRITE_S")
        assert done == [True]
        after = reported_hours_sensor(
            dg.build_sensor_context(instance=instance, cursor=during.cursor)
        )
        assert [(r.partition_key, r.tags["antenna/trigger"]) for r in after.run_requests] == [
            (KEYS[0], "late")
        ]
        materialize(instance, KEYS[0])
    want_bytes, _ = expected(events + late, load_user_metadata(platform))
    h1 = H1.replace(tzinfo=None)
    assert [r for r in table_rows(platform)[0] if r[0] == h1] == [
        r for r in want_bytes if r[0] == h1
    ]


def test_files_compacted_during_the_read_are_reread_not_skipped(platform, spark, monkeypatch):
    from antenna_platform import batch

    events = write_hours(platform)
    h1 = H1.replace(tzinfo=None)
    with connect(platform, autocommit=True) as conn:
        stale = batch.read_manifest(conn, platform.lake_dir, [h1])
        # The stream compacts H1: new file, manifest swapped in one commit, old files deleted.
        rels = [r[0] for r in conn.execute("select path from lake_files where hour = %s", (h1,))]
        merged = lake.merge_files(platform.lake_dir, rels, h1, None, "p0-merged")
        with conn.transaction():
            conn.execute("delete from lake_files where path = any(%s)", (rels,))
            lake.register_files(conn, [merged])
        lake.publish(platform.lake_dir, [merged.path])
        for rel in rels:
            (platform.lake_dir / rel).unlink()

        calls = []
        real = batch.read_manifest

        def first_stale(*args):
            calls.append(1)
            return stale if len(calls) == 1 else real(*args)

        monkeypatch.setattr(batch, "read_manifest", first_stale)
        [res] = batch.compute_hours(spark, conn, platform.lake_dir, [h1])
    assert len(calls) == 2
    want_bytes, _ = expected(events, load_user_metadata(platform))
    assert res.bytes_rows == sorted(
        [r for r in want_bytes if r[0] == h1], key=lambda r: (r[3], r[1])
    )


def test_partition_freshness_check_reports_the_overdue_hour_and_clears_once_computed(
    platform, spark
):
    """From :20, the hour that closed before must be materialized (assets/freshness.py)."""
    from dagster._core.test_utils import freeze_time

    from antenna_platform.definitions import defs
    from assets.freshness import BATCH_FRESHNESS_CHECKS

    write_hours(platform)
    now = H3 + timedelta(hours=1, minutes=25)  # 13:25: the 13:20 deadline has passed
    overdue = (now - timedelta(minutes=20)).replace(minute=0) - timedelta(hours=1)
    overdue_key = f"{overdue:%Y-%m-%d-%H:00}"
    assert overdue_key == KEYS[2]
    checks_only = dg.Definitions(
        assets=[device_events, batch_hourly],
        asset_checks=BATCH_FRESHNESS_CHECKS,
        jobs=[
            dg.define_asset_job(
                "freshness", selection=dg.AssetSelection.checks(*BATCH_FRESHNESS_CHECKS)
            )
        ],
        resources=resources(),
    ).resolve_job_def("freshness")
    with dg.instance_for_test() as instance, freeze_time(now):
        materialize(instance, KEYS[0])  # an older hour computed: not enough
        before = checks_only.execute_in_process(instance=instance).get_asset_check_evaluations()
        assert sorted(e.asset_key.to_user_string() for e in before) == [
            "bytes_hourly",
            "user_quota_limit",
        ]
        assert all(not e.passed for e in before)
        assert all(overdue_key in e.description for e in before)
        # the batch job computes the hour, and runs the freshness checks after it
        run = defs.resolve_job_def("hourly_batch_job").execute_in_process(
            instance=instance, partition_key=overdue_key
        )
        fresh = [e for e in run.get_asset_check_evaluations() if e.check_name == "freshness_check"]
        assert len(fresh) == 2 and all(e.passed for e in fresh)
        assert all(
            e.passed
            for e in checks_only.execute_in_process(instance=instance).get_asset_check_evaluations()
        )


def test_transient_postgres_failure_is_retried(platform, spark, monkeypatch):
    """The first connection to Postgres is dropped (a database briefly unreachable): the
    step fails, the retry policy runs it again, and the hour is computed exactly."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.integration.netfaults import FlakyProxy

    events = write_hours(platform)
    url = urlsplit(platform.database_url)
    proxy = FlakyProxy((url.hostname, url.port), drop_first=1)
    try:
        netloc = f"{url.username}@127.0.0.1:{proxy.port}"
        monkeypatch.setenv("ANTENNA_DATABASE_URL", urlunsplit(url._replace(netloc=netloc)))
        result = materialize(dg.DagsterInstance.ephemeral(), KEYS[0])
    finally:
        proxy.close()
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1 and proxy.dropped == 1 and proxy.forwarded >= 1
    want_bytes, _ = expected(events, load_user_metadata(platform))
    h1 = H1.replace(tzinfo=None)
    assert [r for r in table_rows(platform)[0] if r[0] == h1] == [
        r for r in want_bytes if r[0] == h1
    ]
