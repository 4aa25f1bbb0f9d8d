"""The batch in hand, its offsets, and how it is committed (quix-streams' Checkpoint).

`Checkpoint` owns the records polled since the last commit, parsed as they arrive
(`MicroBatch`), and the next offset each partition accepts: it refuses records whose
offset does not increase (a re-delivery, a fetch from before a seek), so nothing enters
a batch twice. `snapshot()` freezes the batch into an immutable `CommitSnapshot` (with
the claims it is committed under and the 5-minute deltas) for the committer thread.

A commit (`commit`) runs these steps, in this order:
  1. stage: each partition's events of each hour are written to `<lake>/_staging/`
     (`p<partition>-e<epoch>-...`, fsynced), outside the dataset readers see;
  2. one Postgres transaction:
     a. lock the partitions' claims and check this worker holds the newest epoch of each;
     b. check the stored offsets are where the batch was read from;
     c. register the files' final paths in the manifest (`lake_files`);
     d. add the 5-minute deltas to `bytes`;
     e. insert the dead letters;
     f. bump `lake_hours` (versions, late/unknown/reject counts);
     g. move the offsets (`stream_offsets`), then COMMIT;
  3. publish: rename the staged files into `device_events/`.
A failure before the COMMIT leaves the offsets where they were (the batch is read again)
and staged files that the partition's next claim removes; a failure after it leaves
staged files in the manifest, which the next claim publishes (rolls forward). Nothing is
lost or counted twice, and a plain reader of `device_events/` sees only committed files.

`Committer` runs commits on one daemon thread, at most one in flight, so the main thread
polls and parses the next batch meanwhile (Parquet and Postgres work outside the GIL).
It hands the result back to whoever waits for it (`settle`), which adopts it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa

from antenna_platform import lake
from antenna_platform.stream import columnar, dead_letters, sinks
from antenna_platform.stream.dead_letters import DeadLetters
from antenna_platform.stream.microbatch import MicroBatch
from antenna_platform.stream.ownership import PartitionState, with_offsets
from antenna_platform.stream.records import as_block
from antenna_platform.stream.windows import BatchTotals, WindowAggregator

# the names `fault` is called with, in order (tests inject failures at each)
STEPS = (
    "stage",
    "claims",
    "offsets",
    "manifest",
    "bytes",
    "dead_letters",
    "hours",
    "move_offsets",
    "committed",
    "published",
)


class LakeWriteError(RuntimeError):
    """The lake directory is not writable; the batch is retried, offsets stay put."""


@dataclass(frozen=True)
class PartitionCommit:
    """One partition's share of a commit."""

    partition: int
    state: PartitionState  # the claim it is committed under and where it starts
    next_offset: int
    table: pa.Table  # the valid events, lake schema, offset order
    max_event_ts: int | None


@dataclass(frozen=True)
class CommitSnapshot:
    """Everything one commit writes, frozen: the committer thread reads nothing else."""

    group: str
    topic: str
    parts: tuple[PartitionCommit, ...]
    dead: DeadLetters  # the rejects, as columns
    bytes_rows: tuple[tuple[int, str, str, int], ...]
    late: Mapping[int, int]  # hour -> late events
    unknown: Mapping[int, int]  # hour -> events of devices not in user_metadata
    rejects: Mapping[int, int]  # hour -> rejected messages
    live_topic_id: str | None  # the broker's topic id when the batch was frozen

    @property
    def events(self) -> int:
        return sum(pc.table.num_rows for pc in self.parts)

    @property
    def records(self) -> int:
        return self.events + len(self.dead)


@dataclass(frozen=True)
class CommitResult:
    snapshot: CommitSnapshot
    states: dict[int, PartitionState]  # partition -> state after the commit
    files: tuple[lake.LakeFile, ...]


def _no_fault(step: str) -> None:
    return None


class Checkpoint:
    """The batch in hand and the next offset each partition accepts."""

    def __init__(self, group: str, topic: str, max_clock_skew_s: int, watermark_s: int) -> None:
        self.group, self.topic = group, topic
        self.skew = max_clock_skew_s
        self.batch: MicroBatch | None = None
        self.positions: dict[int, int] = {}  # open partition -> next offset it accepts
        self.windows = WindowAggregator(watermark_s)  # includes batches frozen, not committed
        self.refused = 0  # records refused: partition not open, or offset not increasing
        self._users: pa.Array | None = None  # known device ids (None: not read yet)

    @property
    def users(self) -> pa.Array | None:
        return self._users

    @users.setter
    def users(self, ids: set[str] | None) -> None:
        """The device ids of `user_metadata` (events of others are counted as unknown)."""
        self._users = None if ids is None else pa.array(sorted(ids), pa.string())

    # -- partitions
    def open(self, partition: int, state: PartitionState) -> None:
        """Accept records of `partition` from its claim's start offset."""
        self.positions[partition] = state.start_offset
        self.windows.load(partition, state.max_event_ts)

    def close(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)
        self.windows.forget(partitions)

    def drop(self) -> None:
        """Forget the batch in hand and every position: the partitions are synced again
        (their offsets were not moved by this batch, and windows reload from Postgres)."""
        self.batch = None
        self.windows.forget(list(self.positions))
        self.positions.clear()

    # -- records
    @property
    def records(self) -> int:
        return self.batch.records if self.batch is not None else 0

    @property
    def valid(self) -> int:
        return self.batch.valid if self.batch is not None else 0

    def add(self, partition: int, records: Sequence) -> int:
        """Parse what a poll gave for one partition (`RecordBlock`s, or plain records:
        `records.as_block`) into the batch; returns how many were kept. Records of a
        partition that is not open, or whose offset is below the partition's next
        accepted offset, are refused."""
        block = as_block(records)
        pos = self.positions.get(partition)
        if pos is None or not block:
            self.refused += len(block)
            return 0
        if block.first_offset < pos:
            kept = block.from_offset(pos)
            self.refused += len(block) - len(kept)
            block = kept
            if not block:
                return 0
        if self.batch is None:
            self.batch = MicroBatch(self.skew)
        n = self.batch.add(partition, block)
        self.positions[partition] = block.last_offset + 1
        return n

    def snapshot(
        self, held: Mapping[int, PartitionState], live_topic_id: str | None
    ) -> CommitSnapshot | None:
        """Freeze the batch in hand for a commit under the claims in `held` (and empty the
        hand). The window state moves on at once; a failed commit drops it with the rest."""
        batch, self.batch = self.batch, None
        if not batch:
            return None
        missing = sorted(set(batch.partitions) - set(held))
        if missing:
            raise sinks.FencedError(f"partitions {missing} are no longer held")
        chunks = batch.merged()
        totals = BatchTotals()
        unknown: Counter[int] = Counter()
        for p, chunk in chunks.items():
            columnar.window_totals(
                chunk.table,
                p,
                self.windows.committed.get(p),
                self.windows.watermark_s,
                totals=totals,
            )
            unknown.update(columnar.unknown_by_hour(chunk.table, self._users))
        self.windows.commit(totals)
        parts = tuple(
            PartitionCommit(
                p,
                held[p],
                chunk.next_offset,
                chunk.table,
                totals.max_ts.get(p, held[p].max_event_ts),
            )
            for p, chunk in chunks.items()
        )
        dead = dead_letters.concat([c.dead for c in chunks.values()])
        return CommitSnapshot(
            self.group,
            self.topic,
            parts,
            dead,
            tuple(totals.sorted_rows()),
            dict(totals.late_by_hour),
            dict(unknown),
            dict(columnar.rejects_by_hour(dead)),
            live_topic_id,
        )


def commit(
    snap: CommitSnapshot,
    conn: psycopg.Connection,
    root: Path,
    fault: Callable[[str], None] = _no_fault,
    timeout_s: float | None = None,
) -> CommitResult:
    """Commit one snapshot: the steps of the module docstring. Raises FencedError when
    this worker no longer holds a partition's newest claim (or its offsets moved)."""
    stale = [
        pc.partition
        for pc in snap.parts
        if snap.live_topic_id and pc.state.topic_id not in (None, snap.live_topic_id)
    ]
    if stale:
        raise sinks.FencedError(f"topic {snap.topic} was recreated under partitions {stale}")
    # 1. stage
    files: list[lake.LakeFile] = []
    for pc in snap.parts:
        table = pc.table
        if table.num_rows:
            offs = table.column("kafka_offset")
            name = (
                f"p{pc.partition}-e{pc.state.epoch}-{offs[0].as_py()}-{offs[-1].as_py()}-"
                f"{uuid.uuid4().hex[:8]}"
            )
            try:
                for hour, rows in columnar.split_by_hour(table):
                    rel = f"{lake.hour_relpath(hour)}/{name}.parquet"
                    files.append(
                        lake.write_staged(root, rel, rows, statistics=lake.BATCH_FILE_STATISTICS)
                    )
            except OSError as exc:
                raise LakeWriteError(
                    f"cannot write the lake under {root} (ANTENNA_LAKE_DIR): "
                    f"{exc.strerror or exc} ({exc.filename or ''})"
                ) from exc
    if files:
        lake.sync_staging(root)
    fault("stage")
    epochs = {pc.partition: pc.state.epoch for pc in snap.parts}
    # 2. one transaction
    with conn.transaction():
        if timeout_s is not None:
            conn.execute(
                "select set_config('statement_timeout', %s, true)", (f"{int(timeout_s * 1000)}",)
            )
        sinks.check_claims(conn, snap.group, snap.topic, epochs)  # a
        fault("claims")
        sinks.fence(  # b
            conn, snap.group, snap.topic, {pc.partition: pc.state.fence_offset for pc in snap.parts}
        )
        fault("offsets")
        lake.register_files(conn, files)  # c
        fault("manifest")
        sinks.upsert_bytes(conn, snap.bytes_rows)  # d
        fault("bytes")
        sinks.insert_dead_letters(conn, snap.topic, snap.dead)  # e
        fault("dead_letters")
        hours = {sinks.naive_to_epoch(f.hour) for f in files}
        sinks.bump_hours(  # f
            conn, hours, Counter(snap.late), Counter(snap.unknown), Counter(snap.rejects)
        )
        fault("hours")
        sinks.save_offsets(  # g
            conn,
            snap.group,
            snap.topic,
            {
                pc.partition: sinks.OffsetState(pc.next_offset, pc.max_event_ts, pc.state.topic_id)
                for pc in snap.parts
            },
        )
        fault("move_offsets")
    fault("committed")
    # 3. publish
    lake.publish(root, [f.path for f in files])
    fault("published")
    states = {
        pc.partition: with_offsets(pc.state, pc.next_offset, pc.max_event_ts) for pc in snap.parts
    }
    return CommitResult(snap, states, tuple(files))


class _Job:
    def __init__(self, snap: CommitSnapshot, timeout_s: float | None) -> None:
        self.snap, self.timeout_s = snap, timeout_s
        self.done = threading.Event()
        self.result: CommitResult | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class Committer:
    """Runs commits in order on one daemon thread (a commit stuck on an unreachable
    Postgres never holds the process up at exit), at most one in flight."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        root: Path,
        adopt: Callable[[CommitResult], None],
        fault: Callable[[str], None] = _no_fault,
    ) -> None:
        self._connect, self.root, self._adopt, self._fault = connect, root, adopt, fault
        self._conn: psycopg.Connection | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._job: _Job | None = None
        self._thread = threading.Thread(target=self._work, name="antenna-commit", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Records of the commit in flight (0 when none)."""
        job = self._job
        return job.snap.records if job is not None and not job.abandoned else 0

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def running(self) -> bool:
        """A commit is in flight and not finished yet (`busy` until it is adopted)."""
        job = self._job
        return job is not None and not job.abandoned and not job.done.is_set()

    def submit(self, snap: CommitSnapshot, timeout_s: float | None = None) -> None:
        """Queue `snap` after the commit in flight (waited for, and adopted, first)."""
        self.settle()
        job = self._job = _Job(snap, timeout_s)
        self._queue.put(job)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the commit in flight and adopt it (or raise its error). Returns False
        when it is still running after `timeout` seconds."""
        job = self._job
        if job is None:
            return True
        if job.abandoned:  # nobody waits for it any more (it runs on, then is ignored)
            self._job = None
            return True
        if not job.done.wait(timeout):
            return False
        self._job = None
        if job.error is not None:
            raise job.error
        assert job.result is not None
        self._adopt(job.result)
        return True

    def abandon(self) -> None:
        """Stop waiting for the commit in flight: it may still land (it holds its claims'
        epochs, so it lands before any newer claim or not at all) but is not adopted; the
        caller re-syncs its partitions from Postgres."""
        if self._job is not None:
            self._job.abandoned = True
            self._job = None

    def close(self, timeout: float) -> bool:
        """Stop the thread after the commit in flight (waiting at most `timeout`)."""
        self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._drop_conn()
            return True
        return False

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._conn.close()
        self._conn = None

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._drop_conn()
                    self._conn = self._connect()
                job.result = commit(job.snap, self._conn, self.root, self._fault, job.timeout_s)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                job.error = exc
                if not isinstance(exc, sinks.FencedError):
                    self._drop_conn()
            finally:
                job.done.set()


def wait_until(deadline: float) -> float:
    """Seconds left until a `time.monotonic()` deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())
