"""How soon an hour is in bytes_hourly after it ends: the whole platform, default settings.

Starts its own embedded services and `dagster dev` (daemon, sensors, schedule) on free
ports in a temporary ANTENNA_HOME, a live simulator sending events stamped with the
current time, and waits for real hour boundaries: an hour ends by the clock. For each
boundary it prints the time from the hour's end to
- the stream's report of the hour (its low watermark past the end, files compacted),
- the start and the end of the batch run that computed it,
- its first rows in bytes_hourly (the figure the goal is about: under 3 minutes).

It starts WARMUP_S before the next boundary (the one after, if that is too close), so a
run takes up to an hour and a few minutes. Needs Java, like the batch.

    make bench-hour                          # one boundary
    make bench-hour BENCH_ARGS="--hours 2"   # two in a row
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_platform import processes, services  # noqa: E402
from antenna_platform.warehouse import connect, provision  # noqa: E402


def next_boundary(now: datetime, warmup_s: float) -> datetime:
    b = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return b if (b - now).total_seconds() >= warmup_s else b + timedelta(hours=1)


def rows_at(settings, hour: datetime) -> int:
    with connect(settings) as conn:
        return conn.execute(
            'select count(*) from bytes_hourly where "timestamp" = %s', (hour,)
        ).fetchone()[0]


def dagster_figures(settings, key: str) -> dict[str, float | None]:
    """When the stream reported the hour, and when the batch run of it started and ended."""
    import dagster as dg

    out: dict[str, float | None] = {"report": None, "run_start": None, "run_end": None}
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        reports = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("device_events"), asset_partitions=[key]),
            limit=100,
            ascending=True,
        ).records
        if reports:
            out["report"] = reports[0].timestamp
        done = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("bytes_hourly"), asset_partitions=[key]),
            limit=100,
            ascending=True,
        ).records
        if done:
            run = instance.get_run_record_by_id(done[0].run_id)
            out["run_start"], out["run_end"] = run.start_time, run.end_time
            out["trigger"] = run.dagster_run.tags.get("antenna/trigger")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=1, help="hour boundaries to measure")
    ap.add_argument("--rate", type=float, default=5.0, help="live events per second")
    ap.add_argument("--warmup", type=float, default=240.0, help="seconds started before a boundary")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on a boundary after")
    ap.add_argument("--keep", action="store_true", help="keep the temporary ANTENNA_HOME")
    args = ap.parse_args()

    now = datetime.now(UTC)
    first = next_boundary(now, args.warmup)
    start_at = first - timedelta(seconds=args.warmup)
    wait = (start_at - now).total_seconds()
    print(f"first boundary {first:%H:%M} UTC; starting at {start_at:%H:%M:%S} (in {wait:.0f} s)")
    time.sleep(max(0.0, wait))

    home = Path(tempfile.mkdtemp(prefix="antenna-bench-hour-"))
    port = services.free_port()
    settings, env = services.start_isolated(home)
    provision(settings)
    services.ensure_topic(settings)
    run_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ANTENNA_", "KAFKA_", "DAGSTER_"))
    }
    run_env.update(env)
    run_env.update(services.dagster_env(settings))
    os.environ.update(services.dagster_env(settings))
    mark = str(home)
    children = processes.Children(mark, log=print)
    results = []
    try:
        antenna = [sys.executable, "-m", "antenna_platform.cli"]
        sim = [*antenna, "simulate", "--forever", "--rate", str(args.rate), "--quiet"]
        children.start("simulator", sim, env=run_env, stdout=subprocess.DEVNULL)
        dagster = str(Path(sys.executable).with_name("dagster"))
        dev = [
            dagster,
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        log = (home / "dagster.log").open("w")
        children.start("dagster", dev, env=run_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        print(f"platform up in {home} (dagster dev on 127.0.0.1:{port}, log {home}/dagster.log)")
        boundary = first
        for _ in range(args.hours):
            hour = (boundary - timedelta(hours=1)).replace(tzinfo=None)
            key = f"{hour:%Y-%m-%d-%H:00}"
            time.sleep(max(0.0, (boundary - datetime.now(UTC)).total_seconds()))
            print(f"{boundary:%H:%M} UTC: hour {key} ended; waiting for its rows ...", flush=True)
            end = boundary.timestamp()
            seen = None
            while time.time() - end < args.timeout:
                if rows_at(settings, hour):
                    seen = time.time()
                    break
                time.sleep(2)
            figures = dagster_figures(settings, key)
            line = {k: (v - end if isinstance(v, float) else v) for k, v in figures.items()}
            line["rows"] = None if seen is None else seen - end
            results.append((key, line))

            def fmt(v):
                return "never" if v is None else f"{v:6.1f} s" if isinstance(v, float) else v

            print(
                f"  {key}: reported {fmt(line['report'])}, run started {fmt(line['run_start'])}, "
                f"run ended {fmt(line['run_end'])}, rows in bytes_hourly {fmt(line['rows'])} "
                f"after the hour's end (trigger: {line.get('trigger')})",
                flush=True,
            )
            boundary += timedelta(hours=1)
    finally:
        children.stop(timeout_s=10)
        processes.sweep(mark, grace_s=5)
        services.down(settings)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    got = [r["rows"] for _, r in results if r["rows"] is not None]
    if got:
        print(f"hour end -> rows in bytes_hourly: max {max(got):.1f} s over {len(got)} hour(s)")
    return 0 if len(got) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
