"""Kafka record batches decoded in one tight loop: the stream's fetch hot path.

kafka-python decodes every record through half a dozen Python calls and two objects
(`DefaultRecord`, then a 13-field `ConsumerRecord`): about 5 us a record on these
machines, as much as the whole columnar parse of a valid event and more than a reject
costs. The stream reads three fields of a record (offset, timestamp, value), so
`FastPartitionRecords` decodes a v2 batch's records straight into `Record(offset,
timestamp, value)` tuples (about 1.4 us a record) and leaves everything else to
kafka-python: fetching, positions, CRC checks, decompression, group membership.

Installed per consumer (`install`): the fetcher builds its `PartitionRecords` from
its own attribute. Anything this loop does not handle the same way (message formats
v0/v1, read_committed isolation) goes through kafka-python's own decoding, and the
result reads the same (`offset`, `timestamp`, `value`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

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
    error for the same case); keys and headers are skipped, not checked.
    """
    batch._maybe_uncompress()
    data = bytes(batch._buffer)
    pos = batch._pos
    base = batch.base_offset
    first_ts = batch.first_timestamp
    log_append = batch.timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME
    dv = decode_varint
    out: list[tuple[int, int, bytes | None]] = []
    add = out.append
    try:
        for _ in range(batch._num_records):
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
                value: bytes | None = data[pos : pos + value_len]
                pos += value_len
            else:
                value = None
            if pos > end or length < 0:
                raise ValueError(f"record of {length} bytes overruns itself at {pos}")
            add((base + offset_delta, first_ts + ts_delta, value))
            pos = end
    except (ValueError, IndexError) as exc:
        raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
    if pos != len(data):
        raise CorruptRecordError(f"{len(data) - pos} unconsumed bytes after all records consumed")
    if log_append:
        ts = batch.max_timestamp
        out = [(o, ts, v) for o, _, v in out]
    if out and out[0][0] < from_offset:
        out = [r for r in out if r[0] >= from_offset]
    return list(map(_record, out))


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
