"""`make demo`: the whole platform on one machine, stopped by one Ctrl-C.

Starts the embedded services (unless URLs are given), provisions tables and the
topic, sends three past hours of traffic (so there is something to backfill at
once), keeps a live simulator running, and runs `dagster dev` on 127.0.0.1 with
the stream sensor and the hourly schedule on. Ctrl-C stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from antenna_platform import services
from antenna_platform.config import PROJECT_ROOT, Settings, redact_url
from antenna_platform.warehouse import provision


def _stop(proc: subprocess.Popen | None, name: str, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    print(f"stopping {name} ...", flush=True)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _terminate_runs(port: int, timeout: float = 45.0) -> None:
    """Ask Dagster to terminate in-progress runs (the stream commits its batch in hand)."""
    try:
        from dagster_graphql import DagsterGraphQLClient  # noqa: PLC0415

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        query = (
            "{ runsOrError(filter: {statuses: [STARTED, STARTING, QUEUED]}) "
            "{ ... on Runs { results { runId } } } }"
        )
        data = client._execute(query)  # noqa: SLF001 - the public client has no run listing
        run_ids = [r["runId"] for r in data["runsOrError"]["results"]]
    except Exception as exc:  # noqa: BLE001 - the webserver may already be gone
        print(f"could not list runs to terminate: {type(exc).__name__}", file=sys.stderr)
        return
    for run_id in run_ids:
        print(f"terminating run {run_id[:8]} ...", flush=True)
        with contextlib.suppress(Exception):
            client.terminate_run(run_id)
    deadline = time.monotonic() + timeout
    for run_id in run_ids:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if client.get_run_status(run_id).value not in ("STARTED", "CANCELING", "STARTING"):
                    break
            time.sleep(1)


def _stop_run_workers(dagster_home: str, timeout: float = 30.0) -> None:
    """Run workers outlive `dagster dev`; stop the ones of this instance before Postgres."""
    import psutil  # noqa: PLC0415

    workers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "dagster" in cmd and "execute_run" in cmd and dagster_home in cmd:
            workers.append(proc)
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(workers, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _sigterm_as_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def run(settings: Settings, port: int = 3000, rate: float = 1.0) -> int:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if services.port_open("127.0.0.1", port):
        print(
            f"antenna: error: port 127.0.0.1:{port} is taken (is a demo already running?)",
            file=sys.stderr,
        )
        return 2
    from antenna_platform.dashboards import server as superset  # noqa: PLC0415

    was_running = {
        s.name: s.running
        for s in (
            services.postgres_state(settings),
            services.broker_state(settings),
            superset.state(settings),
        )
    }
    print("starting services ...", flush=True)
    services.up(settings)
    services.ensure_topic(settings)
    counts = provision(settings)
    print(f"postgres  {redact_url(settings.database_url)}  ({counts['users']} users)")
    print(f"kafka     {settings.kafka_bootstrap_servers}  topic {settings.topic!r}")
    print(f"lake      {settings.lake_dir}")

    env = {**os.environ, **services.dagster_env(settings)}
    antenna = [sys.executable, "-m", "antenna_platform.cli"]
    history: subprocess.Popen | None = None
    live: subprocess.Popen | None = None
    dagster: subprocess.Popen | None = None
    try:
        print("\n".join(superset.up(settings)), flush=True)  # unless ANTENNA_DASHBOARD=0
        start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
        print(f"sending 3 past hours of traffic from {start:%Y-%m-%d %H:00} UTC (for backfills)")
        history = subprocess.Popen(
            [
                *antenna,
                "simulate",
                "--start",
                start.isoformat(),
                "--hours",
                "3",
                "--events",
                str(20 * 60 * 3),  # the course's pace: one report per device per minute
                "--seed",
                "1",
                "--bad-ratio",
                "0.001",
                "--quiet",
            ],
            env=env,
            start_new_session=True,
        )
        print(f"live simulator at {rate:g} events/s", flush=True)
        live = subprocess.Popen(
            [*antenna, "simulate", "--forever", "--rate", str(rate), "--quiet"],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"Dagster UI on http://127.0.0.1:{port}  (Ctrl-C stops everything)", flush=True)
        dagster = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "dagster"),
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        while dagster.poll() is None:
            time.sleep(0.5)
        print(f"dagster dev exited with code {dagster.returncode}", file=sys.stderr)
        return dagster.returncode or 1
    except KeyboardInterrupt:
        print("\nCtrl-C: shutting down", flush=True)
        return 0
    finally:
        _stop(live, "simulator")
        _stop(history, "history simulator")
        if dagster is not None and dagster.poll() is None:
            _terminate_runs(port)
        _stop(dagster, "dagster dev", timeout=60)
        _stop_run_workers(str(settings.dagster_home))
        if not was_running["superset"]:
            superset.stop(settings)
        if not was_running["kafka"]:
            services.stop_broker(settings)
        if not was_running["postgres"]:
            services.stop_postgres(settings)
        print("demo stopped")
