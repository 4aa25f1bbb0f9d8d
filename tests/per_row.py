"""The per-row reference path: every record through `contract.parse`, one `Event` each.

This is how the stream parsed records before its hot path became columnar
(`antenna_platform.stream.microbatch` + `columnar`). It stays here as the oracle of the
property test (both paths must accept the same events and give the same reject reasons)
and as the baseline of the hot-path benchmark.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from antenna_platform.contract import MIN_TS, Event, parse
from antenna_platform.stream.sinks import DeadLetter, utc_naive


@dataclass
class PartitionBatch:
    """One partition's records of the batch, in offset order."""

    first_offset: int
    next_offset: int
    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # Kafka offset of each event
    dead: list[DeadLetter] = field(default_factory=list)
    dead_hours: list[int] = field(default_factory=list)  # Kafka record hour of each reject


class PerRowBatch:
    """Parsed records awaiting one commit.

    `valid` counts events (what the batch limit is about), `records` everything held.
    """

    def __init__(self, max_clock_skew_s: int) -> None:
        self.skew = max_clock_skew_s
        self.parts: dict[int, PartitionBatch] = {}
        self.records = 0
        self.valid = 0
        self.started = time.monotonic()

    def __bool__(self) -> bool:
        return self.records > 0

    def add(self, partition: int, records: Sequence) -> int:
        """Parse kafka-python `ConsumerRecord`s of one partition; returns how many."""
        now = time.time()
        received = utc_naive(int(now))
        now_hour = int(now) // 3600 * 3600
        if not records:
            return 0
        pb = self.parts.get(partition)
        if pb is None:
            pb = self.parts[partition] = PartitionBatch(records[0].offset, records[0].offset)
        add_event, add_offset = pb.events.append, pb.offsets.append
        add_dead, add_hour = pb.dead.append, pb.dead_hours.append
        skew = self.skew
        valid = 0
        for r in records:
            value = r.value
            res = parse(value, now, skew)
            if type(res) is Event:
                add_event(res)
                add_offset(r.offset)
                valid += 1
            else:
                add_dead((partition, r.offset, value, res[0], received))
                ts = r.timestamp  # the hour of a plausible record time, else of now
                plausible = ts is not None and MIN_TS * 1000 <= ts <= (int(now) + skew) * 1000
                add_hour(ts // 3_600_000 * 3600 if plausible else now_hour)
        n = len(records)
        pb.next_offset = records[-1].offset + 1
        self.records += n
        self.valid += valid
        return n

    def unknown_by_hour(self, users: set[str] | None) -> Counter[int]:
        """Valid events whose device id is not in `user_metadata`, per event hour."""
        out: Counter[int] = Counter()
        if users is None:
            return out
        for pb in self.parts.values():
            for e in pb.events:
                if e.id not in users:
                    out[e.ts - e.ts % 3600] += 1
        return out

    def rejects_by_hour(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for pb in self.parts.values():
            out.update(pb.dead_hours)
        return out
