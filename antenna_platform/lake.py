"""The Parquet lake: layout, atomic file writes and the file manifest.

Layout: `<lake>/device_events/year=YYYY/month=M/day=D/hour=H/<name>.parquet`, by
event-time hour (UTC). A file is written under a temporary name, fsynced and
renamed, so readers never see half a file. The manifest table `lake_files` is the
truth: a file on disk that is not in the manifest (a crash between rename and the
commit that covers it) is an orphan; readers use the manifest, and
`remove_orphans` deletes such files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from antenna_platform.contract import Event

DATASET = "device_events"
SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("id", pa.string()),
        ("antenna_id", pa.string()),
        ("bytes", pa.int64()),
        ("app", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


@dataclass(frozen=True)
class LakeFile:
    """One committed (or about to be committed) Parquet file of the lake."""

    path: str  # relative to the lake root
    hour: datetime  # UTC hour start, naive (as stored in Postgres)
    kafka_partition: int | None
    rows: int
    bytes_sum: int
    size_bytes: int


def hour_of(ts: int) -> int:
    """Epoch seconds of the start of the UTC hour holding `ts`."""
    return ts - ts % 3600


def hour_dt(hour_ts: int) -> datetime:
    """Naive UTC datetime of an hour start (the form stored in Postgres)."""
    return datetime.fromtimestamp(hour_ts, UTC).replace(tzinfo=None)


def hour_relpath(hour: int | datetime) -> str:
    """`device_events/year=2026/month=3/day=5/hour=14` for that hour."""
    dt = hour if isinstance(hour, datetime) else hour_dt(hour)
    return f"{DATASET}/year={dt.year}/month={dt.month}/day={dt.day}/hour={dt.hour}"


def build_table(
    events: Sequence[Event],
    kafka_partitions: Sequence[int] | None = None,
    kafka_offsets: Sequence[int] | None = None,
) -> pa.Table:
    n = len(events)
    return pa.table(
        {
            "timestamp": pa.array([e.ts * 1_000_000 for e in events], pa.int64()).cast(
                SCHEMA.field("timestamp").type
            ),
            "id": pa.array([e.id for e in events], pa.string()),
            "antenna_id": pa.array([e.antenna_id for e in events], pa.string()),
            "bytes": pa.array([e.bytes for e in events], pa.int64()),
            "app": pa.array([e.app for e in events], pa.string()),
            "kafka_partition": pa.array(
                list(kafka_partitions) if kafka_partitions is not None else [None] * n, pa.int32()
            ),
            "kafka_offset": pa.array(
                list(kafka_offsets) if kafka_offsets is not None else [None] * n, pa.int64()
            ),
        },
        schema=SCHEMA,
    )


def write_parquet_atomic(root: Path, relpath: str, table: pa.Table) -> int:
    """Write `table` to `root/relpath` via a temp file + fsync + rename. Returns its size."""
    final = root / relpath
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}-{final.name}"
    try:
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final.stat().st_size


def write_events(
    root: Path,
    events: Sequence[Event],
    *,
    kafka_partition: int | None = None,
    kafka_offsets: Sequence[int] | None = None,
    name: str | None = None,
) -> list[LakeFile]:
    """Write events into one file per event-time hour. Not yet in the manifest."""
    by_hour: dict[int, list[int]] = {}
    for i, e in enumerate(events):
        by_hour.setdefault(hour_of(e.ts), []).append(i)
    stem = name or uuid.uuid4().hex
    out: list[LakeFile] = []
    for h, idx in sorted(by_hour.items()):
        evs = [events[i] for i in idx]
        offs = [kafka_offsets[i] for i in idx] if kafka_offsets is not None else None
        parts = [kafka_partition] * len(idx) if kafka_partition is not None else None
        table = build_table(evs, parts, offs)
        rel = f"{hour_relpath(h)}/{stem}.parquet"
        size = write_parquet_atomic(root, rel, table)
        out.append(
            LakeFile(rel, hour_dt(h), kafka_partition, len(evs), sum(e.bytes for e in evs), size)
        )
    return out


def register_files(conn: psycopg.Connection, files: Iterable[LakeFile]) -> None:
    """Add files to the manifest (call inside the transaction that covers them)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into lake_files (path, hour, kafka_partition, rows, bytes_sum, size_bytes) "
            "values (%s, %s, %s, %s, %s, %s) on conflict (path) do update set "
            "hour = excluded.hour, kafka_partition = excluded.kafka_partition, "
            "rows = excluded.rows, bytes_sum = excluded.bytes_sum, "
            "size_bytes = excluded.size_bytes",
            [(f.path, f.hour, f.kafka_partition, f.rows, f.bytes_sum, f.size_bytes) for f in files],
        )


def write_and_register(
    root: Path, conn: psycopg.Connection, events: Sequence[Event], **kwargs
) -> list[LakeFile]:
    """Convenience for loaders and tests: write files and commit them to the manifest."""
    files = write_events(root, events, **kwargs)
    with conn.transaction():
        register_files(conn, files)
    return files


def files_for_hour(conn: psycopg.Connection, root: Path, hour: datetime) -> list[str]:
    """Absolute paths of the committed files of one hour (naive UTC hour start)."""
    rows = conn.execute(
        "select path from lake_files where hour = %s order by path", (hour,)
    ).fetchall()
    return [str(root / r[0]) for r in rows]


def remove_orphans(
    conn: psycopg.Connection, root: Path, kafka_partitions: Iterable[int] | None = None
) -> list[str]:
    """Delete lake files (and stale temp files) that the manifest does not know.

    With `kafka_partitions`, only files named `p<partition>-...` of those partitions
    are considered, so one worker never removes another live worker's files.
    """
    base = root / DATASET
    if not base.is_dir():
        return []
    known = {r[0] for r in conn.execute("select path from lake_files").fetchall()}
    prefixes = None if kafka_partitions is None else tuple(f"p{p}-" for p in kafka_partitions)
    removed: list[str] = []
    for path in base.rglob("*.parquet"):
        rel = path.relative_to(root).as_posix()
        name = path.name
        if name.startswith(".tmp-"):
            name = name.split("-", 2)[-1]
        elif rel in known:
            continue
        if prefixes is not None and not name.startswith(prefixes):
            continue
        path.unlink(missing_ok=True)
        removed.append(rel)
    return removed


def merge_files(
    root: Path, relpaths: Sequence[str], hour: datetime, kafka_partition: int | None, name: str
) -> LakeFile:
    """Write the rows of `relpaths` (one hour) into one new file, ordered by Kafka offset.

    Not yet in the manifest: the caller swaps the manifest rows in one transaction and
    deletes the old files only after that commit (a crash leaves orphans, never a loss).
    """
    table = pa.concat_tables([pq.read_table(root / p, schema=SCHEMA) for p in relpaths])
    table = table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    rel = f"{hour_relpath(hour)}/{name}.parquet"
    size = write_parquet_atomic(root, rel, table)
    total = pc.sum(table.column("bytes")).as_py() or 0
    return LakeFile(rel, hour, kafka_partition, table.num_rows, int(total), size)
