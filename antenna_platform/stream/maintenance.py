"""What the stream does between batches: report closed hours, compact files, clean up.

Each step is its own transaction and changes no result. Compaction is fenced like a
commit: the manifest swap checks, in its transaction, that this worker still holds the
partition's newest claim; the merged file is staged first and published after the swap,
and the files it replaces leave `device_events/` right after it (a crash in between
leaves them on disk, outside the manifest: the partition's next claim removes them).
"""

from __future__ import annotations

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
) -> int:
    """Merge each held partition's files of the hours `grace_s` behind its event time (and
    of an open hour holding too many files); returns how many merges were made."""
    n = 0
    for p, epoch in sorted(epochs.items()):
        top = max_event_ts.get(p)
        if top is None:
            continue
        before = sinks.utc_naive(top - grace_s)
        for hour, paths in sinks.compaction_candidates(conn, p, before):
            new = lake.merge_files(
                root, paths, hour, p, name=f"p{p}-e{epoch}-c-{uuid.uuid4().hex[:12]}"
            )
            lake.sync_staging(root)
            with conn.transaction():
                sinks.check_claims(conn, group, topic, {p: epoch})
                sinks.replace_files(conn, paths, new)
            lake.publish(root, [new.path])
            lake.remove(root, paths)
            n += 1
    return n
