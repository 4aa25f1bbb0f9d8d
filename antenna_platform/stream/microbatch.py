"""The micro-batch in hand: records parsed as they are polled, as columns, per partition.

Parsing at poll time (not at commit time) lets the batch limit count *valid* events: a
flood of garbage then costs cheap dead-letter rows, not extra commits (each commit
writes one Parquet file per partition and hour and runs one Postgres transaction). Each
poll's records of a partition become one `ParsedChunk` (`columnar`: an Arrow table of
the valid events in the lake's schema, plus the dead letters); `merged()` joins them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from antenna_platform.stream import columnar
from antenna_platform.stream.columnar import ParsedChunk
from antenna_platform.stream.records import RecordBlock, as_block


class MicroBatch:
    """Parsed records awaiting one commit.

    `valid` counts events (what the batch limit is about), `records` everything held,
    `bytes` the records' values (what bounds a batch's memory under large messages).
    """

    def __init__(self, max_clock_skew_s: int) -> None:
        self.skew = max_clock_skew_s
        self.chunks: dict[int, list[ParsedChunk]] = {}
        self.records = 0
        self.valid = 0
        self.bytes = 0
        self.started = time.monotonic()

    def __bool__(self) -> bool:
        return self.records > 0

    @property
    def partitions(self) -> list[int]:
        return sorted(self.chunks)

    def add(self, partition: int, records: RecordBlock | Sequence[Any]) -> int:
        """Parse records of one partition (offset order): a `RecordBlock`, or what
        `records.as_block` reads; returns how many."""
        block = as_block(records)
        if not block:
            return 0
        chunk = columnar.parse_block(partition, block, max_skew_s=self.skew)
        self.chunks.setdefault(partition, []).append(chunk)
        self.records += chunk.records
        self.valid += chunk.valid
        self.bytes += block.nbytes
        return chunk.records

    def merged(self) -> dict[int, ParsedChunk]:
        """One chunk per partition: its records of the batch, in offset order."""
        return {p: columnar.concat_chunks(cs) for p, cs in sorted(self.chunks.items())}
