"""Issue 6, batch layer: a materialization killed in the middle of its write leaves every
hour of the run with either its old rows or its new ones, never a mix.

The killed run is a real `dagster asset materialize` CLI process (its own Spark JVM),
started from the repo root against the test's database and lake. The test-only hook
ANTENNA_FAULT_SLEEP_IN_WRITE_S makes it sleep inside the write transaction after its
deletes and inserts, before the commit; the test waits until Postgres shows that
backend holding the hours' advisory locks, idle in transaction after an insert, then
SIGKILLs the whole process group (Python and JVM). Expected rows come from
`test_batch.expected` (plain Python over the events the test wrote).

A run whose blocking check fails also keeps the old rows: that is
`test_batch.test_check_fails_on_planted_bad_file_and_rows_are_kept`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from antenna_platform import lake
from antenna_platform.batch import HOUR_LOCK, epoch
from antenna_platform.config import PROJECT_ROOT, Settings
from antenna_platform.contract import Event
from antenna_platform.warehouse import connect, device_id, load_user_metadata
from tests.integration.test_batch import (
    ANTENNAS,
    H1,
    H2,
    H3,
    KEYS,
    expected,
    materialize,
    materialize_range_cmd,
    table_rows,
    write_hours,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOURS = [h.replace(tzinfo=None) for h in (H1, H2, H3)]

LOCK_HOLDER_SQL = """
select a.pid, a.state, a.query, count(*) over (partition by a.pid) as locks
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted and l.classid::bigint = %s
  and l.objid::bigint = any(%s) and a.datname = current_database()
"""


def late_events() -> list[Event]:
    """New events for H1 (already computed) and H2 (empty until now); H3 unchanged."""
    b1, b2 = int(H1.timestamp()), int(H2.timestamp())
    return [
        Event(b1 + 100, device_id(2), ANTENNAS[1], 4242, "SKYPE"),
        Event(b1 + 200, device_id(4), ANTENNAS[2], 9000, "FACEBOOK"),  # puts fede over quota
        Event(b2 + 300, device_id(3), ANTENNAS[3], 1234, "TELEGRAM"),
        Event(b2 + 400, "99999999-0000-0000-0000-000000000009", ANTENNAS[0], 55, "SKYPE"),
    ]


def by_hour(rows: tuple[list, list]) -> dict[datetime, tuple[list, list]]:
    """Split (bytes_hourly rows, user_quota_limit rows) by hour."""
    b, q = rows
    return {h: ([r for r in b if r[0] == h], [r for r in q if r[3] == h]) for h in HOURS}


def lock_holder(settings: Settings) -> tuple[int, str, str, int] | None:
    keys = [epoch(h) // 3600 for h in HOURS]
    with connect(settings, autocommit=True) as conn:
        row = conn.execute(LOCK_HOLDER_SQL, (HOUR_LOCK, keys)).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def wait_inside_write(settings: Settings, proc: subprocess.Popen, log: Path) -> int:
    """Wait until the CLI's backend holds all three hour locks and sits idle in its
    transaction after an insert (the hook's sleep), stable for a second. Returns its pid."""
    deadline = time.monotonic() + 240
    since = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended ({proc.returncode}) before its write:\n{log.read_text()[-3000:]}"
            )
        holder = lock_holder(settings)
        inside = (
            holder is not None
            and holder[3] == len(HOURS)
            and holder[1] == "idle in transaction"
            and holder[2].lstrip().lower().startswith("insert")
        )
        if inside:
            since = since or time.monotonic()
            if time.monotonic() - since >= 1.0:
                return holder[0]
        else:
            since = None
        time.sleep(0.2)
    pytest.fail(f"the run never reached its write transaction:\n{log.read_text()[-3000:]}")


def group_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_run_killed_inside_its_write_keeps_old_rows_then_rerun_writes_new(
    platform, spark, tmp_path
):
    events = write_hours(platform)
    users = load_user_metadata(platform)
    instance = dg.DagsterInstance.ephemeral()
    range_tags = {
        "dagster/asset_partition_range_start": KEYS[0],
        "dagster/asset_partition_range_end": KEYS[-1],
    }
    materialize(instance, tags=range_tags)
    old = expected(events, users)
    assert table_rows(platform) == old

    # The lake changes under two of the three hours: the next run must write new rows.
    late = late_events()
    with connect(platform) as conn:
        lake.write_and_register(platform.lake_dir, conn, late, name="p2-late")
    new = expected(events + late, users)
    old_h, new_h = by_hour(old), by_hour(new)
    assert old_h[HOURS[0]] != new_h[HOURS[0]] and old_h[HOURS[1]] != new_h[HOURS[1]]
    assert old_h[HOURS[2]] == new_h[HOURS[2]]

    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ANTENNA_FAULT_SLEEP_IN_WRITE_S": "300",
        "SPARK_MASTER": "local[1]",
        "PYSPARK_PYTHON": sys.executable,
    }
    cmd = materialize_range_cmd()
    log = tmp_path / "killed_run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes the JVM too
        )
    try:
        wait_inside_write(platform, proc, log)
        # Inside the transaction: old rows deleted and new ones inserted, not committed.
        # Other sessions still read exactly the old rows.
        assert table_rows(platform) == old
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "fault injection: sleeping" in log.read_text()  # killed inside the hook's sleep
    assert group_gone(proc.pid), "a process of the killed run survived (JVM?)"

    # Postgres rolls the dead client's transaction back and frees the hour locks.
    deadline = time.monotonic() + 30
    while lock_holder(platform) is not None:
        assert time.monotonic() < deadline, "the killed run's hour locks were never released"
        time.sleep(0.2)
    after = by_hour(table_rows(platform))
    for h in HOURS:
        assert after[h] in (old_h[h], new_h[h]), f"{h}: a mix of old and new rows"
    # Killed before its commit: every hour holds its old rows (none committed half-way).
    assert table_rows(platform) == old

    # A normal rerun converges to the new rows (no stale lock, no leftover).
    materialize(instance, tags=range_tags)
    assert table_rows(platform) == new


def test_fault_hook_is_off_unless_set(monkeypatch, platform):
    """The test-only hook costs nothing when its variable is unset."""
    from antenna_platform import batch

    monkeypatch.delenv("ANTENNA_FAULT_SLEEP_IN_WRITE_S", raising=False)
    t0 = time.perf_counter()
    with connect(platform, autocommit=True) as conn:
        assert batch.replace_hours(conn, [batch.HourResult(HOURS[1])]) == 0
    assert time.perf_counter() - t0 < 2
    with connect(platform) as conn:
        assert conn.execute("select count(*) from bytes_hourly").fetchone()[0] == 0
