"""Operating the platform with the `dagster` CLI, on services of this module's own.

- The README's backfill block runs as written in a fresh shell: `antenna up`, then
  `eval "$(antenna env)"` is all the setup the `dagster` commands get.
- Two overlapping range backfills started together run their Spark steps one after the
  other (pool `spark`, limit 1 in the dagster.yaml `antenna up` writes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from antenna_platform import lake, services
from antenna_platform.config import PROJECT_ROOT, Settings
from antenna_platform.warehouse import connect, load_user_metadata, provision
from tests.integration.test_batch import expected, make_events, materialize_range_cmd, table_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = PROJECT_ROOT / "README.md"


def readme_backfill_block() -> str:
    """The first ```bash block of README's "## Backfills" section, as written."""
    text = README.read_text()
    section = text.split("\n## Backfills\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "no bash block under ## Backfills"
    return match.group(1)


def hours_in(block: str) -> list[datetime]:
    """Every hour the README's commands name, from the first to the last."""
    keys = sorted(set(re.findall(r"\d{4}-\d{2}-\d{2}-\d{2}:00", block)))
    first, last = (
        datetime.strptime(k, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) for k in (keys[0], keys[-1])
    )
    out = []
    while first <= last:
        out.append(first)
        first += timedelta(hours=1)
    return out


@pytest.fixture(scope="module")
def own_platform():
    """Embedded Postgres and broker of this module (their own Dagster database too)."""
    home = Path(tempfile.mkdtemp(prefix="antenna-ops-"))
    settings, env = services.start_isolated(home)
    provision(settings)
    services.ensure_topic(settings)
    yield settings, env
    services.down(settings)
    shutil.rmtree(home, ignore_errors=True)


def fresh_shell_env(env: dict[str, str]) -> dict[str, str]:
    """What a new terminal has: PATH and HOME, plus where this platform lives (what a
    user sets before `antenna up` when not using the defaults)."""
    keep = {k: env[k] for k in ("ANTENNA_HOME", "ANTENNA_PG_PORT", "ANTENNA_KAFKA_PORT")}
    keep["ANTENNA_DASHBOARD"] = "0"  # `antenna up` would start Superset too: not the subject
    for key in ("ANTENNA_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):  # external services
        if os.environ.get(key):
            keep[key] = env[key]
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **({"JAVA_HOME": os.environ["JAVA_HOME"]} if os.environ.get("JAVA_HOME") else {}),
        **keep,
    }


def instance_of(settings: Settings, monkeypatch) -> dg.DagsterInstance:
    for key, value in services.dagster_env(settings).items():
        monkeypatch.setenv(key, value)
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def write_events(settings: Settings, hours: list[datetime], seed: int) -> list:
    events = [e for i, h in enumerate(hours) for e in make_events(h, seed + i, n=200)]
    with connect(settings) as conn:
        lake.write_and_register(settings.lake_dir, conn, events, name=f"ops-{seed}")
    return events


def test_readme_backfill_commands_run_as_written_in_a_fresh_shell(own_platform, monkeypatch):
    settings, env = own_platform
    block = readme_backfill_block()
    hours = hours_in(block)
    events = write_events(settings, hours, seed=100)
    started = time.time()
    script = "set -euo pipefail\n.venv/bin/antenna up\n" + block
    res = subprocess.run(
        ["bash", "-c", script],
        cwd=PROJECT_ROOT,
        env=fresh_shell_env(env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the hours hold exactly what plain Python computes from the events written
    want = expected(events, load_user_metadata(settings))
    got = table_rows(settings)
    naive = {h.replace(tzinfo=None) for h in hours}
    assert [r for r in got[0] if r[0] in naive] == want[0]
    assert [q for q in got[1] if q[3] in naive] == want[1]
    # every command reached the platform's instance (Postgres): the two in-process runs
    # succeeded, the job backfill queued one run per hour for the daemon (none runs here)
    instance = instance_of(settings, monkeypatch)
    runs = [
        r.dagster_run
        for r in instance.get_run_records()
        if r.create_timestamp.timestamp() >= started
    ]
    in_process = [r for r in runs if r.job_name == "__ASSET_JOB"]
    queued = [r for r in runs if r.job_name == "hourly_batch_job"]
    assert len(in_process) == 2 and all(r.is_success for r in in_process)
    assert sorted(r.tags["dagster/partition"] for r in queued) == [
        f"{h:%Y-%m-%d-%H:00}" for h in hours
    ]
    assert all(r.status == dg.DagsterRunStatus.QUEUED for r in queued)
    for run in queued:  # nobody will dequeue them
        instance.report_run_canceled(run)


def test_overlapping_range_backfills_queue_for_the_spark_pool(own_platform, monkeypatch):
    settings, env = own_platform
    base = datetime(2026, 11, 24, 0, tzinfo=UTC)
    hours = [base + timedelta(hours=i) for i in range(4)]
    write_events(settings, hours, seed=200)
    services.ensure_dagster_home(settings)
    assert "default_limit: 1" in (settings.dagster_home / "dagster.yaml").read_text()
    run_env = {**fresh_shell_env(env), **services.dagster_env(settings)}

    def backfill(first: datetime, last: datetime) -> subprocess.Popen:
        return subprocess.Popen(
            materialize_range_cmd([f"{first:%Y-%m-%d-%H:00}", f"{last:%Y-%m-%d-%H:00}"]),
            cwd=PROJECT_ROOT,
            env={**run_env, "SPARK_MASTER": "local[1]"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    started = time.time()
    procs = [backfill(hours[0], hours[2]), backfill(hours[1], hours[3])]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    instance = instance_of(settings, monkeypatch)
    runs = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= started]
    assert len(runs) == 2
    spans, blocked = [], 0
    for rec in runs:
        logs = instance.all_logs(rec.dagster_run.run_id)
        messages = [(e.timestamp, e.message or "") for e in logs]
        # the Spark work: from taking the slot to the step's summary line, both inside it
        start = next(t for t, m in messages if m.startswith("holding Spark slot"))
        end = next(t for t, m in messages if "hour(s)," in m and "rows written" in m)
        spans.append((start, end))
        # Dagster's pool held it back, or (when Dagster's claim raced and let both
        # steps start) the platform's Spark slot did
        blocked += any(
            "blocked by limit for pool spark" in m or "waiting for a Spark slot" in m
            for _, m in messages
        )
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 <= s2, f"the Spark computations overlapped: {spans}"
    assert blocked >= 1  # the second one waited for the pool, not merely started later
    # both ran fully: the overlapping hours hold the same exact rows either way
    want = expected(
        [e for h in hours for e in make_events(h, 200 + hours.index(h), n=200)],
        load_user_metadata(settings),
    )
    naive = {h.replace(tzinfo=None) for h in hours}
    assert [r for r in table_rows(settings)[0] if r[0] in naive] == want[0]
