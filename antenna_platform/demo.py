"""`make demo`: the whole platform on one machine, stopped by one Ctrl-C.

Starts the embedded services (unless URLs are given), provisions tables and the
topic, sends three past hours of traffic, keeps a live simulator running, and runs
`dagster dev` on 127.0.0.1 with the stream sensor and the hourly schedule on.

Stopping (antenna_platform.processes holds the mechanics):
- one Ctrl-C (or SIGTERM, or the terminal closing: SIGHUP) stops everything in about
  15 s: the simulators, the runs (the stream commits its batch in hand and the run ends
  CANCELED), `dagster dev` with its daemon, webserver, code servers and run workers, then
  the embedded services the demo started;
- a second Ctrl-C during that stops everything at once (SIGKILL);
- if the demo itself is killed outright, its watcher process does the same cleanup;
- `antenna down` stops a running demo, or what an earlier one left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from antenna_platform import processes, services
from antenna_platform.config import PROJECT_ROOT, Settings, redact_url
from antenna_platform.warehouse import provision

RUN_STOP_S = 10.0  # terminated stream workers commit their batch in hand and exit
CHILDREN_STOP_S = 3.0  # then SIGTERM to every child's group, SIGKILL after this


def say(msg: str, err: bool = False) -> None:
    """Print, but never fail: after a closed terminal stdout raises."""
    with contextlib.suppress(OSError, ValueError):
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def pid_file(settings: Settings) -> Path:
    return settings.home / "demo.pid"


def running_demo(settings: Settings) -> int | None:
    """The pid of a live `antenna demo` of this ANTENNA_HOME, if there is one."""
    try:
        pid = int(pid_file(settings).read_text().split()[0])
        proc = psutil.Process(pid)
        cmd = " ".join(proc.cmdline())
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    alive = proc.status() != psutil.STATUS_ZOMBIE
    return pid if alive and "antenna" in cmd and "demo" in cmd and pid != os.getpid() else None


def stop_demo(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Stop a running demo of this ANTENNA_HOME, then whatever an earlier one left behind
    (every process carrying its mark). Returns what it did, for the user."""
    done = []
    pid = running_demo(settings)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=timeout_s)
        done.append(f"demo (pid {pid}) stopped")
    left = processes.sweep(str(settings.home))
    if left:
        done.append(f"stopped {len(left)} process(es) an earlier demo left behind")
        if services.postgres_state(settings).running:
            n = settle_runs(settings, "its demo was stopped by `antenna down`")
            if n:
                done.append(f"marked {n} run(s) of that demo canceled")
    return done


IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def settle_runs(settings: Settings, why: str) -> int:
    """Once every process of a demo is gone, its runs still shown in progress can never
    end by themselves (the default run launcher does not notice a dead worker): mark
    them canceled. Only for the embedded instance a demo owns. Returns how many."""
    if not settings.embedded_postgres or not (settings.dagster_home / "dagster.yaml").exists():
        return 0
    os.environ.update(services.dagster_env(settings))
    import dagster as dg  # noqa: PLC0415

    statuses = [dg.DagsterRunStatus(s) for s in IN_PROGRESS]
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=statuses), limit=1000)
        for run in runs:
            instance.report_run_canceled(run, message=why)
    return len(runs)


def _interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


TERMINATE_RUNS = """
mutation TerminateRuns($runIds: [String!]!) {
  terminateRuns(runIds: $runIds) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename } }
  }
}
"""


def _cancel_runs(port: int) -> bool:
    """Terminate every run in progress through the webserver (one request): the run is
    marked as terminated by the user, then its worker interrupted, so it ends CANCELED,
    not FAILED. Returns whether the request went through."""
    try:
        from dagster_graphql import DagsterGraphQLClient  # noqa: PLC0415

        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=5)
        query = (
            "{ runsOrError(filter: {statuses: [STARTED, STARTING, QUEUED, NOT_STARTED]}) "
            "{ ... on Runs { results { runId } } } }"
        )
        data = client._execute(query)  # noqa: SLF001 - the public client has no run listing
        run_ids = [r["runId"] for r in data["runsOrError"]["results"]]
        if run_ids:
            say(f"terminating {len(run_ids)} run(s) ...")
            done = client._execute(TERMINATE_RUNS, {"runIds": run_ids})  # noqa: SLF001
            results = done["terminateRuns"].get("terminateRunResults") or []
            ok = sum(r["__typename"] == "TerminateRunSuccess" for r in results)
            if ok < len(run_ids):
                say(f"{len(run_ids) - ok} run(s) could not be terminated", err=True)
        return True
    except Exception as exc:  # noqa: BLE001 - the webserver may be gone or still starting
        say(f"could not terminate runs through the webserver: {type(exc).__name__}", err=True)
        return False


def _warm_imports() -> None:
    """Import Dagster in the background, so the shutdown does not wait for it."""
    with contextlib.suppress(Exception):
        import dagster  # noqa: F401, PLC0415


def stream_workers(settings: Settings) -> list[psutil.Process]:
    """The live processes of this instance's stream runs (from the pid tags they record)."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        return []
    os.environ.update(services.dagster_env(settings))
    import dagster as dg  # noqa: PLC0415

    from antenna_platform.runworker import local_worker  # noqa: PLC0415

    statuses = [dg.DagsterRunStatus(s) for s in IN_PROGRESS]
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(job_name="device_stream_job", statuses=statuses), limit=50
        )
    return [p for run in runs if (p := local_worker(run.tags)) is not None]


def _shutdown(children: processes.Children, settings: Settings, port: int) -> None:
    """The graceful path, in order:
    1. the simulators get SIGTERM; the runs are terminated through the webserver: each run
       worker gets one interrupt (the stream op commits its batch in hand and closes its
       consumer) and ends CANCELED;
    2. wait for the stream workers to exit (up to RUN_STOP_S; if the webserver could not be
       reached, they get SIGTERM from here, once: a second signal could cut a commit short);
    3. SIGTERM to every child's process group (dagster dev, its webserver, daemon and code
       servers, other run workers), SIGKILL after CHILDREN_STOP_S;
    4. every straggler carrying the mark; runs still shown in progress are settled."""
    children.signal_all(signal.SIGTERM, ["simulator", "history"])
    dagster_up = any(c.name == "dagster" and c.proc.poll() is None for c in children.children)
    cancelled = _cancel_runs(port) if dagster_up else False
    with contextlib.suppress(Exception):  # best effort: the instance may be unreachable
        workers = stream_workers(settings)
        if workers and not cancelled:
            for proc in workers:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
        if workers:
            say(f"waiting for {len(workers)} stream worker(s) to commit and exit ...")
            psutil.wait_procs(workers, timeout=RUN_STOP_S)
    children.stop(timeout_s=CHILDREN_STOP_S)
    processes.sweep(children.mark, grace_s=CHILDREN_STOP_S, exclude=children.keep)
    with contextlib.suppress(Exception):
        settle_runs(settings, "stopped with the demo")


def _stop_services(settings: Settings, started: list[str]) -> None:
    """Stop the services the demo started: Superset first (Postgres holds its metadata)."""
    if "superset" in started:
        from antenna_platform.dashboards import server as superset  # noqa: PLC0415

        superset.stop(settings)
    if "kafka" in started:
        services.stop_broker(settings)
    if "postgres" in started:
        services.stop_postgres(settings)


def run(settings: Settings, port: int = 3000, rate: float = 1.0) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    other = running_demo(settings)
    if other is not None:
        say(f"antenna: error: a demo of {settings.home} is running (pid {other})", err=True)
        return 2
    mark = str(settings.home)
    left = processes.sweep(mark)
    if left:
        say(f"stopped {len(left)} process(es) an earlier demo left behind")
    threading.Thread(target=_warm_imports, daemon=True).start()
    if services.port_open("127.0.0.1", port):
        say(f"antenna: error: port 127.0.0.1:{port} is taken (is a demo already running?)", True)
        return 2
    from antenna_platform.dashboards import server as superset  # noqa: PLC0415

    started = [
        s.name
        for s in (
            services.postgres_state(settings),
            services.broker_state(settings),
            superset.state(settings),
        )
        if s.embedded and not s.running
    ]
    settings.home.mkdir(parents=True, exist_ok=True)
    pid_file(settings).write_text(str(os.getpid()))
    pipe, watcher = processes.start_watcher(mark, started)
    children = processes.Children(mark, log=say, keep=[watcher])
    try:
        say("starting services ...")
        services.up(settings)
        services.ensure_topic(settings)
        counts = provision(settings)
        if left:
            settle_runs(settings, "left behind by an earlier demo")
        say(f"postgres  {redact_url(settings.database_url)}  ({counts['users']} users)")
        say(f"kafka     {settings.kafka_bootstrap_servers}  topic {settings.topic!r}")
        say(f"lake      {settings.lake_dir}")
        env = {**os.environ, **services.dagster_env(settings)}
        antenna = [sys.executable, "-m", "antenna_platform.cli"]
        say("\n".join(superset.up(settings)))  # unless ANTENNA_DASHBOARD=0
        start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
        say(f"sending 3 past hours of traffic from {start:%Y-%m-%d %H:00} UTC")
        history = [
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
        ]
        children.start("history", history, env=env)
        say(f"live simulator at {rate:g} events/s")
        live = [*antenna, "simulate", "--forever", "--rate", str(rate), "--quiet"]
        children.start("simulator", live, env=env, stdout=subprocess.DEVNULL)
        say(f"Dagster UI on http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        dagster_bin = os.path.join(os.path.dirname(sys.executable), "dagster")
        dev = [dagster_bin, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
        dagster = children.start(
            "dagster", [*dev, "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=PROJECT_ROOT
        )
        while dagster.poll() is None:
            time.sleep(0.5)
        say(f"dagster dev exited with code {dagster.returncode}", err=True)
        return dagster.returncode or 1
    except KeyboardInterrupt:
        say("\nstopping everything (a second Ctrl-C stops it at once) ...")
        return 0
    finally:
        t_stop = time.monotonic()
        try:
            _shutdown(children, settings, port)
            _stop_services(settings, started)
        except KeyboardInterrupt:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            say("second Ctrl-C: stopping everything now")
            children.kill()
            _stop_services(settings, started)
        with contextlib.suppress(OSError):
            pipe.write(processes.CLEAN)
            pipe.close()
        with contextlib.suppress(OSError):
            pid_file(settings).unlink()
        say(f"demo stopped ({time.monotonic() - t_stop:.1f} s)")
