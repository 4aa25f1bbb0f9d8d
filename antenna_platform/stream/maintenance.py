"""What the stream does between batches: report closed hours, compact files, delete old ones.

Each step is its own transaction and changes no result: a crash in the middle leaves
either the old state or the new one (compaction swaps files in the manifest at once;
replaced files become orphans, removed when their partition is next assigned).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

import psycopg

from antenna_platform import lake
from antenna_platform.stream import sinks


class Trash:
    """Files swapped out by compaction, deleted after a delay: a reader that listed them
    just before the swap can still read them."""

    def __init__(self, root: Path, delay_s: float) -> None:
        self.root, self.delay_s = root, delay_s
        self._items: list[tuple[float, list[str]]] = []

    def add(self, paths: list[str]) -> None:
        self._items.append((time.monotonic() + self.delay_s, paths))

    def empty(self, everything: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for deadline, paths in self._items:
            if everything or deadline <= now:
                for rel in paths:
                    (self.root / rel).unlink(missing_ok=True)
            else:
                keep.append((deadline, paths))
        self._items = keep


def report_closed_hours(
    conn: psycopg.Connection,
    group: str,
    topic: str,
    watermark_s: int,
    hour_closed: Callable[[datetime, dict[str, int]], None],
    everything: bool = False,
) -> int:
    """Report hours the low watermark has passed (or, with `everything`, all changed ones)
    that are also over by the clock; returns how many were reported."""
    if everything:
        before = None
    else:
        low = sinks.low_event_time(conn, group, topic)
        if low is None:
            return 0
        before = sinks.utc_naive(low - watermark_s)
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
    partitions: Iterable[int],
    max_event_ts: Mapping[int, int],
    grace_s: int,
    trash: Trash,
) -> int:
    """Merge each partition's files of the hours `grace_s` behind its event time (and of an
    open hour holding too many files); returns how many merges were made."""
    n = 0
    for p in sorted(partitions):
        top = max_event_ts.get(p)
        if top is None:
            continue
        before = sinks.utc_naive(top - grace_s)
        for hour, paths in sinks.compaction_candidates(conn, p, before):
            new = lake.merge_files(root, paths, hour, p, name=f"p{p}-c-{uuid.uuid4().hex[:12]}")
            with conn.transaction():
                sinks.replace_files(conn, paths, new)
            trash.add(paths)
            n += 1
    return n
