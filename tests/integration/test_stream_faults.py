"""Exactly once under faults: SIGKILL at random moments, a crash between lake write and
commit. The stream runs in a subprocess (`python -m antenna_platform.stream`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.warehouse import connect
from tests.integration.test_stream import assert_exact, make_payloads, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def committed(settings) -> int:
    with connect(settings) as conn:
        row = conn.execute(
            "select coalesce(sum(next_offset), 0) from stream_offsets where topic = %s",
            (settings.topic,),
        ).fetchone()
    return int(row[0])


def start_stream(*args: str, code: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "antenna_platform.stream", *args]
    if code is not None:
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_to_idle(idle: float = 5.0) -> str:
    proc = start_stream("--idle", str(idle))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_sigkill_at_random_moments_then_restart_is_exact(make_platform):
    settings = make_platform(partitions=3, ANTENNA_WATERMARK_SECONDS="86400")
    payloads = make_payloads(200_000, seed=11, bad_ratio=0.03)
    produce(settings, payloads)
    rng = random.Random(5)
    at_kill: list[int] = []
    deadline = time.monotonic() + 150
    last = 0
    while len(at_kill) < 5 and last < len(payloads) and time.monotonic() < deadline:
        proc = start_stream("--batch", "2000")
        try:
            # wait until this process commits something, then kill it a random moment later
            while committed(settings) <= last and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        last = committed(settings)
        at_kill.append(last)
    mid_stream = [n for n in at_kill if n < len(payloads)]
    assert len(mid_stream) >= 3, at_kill
    run_to_idle()
    assert_exact(settings, payloads)


CRASH_AFTER_WRITE = """
import os, sys
from antenna_platform.stream import sinks
from antenna_platform.stream.__main__ import main
calls = {"n": 0}
real = sinks.fence
def fence(*a, **k):
    calls["n"] += 1
    if calls["n"] == 3:  # the lake files of this batch are written, nothing committed
        os._exit(9)
    return real(*a, **k)
sinks.fence = fence
sys.exit(main(sys.argv[1:]))
"""


def test_crash_between_lake_write_and_commit_changes_nothing(make_platform):
    settings = make_platform(partitions=2, ANTENNA_WATERMARK_SECONDS="86400")
    payloads = make_payloads(30_000, seed=3, bad_ratio=0.05)
    produce(settings, payloads)
    proc = start_stream("--batch", "3000", code=CRASH_AFTER_WRITE)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 9, out[-2000:]
    root = settings.lake_dir
    with connect(settings) as conn:
        known = {r[0] for r in conn.execute("select path from lake_files")}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.parquet")}
    assert on_disk - known, "the crashed batch should have left orphan files"
    assert 0 < committed(settings) < len(payloads)
    out = run_to_idle()
    assert "orphan" in out
    assert_exact(settings, payloads)
