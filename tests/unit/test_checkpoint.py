"""The checkpoint's batch in hand: offsets only increase, closed partitions are refused,
a snapshot is frozen under the claims it is committed with."""

from __future__ import annotations

import orjson
import pytest

from antenna_platform.stream.checkpoint import Checkpoint
from antenna_platform.stream.ownership import PartitionState
from antenna_platform.stream.sinks import FencedError
from tests.fakes import record

TS = 1_767_225_600  # 2026-01-01T00:00:00Z
DEV = "00000000-0000-0000-0000-00000000000a"
ANT = "00000000-0000-0000-0000-0000000000a1"


def good(ts: int, nbytes: int) -> bytes:
    return orjson.dumps(
        {"timestamp": ts, "id": DEV, "antenna_id": ANT, "bytes": nbytes, "app": "SKYPE"}
    )


def recs(partition: int, first: int, n: int, ts: int = TS) -> list:
    return [record("t", partition, first + i, good(ts + i, 10 + i)) for i in range(n)]


def state(start: int, epoch: int = 1, max_ts: int | None = None) -> PartitionState:
    return PartitionState(epoch, start or None, start, None, max_ts)


def test_records_of_a_partition_that_is_not_open_are_refused():
    cp = Checkpoint("g", "t", 10**9, 60)
    assert cp.add(0, recs(0, 0, 5)) == 0 and cp.refused == 5 and not cp.batch


def test_offsets_below_the_position_are_refused_so_nothing_enters_twice():
    cp = Checkpoint("g", "t", 10**9, 60)
    cp.open(0, state(100))
    assert cp.add(0, recs(0, 95, 10)) == 5  # 95..99 are before the stored offset
    assert cp.add(0, recs(0, 103, 4)) == 2  # a re-delivery of 103, 104 and then 105, 106
    offsets = cp.batch.merged()[0].table.column("kafka_offset").to_pylist()
    assert offsets == [100, 101, 102, 103, 104, 105, 106]
    assert cp.refused == 5 + 2 and cp.positions[0] == 107


def test_drop_forgets_the_batch_and_every_position():
    cp = Checkpoint("g", "t", 10**9, 60)
    cp.open(0, state(0))
    cp.add(0, recs(0, 0, 3))
    cp.drop()
    assert cp.batch is None and cp.positions == {} and cp.add(0, recs(0, 3, 1)) == 0


def test_a_snapshot_is_frozen_under_the_claims_held_and_moves_the_window_state():
    cp = Checkpoint("g", "t", 10**9, 60)
    held = {0: state(7, epoch=4)}
    cp.open(0, held[0])
    cp.add(0, recs(0, 7, 3))
    snap = cp.snapshot(held, live_topic_id=None)
    assert cp.batch is None  # the hand is empty once frozen
    (pc,) = snap.parts
    assert (pc.partition, pc.state.epoch, pc.state.fence_offset, pc.next_offset) == (0, 4, 7, 10)
    assert pc.max_event_ts == TS + 2 and cp.windows.committed[0] == TS + 2
    assert snap.events == 3 and sum(v for *_, v in snap.bytes_rows) == 3 * (10 + 11 + 12)


def test_a_snapshot_of_a_partition_no_longer_held_is_fenced():
    cp = Checkpoint("g", "t", 10**9, 60)
    cp.open(0, state(0))
    cp.add(0, recs(0, 0, 2))
    with pytest.raises(FencedError, match="no longer held"):
        cp.snapshot({}, live_topic_id=None)
