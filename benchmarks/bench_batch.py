"""Batch-layer benchmark: the real Dagster asset on Spark, beside DuckDB on the same files.

Runs, in one process so Spark starts once:
  1. one hour of --small events (default 1,000,000),
  2. one hour of --large events (default 10,000,000),
  3. a --hours-hour single-run backfill (default 24) of --per-hour events each (1,000,000).
Each is a real `dagster materialize` of bytes_hourly + user_quota_limit (checks included,
rows written to Postgres). Spark start-up (JVM + session) is timed on its own. DuckDB
runs the same grouping-sets aggregation over the same manifest files as the reference,
and its totals must equal Spark's.

Data is written straight to Parquet with numpy/pyarrow (vectorized) in the lake layout
and registered in the manifest, as the stream would. An embedded Postgres is started in
a temporary ANTENNA_HOME and stopped at the end.

    make bench-batch                                  # the full run
    make bench-batch BENCH_ARGS="--small 100000 --large 1000000 --hours 3 --per-hour 100000"
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROWS_PER_FILE = 1_000_000
N_DEVICES = 24  # 20 known users + 4 unknown devices
N_ANTENNAS = 50
APPS = np.array(["SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK"])


def make_table(hour: datetime, n: int, rng: np.random.Generator) -> pa.Table:
    from antenna_platform.lake import SCHEMA
    from antenna_platform.warehouse import device_id

    base = int(hour.timestamp())
    ts = (base + rng.integers(0, 3600, n)) * 1_000_000
    devices = pa.array([device_id(i) for i in range(1, N_DEVICES + 1)], pa.string())
    antennas = pa.array([f"11111111-1111-1111-1111-{i:012d}" for i in range(N_ANTENNAS)])
    dev_idx = pa.array(rng.integers(0, N_DEVICES, n).astype(np.int32))
    ant_idx = pa.array(rng.integers(0, N_ANTENNAS, n).astype(np.int32))
    app_idx = pa.array(rng.integers(0, len(APPS), n).astype(np.int32))
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.int64()).cast(SCHEMA.field("timestamp").type),
            "id": pa.DictionaryArray.from_arrays(dev_idx, devices).cast(pa.string()),
            "antenna_id": pa.DictionaryArray.from_arrays(ant_idx, antennas).cast(pa.string()),
            "bytes": pa.array(rng.integers(0, 10_000, n), pa.int64()),
            "app": pa.DictionaryArray.from_arrays(app_idx, pa.array(APPS)).cast(pa.string()),
            "kafka_partition": pa.array(np.zeros(n, np.int32)),
            "kafka_offset": pa.array(np.arange(n, dtype=np.int64)),
        },
        schema=SCHEMA,
    )


def write_hour(settings, conn, hour: datetime, n: int, rng: np.random.Generator) -> list[str]:
    """Write n events of one hour as ~1M-row files and register them. Returns paths."""
    from antenna_platform import lake

    tables = []
    for i, start in enumerate(range(0, n, ROWS_PER_FILE)):
        t = make_table(hour, min(ROWS_PER_FILE, n - start), rng)
        tables.append((f"{lake.hour_relpath(int(hour.timestamp()))}/p0-bench-{i:04d}.parquet", t))
    files = lake.add_files(settings.lake_dir, conn, tables)
    paths = [str(settings.lake_dir / f.path) for f in files]
    return paths


def duckdb_reference(users: list[tuple[str, str, int]], hours: dict[datetime, list[str]]):
    """Same aggregation in DuckDB; returns (seconds, {hour_epoch: total bytes})."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("create table users (id varchar, email varchar, quota bigint)")
    con.executemany("insert into users values (?, ?, ?)", users)
    parts = []
    for h, paths in hours.items():
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        parts.append(
            f"select timestamp, id, antenna_id, bytes, app, {int(h.timestamp())}::bigint as "
            f"hour_epoch from read_parquet([{files}])"
        )
    sql = f"""
        with e as ({" union all ".join(parts)})
        select e.hour_epoch, e.antenna_id, u.email, e.app,
               grouping_id(e.hour_epoch, e.antenna_id, u.email, e.app) as g,
               sum(e.bytes) as value, count(*) as n, max(u.quota) as quota
        from e left join users u on e.id = u.id
        group by grouping sets ((e.hour_epoch, e.antenna_id), (e.hour_epoch, u.email),
                                (e.hour_epoch, e.app), (e.hour_epoch))
    """
    rows = con.execute(sql).fetchall()
    elapsed = time.perf_counter() - t0
    totals = {r[0]: int(r[5]) for r in rows if r[4] == 0b0111}
    return elapsed, totals


def run_case(name: str, settings, conn, hours: dict[datetime, list[str]], users) -> dict:
    import dagster as dg

    from assets.batch import batch_hourly
    from assets.lake import device_events
    from resources import build_resources

    keys = [f"{h:%Y-%m-%d-%H:00}" for h in sorted(hours)]
    tags = {}
    key = None
    if len(keys) == 1:
        key = keys[0]
    else:
        tags = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    t0 = time.perf_counter()
    result = dg.materialize(
        [device_events, batch_hourly],
        selection=["bytes_hourly", "user_quota_limit"],
        partition_key=key,
        tags=tags,
        resources=build_resources(),
    )
    spark_s = time.perf_counter() - t0
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    mat = next(
        m
        for m in result.asset_materializations_for_node("batch_hourly")
        if m.asset_key == dg.AssetKey("bytes_hourly")
    )
    scan_s = mat.metadata["spark_seconds"].value
    pandera_s = mat.metadata["pandera_seconds"].value
    rows = conn.execute(
        "select \"timestamp\", sum(value) from bytes_hourly where type = 'app_total_bytes' "
        'and "timestamp" = any(%s) group by 1',
        ([h.replace(tzinfo=None) for h in hours],),
    ).fetchall()
    spark_totals = {int(h.replace(tzinfo=UTC).timestamp()): int(v) for h, v in rows}
    duck_s, duck_totals = duckdb_reference(users, hours)
    assert spark_totals == duck_totals, "Spark and DuckDB disagree"
    events = sum(
        conn.execute(
            "select coalesce(sum(rows), 0) from lake_files where hour = %s",
            (h.replace(tzinfo=None),),
        ).fetchone()[0]
        for h in hours
    )
    return {
        "case": name,
        "events": events,
        "spark_s": spark_s,
        "scan_s": scan_s,
        "pandera_s": pandera_s,
        "duckdb_s": duck_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1_000_000, help="events in the first hour")
    ap.add_argument("--large", type=int, default=10_000_000, help="events in the second hour")
    ap.add_argument("--hours", type=int, default=24, help="hours in the backfill (0 = skip)")
    ap.add_argument("--per-hour", type=int, default=1_000_000, help="events per backfill hour")
    ap.add_argument("--keep", action="store_true", help="keep the temporary ANTENNA_HOME")
    args = ap.parse_args()

    from antenna_platform import services

    home = Path(tempfile.mkdtemp(prefix="antenna-bench-"))
    os.environ.update(
        {
            "ANTENNA_HOME": str(home),
            "ANTENNA_PG_PORT": str(services.free_port()),
            "ANTENNA_LAKE_DIR": str(home / "lake"),
            "DAGSTER_HOME": str(home / "dagster"),
        }
    )
    os.environ.pop("ANTENNA_DATABASE_URL", None)
    (home / "dagster").mkdir()

    from antenna_platform.config import load_settings
    from antenna_platform.spark import get_spark
    from antenna_platform.warehouse import connect, provision

    settings = load_settings()
    services.start_postgres(settings)
    os.environ.update(services.resource_env(settings))  # what the Dagster resources read
    try:
        provision(settings)
        rng = np.random.default_rng(7)
        base = datetime(2026, 6, 1, tzinfo=UTC)
        with connect(settings, autocommit=True) as conn:
            users = [tuple(r) for r in conn.execute("select id, email, quota from user_metadata")]
            t0 = time.perf_counter()
            cases = [
                (
                    "1 hour (first in process)",
                    {base: write_hour(settings, conn, base, args.small, rng)},
                ),
                (
                    "1 hour (second)",
                    {
                        base + timedelta(hours=1): write_hour(
                            settings, conn, base + timedelta(hours=1), args.large, rng
                        )
                    },
                ),
            ]
            if args.hours:
                start = base + timedelta(days=1)
                backfill = {
                    start + timedelta(hours=i): write_hour(
                        settings, conn, start + timedelta(hours=i), args.per_hour, rng
                    )
                    for i in range(args.hours)
                }
                cases.append((f"{args.hours}-hour backfill, 1 run", backfill))
            gen_s = time.perf_counter() - t0
            print(f"generated and registered the lake files in {gen_s:.1f} s")

            t0 = time.perf_counter()
            spark = get_spark(settings)
            startup_s = time.perf_counter() - t0
            master = spark.sparkContext.master
            print(f"Spark start-up ({master}, JVM + session): {startup_s:.1f} s")

            rows = [run_case(name, settings, conn, hours, users) for name, hours in cases]
        spark.stop()
    finally:
        services.stop_postgres(settings)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    print()
    print(
        f"{'case':<28} {'events':>12} {'scan (s)':>9} {'pandera (s)':>11} {'run (s)':>8} "
        f"{'+start-up':>10} "
        f"{'duckdb (s)':>11} {'scan/duckdb':>12}"
    )
    for r in rows:
        print(
            f"{r['case']:<28} {r['events']:>12,} {r['scan_s']:>9.1f} {r['pandera_s']:>11.2f} "
            f"{r['spark_s']:>8.1f} {r['spark_s'] + startup_s:>10.1f} {r['duckdb_s']:>11.2f} "
            f"{r['scan_s'] / r['duckdb_s']:>11.0f}x"
        )
    print(
        "\nscan = the Spark part (manifest, users, one grouping-sets scan, collect); pandera = "
        "the\npandera.pyspark validation of the events (its own Spark jobs); run = the whole "
        "Dagster\nmaterialization (scan + pandera + 3 checks + Postgres write + Dagster); "
        "+start-up = run + Spark start-up,\nas for the first run of a process; duckdb = the "
        "same aggregation over the same files."
    )


if __name__ == "__main__":
    main()
