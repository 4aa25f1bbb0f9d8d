"""What the stream does between batches: report closed hours, compact files, clean up.

Each step is its own transaction and changes no result. Compaction is fenced like a
commit: the manifest swap checks, in its transaction, that this worker still holds the
partition's newest claim; the merged file is staged first and published after the swap,
and the files it replaces leave `device_events/` right after it (a crash in between
leaves them on disk, outside the manifest: the partition's next claim removes them).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import psycopg

from antenna_platform import lake
from antenna_platform.stream import sinks


def report_closed_hours(
    conn: psycopg.Connection,
    group: str,
    topic: str,
    settle_s: int,
    hour_closed: Callable[[datetime, dict[str, int]], None],
    everything: bool = False,
) -> int:
    """Report the hours that the group's low event time has passed by `settle_s` (the
    watermark and the compaction grace) and that are over by the clock (with
    `everything`: every changed hour); returns how many were reported."""
    if everything:
        before = None
    else:
        low = sinks.low_event_time(conn, group, topic)
        if low is None:
            return 0
        before = sinks.utc_naive(low - settle_s)
    n = 0
    open_hour = sinks.utc_naive(int(time.time()) // 3600 * 3600)
    with conn.transaction():
        for hour, version, meta in sinks.hours_to_report(conn, before):
            if hour >= open_hour:  # not over by the clock: not a final partition yet
                continue
            # an hour holding only rejects (counted by Kafka record time) has no lake
            # data: nothing downstream to recompute
            if meta["files"]:
                hour_closed(hour, meta)
                n += 1
            sinks.mark_reported(conn, hour, version)
    return n


def compact_partitions(
    conn: psycopg.Connection,
    root: Path,
    group: str,
    topic: str,
    epochs: Mapping[int, int],
    max_event_ts: Mapping[int, int],
    grace_s: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Merge each held partition's files of the hours `grace_s` behind its event time (and
    of an open hour holding too many files); returns how many merges were made. Once
    `should_stop()`, it ends before the next swap (a swap, once made, is finished: the
    manifest changed, then the merged file is published and its inputs removed)."""
    n = 0
    for p, epoch in sorted(epochs.items()):
        top = max_event_ts.get(p)
        if top is None:
            continue
        before = sinks.utc_naive(top - grace_s)
        for hour, paths in sinks.compaction_candidates(conn, p, before):
            if should_stop():
                return n
            new = lake.merge_files(
                root, paths, hour, p, name=f"p{p}-e{epoch}-c-{uuid.uuid4().hex[:12]}"
            )
            if should_stop():  # not swapped: the merge is nobody's
                (root / lake.staged_relpath(new.path)).unlink(missing_ok=True)
                return n
            lake.sync_staging(root)
            with conn.transaction():
                sinks.check_claims(conn, group, topic, {p: epoch})
                sinks.replace_files(conn, paths, new)
            lake.publish(root, [new.path])
            lake.remove(root, paths)
            n += 1
    return n


class Compactor:
    """Runs `compact_partitions` on a daemon thread with a connection of its own, so a
    merge (reading and writing Parquet, mostly outside the GIL) never stalls the poll loop
    (it would show as produce-to-visible latency). One round at a time; each swap is
    fenced by the claims like any other write, so a round that outlives its claims
    changes nothing."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        root: Path,
        group: str,
        topic: str,
        grace_s: int,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._connect, self.root, self.group, self.topic = connect, root, group, topic
        self.grace_s, self._on_error = grace_s, on_error
        self.merges = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, epochs: Mapping[int, int], max_event_ts: Mapping[int, int]) -> bool:
        """Start a round over these claims (frozen copies); False if one is running."""
        if self.busy or not epochs:
            return False
        self._stop.clear()
        args = (dict(epochs), dict(max_event_ts))
        self._thread = threading.Thread(
            target=self._round, args=args, name="antenna-compact", daemon=True
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None, stop: bool = False) -> bool:
        """Wait for the round; with `stop`, it ends before its next swap (a merge not yet
        swapped is discarded): a stop must not leave a swap half published, and the
        thread dies with the process."""
        if stop:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy

    def _round(self, epochs: dict[int, int], max_event_ts: dict[int, int]) -> None:
        try:
            with self._connect() as conn:
                self.merges += compact_partitions(
                    conn,
                    self.root,
                    self.group,
                    self.topic,
                    epochs,
                    max_event_ts,
                    self.grace_s,
                    self._stop.is_set,
                )
        except Exception as exc:  # noqa: BLE001 - reported; the next round retries
            self._on_error(exc)
