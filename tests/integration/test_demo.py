"""`antenna demo` stops cleanly, always (real processes: services, dagster dev, runs).

- one Ctrl-C stops everything, the stream run ends CANCELED (it committed);
- the terminal closing (SIGHUP) then a second Ctrl-C stops everything at once;
- a SIGKILL of the demo: its watcher stops everything it had started;
- the demo and its watcher both killed: `antenna down` stops what they left behind.
After each: no process carrying the demo's mark, every port closed.
The times printed are figures, not goals enforced here (the goal is about 15 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from antenna_platform import processes, services
from antenna_platform.config import load_settings
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if os.environ.get("ANTENNA_DATABASE_URL") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
    pytest.skip("external services configured: the demo would use them", allow_module_level=True)


class Demo:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {"dagster": free_port(), "pg": free_port(), "kafka": free_port()}
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTENNA_", "KAFKA_", "DAGSTER_", "SPARK_"))
        }
        self.env.update(
            ANTENNA_HOME=str(home),
            ANTENNA_PG_PORT=str(self.ports["pg"]),
            ANTENNA_KAFKA_PORT=str(self.ports["kafka"]),
            # Superset is a service the demo starts and stops like Postgres (tested with the
            # dashboards); these tests are about the demo's own children
            ANTENNA_DASHBOARD="0",
        )
        self.settings = load_settings(self.env)
        self.log = home / "demo.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        out = self.log.open("w")
        cmd = [sys.executable, "-m", "antenna_platform.cli", "demo", "--rate", "5"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.ports["dagster"])],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # signals from the test reach the demo only
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.output():
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, f"no {what!r}:\n{self.output()[-3000:]}"
            time.sleep(1)

    def wait_stream(self) -> None:
        self.wait_for("device_stream - stream:")  # a stream run logs its heartbeat

    def wait_ui(self) -> None:
        deadline = time.monotonic() + 300
        while not services.port_open("127.0.0.1", self.ports["dagster"]):
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(1)

    def left(self) -> list[str]:
        out = []
        for p in processes.marked(str(self.home)):
            try:
                out.append(" ".join(p.cmdline())[:100])
            except psutil.Error:  # exited since it was listed
                continue
        return out

    def ports_open(self) -> list[str]:
        return [k for k, p in self.ports.items() if services.port_open("127.0.0.1", p)]

    def wait_all_gone(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while self.left() or self.ports_open():
            assert time.monotonic() - t0 < timeout, (self.left(), self.ports_open())
            time.sleep(0.5)
        return time.monotonic() - t0


@pytest.fixture
def demo(tmp_path):
    d = Demo(tmp_path / "home")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
    subprocess.run(
        [sys.executable, "-m", "antenna_platform.cli", "down"], env=d.env, timeout=120, check=False
    )


def test_one_ctrl_c_stops_everything_and_the_stream_run_is_canceled(demo):
    demo.start()
    demo.wait_stream()
    t0 = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=120) == 0
    took = time.monotonic() - t0
    assert "demo stopped" in demo.output()
    assert demo.left() == [] and demo.ports_open() == []
    print(f"\none Ctrl-C: everything stopped in {took:.1f} s (goal about 15 s)")
    # the stream run was terminated as a user would, not failed
    services.start_postgres(demo.settings)
    try:
        os.environ.update(services.dagster_env(demo.settings))
        import dagster as dg

        with dg.DagsterInstance.from_config(str(demo.settings.dagster_home)) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="device_stream_job"))
            assert runs and {r.status for r in runs} == {dg.DagsterRunStatus.CANCELED}
            in_progress = instance.get_runs(
                filters=dg.RunsFilter(
                    statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
                )
            )
            assert in_progress == []
    finally:
        services.stop_postgres(demo.settings)
        for key in services.dagster_env(demo.settings):
            os.environ.pop(key, None)


def test_terminal_closed_then_a_second_ctrl_c_stops_at_once(demo):
    demo.start()
    demo.wait_ui()
    t0 = time.monotonic()
    demo.proc.send_signal(signal.SIGHUP)
    demo.wait_for("stopping everything", timeout=60)
    demo.proc.send_signal(signal.SIGINT)
    demo.proc.wait(timeout=120)
    took = time.monotonic() - t0
    assert "second Ctrl-C: stopping everything now" in demo.output()
    assert demo.left() == [] and demo.ports_open() == []
    print(f"\nSIGHUP then a second Ctrl-C: everything stopped in {took:.1f} s")


def test_demo_killed_outright_its_watcher_stops_everything(demo):
    demo.start()
    demo.wait_stream()
    demo.proc.send_signal(signal.SIGKILL)
    demo.proc.wait(timeout=30)
    took = demo.wait_all_gone()
    print(f"\nSIGKILL of the demo: its watcher stopped everything in {took:.1f} s")


def test_antenna_down_stops_what_an_earlier_demo_left_behind(demo):
    demo.start()
    demo.wait_stream()
    watcher = [
        p for p in processes.marked(str(demo.home)) if "processes watch" in " ".join(p.cmdline())
    ]
    assert len(watcher) == 1
    demo.proc.send_signal(signal.SIGKILL)
    watcher[0].kill()
    demo.proc.wait(timeout=30)
    time.sleep(2)
    assert any("dagster" in c for c in demo.left())  # what used to hold the port
    assert "dagster" in demo.ports_open()
    res = subprocess.run(
        [sys.executable, "-m", "antenna_platform.cli", "down"],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    assert "an earlier demo left behind" in res.stdout
    assert demo.left() == [] and demo.ports_open() == []
