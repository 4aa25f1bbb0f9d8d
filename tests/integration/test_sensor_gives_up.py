"""Issue 10 item 4, sensor side: a stream run the sensor gives up on is stopped, not only
marked failed. A real `dagster job execute` of the stream job is frozen with SIGSTOP (a
paused worker); the sensor, past the staleness limit, finds the pid the op recorded as run
tags, checks that it is that run's process on this host, and stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import psutil
import pytest

import schedules.stream_sensor as stream_sensor
from antenna_platform import alerts, runworker
from antenna_platform.config import PROJECT_ROOT
from schedules.stream_sensor import device_stream_sensor
from tests.integration.test_stream import make_payloads, produce
from tests.integration.test_stream_faults import committed

pytestmark = pytest.mark.integration

DEFS = """
import dagster as dg
from jobs.streaming import device_stream_job
from resources import build_resources
defs = dg.Definitions(jobs=[device_stream_job], resources=build_resources())
"""


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_sensor_stops_a_frozen_worker_it_gives_up_on(make_platform, tmp_path, monkeypatch):
    settings = make_platform(partitions=1, ANTENNA_STREAM_STALE_SECONDS="30")
    produce(settings, make_payloads(2_000, seed=3, bad_ratio=0.0))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "defs.py").write_text(DEFS)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [dagster, "job", "execute", "-f", str(tmp_path / "defs.py"), "-j", "device_stream_job"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    try:
        instance = dg.DagsterInstance.get()

        def run():
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="device_stream_job"))
            return runs[0] if runs else None

        wait_for(lambda: run() is not None and runworker.PID_TAG in run().tags, 120, "the tags")
        wait_for(lambda: committed(settings) == 2_000, 120, "the stream to consume")
        the_run = run()
        assert the_run.tags[runworker.PID_TAG] == str(proc.pid)
        assert runworker.local_worker(the_run.tags).pid == proc.pid
        os.kill(proc.pid, signal.SIGSTOP)  # a paused worker: alive, silent
        worker = psutil.Process(proc.pid)
        wait_for(lambda: worker.status() == psutil.STATUS_STOPPED, 30, "the worker to stop")

        ahead = time.time() + 60  # past the 30 s limit since its last log line
        monkeypatch.setattr(stream_sensor, "time", SimpleNamespace(time=lambda: ahead))
        out = device_stream_sensor(dg.build_sensor_context(instance=instance))
        proc.wait(timeout=60)  # the sensor woke it with SIGCONT and stopped it
        assert isinstance(out, list) and len(out) == 1  # and asked for a replacement
        assert instance.get_run_by_id(the_run.run_id).status in (
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED,
        )
        assert [i.key for i in alerts.list_open(settings, "stream:")] == ["stream:w0"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    # every consumed event committed exactly once (the batch in hand was not lost)
    assert committed(settings) == 2_000
