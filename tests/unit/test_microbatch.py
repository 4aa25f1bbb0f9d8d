"""The micro-batch in hand: parsed at poll time, limited by valid events."""

from __future__ import annotations

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from antenna_platform.lake import SCHEMA
from antenna_platform.stream.microbatch import MicroBatch

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DEV = "00000000-0000-0000-0000-00000000000a"
ANT = "00000000-0000-0000-0000-0000000000a1"


def _good(ts: int, nbytes: int) -> bytes:
    return orjson.dumps(
        {"timestamp": ts, "id": DEV, "antenna_id": ANT, "bytes": nbytes, "app": "SKYPE"}
    )


def _rec(offset: int, value: bytes | None, ts_ms: int = NOW_MS) -> ConsumerRecord:
    return ConsumerRecord("devices", 0, 0, offset, ts_ms, 0, None, value, [], None, -1, 0, -1)


def test_events_and_rejects_are_split_in_offset_order():
    b = MicroBatch(max_clock_skew_s=10**9)
    ts = NOW_MS // 1000 - 60
    n = b.add(2, [_rec(10, _good(ts, 5)), _rec(11, b"[1]"), _rec(12, _good(ts, 7))])
    n += b.add(2, [_rec(13, b"\xff", ts_ms=NOW_MS - 3 * 3_600_000), _rec(14, None)])
    assert n == 5 and b.records == 5 and b.valid == 2 and b.partitions == [2]
    pb = b.merged()[2]
    assert (pb.first_offset, pb.next_offset) == (10, 15)
    assert pb.table.schema == SCHEMA
    assert pb.table.column("kafka_offset").to_pylist() == [10, 12]
    assert pb.table.column("kafka_partition").to_pylist() == [2, 2]
    assert pb.table.column("bytes").to_pylist() == [5, 7]
    assert pb.table.column("id").to_pylist() == [DEV, DEV]
    assert [(d[0], d[1], d[2], d[3]) for d in pb.dead.rows()] == [
        (2, 11, b"[1]", "not a JSON object"),
        (2, 13, b"\xff", "not valid UTF-8"),
        (2, 14, None, "empty message"),
    ]
    hour = NOW_MS // 1000 // 3600 * 3600
    # rejects are counted in the hour of their Kafka record time
    assert sorted(pb.dead_hours) == sorted([hour, hour - 3 * 3600, hour])


def test_partitions_are_kept_apart_and_polls_joined_in_offset_order():
    b = MicroBatch(max_clock_skew_s=10**9)
    ts = NOW_MS // 1000 - 60
    b.add(0, [_rec(0, _good(ts, 1)), _rec(1, _good(ts, 2))])
    b.add(1, [_rec(7, _good(ts, 3))])
    b.add(0, [_rec(2, _good(ts, 4))])
    merged = b.merged()
    assert sorted(merged) == [0, 1]
    assert merged[0].table.column("bytes").to_pylist() == [1, 2, 4]
    assert (merged[0].first_offset, merged[0].next_offset) == (0, 3)
    assert merged[1].table.column("kafka_offset").to_pylist() == [7]
