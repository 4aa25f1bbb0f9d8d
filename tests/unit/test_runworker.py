"""The stream sensor stops a process only when it provably is the run's worker."""

import subprocess
import sys

import psutil

from antenna_platform import runworker


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_only_the_recorded_process_on_this_host_is_found_and_stopped():
    proc = _sleeper()
    try:
        tags = runworker.identity_tags(proc.pid)
        assert runworker.local_worker(tags).pid == proc.pid
        # the same pid but another process start time: a recycled pid, left alone
        recycled = {**tags, runworker.STARTED_TAG: repr(float(tags[runworker.STARTED_TAG]) - 5)}
        assert runworker.local_worker(recycled) is None
        # the same pid on another machine (or after a reboot)
        assert runworker.local_worker({**tags, runworker.HOST_TAG: "elsewhere/boot"}) is None
        assert runworker.local_worker({}) is None  # a run that never recorded its worker
        assert runworker.stop_process(psutil.Process(proc.pid), grace_s=10) == "terminated"
        assert proc.wait(timeout=10) == -15
        assert runworker.local_worker(tags) is None  # gone
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_process_ignoring_sigterm_is_killed():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert runworker.stop_process(psutil.Process(proc.pid), grace_s=1) == "killed"
        proc.wait(timeout=10)  # (already reaped by psutil, which waited for it)
        assert not psutil.pid_exists(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
