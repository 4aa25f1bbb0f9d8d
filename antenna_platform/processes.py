"""The demo's child processes: started together, stopped together, never left behind.

Every child is started in a process group of its own (so a Ctrl-C in the terminal reaches
the demo only, which stops things in order) with one extra environment variable,
`ANTENNA_DEMO_OF=<ANTENNA_HOME>`, which every descendant inherits: `dagster dev`, its
webserver, daemon and code servers, the run workers they launch, Spark's JVM. That mark
is what finds them all, whatever process group or parent they end up with:

- `Children.stop` signals each child's group, then sweeps the mark;
- a watcher process (`python -m antenna_platform.processes watch`) holds a pipe from the
  demo: when the demo dies without saying "clean" (SIGKILL, a crash, a closed terminal
  that killed it) the pipe closes, and the watcher sweeps the mark and stops the
  embedded services the demo had started;
- `antenna down` sweeps the mark too, so it stops what an earlier demo left behind.

A new long-running child (e.g. a BI server) is one `children.start(name, argv, ...)` call.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

MARK = "ANTENNA_DEMO_OF"
CLEAN = b"clean\n"


def _reset_signals() -> None:
    """In the child, before exec: default SIGINT/SIGTERM/SIGHUP. A shell starts background
    jobs with SIGINT ignored, and `dagster dev` maps SIGTERM to its SIGINT handler: an
    inherited "ignore" would make it deaf to both."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def marked(mark: str, exclude: Sequence[int] = ()) -> list[psutil.Process]:
    """Live processes whose environment carries `ANTENNA_DEMO_OF=<mark>`."""
    skip = {os.getpid(), *exclude}
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in skip:
            continue
        try:
            if proc.environ().get(MARK) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue  # gone, or not ours to read
    return found


def sweep(mark: str, grace_s: float = 10.0, exclude: Sequence[int] = ()) -> list[str]:
    """SIGTERM every marked process, SIGKILL what is left after `grace_s`, until none is
    left (a dying parent may start a child). Returns what it stopped, for the log."""
    stopped: list[str] = []
    deadline = time.monotonic() + grace_s
    for _ in range(20):
        procs = marked(mark, exclude)
        if not procs:
            break
        hard = time.monotonic() >= deadline
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if not hard:
                    stopped.append(f"{proc.pid} {' '.join(proc.cmdline()[:3])[:80]}")
                proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=max(0.5, deadline - time.monotonic()))
        if hard and not alive:
            continue
    return stopped


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    stop_timeout: float


class Children:
    """The demo's long-running children, each in its own process group, all marked."""

    def __init__(
        self, mark: str, log: Callable[[str], None] = print, keep: Sequence[int] = ()
    ) -> None:
        self.mark, self.log, self.keep = mark, log, tuple(keep)  # keep: e.g. the watcher
        self.children: list[Child] = []

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), MARK: self.mark}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: int | IO | None = None,
        stderr: int | IO | None = None,
        stop_timeout: float = 10.0,
    ) -> subprocess.Popen:
        """Start a child; `stop` stops children in reverse order of starting."""
        proc = subprocess.Popen(  # noqa: PLW1509 - preexec only resets signal handlers
            list(argv),
            env=self.env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_reset_signals,
        )
        self.children.append(Child(name, proc, stop_timeout))
        return proc

    def signal_all(self, sig: int, names: Sequence[str] | None = None) -> None:
        for child in reversed(self.children):
            if (names is None or child.name in names) and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.proc.pid, sig)

    def wait(self, timeout_s: float, names: Sequence[str] | None = None) -> bool:
        """Wait for the (named) children to exit; True if they all did."""
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if names is not None and child.name not in names:
                continue
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self, names: Sequence[str] | None = None, timeout_s: float | None = None) -> None:
        """SIGTERM the (named) children's groups, SIGKILL them after their timeout."""
        chosen = [c for c in self.children if names is None or c.name in names]
        live = [c for c in chosen if c.proc.poll() is None]
        if not live:
            return
        self.log(f"stopping {', '.join(c.name for c in live)} ...")
        self.signal_all(signal.SIGTERM, [c.name for c in live])
        limit = timeout_s if timeout_s is not None else max(c.stop_timeout for c in live)
        if not self.wait(limit, [c.name for c in live]):
            self.signal_all(signal.SIGKILL, [c.name for c in live])
            self.wait(10.0, [c.name for c in live])

    def kill(self) -> None:
        """Everything, now: SIGKILL every child's group and every marked process."""
        self.signal_all(signal.SIGKILL)
        self.wait(5.0)
        sweep(self.mark, grace_s=0.0, exclude=self.keep)


# --------------------------------------------------------------------------- watcher


def start_watcher(mark: str, stop_services: Sequence[str]) -> tuple[IO[bytes], int]:
    """Start the watcher; returns the pipe end the demo keeps open (it writes CLEAN, then
    closes it, once it has stopped everything itself) and the watcher's pid."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "antenna_platform.processes", "watch", mark, *stop_services],
        stdin=read_fd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, MARK: mark},
        start_new_session=True,  # a closed terminal or a Ctrl-C does not reach it
        close_fds=True,
    )
    os.close(read_fd)
    return os.fdopen(write_fd, "wb", buffering=0), proc.pid


def watch(mark: str, stop_services: Sequence[str]) -> int:
    """Block until the demo closes the pipe; unless it said CLEAN, clean up after it."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    said = sys.stdin.buffer.read()  # returns at EOF: the demo exited, however it did
    if said.endswith(CLEAN):
        return 0
    sweep(mark)
    from antenna_platform import demo, services  # noqa: PLC0415
    from antenna_platform.config import load_settings  # noqa: PLC0415

    settings = load_settings()
    with contextlib.suppress(Exception):  # best effort: e.g. the database is already gone
        demo.settle_runs(settings, "its demo was killed; stopped by the demo's watcher")
    if stop_services:
        if "superset" in stop_services:
            from antenna_platform.dashboards import server as superset  # noqa: PLC0415

            superset.stop(settings)  # before Postgres, which holds its metadata
        if "kafka" in stop_services:
            services.stop_broker(settings)
        if "postgres" in stop_services:
            services.stop_postgres(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m antenna_platform.processes")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="clean up after a demo that dies")
    w.add_argument("mark")
    w.add_argument("stop_services", nargs="*", choices=["postgres", "kafka", "superset"])
    args = p.parse_args(argv)
    return watch(args.mark, args.stop_services)


if __name__ == "__main__":
    sys.exit(main())
