"""The stream's record decoding against kafka-python's own, on batches kafka-python builds.

Each case runs the same fetched bytes through kafka-python's `PartitionRecords` and
through `FastPartitionRecords`, taking records in the same random slices, and compares
what a consumer sees: the records (offset, timestamp, value) and the position after
each slice (`next_fetch_offset`, what the fetcher moves the consumer's position to).
"""

from __future__ import annotations

import struct
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from antenna_platform.stream import records
from antenna_platform.stream.records import FastPartitionRecords, Record, decode_batch

TP = TopicPartition("devices", 0)
CODECS = [0, DefaultRecordBatch.CODEC_GZIP, DefaultRecordBatch.CODEC_ZSTD]
ATTRS_AT, CRC_AT = 21, 17  # byte positions in the v2 batch header


def build_batch(
    base_offset: int,
    records: list[tuple[int, bytes | None, bytes | None, list]],
    codec: int = 0,
    *,
    control: bool = False,
    log_append_time: bool = False,
) -> bytes:
    """One v2 batch of (timestamp, key, value, headers) at `base_offset`, with offset
    deltas 0..n-1 (or, for a compacted-looking batch, the caller's gaps)."""
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, timestamp=ts, key=key, value=value, headers=headers)
    data = b.build()
    struct.pack_into(">q", data, 0, base_offset)
    if control or log_append_time:
        (attrs,) = struct.unpack_from(">h", data, ATTRS_AT)
        attrs |= (0x20 if control else 0) | (0x08 if log_append_time else 0)
        struct.pack_into(">h", data, ATTRS_AT, attrs)
        struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRS_AT:])))
    return bytes(data)


DECODERS = ("scalar", "vector")


@contextmanager
def decoder(path: str):
    """Decode every batch record by record ("scalar") or with numpy ("vector")."""
    saved = records.VECTOR_FROM
    records.VECTOR_FROM = 1 << 30 if path == "scalar" else 1
    try:
        yield
    finally:
        records.VECTOR_FROM = saved


def seen(cls, data: bytes, fetch_offset: int, takes: list[int]):
    """What a consumer gets from `cls` over `data`: per take, its records and position
    (`FastPartitionRecords` hands out blocks: their records, in order)."""
    part = cls(fetch_offset, TP, MemoryRecords(data))
    out = []
    for n in [*takes, 1 << 30]:
        recs = part.take(n) if part else []
        if isinstance(recs, records.RecordRun):  # blocks: the fetcher counts their records
            count = len(recs)
            recs = [r for block in recs for r in block.records()]
            assert count == len(recs) <= n
        out.append(([(r.offset, r.timestamp, r.value) for r in recs], part.next_fetch_offset))
    return out


value_st = st.one_of(st.none(), st.binary(max_size=300))
header_st = st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8))))
record_st = st.tuples(
    st.integers(1_600_000_000_000, 1_900_000_000_000),
    st.one_of(st.none(), st.binary(max_size=20)),
    value_st,
    st.one_of(st.just([]), header_st),
)
# many small records: two-byte offset deltas, and the numpy path at its default threshold
small_record_st = st.tuples(
    st.integers(1_600_000_000_000, 1_600_000_100_000),
    st.none(),
    st.one_of(st.none(), st.binary(max_size=12)),
    st.just([]),
)
batch_st = st.tuples(
    st.one_of(
        st.lists(record_st, min_size=1, max_size=40),
        st.lists(small_record_st, min_size=60, max_size=200),
    ),
    st.sampled_from(CODECS),
    st.booleans(),  # a control batch (a transaction marker: no data for the consumer)
    st.integers(0, 3),  # a gap after it (offsets removed by compaction)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(batch_st, min_size=1, max_size=5),
    start=st.integers(0, 10_000),
    skip=st.integers(0, 50),
    takes=st.lists(st.integers(1, 60), max_size=6),
)
def test_what_a_consumer_sees_is_what_kafka_python_gives(batches, start, skip, takes) -> None:
    data, offset, wanted = b"", start, []
    for recs, codec, control, gap in batches:
        if control:  # a marker batch holds one record
            recs = recs[:1]
        data += build_batch(offset, recs, codec, control=control)
        if not control:
            wanted += [(offset + i, ts, v) for i, (ts, _, v, _) in enumerate(recs)]
        offset += len(recs) + gap
    last = offset - batches[-1][3] - 1  # the last batch's last offset
    fetch_offset = start + min(skip, last - start)  # fetched from inside a batch
    expected = seen(Fetcher.PartitionRecords, data, fetch_offset, takes)
    for path in DECODERS:  # record by record, and with numpy
        with decoder(path):
            got = seen(FastPartitionRecords, data, fetch_offset, takes)
        assert got == expected, path
    assert [r for recs, _ in got for r in recs] == [w for w in wanted if w[0] >= fetch_offset]
    assert got[-1][1] == last + 1  # the position ends past the last batch


@pytest.mark.parametrize("path", DECODERS)
def test_log_append_time_batches_carry_the_brokers_time(path: str) -> None:
    data = build_batch(7, [(1000, None, b"a", []), (1005, None, b"b", [])], log_append_time=True)
    batch = MemoryRecords(data).next_batch()
    with decoder(path):
        assert decode_batch(batch) == [Record(7, 1005, b"a"), Record(8, 1005, b"b")]
    assert seen(FastPartitionRecords, data, 7, []) == seen(Fetcher.PartitionRecords, data, 7, [])


@pytest.mark.parametrize("path", DECODERS)
def test_a_record_time_past_the_int64_range_wraps_in_both_decoders(path: str) -> None:
    """The batch's first timestamp is the producer's: first + delta can pass 2**63 - 1
    (kafka-python then gives a Python int). Both decoders give the int64 that wraps to,
    never an error that would stop the stream; the parser counts such a reject in the
    hour of now (tests/unit/test_columnar.py)."""
    data = bytearray(build_batch(0, [(2**62, None, b"x", []), (2**63 - 1, None, b"y", [])]))
    struct.pack_into(">q", data, 27, 2**62 + 2**61)  # first_timestamp
    struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRS_AT:])))
    kp = [r.timestamp for r in MemoryRecords(bytes(data)).next_batch()]
    assert kp == [2**62 + 2**61, 2**62 + 2**61 + 2**63 - 1 - 2**62]
    with decoder(path):
        got = decode_batch(MemoryRecords(bytes(data)).next_batch())
    assert [r.timestamp for r in got] == [kp[0], kp[1] - 2**64]
    assert [(r.offset, r.value) for r in got] == [(0, b"x"), (1, b"y")]
    # kafka-python's own records (what a read_committed consumer decodes) wrap the same way
    block = records.RecordBlock.of_records(MemoryRecords(bytes(data)).next_batch())
    assert block.records() == got


def test_takes_come_as_blocks_of_columns_counted_by_their_records() -> None:
    data = build_batch(0, [(1, b"k", b'{"x": 1}', [("h", b"v")]), (2, None, None, [])])
    (recs, position), _ = seen(FastPartitionRecords, data, 0, [5])
    assert recs == [(0, 1, b'{"x": 1}'), (1, 2, None)] and position == 2
    run = FastPartitionRecords(0, TP, MemoryRecords(data)).take(1)
    assert len(run) == 1 and bool(run)
    (block,) = list(run)
    assert type(block) is records.RecordBlock and block.offsets.tolist() == [0]
    assert block.values == [b'{"x": 1}'] and type(block.values[0]) is bytes
    assert block.records() == [Record(0, 1, b'{"x": 1}')]
    assert type(block.records()[0]) is Record


def test_a_poll_result_reads_as_one_block() -> None:
    """What `Checkpoint.add` gets: blocks (the installed consumer) or plain records."""
    data = build_batch(5, [(1, None, b"{}", []), (2, None, b"x", []), (3, None, None, [])])
    part = FastPartitionRecords(5, TP, MemoryRecords(data))
    runs = [list(part.take(1)), list(part.take(2))]
    block = records.as_block([b for run in runs for b in run])
    want = [Record(5, 1, b"{}"), Record(6, 2, b"x"), Record(7, 3, None)]
    assert block.records() == want
    assert records.as_block(want).records() == want
    assert block.codes.tolist() == records.as_block(want).codes.tolist()
    assert block.from_offset(7).records() == want[2:]
    assert len(records.as_block([])) == 0


@pytest.mark.parametrize("path", DECODERS)
@pytest.mark.parametrize("where", ["length", "value", "tail", "negative"])
def test_a_batch_whose_records_do_not_parse_is_refused_like_kafka_python(
    where: str, path: str
) -> None:
    good = build_batch(0, [(1, None, b"x" * 50, []), (2, None, b"y" * 50, [])])
    body = bytearray(good)
    header = DefaultRecordBatch.HEADER_STRUCT.size
    if where == "length":  # first record's length varint says 1 byte
        body[header] = 0x02
    elif where == "value":  # first record's value length far past the record
        body[header + 5] = 0x7E
    elif where == "negative":  # first record's length varint says -1
        body[header] = 0x01
    else:  # the batch says one record fewer: bytes left over
        struct.pack_into(">i", body, header - 4, 1)
    body[CRC_AT : CRC_AT + 4] = struct.pack(">I", calc_crc32c(bytes(body[ATTRS_AT:])))
    for cls in (Fetcher.PartitionRecords, FastPartitionRecords):
        part = cls(0, TP, MemoryRecords(bytes(body)))
        with decoder(path), pytest.raises(CorruptRecordError):  # kafka-python's after the
            part.take(10)  # records it read
            part.take(10)


def test_a_batch_failing_its_crc_is_refused() -> None:
    body = bytearray(build_batch(0, [(1, None, b"x" * 50, [])]))
    body[-3] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="crc"):
        FastPartitionRecords(0, TP, MemoryRecords(bytes(body))).take(10)
