"""Kafka record batches decoded in one tight loop: the stream's fetch hot path.

kafka-python decodes every record through half a dozen Python calls and two objects
(`DefaultRecord`, then a 13-field `ConsumerRecord`): about 5 us a record on these
machines, as much as the whole columnar parse of a valid event and more than a reject
costs. The stream reads three fields of a record (offset, timestamp, value), so
`FastPartitionRecords` decodes a v2 batch's records straight into `Record(offset,
timestamp, value)` tuples (about 1.4 us a record) and leaves everything else to
kafka-python: fetching, positions, CRC checks, decompression, group membership. A batch
of `VECTOR_FROM` records or more (what a busy topic delivers) takes one Python step per
record, the walk along the length prefixes, and numpy decodes the fields of all records
at once: about half the time of the record-by-record loop on batches of 1,000 records.

Installed per consumer (`install`): the fetcher builds its `PartitionRecords` from
its own attribute. Anything this loop does not handle the same way (message formats
v0/v1, read_committed isolation) goes through kafka-python's own decoding, and the
result reads the same (`offset`, `timestamp`, `value`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint


class Record(NamedTuple):
    """What the stream reads of a Kafka record (a `ConsumerRecord` reads the same)."""

    offset: int
    timestamp: int
    value: bytes | None


_record = partial(tuple.__new__, Record)  # a Record from a 3-tuple, without Python code


def decode_batch(batch: DefaultRecordBatch, from_offset: int = 0) -> list[Record]:
    """The records of a v2 data batch at or above `from_offset`, in order.

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
        offsets, stamps, values = decode(
            data, batch._pos, n, batch.base_offset, batch.first_timestamp
        )
    except (ValueError, IndexError) as exc:
        raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
    if batch.timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME:
        stamps = repeat(batch.max_timestamp, n)
    out = list(map(_record, zip(offsets, stamps, values, strict=False)))
    if out and out[0].offset < from_offset:
        out = [r for r in out if r.offset >= from_offset]
    return out


VECTOR_FROM = 128  # records in a batch from which numpy decodes it
_MAX_VARINT = 10  # bytes of a 64-bit varint
_PAD = bytes(4 * _MAX_VARINT)  # after the data: numpy's reads past a record end read zeros


def _decode_scalar(
    data: bytes, pos: int, n: int, base: int, first_ts: int
) -> tuple[list[int], Iterable[int], list[Any]]:
    """Offsets, timestamps and values of the n records from `pos`, record by record
    (`base`, `first_ts`: the batch's first offset and timestamp, what the deltas add to)."""
    dv = decode_varint
    offsets: list[int] = []
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
        offsets.append(base + offset_delta)
        stamps.append(first_ts + ts_delta)
        pos = end
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} unconsumed bytes after all records consumed")
    return offsets, stamps, values


def _decode_vector(
    data: bytes, pos: int, n: int, base: int, first_ts: int
) -> tuple[list[int], Iterable[int], list[Any]]:
    """What `_decode_scalar` returns, with one Python step per record: the walk from record
    to record by their length prefixes. The fields inside the records are then decoded for
    all records at once, one numpy varint decode per field, and checked the same way."""
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
    return (offset_delta + base).tolist(), (ts_delta + first_ts).tolist(), values


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
    """kafka-python's `PartitionRecords` yielding `Record`s decoded by `decode_batch`."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202
        plain = (
            self.isolation_level == IsolationLevel.READ_UNCOMMITTED
            and key_deserializer is None
            and value_deserializer is None
        )
        if not plain:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
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
                for r in batch:
                    yield Record(r.offset, r.timestamp, r.value)
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if batch.is_control_batch:  # a transaction marker: nothing for the consumer
                self.next_fetch_offset = batch.next_offset
            else:
                recs = decode_batch(batch, self.fetch_offset)
                self.records_read += len(recs)
                self.bytes_read += batch.size_in_bytes
                # `take` moves next_fetch_offset past what it hands out
                yield from recs
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = max(self.next_fetch_offset, last_batch.next_offset)
        self.drain()

    def take(self, n: int | None = None) -> list[Any]:
        records = super().take(n)
        if records:
            self.next_fetch_offset = max(self.next_fetch_offset, records[-1].offset + 1)
        return records


def install(consumer: Any) -> None:
    """Make `consumer` (a kafka-python `KafkaConsumer`) decode with `FastPartitionRecords`."""
    fetcher = consumer._fetcher
    if not isinstance(getattr(fetcher, "PartitionRecords", None), type) or not issubclass(
        FastPartitionRecords, fetcher.PartitionRecords
    ):
        raise RuntimeError("this kafka-python's fetcher cannot take FastPartitionRecords")
    fetcher.PartitionRecords = FastPartitionRecords


__all__ = ["FastPartitionRecords", "Record", "decode_batch", "install"]
