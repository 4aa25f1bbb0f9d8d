"""5-minute tumbling windows by event time, with a watermark per Kafka partition.

Why per partition: the watermark of partition p is the highest event time seen *in p*
(persisted with p's offsets in `stream_offsets.max_event_ts`) minus `watermark_s`.
Whether an event is late then depends only on its own partition's history, which a
replay after a crash or a rebalance reproduces exactly; a watermark shared across
partitions would depend on how their records happened to interleave, and a replay
could classify an event differently from the run that crashed.

An event is LATE when the end of its window is at or before its partition's
watermark. Late events still land in the lake (the batch layer counts them); they are
counted per hour and not added to `bytes`. The lake hour is "closed" (reportable) when
the low watermark (the minimum over partitions with data) passes its end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from antenna_platform.contract import Event

WINDOW_S = 300
ANTENNA, USER, APP = "antenna_total_bytes", "user_total_bytes", "app_total_bytes"

Key = tuple[int, str, str]  # (window start epoch s, id, type)


def window_start(ts: int, window_s: int = WINDOW_S) -> int:
    return ts - ts % window_s


@dataclass
class BatchTotals:
    """What one micro-batch adds: `bytes` deltas, late counts per hour, new max times."""

    deltas: Counter[Key] = field(default_factory=Counter)
    late_by_hour: Counter[int] = field(default_factory=Counter)
    max_ts: dict[int, int] = field(default_factory=dict)  # partition -> max event time

    @property
    def late(self) -> int:
        return sum(self.late_by_hour.values())

    def sorted_rows(self) -> list[tuple[int, str, str, int]]:
        """Rows in primary-key order, so concurrent upserts lock in one order (no deadlock)."""
        return [(k[0], k[1], k[2], v) for k, v in sorted(self.deltas.items())]


class WindowAggregator:
    """Running 5-minute totals (update mode) with a per-partition watermark.

    `committed` holds the max event time per partition as last committed to Postgres.
    `aggregate` is pure with respect to it: it returns a `BatchTotals` and changes
    nothing; `commit(totals)` adopts the new max times once the batch is durable, so a
    batch that fails to commit leaves the state as it was.
    """

    def __init__(self, watermark_s: int, window_s: int = WINDOW_S) -> None:
        self.watermark_s = watermark_s
        self.window_s = window_s
        self.committed: dict[int, int] = {}

    def load(self, partition: int, max_ts: int | None) -> None:
        if max_ts is None:
            self.committed.pop(partition, None)
        else:
            self.committed[partition] = max_ts

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.committed.pop(p, None)

    def watermark(self, partition: int) -> int | None:
        m = self.committed.get(partition)
        return None if m is None else m - self.watermark_s

    def low_watermark(self, partitions: Iterable[int] | None = None) -> int | None:
        """Min watermark over the given (default: all known) partitions that have data."""
        keys = self.committed.keys() if partitions is None else partitions
        marks = [self.committed[p] for p in keys if p in self.committed]
        return min(marks) - self.watermark_s if marks else None

    def aggregate(
        self,
        batches: Mapping[int, Iterable[Event]],
        totals: BatchTotals | None = None,
    ) -> BatchTotals:
        """Add each partition's events, in offset order, to `totals` (a new one by default)."""
        out = totals or BatchTotals()
        w, wm_s = self.window_s, self.watermark_s
        deltas, late = out.deltas, out.late_by_hour
        for partition, events in batches.items():
            running = out.max_ts.get(partition, self.committed.get(partition))
            for e in events:
                ts = e.ts
                if running is None or ts > running:
                    running = ts
                start = ts - ts % w
                if start + w <= running - wm_s:
                    late[ts - ts % 3600] += 1
                    continue
                deltas[(start, e.antenna_id, ANTENNA)] += e.bytes
                deltas[(start, e.id, USER)] += e.bytes
                deltas[(start, e.app, APP)] += e.bytes
            if running is not None:
                out.max_ts[partition] = running
        return out

    def commit(self, totals: BatchTotals) -> None:
        self.committed.update(totals.max_ts)
