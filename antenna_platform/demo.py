"""`make demo`: the whole platform on one machine, stopped by one Ctrl-C.

Starts the embedded services (unless URLs are given), provisions tables and the
topic, sends three past hours of traffic (so there is something to backfill at
once), keeps a live simulator running, and runs `dagster dev` on 127.0.0.1 with
the stream sensor and the hourly schedule on. Ctrl-C stops what it started.
"""

from __future__ import annotations

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


def _sigterm_as_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def run(settings: Settings, port: int = 3000, rate: float = 20.0) -> int:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if services.port_open("127.0.0.1", port):
        print(
            f"antenna: error: port 127.0.0.1:{port} is taken (is a demo already running?)",
            file=sys.stderr,
        )
        return 2
    was_running = {
        s.name: s.running
        for s in (services.postgres_state(settings), services.broker_state(settings))
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
                "36000",
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
        _stop(dagster, "dagster dev", timeout=60)
        if not was_running["kafka"]:
            services.stop_broker(settings)
        if not was_running["postgres"]:
            services.stop_postgres(settings)
        print("demo stopped")
