"""Which process runs a stream run, and how the stream sensor stops it.

The stream op records its process as run tags when it starts: the pid, the host (name and
boot id, so a reboot is another host) and the process's start time. With the default run
launcher and the in-process executor that process is the run worker. When
`device_stream_sensor` gives up on a run, it signals that pid only if the tags name this
host and the process holding the pid there started at the recorded time: a recycled pid,
a worker on another machine or one that already exited is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

PID_TAG = "antenna/worker_pid"
HOST_TAG = "antenna/worker_host"
STARTED_TAG = "antenna/worker_started"  # psutil create_time, epoch seconds


def host_id() -> str:
    """This machine in this boot: `hostname/boot id` (the hostname alone on non-Linux)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    suffix = boot.read_text().strip() if boot.exists() else ""
    return f"{socket.gethostname()}/{suffix}" if suffix else socket.gethostname()


def identity_tags(pid: int | None = None) -> dict[str, str]:
    """The run tags that identify the process `pid` (default: this one)."""
    proc = psutil.Process(pid or os.getpid())
    return {
        PID_TAG: str(proc.pid),
        HOST_TAG: host_id(),
        STARTED_TAG: repr(proc.create_time()),
    }


def local_worker(tags: Mapping[str, str]) -> psutil.Process | None:
    """The live process these tags name, if it runs on this host; None otherwise."""
    try:
        pid, started = int(tags[PID_TAG]), float(tags[STARTED_TAG])
    except (KeyError, ValueError):
        return None
    if tags.get(HOST_TAG) != host_id():
        return None
    try:
        proc = psutil.Process(pid)
        same = abs(proc.create_time() - started) < 0.05
        alive = proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return None
    return proc if same and alive else None


def stop_process(proc: psutil.Process, grace_s: float = 15.0) -> str:
    """SIGTERM (and SIGCONT, in case it is suspended: it must run to handle the signal),
    then SIGKILL after `grace_s`. Returns "terminated", "killed" or "gone"."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
    except psutil.NoSuchProcess:
        return "gone"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return "terminated"
        except psutil.NoSuchProcess:
            return "terminated"
        time.sleep(0.2)
    try:
        proc.kill()
        proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        return "terminated"
    except psutil.TimeoutExpired:
        pass
    return "killed"
