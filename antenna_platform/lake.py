"""The Parquet lake: layout, staged writes, publication on commit, and the file manifest.

Layout: `<lake>/device_events/year=YYYY/month=M/day=D/hour=H/<name>.parquet`, by
event-time hour (UTC). `device_events/` holds exactly the committed files, so a plain
reader (Spark, DuckDB, pandas over `device_events/**/*.parquet`) sees exactly the
committed events whenever the stream is idle or stopped:

1. a writer writes a new file into `<lake>/_staging/` (beside the dataset, same file
   system), fsynced; nobody reads the staging folder;
2. the Postgres transaction that commits the file's events registers its final path in
   the manifest (`lake_files`);
3. after that commit the file is renamed into `device_events/` (`publish`). A crash
   between 2 and 3 is rolled forward by the partition's next owner (`clean_partition`).

Stream files are named `p<partition>-e<epoch>-...`: the Kafka partition and the owner
epoch (claim) of their writer. A staged file whose writer's epoch is older than the
partition's current claim can never be committed any more (every commit checks the
claim), so it is removed; one in the manifest is published instead. A file in
`device_events/` that the manifest no longer lists was superseded by compaction and is
removed too. Only the holder of a partition's newest claim cleans that partition.
"""

from __future__ import annotations

import os
import re
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
STAGING = "_staging"
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
_HOUR_DIR = re.compile(r"^device_events/year=(\d+)/month=(\d+)/day=(\d+)/hour=(\d+)/([^/]+)$")
_STAGED = re.compile(r"^(\d{4})(\d\d)(\d\d)(\d\d)_(.+)$")
_WRITER = re.compile(r"^p(\d+)-e(\d+)-")


@dataclass(frozen=True)
class LakeFile:
    """One committed (or about to be committed) Parquet file of the lake."""

    path: str  # final path, relative to the lake root (device_events/...)
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


def staged_relpath(final_rel: str) -> str:
    """Where the file with final path `final_rel` waits for its commit (one flat folder,
    so a batch's files need one directory fsync)."""
    m = _HOUR_DIR.match(final_rel)
    if m is None:
        raise ValueError(f"not a lake file path: {final_rel!r}")
    y, mo, d, h, name = m.groups()
    return f"{STAGING}/{int(y):04d}{int(mo):02d}{int(d):02d}{int(h):02d}_{name}"


def final_relpath(staged_name: str) -> str | None:
    """The final path of a staged file name (None if it is not one of ours)."""
    m = _STAGED.match(staged_name)
    if m is None:
        return None
    y, mo, d, h, name = m.groups()
    return f"{DATASET}/year={int(y)}/month={int(mo)}/day={int(d)}/hour={int(h)}/{name}"


def writer_of(name: str) -> tuple[int, int] | None:
    """(Kafka partition, owner epoch) from a stream file name `p<p>-e<epoch>-...`."""
    m = _WRITER.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Column statistics of a stream micro-batch file: the time and offset ranges (what
# readers prune on). Statistics of the string columns cost as much as the zstd encoding
# itself, and such a file lives minutes (compaction rewrites it with every statistic).
BATCH_FILE_STATISTICS = ["timestamp", "bytes", "kafka_partition", "kafka_offset"]


def write_staged(
    root: Path, final_rel: str, table: pa.Table, statistics: bool | list[str] = True
) -> LakeFile:
    """Write `table` (one hour's rows) to the staging folder, fsynced; returns the LakeFile
    describing its final path. Call `sync_staging` before the commit that covers it."""
    m = _HOUR_DIR.match(final_rel)
    if m is None:
        raise ValueError(f"not a lake file path: {final_rel!r}")
    staged = root / staged_relpath(final_rel)
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        pq.write_table(table, staged, compression="zstd", write_statistics=statistics)
        _fsync(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    y, mo, d, h, _ = (int(x) if x.isdigit() else x for x in m.groups())
    hour = datetime(y, mo, d, h)  # noqa: DTZ001 - naive UTC, as stored in Postgres
    kp = writer_of(m.group(5))
    total = pc.sum(table.column("bytes")).as_py() or 0
    return LakeFile(
        final_rel,
        hour,
        kp[0] if kp else None,
        table.num_rows,
        int(total),
        staged.stat().st_size,
    )


def sync_staging(root: Path) -> None:
    """fsync the staging folder: the staged files' names are durable before the commit."""
    _fsync(root / STAGING)


def publish(root: Path, paths: Iterable[str]) -> int:
    """Rename committed files from the staging folder into `device_events/`.

    Tolerates a file that someone else already published (the partition's next owner
    rolling a crashed commit forward) or already compacted away. Returns how many moved.
    """
    moved = 0
    for rel in paths:
        final = root / rel
        try:
            os.replace(root / staged_relpath(rel), final)
        except FileNotFoundError:
            if not (root / STAGING).is_dir():
                raise
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(root / staged_relpath(rel), final)
            except FileNotFoundError:
                continue  # published (and maybe compacted) by someone else
        moved += 1
    return moved


def write_events(
    root: Path,
    events: Sequence[Event],
    *,
    kafka_partition: int | None = None,
    kafka_offsets: Sequence[int] | None = None,
    name: str | None = None,
) -> list[LakeFile]:
    """Stage events as one file per event-time hour (not yet committed nor published)."""
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
        out.append(write_staged(root, f"{hour_relpath(h)}/{stem}.parquet", table))
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
    """For loaders and tests: stage files, commit them to the manifest, publish them."""
    files = write_events(root, events, **kwargs)
    if files:
        sync_staging(root)
    with conn.transaction():
        register_files(conn, files)
    publish(root, [f.path for f in files])
    return files


def add_files(
    root: Path, conn: psycopg.Connection, tables: Sequence[tuple[str, pa.Table]]
) -> list[LakeFile]:
    """For loaders, benchmarks and tests: commit ready-made tables as lake files (final
    paths `device_events/.../<name>.parquet`), staged, registered and published."""
    files = [write_staged(root, rel, t) for rel, t in tables]
    if files:
        sync_staging(root)
    with conn.transaction():
        register_files(conn, files)
    publish(root, [f.path for f in files])
    return files


def files_for_hour(conn: psycopg.Connection, root: Path, hour: datetime) -> list[str]:
    """Absolute paths of the committed files of one hour (naive UTC hour start)."""
    rows = conn.execute(
        "select path from lake_files where hour = %s order by path", (hour,)
    ).fetchall()
    return [str(root / r[0]) for r in rows]


@dataclass
class Cleanup:
    """What `clean_partition` did."""

    published: list[str]  # committed files rolled forward into device_events/
    removed_staged: list[str]  # uncommitted files of fenced writers
    removed_superseded: list[str]  # files in device_events/ the manifest no longer lists

    def __bool__(self) -> bool:
        return bool(self.published or self.removed_staged or self.removed_superseded)


# names the stream gives its files: `p<p>-e<epoch>-...`, and before owner epochs existed
# `p<p>-<first>-<last>-<rand>` and `p<p>-c-<rand>` (loaders and tests use other names)
_STREAM_FILE = re.compile(
    r"^(?:\.tmp-[0-9a-f]{32}-)?p(\d+)-(?:e\d+-|\d+-\d+-[0-9a-f]{8}\.|c-[0-9a-f]{12}\.)"
)


def _dataset_files(root: Path, partitions: set[int]) -> list[Path]:
    """The stream's files of these partitions under `device_events/`."""
    base = root / DATASET
    out: list[Path] = []
    if not base.is_dir():
        return out
    for dirpath, _dirs, names in os.walk(base):
        for n in names:
            m = _STREAM_FILE.match(n)
            if m is not None and int(m.group(1)) in partitions:
                out.append(Path(dirpath) / n)
    return out


def clean_partitions(
    conn: psycopg.Connection,
    root: Path,
    epochs: dict[int, int],
    *,
    dataset: bool = True,
) -> Cleanup:
    """Make the lake of these partitions agree with the manifest. Call only while holding
    each partition's newest claim (`epochs`: partition -> that claim's epoch).

    - staged files of an older epoch that are in the manifest are published (their writer
      died, or paused, between its commit and the rename); the others are removed: their
      writer is fenced and can never commit them. Files of our own epoch are left alone
      (a batch of ours may be in flight);
    - with `dataset`, the stream's files of these partitions in `device_events/` that the
      manifest does not list are removed (inputs of a compaction that crashed right after
      its commit).

    Listing comes before reading the manifest, so a file committed and published after
    the listing is never mistaken for a superseded one.
    """
    out = Cleanup([], [], [])
    if not epochs:
        return out
    staging = root / STAGING
    staged = [e.name for e in os.scandir(staging) if e.is_file()] if staging.is_dir() else []
    on_disk = _dataset_files(root, set(epochs)) if dataset else []
    if not staged and not on_disk:
        return out
    known = {
        r[0]
        for r in conn.execute(
            "select path from lake_files where kafka_partition = any(%s)", (sorted(epochs),)
        ).fetchall()
    }
    for name in staged:
        final = final_relpath(name)
        writer = writer_of(final.rsplit("/", 1)[-1]) if final else None
        if writer is None or writer[0] not in epochs or writer[1] >= epochs[writer[0]]:
            continue  # another partition's, or written under our own (or a newer) claim
        if final in known:
            if publish(root, [final]):
                out.published.append(final)
        else:
            (staging / name).unlink(missing_ok=True)
            out.removed_staged.append(f"{STAGING}/{name}")
    for path in on_disk:
        rel = path.relative_to(root).as_posix()
        if rel not in known:
            path.unlink(missing_ok=True)
            out.removed_superseded.append(rel)
    return out


def merge_files(
    root: Path, relpaths: Sequence[str], hour: datetime, kafka_partition: int | None, name: str
) -> LakeFile:
    """Stage the rows of `relpaths` (one hour) as one new file, ordered by Kafka offset.

    Not yet committed: the caller swaps the manifest rows in one transaction, publishes
    the new file and removes the old ones right after that commit.
    """
    table = pa.concat_tables([pq.read_table(root / p, schema=SCHEMA) for p in relpaths])
    table = table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    return write_staged(root, f"{hour_relpath(hour)}/{name}.parquet", table)


def remove(root: Path, relpaths: Iterable[str]) -> None:
    """Delete lake files (superseded inputs of a committed compaction)."""
    for rel in relpaths:
        (root / rel).unlink(missing_ok=True)
