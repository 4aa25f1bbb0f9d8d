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
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.warehouse import connect
from tests.integration.test_stream import (
    assert_exact,
    make_payloads,
    observed,
    produce,
    run_job,
)
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
    proc, lines = dagster_stream(tmp_path, max_batch_events=1000)
    try:
        deadline = time.monotonic() + 120
        while committed(settings) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    # interrupted (the exception reached the engine) or stop requested (the flag did)
    assert "stream stopped (interrupted)" in out or "stream stopped (stop requested)" in out, out[
        -3000:
    ]
    done = committed(settings)
    assert 0 < done < len(payloads)
    # the batch in hand was committed, and only it: offsets = lake rows + dead letters, the
    # files on disk are exactly the manifest, and a plain reader sees those rows
    assert written(settings) == done
    got = observed(settings)
    assert got["on_disk"] == got["manifest"]
    assert sum(n for n, _ in got["plain_hours"].values()) == got["lake_rows"]
    assert set(got["lake_keys"]) | set(got["dead_keys"]) == {
        (p, o) for p, n in got["next_offsets"].items() for o in range(n)
    }
    assert run_job({"stop_when_idle_s": 4, "give_up_after_s": 30}).success
    assert_exact(settings, payloads)


def test_sigterm_while_postgres_is_down_ends_the_run_within_seconds(own_postgres, tmp_path):
    """A stream run whose Postgres has gone away: SIGTERM ends it within 10 s (the batch in
    hand is dropped, its offsets never moved) instead of retrying on."""
    settings, stop_postgres, start_postgres = own_postgres
    payloads = make_payloads(40_000, seed=23, bad_ratio=0.02)
    produce(settings, payloads[:20_000])
    proc, lines = dagster_stream(tmp_path, max_batch_events=1000)
    deadline = time.monotonic() + 120
    while committed(settings) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert committed(settings) > 0, "".join(lines)[-3000:]
    stop_postgres()
    produce(settings, payloads[20_000:])
    deadline = time.monotonic() + 120
    while not any("not committed" in x or "cannot claim" in x for x in lines):
        assert time.monotonic() < deadline, "".join(lines)[-3000:]
        assert proc.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - t0
    out = "".join(lines)
    print(f"SIGTERM to the end of the run: {took:.1f}s")
    assert took < 10, f"the run took {took:.1f}s to stop:\n{out[-3000:]}"
    assert "stream stopped" in out, out[-3000:]
    start_postgres()
    assert written(settings) == committed(settings)  # what was committed before, nothing more


def dagster_stream(tmp_path, **config) -> tuple[subprocess.Popen, list[str]]:
    """`dagster job execute` of the stream job in a subprocess; its output collected."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "defs.py").write_text(DEFS)
    body = "".join(f"      {k}: {v}\n" for k, v in config.items())
    (tmp_path / "run.yaml").write_text(f"ops:\n  device_stream:\n    config:\n{body}")
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
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines
