"""Graceful stop of a real Dagster run: SIGTERM to `dagster job execute` mid-stream.

Dagster turns SIGTERM into DagsterExecutionInterruptedError inside the op; the engine
commits the batch in hand and closes its consumer. Afterwards the committed offsets
account for exactly what was written (lake rows + dead letters), and a restart
finishes the topic exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.warehouse import connect
from tests.integration.test_stream import assert_exact, make_payloads, produce, run_job
from tests.integration.test_stream_faults import committed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFS = """
import dagster as dg
from jobs.streaming import device_stream_job
from resources import build_resources
defs = dg.Definitions(jobs=[device_stream_job], resources=build_resources())
"""


def written(settings) -> int:
    with connect(settings) as conn:
        paths = [r[0] for r in conn.execute("select path from lake_files")]
        dead = conn.execute("select count(*) from dead_letter").fetchone()[0]
    rows = sum(pq.read_metadata(Path(settings.lake_dir) / p).num_rows for p in paths)
    return rows + int(dead)


def test_sigterm_commits_the_batch_in_hand_and_offsets_match_writes(make_platform, tmp_path):
    settings = make_platform(partitions=2, ANTENNA_WATERMARK_SECONDS="86400")
    payloads = make_payloads(150_000, seed=21, bad_ratio=0.02)
    produce(settings, payloads)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "defs.py").write_text(DEFS)
    (tmp_path / "run.yaml").write_text(
        "ops:\n  device_stream:\n    config:\n      max_batch_events: 1000\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "job", "execute", "-f", str(tmp_path / "defs.py"), "-j", "device_stream_job"]
    proc = subprocess.Popen(
        [*cmd, "-c", str(tmp_path / "run.yaml")],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while committed(settings) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # interrupted (the exception reached the engine) or stop requested (the flag did)
    assert "stream stopped (interrupted)" in out or "stream stopped (stop requested)" in out, out[
        -3000:
    ]
    done = committed(settings)
    assert 0 < done < len(payloads)
    assert written(settings) == done
    assert run_job({"stop_when_idle_s": 4, "give_up_after_s": 30}).success
    assert_exact(settings, payloads)
