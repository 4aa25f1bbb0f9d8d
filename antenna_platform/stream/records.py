"""Kafka record batches decoded into columns: the stream's fetch hot path.

kafka-python decodes every record through half a dozen Python calls and two objects
(`DefaultRecord`, then a 13-field `ConsumerRecord`): about 5 us a record on these
machines, as much as the whole columnar parse of a valid event and more than a reject
costs. The stream reads three fields of a record (offset, timestamp, value), so
`FastPartitionRecords` decodes a v2 batch straight into a `RecordBlock`: the batch's
offsets, timestamps and values as columns, and what each value looks like before it is
decoded (`shapes`: `{...}`, or the reason it is rejected without decoding), classified
by numpy on the fetch buffer. No object is built per record but the value's bytes. A
batch of `VECTOR_FROM` records or more (what a busy topic delivers) takes one Python step
per record, the walk along the length prefixes; numpy decodes the fields of all records
at once. Everything else is kafka-python's: fetching, positions, CRC checks,
decompression, group membership.

Installed per consumer (`install`): the fetcher builds its `PartitionRecords` from its
own attribute. A poll then returns, per partition, a list of `RecordBlock`s rather than
records; kafka-python counts them by their records (`RecordRun`), so `max_records`
and the consumer's position mean what they always meant. Anything this path does not
decode itself (message formats v0/v1, read_committed isolation) goes through
kafka-python's own decoding into blocks of one record. `as_block` turns either, or plain
records (`Record`, `ConsumerRecord`), into one block.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

from antenna_platform.stream.shapes import classify_spans, classify_values


class Record(NamedTuple):
    """What the stream reads of a Kafka record (a `ConsumerRecord` reads the same)."""

    offset: int
    timestamp: int
    value: bytes | None


_record = partial(tuple.__new__, Record)  # a Record from a 3-tuple, without Python code


class RecordBlock:
    """Consecutive records of one partition as columns, in offset order.

    `offsets` and `stamps` (ms; -1 where a record has none, Kafka's own mark) are int64
    arrays, `values` the values (bytes, or None for a null value), `codes` what each
    value looks like before decoding (`shapes`, int8). Slices share the arrays.
    `nbytes`: the values' bytes in all (the decoder knows it; otherwise counted when
    first read)."""

    __slots__ = ("_nbytes", "codes", "offsets", "stamps", "values")

    def __init__(
        self,
        offsets: np.ndarray,
        stamps: np.ndarray,
        values: list[Any],
        codes: np.ndarray,
        nbytes: int | None = None,
    ) -> None:
        if not (len(offsets) == len(stamps) == len(values) == len(codes)):
            raise ValueError(
                f"RecordBlock: {len(offsets)} offsets, {len(stamps)} stamps, "
                f"{len(values)} values, {len(codes)} codes"
            )
        self.offsets, self.stamps, self.values, self.codes = offsets, stamps, values, codes
        self._nbytes = nbytes

    @property
    def nbytes(self) -> int:
        if self._nbytes is None:
            self._nbytes = sum(len(v) for v in self.values if v is not None)
        return self._nbytes

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        span = f"{self.first_offset}..{self.last_offset}" if self.values else "empty"
        return f"RecordBlock({len(self)} records, offsets {span})"

    @property
    def first_offset(self) -> int:
        return int(self.offsets[0])

    @property
    def last_offset(self) -> int:
        return int(self.offsets[-1])

    def slice(self, start: int, stop: int | None = None) -> RecordBlock:
        """Records `[start:stop]` by position."""
        sl = slice(start, stop)
        return RecordBlock(self.offsets[sl], self.stamps[sl], self.values[sl], self.codes[sl])

    def from_offset(self, offset: int) -> RecordBlock:
        """The records at or above `offset`."""
        if not self.values or self.offsets[0] >= offset:
            return self
        return self.slice(int(np.searchsorted(self.offsets, offset, side="left")))

    def records(self) -> list[Record]:
        """The records as `Record` tuples (tests and tools; the hot path reads columns)."""
        cols = self.offsets.tolist(), self.stamps.tolist(), self.values
        return list(map(_record, zip(*cols, strict=True)))

    @classmethod
    def of_records(cls, records: Iterable[Any]) -> RecordBlock:
        """A block of records that have `offset`, `timestamp` and `value` (a `Record`, a
        kafka-python `ConsumerRecord`)."""
        recs = list(records)
        values = [r.value for r in recs]
        stamps = [-1 if r.timestamp is None else r.timestamp for r in recs]
        try:
            stamp_arr = np.array(stamps, np.int64)
        except OverflowError:  # kafka-python's first + delta past int64: wrapped, as ours
            stamp_arr = np.array([(t + 2**63) % 2**64 - 2**63 for t in stamps], np.int64)
        return cls(
            np.array([r.offset for r in recs], dtype=np.int64),
            stamp_arr,
            values,
            classify_values(values),
        )


def concat_blocks(blocks: Sequence[RecordBlock]) -> RecordBlock:
    """Blocks of one partition (in offset order) as one."""
    if len(blocks) == 1:
        return blocks[0]
    if not blocks:
        return RecordBlock.of_records([])
    return RecordBlock(
        np.concatenate([b.offsets for b in blocks]),
        np.concatenate([b.stamps for b in blocks]),
        [v for b in blocks for v in b.values],
        np.concatenate([b.codes for b in blocks]),
        sum(b.nbytes for b in blocks),
    )


def as_block(items: RecordBlock | Sequence[Any]) -> RecordBlock:
    """What a poll returned for one partition (a list of `RecordBlock`s from a consumer
    with `install`), or plain records (`Record`, `ConsumerRecord`), as one block (a block
    is itself)."""
    if type(items) is RecordBlock:
        return items
    blocks: list[RecordBlock] = []
    loose: list[Any] = []
    for item in items:
        if type(item) is RecordBlock:
            if loose:
                blocks.append(RecordBlock.of_records(loose))
                loose = []
            blocks.append(item)
        else:
            loose.append(item)
    if loose or not blocks:
        blocks.append(RecordBlock.of_records(loose))
    return concat_blocks(blocks)


class RecordRun:
    """The blocks one `take` hands out. Its length is their records' count: what
    kafka-python's fetcher counts against `max_records`; iterating it gives the blocks
    (what the fetcher's `extend` puts in the poll's result)."""

    __slots__ = ("blocks", "count")

    def __init__(self) -> None:
        self.blocks: list[RecordBlock] = []
        self.count = 0

    def add(self, block: RecordBlock) -> None:
        self.blocks.append(block)
        self.count += len(block)

    def __iter__(self):  # noqa: ANN204
        return iter(self.blocks)

    def __len__(self) -> int:
        return self.count


def decode_block(batch: DefaultRecordBatch, from_offset: int = 0) -> RecordBlock:
    """The records of a v2 data batch at or above `from_offset`, as a block.

    Raises `CorruptRecordError` on a batch whose records do not parse (kafka-python's
    error for the same case); keys and headers are skipped, not checked. A batch of
    `VECTOR_FROM` records or more is decoded with numpy (`_decode_vector`), a smaller one
    record by record (`_decode_scalar`): numpy's fixed cost per call pays only over many
    records.
    """
    batch._maybe_uncompress()
    data = bytes(batch._buffer)
    n = batch._num_records
    decode = _decode_vector if n >= VECTOR_FROM else _decode_scalar
    try:
        block = decode(data, batch._pos, n, batch.base_offset, batch.first_timestamp)
    except (ValueError, IndexError) as exc:
        raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
    if batch.timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME:
        block.stamps = np.full(n, batch.max_timestamp, dtype=np.int64)
    return block.from_offset(from_offset)


def decode_batch(batch: DefaultRecordBatch, from_offset: int = 0) -> list[Record]:
    """`decode_block` as `Record` tuples."""
    return decode_block(batch, from_offset).records()


VECTOR_FROM = 128  # records in a batch from which numpy decodes it
_MAX_VARINT = 10  # bytes of a 64-bit varint
_PAD = bytes(4 * _MAX_VARINT)  # after the data: numpy's reads past a record end read zeros


def _decode_scalar(data: bytes, pos: int, n: int, base: int, first_ts: int) -> RecordBlock:
    """The n records from `pos`, record by record (`base`, `first_ts`: the batch's first
    offset and timestamp, what the deltas add to)."""
    dv = decode_varint
    offsets: list[int] = []  # deltas here; the bases are added as int64 below
    stamps: list[int] = []
    values: list[bytes | None] = []
    for _ in range(n):
        length, pos = dv(data, pos)
        end = pos + length
        pos += 1  # attributes: an int8, unused
        ts_delta, pos = dv(data, pos)
        offset_delta, pos = dv(data, pos)
        key_len, pos = dv(data, pos)
        if key_len > 0:
            pos += key_len
        value_len, pos = dv(data, pos)
        if value_len >= 0:
            values.append(data[pos : pos + value_len])
            pos += value_len
        else:
            values.append(None)
        if pos > end or length < 0:
            raise ValueError(f"record of {length} bytes overruns itself at {pos}")
        offsets.append(offset_delta)
        stamps.append(ts_delta)
        pos = end
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} unconsumed bytes after all records consumed")
    # int64 arithmetic, as `_decode_vector`'s: a producer-set time past the int64 range
    # wraps the same way in both decoders instead of raising here
    return RecordBlock(
        np.array(offsets, dtype=np.int64) + np.int64(base),
        np.array(stamps, dtype=np.int64) + np.int64(first_ts),
        values,
        classify_values(values),
    )


def _decode_vector(data: bytes, pos: int, n: int, base: int, first_ts: int) -> RecordBlock:
    """What `_decode_scalar` returns, with one Python step per record: the walk from record
    to record by their length prefixes. The fields inside the records are then decoded for
    all records at once, one numpy varint decode per field, and checked the same way; the
    values are classified on the buffer (`shapes.classify_spans`)."""
    first = pos
    ends: list[int] = []
    add = ends.append
    for _ in range(n):
        z = data[pos]  # the length, a zigzag varint: one byte up to 63, two up to 8191
        if z < 0x80:
            pos += 1 + (z >> 1)
        else:
            z2 = data[pos + 1]
            if z2 < 0x80:
                pos += 2 + ((z & 0x7F | z2 << 7) >> 1)
            else:
                length, pos = decode_varint(data, pos)
                pos += abs(length)  # a negative length fails the check below
        add(pos)
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} unconsumed bytes after all records consumed")
    buf = np.frombuffer(data + _PAD, dtype=np.uint8)
    end = np.array(ends, dtype=np.int64)
    start = np.empty_like(end)
    start[0] = first
    start[1:] = end[:-1]
    length, at = _varints(buf, start)
    if (length < 0).any() or (at + length != end).any():
        raise ValueError("a record's length does not match the walk")
    ts_delta, at = _varints(buf, at + 1)  # + 1: the attributes byte
    offset_delta, at = _varints(buf, at)
    key_len, at = _varints(buf, at)
    value_len, at = _varints(buf, at + np.maximum(key_len, 0))
    value_end = at + np.maximum(value_len, 0)
    if (value_end > end).any():
        raise ValueError("a record's value overruns the record")
    values: list[Any] = list(map(data.__getitem__, map(slice, at.tolist(), value_end.tolist())))
    for i in np.flatnonzero(value_len < 0).tolist():
        values[i] = None
    codes = classify_spans(buf, data, at, value_len)
    nbytes = int((value_end - at).sum())
    return RecordBlock(offset_delta + base, ts_delta + first_ts, values, codes, nbytes)


def _varints(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varints starting at positions `at` of `buf`, and the positions after
    them (kafka-python's `decode_varint`, for many positions at once)."""
    byte = buf[at].astype(np.int64)
    raw = byte & 0x7F
    size = np.ones_like(at)
    more = np.flatnonzero(byte & 0x80)
    for k in range(1, _MAX_VARINT):
        if more.size == 0:
            break
        byte = buf[at[more] + k].astype(np.int64)
        raw[more] |= (byte & 0x7F) << (7 * k)
        size[more] += 1
        more = more[(byte & 0x80) != 0]
    else:
        if more.size:
            raise ValueError("a varint out of the int64 range")
    return (raw >> 1) ^ -(raw & 1), at + size


class FastPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's `PartitionRecords` handing out `RecordBlock`s (`decode_block`).

    `take(n)` returns a `RecordRun` of n records at most, cut from the blocks in order
    (a block is split where n ends; the rest waits for the next take), and moves
    `next_fetch_offset` past what it hands out: the same records, positions and errors
    as kafka-python's own `take` (tests/unit/test_records.py). Only for consumers that
    `poll()`: kafka-python's record iterator reads records one by one.
    """

    def __init__(self, fetch_offset, tp, records, *args, **kwargs) -> None:  # noqa: ANN001
        super().__init__(fetch_offset, tp, records, *args, **kwargs)
        names = ("key_deserializer", "value_deserializer")
        key_de, value_de = (
            kwargs.get(k, args[i] if len(args) > i else None) for i, k in enumerate(names)
        )
        self._pending: RecordBlock | None = None
        self.record_iterator = self._blocks(tp, records, key_de, value_de)

    def _blocks(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202
        plain = (
            self.isolation_level == IsolationLevel.READ_UNCOMMITTED
            and key_deserializer is None
            and value_deserializer is None
        )
        if not plain:  # kafka-python decodes (and drains at its end); one record a block
            for r in super()._unpack_records(tp, records, key_deserializer, value_deserializer):
                if r.offset >= self.fetch_offset:
                    yield RecordBlock.of_records([Record(r.offset, r.timestamp, r.value)])
            return
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check"
                )
            if batch.magic != 2:
                old = [Record(r.offset, r.timestamp, r.value) for r in batch]
                old = [r for r in old if r.offset >= self.fetch_offset]
                if old:
                    yield RecordBlock.of_records(old)
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if batch.is_control_batch:  # a transaction marker: nothing for the consumer
                self.next_fetch_offset = batch.next_offset
            else:
                block = decode_block(batch, self.fetch_offset)
                self.records_read += len(block)
                self.bytes_read += batch.size_in_bytes
                if block:  # `take` moves next_fetch_offset past what it hands out
                    yield block
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = max(self.next_fetch_offset, last_batch.next_offset)
        self.drain()

    def drain(self) -> None:
        self._pending = None
        super().drain()

    def take(self, n: int | None = None) -> RecordRun:
        self._maybe_raise_next_inline_exception()
        run = RecordRun()
        want = sys.maxsize if n is None else n
        try:
            while want > 0:
                block, self._pending = self._pending, None
                if block is None:
                    if self.record_iterator is None:
                        break
                    block = next(self.record_iterator, None)
                    if block is None:
                        break
                if len(block) > want:
                    block, self._pending = block.slice(0, want), block.slice(want)
                run.add(block)
                want -= len(block)
                self.next_fetch_offset = max(self.next_fetch_offset, block.last_offset + 1)
        except Exception as exc:  # kafka-python's rule: raise now only if nothing was taken
            if not run:
                raise
            self._next_inline_exception = exc
        return run


def install(consumer: Any) -> None:
    """Make `consumer` (a kafka-python `KafkaConsumer`) decode with `FastPartitionRecords`:
    its polls return lists of `RecordBlock`s (read them with `as_block`)."""
    fetcher = consumer._fetcher
    if not isinstance(getattr(fetcher, "PartitionRecords", None), type) or not issubclass(
        FastPartitionRecords, fetcher.PartitionRecords
    ):
        raise RuntimeError("this kafka-python's fetcher cannot take FastPartitionRecords")
    fetcher.PartitionRecords = FastPartitionRecords


__all__ = [
    "FastPartitionRecords",
    "Record",
    "RecordBlock",
    "RecordRun",
    "as_block",
    "concat_blocks",
    "decode_batch",
    "decode_block",
    "install",
]
