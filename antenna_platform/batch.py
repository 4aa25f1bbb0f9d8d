"""The batch layer: recompute closed hours exactly from the lake, with Spark.

One Spark job per run, whatever the number of hours: every hour's manifest files are
read, tagged with their hour, left-joined to `user_metadata` (a small broadcast
table read with psycopg: there is no JDBC driver here) and aggregated with grouping
sets, so antenna, email and app totals, unknown devices and the data-quality counters
all come from one scan (the Pandera schema of the events, in `quality`, then runs its own
small Spark jobs on the same DataFrame). The results are small; they are collected and written with
psycopg, each hour replaced (delete + insert) in one transaction.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ANTENNA, EMAIL, APP = "antenna_total_bytes", "email_total_bytes", "app_total_bytes"
HOUR_LOCK = 771004  # advisory-lock namespace of "replace this batch hour"

# grouping_id() over (hour_epoch, antenna_id, email, app): a 0 bit marks a grouped column.
_G_ANTENNA, _G_EMAIL, _G_APP, _G_HOUR = 0b011, 0b101, 0b110, 0b111

AGGREGATE_SQL = """
select /*+ BROADCAST(u) */
    e.hour_epoch,
    e.antenna_id,
    u.email,
    e.app,
    grouping_id() as g,
    sum(e.bytes) as value,
    count(*) as n,
    max(u.quota) as quota,
    sum(case when e.timestamp is null or e.id is null or e.antenna_id is null
             or e.bytes is null or e.app is null then 1 else 0 end) as null_rows,
    sum(case when e.bytes < 0 then 1 else 0 end) as negative_rows,
    sum(case when unix_micros(e.timestamp) < e.hour_epoch * 1000000
              or unix_micros(e.timestamp) >= (e.hour_epoch + 3600) * 1000000
             then 1 else 0 end) as outside_rows
from {events} e left join {users} u on e.id = u.id
group by grouping sets (
    (e.hour_epoch, e.antenna_id), (e.hour_epoch, u.email), (e.hour_epoch, e.app), (e.hour_epoch)
)
"""

# Columns of a lake file that the batch reads (kafka bookkeeping columns are not needed).
EVENT_COLUMNS = ("timestamp", "id", "antenna_id", "bytes", "app")


@dataclass(frozen=True)
class HourManifest:
    """The committed files of one hour and what the writer recorded about them."""

    hour: datetime  # naive UTC hour start
    paths: tuple[str, ...]
    rows: int
    bytes_sum: int


@dataclass
class HourResult:
    """Everything the batch computed for one hour: rows to write and numbers to check."""

    hour: datetime  # naive UTC hour start
    files: int = 0
    manifest_rows: int = 0
    manifest_bytes: int = 0
    events: int = 0
    total_bytes: int = 0
    unknown_events: int = 0
    unknown_bytes: int = 0
    null_rows: int = 0
    negative_rows: int = 0
    outside_rows: int = 0
    bytes_rows: list[tuple[datetime, str, int, str]] = field(default_factory=list)
    quota_rows: list[tuple[str, int, int, datetime]] = field(default_factory=list)

    def type_sum(self, kind: str) -> int:
        return sum(r[2] for r in self.bytes_rows if r[3] == kind)

    @property
    def event_failures(self) -> int:
        return self.null_rows + self.negative_rows + self.outside_rows


def hour_start(dt: datetime) -> datetime:
    """Naive UTC start of the hour holding `dt` (aware datetimes are converted to UTC)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Naive UTC hour starts in [start, end) (a Dagster partition time window)."""
    h, stop = hour_start(start), hour_start(end)
    out: list[datetime] = []
    while h < stop:
        out.append(h)
        h += timedelta(hours=1)
    return out


def epoch(hour: datetime) -> int:
    return int(hour.replace(tzinfo=UTC).timestamp())


def read_manifest(conn: psycopg.Connection, root: Path, hours: Sequence[datetime]) -> dict:
    """{hour: HourManifest} from `lake_files`, in one query so files and sums agree."""
    rows = conn.execute(
        "select hour, path, rows, bytes_sum from lake_files where hour = any(%s) "
        "order by hour, path",
        (list(hours),),
    ).fetchall()
    acc: dict[datetime, list[tuple[str, int, int]]] = {h: [] for h in hours}
    for hour, path, n, b in rows:
        acc.setdefault(hour, []).append((str(root / path), int(n), int(b)))
    return {
        h: HourManifest(
            h, tuple(p for p, _, _ in v), sum(n for _, n, _ in v), sum(b for *_, b in v)
        )
        for h, v in acc.items()
    }


def read_users(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(id, email, quota) of every user, as the operators left them."""
    rows = conn.execute("select id, email, quota from user_metadata order by id").fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


def users_frame(spark: Any, users: Sequence[tuple[str, str, int]]):
    """A small Spark DataFrame of user_metadata (id, email, quota)."""
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            T.StructField("id", T.StringType(), False),
            T.StructField("email", T.StringType(), False),
            T.StructField("quota", T.LongType(), False),
        ]
    )
    return spark.createDataFrame(list(users), schema)


def events_frame(spark: Any, manifests: Iterable[HourManifest]):
    """The events of the given hours' manifest files, with `hour_epoch` of their file's
    hour (the directory they were registered under), or None when there are no files."""
    from pyspark.sql import functions as F

    frames = []
    for m in manifests:
        if not m.paths:
            continue
        df = spark.read.parquet(*m.paths).select(*EVENT_COLUMNS)
        frames.append(df.withColumn("hour_epoch", F.lit(epoch(m.hour)).cast("long")))
    if not frames:
        return None
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def aggregate(spark: Any, events, users) -> list[dict[str, Any]]:
    """Run the one grouping-sets query; returns its (small) result rows as dicts."""
    return [r.asDict() for r in spark.sql(AGGREGATE_SQL, events=events, users=users).collect()]


def build_results(
    manifests: dict[datetime, HourManifest], agg_rows: Iterable[dict[str, Any]]
) -> list[HourResult]:
    """Turn aggregate rows into per-hour results (rows sorted, so reruns compare equal)."""
    results = {
        h: HourResult(h, len(m.paths), m.rows, m.bytes_sum) for h, m in sorted(manifests.items())
    }
    quotas: dict[tuple[datetime, str], int] = {}
    for r in agg_rows:
        hour = datetime.fromtimestamp(r["hour_epoch"], UTC).replace(tzinfo=None)
        res = results.setdefault(hour, HourResult(hour))
        g, value = r["g"], int(r["value"] or 0)
        if g == _G_HOUR:
            res.events, res.total_bytes = int(r["n"]), value
            res.null_rows = int(r["null_rows"])
            res.negative_rows = int(r["negative_rows"])
            res.outside_rows = int(r["outside_rows"])
        elif g == _G_ANTENNA and r["antenna_id"] is not None:
            res.bytes_rows.append((hour, r["antenna_id"], value, ANTENNA))
        elif g == _G_APP and r["app"] is not None:
            res.bytes_rows.append((hour, r["app"], value, APP))
        elif g == _G_EMAIL:
            if r["email"] is None:
                res.unknown_events, res.unknown_bytes = int(r["n"]), value
            else:
                res.bytes_rows.append((hour, r["email"], value, EMAIL))
                quotas[(hour, r["email"])] = int(r["quota"])
    for res in results.values():
        res.bytes_rows.sort(key=lambda row: (row[3], row[1]))
        res.quota_rows = sorted(
            (email, usage, quotas[(h, email)], h)
            for h, email, usage, kind in res.bytes_rows
            if kind == EMAIL and usage > quotas[(h, email)]
        )
    return [results[h] for h in sorted(results)]


@dataclass
class Scan:
    """The outcome of one scan: per-hour results and the validator's report on the events."""

    results: list[HourResult]
    schema_errors: dict[str, Any] = field(default_factory=dict)  # empty: valid (or not run)
    validate_seconds: float = 0.0


def scan_hours(
    spark: Any,
    conn: psycopg.Connection,
    root: Path,
    hours: Sequence[datetime],
    validate: Callable[[Any], dict[str, Any]] | None = None,
    attempts: int = 3,
) -> Scan:
    """Compute bytes_hourly and user_quota_limit rows for the given closed hours, and run
    `validate` (the Pandera schema of the events) on the very DataFrame aggregated, so
    the check and the numbers see the same manifest snapshot.

    The stream may compact an hour's files while we read it: it swaps the manifest rows
    in one commit and deletes the old files afterwards. If a file of our manifest
    snapshot has vanished, the scan failed for that reason: take a new snapshot and
    retry. Missing files are never skipped (that would lose their events).
    """
    for attempt in range(1, attempts + 1):
        manifests = read_manifest(conn, root, hours)
        users = read_users(conn)
        try:
            events = events_frame(spark, manifests.values())
            rows = [] if events is None else aggregate(spark, events, users_frame(spark, users))
            errors: dict[str, Any] = {}
            t0 = time.perf_counter()
            if events is not None and validate is not None:
                errors = validate(events)
            seconds = time.perf_counter() - t0
        except Exception:
            vanished = any(not os.path.exists(p) for m in manifests.values() for p in m.paths)
            if not vanished or attempt == attempts:
                raise
            continue
        return Scan(build_results(manifests, rows), errors, seconds)
    raise AssertionError("unreachable")


def compute_hours(
    spark: Any, conn: psycopg.Connection, root: Path, hours: Sequence[datetime], attempts: int = 3
) -> list[HourResult]:
    """`scan_hours` without a validator: just the per-hour results."""
    return scan_hours(spark, conn, root, hours, attempts=attempts).results


def _fault_pause(point: str) -> None:
    """TEST-ONLY fault injection: sleep inside the write transaction when
    ANTENNA_FAULT_SLEEP_IN_WRITE_S is set (read at call time), so a test can SIGKILL the
    process while it holds the hour's lock with the old rows deleted. Unset in production.
    """
    raw = os.environ.get("ANTENNA_FAULT_SLEEP_IN_WRITE_S")
    if raw:
        logging.getLogger(__name__).warning("fault injection: sleeping %s s %s", raw, point)
        time.sleep(float(raw))


def replace_hours(conn: psycopg.Connection, results: Sequence[HourResult]) -> int:
    """Replace the hours' rows in both tables, all in one transaction. Returns rows written.

    An empty hour deletes stale rows and inserts nothing, so a rerun always converges.
    """
    written = 0
    with conn.transaction(), conn.cursor() as cur:
        # Two runs of the same hour (schedule and late-data sensor) queue here instead of
        # colliding on the primary key; locks are taken in hour order, so no deadlock.
        for res in sorted(results, key=lambda r: r.hour):
            cur.execute(
                "select pg_advisory_xact_lock(%s, %s)", (HOUR_LOCK, epoch(res.hour) // 3600)
            )
        for res in results:
            cur.execute('delete from bytes_hourly where "timestamp" = %s', (res.hour,))
            cur.execute('delete from user_quota_limit where "timestamp" = %s', (res.hour,))
            if res.bytes_rows:
                cur.executemany(
                    'insert into bytes_hourly ("timestamp", id, value, type) '
                    "values (%s, %s, %s, %s)",
                    res.bytes_rows,
                )
            if res.quota_rows:
                cur.executemany(
                    'insert into user_quota_limit (email, usage, quota, "timestamp") '
                    "values (%s, %s, %s, %s)",
                    res.quota_rows,
                )
            written += len(res.bytes_rows) + len(res.quota_rows)
        _fault_pause("after the inserts, before the commit")
    return written


def example_bad_event(spark: Any, manifests: Iterable[HourManifest]) -> dict[str, Any] | None:
    """One failing event (null field, negative bytes or time outside its hour), for a report.

    Only called when the counters say there is one, so the happy path pays nothing.
    """
    events = events_frame(spark, manifests)
    if events is None:
        return None
    cond = (
        "timestamp is null or id is null or antenna_id is null or bytes is null or app is null "
        "or bytes < 0 or unix_micros(timestamp) < hour_epoch * 1000000 "
        "or unix_micros(timestamp) >= (hour_epoch + 3600) * 1000000"
    )
    rows = events.where(cond).limit(1).collect()
    if not rows:
        return None
    row = rows[0].asDict()
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


# ---------- metadata a person wants to look at ----------


def _top(totals: dict[str, int], n: int) -> list[tuple[str, int]]:
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def markdown_table(header: tuple[str, str], rows: Sequence[tuple[str, int]]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in rows]
    return "\n".join(lines)


def summarize(results: Sequence[HourResult], top: int = 5) -> dict[str, Any]:
    """Plain numbers and markdown tables over all hours of a run."""
    by_kind: dict[str, dict[str, int]] = {ANTENNA: {}, EMAIL: {}, APP: {}}
    for res in results:
        for _, key, value, kind in res.bytes_rows:
            by_kind[kind][key] = by_kind[kind].get(key, 0) + value
    over = [
        (f"{q[0]} @ {q[3]:%Y-%m-%d %H:00}", q[1] - q[2]) for res in results for q in res.quota_rows
    ]
    return {
        "hours": [f"{r.hour:%Y-%m-%d %H:00}" for r in results],
        "files": sum(r.files for r in results),
        "events": sum(r.events for r in results),
        "total_bytes": sum(r.total_bytes for r in results),
        "bytes_hourly_rows": sum(len(r.bytes_rows) for r in results),
        "users_over_quota": sum(len(r.quota_rows) for r in results),
        "unknown_device_events": sum(r.unknown_events for r in results),
        "unknown_device_bytes": sum(r.unknown_bytes for r in results),
        "empty_hours": sum(1 for r in results if r.events == 0),
        "top_antennas": markdown_table(("antenna", "bytes"), _top(by_kind[ANTENNA], top)),
        "top_users": markdown_table(("email", "bytes"), _top(by_kind[EMAIL], top)),
        "top_apps": markdown_table(("app", "bytes"), _top(by_kind[APP], top)),
        "over_quota": markdown_table(("user @ hour", "bytes over quota"), _top(dict(over), top)),
    }
