"""Rejected records as columns, from the parser to PostgreSQL's binary COPY.

Why columns: under a flood of garbage half of what the stream reads is rejects. A Python
tuple per reject (the parser's), a struct pack per COPY row (the encoder's) and a
`Counter` step per reject (the hour counts) cost about 0.5 us a reject together, and the
tuples are objects the garbage collector tracks. Here a micro-batch's rejects are arrays
(partition, offset, reason id, receive time, hour) beside the list of their payloads (the
bytes the decoder already holds).

Why a table row holds many rejects (`dead_letter_batches`; the view `dead_letter` shows
one row a reject): a table row a reject cost PostgreSQL 0.6 to 1.1 us of CPU (a heap
tuple and its WAL each); a run of rejects as arrays of offsets, lengths and reason ids
beside one bytea of their payloads, stored uncompressed, cost about 0.2 us a reject, and
the arrays are built by numpy for the whole run (README, change 12).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np

# A rejected message as a plain tuple: (partition, offset, payload, reason, received_at as
# naive UTC). What tests and tools read (`DeadLetters.rows`), and what `from_rows` takes.
DeadLetter = tuple[int, int, bytes | None, str, datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as stored
_MICROSECOND = timedelta(microseconds=1)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, where binary timestamps count from

# The binary COPY stream's columns (table `dead_letter_batches`; the view `dead_letter`
# shows one row a reject). A row holds a run of rejects of one partition received at one
# time: their offsets, payload lengths (-1: NULL) and reason ids (into the row's own
# `reasons`) as arrays, and their payloads joined in one bytea.
COPY_COLUMNS = (
    "topic",
    "partition",
    "received_at",
    "offsets",
    "lengths",
    "reason_ids",
    "reasons",
    "payloads",
)
# A row's payloads end with the reject that takes them past this (well under the 1 GB a
# bytea can hold; an engine batch stops at 64 MB of values).
ROW_PAYLOAD_BYTES = 64 * 1024 * 1024
_BYTEA_MAX = 2**30 - 1 - 4  # PostgreSQL's 1 GB a value, its 4-byte header included
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # + flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_FIELD_COUNT = len(COPY_COLUMNS).to_bytes(2, "big")
_INT4_FIELD = struct.Struct(">ii")  # a field's length (4), the value
_INT8_FIELD = struct.Struct(">iq")  # a field's length (8), the value
_ARRAY_HEAD = struct.Struct(">iiiii")  # dimensions, has NULLs, element type, size, lower bound
_INT4_OID, _INT8_OID, _TEXT_OID = 23, 20, 25


@dataclass(frozen=True, eq=False)
class DeadLetters:
    """Rejects as columns, row i across all of them.

    `reason_ids[i]` indexes `reasons`; `received` is microseconds since the Unix epoch
    (UTC; the engine's are whole seconds); `hours` the UTC hour (epoch s) each reject is
    counted in (its Kafka record time's)."""

    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    payloads: list[bytes | None]
    reason_ids: np.ndarray  # int32
    reasons: tuple[str, ...]
    received: np.ndarray  # int64, us since the epoch
    hours: np.ndarray  # int64, epoch s

    def __post_init__(self) -> None:
        n = len(self.payloads)
        cols = (self.partitions, self.offsets, self.reason_ids, self.received, self.hours)
        if any(len(c) != n for c in cols):
            raise ValueError(f"DeadLetters: columns of unequal lengths {[len(c) for c in cols]}")
        if n and (
            int(self.reason_ids.min()) < 0 or int(self.reason_ids.max()) >= len(self.reasons)
        ):
            raise ValueError("DeadLetters: a reason id outside the reasons")

    def __len__(self) -> int:
        return len(self.payloads)

    def __repr__(self) -> str:
        return f"DeadLetters({len(self)} rows, reasons {list(self.reasons)})"

    @classmethod
    def empty(cls) -> DeadLetters:
        return _EMPTY

    @classmethod
    def of(
        cls,
        partition: int,
        offsets: np.ndarray,
        payloads: list[bytes | None],
        reason_ids: np.ndarray,
        reasons: Sequence[str],
        received_s: int,
        hours: np.ndarray,
    ) -> DeadLetters:
        """Rejects of one partition, received at one whole second (what the parser has)."""
        n = len(payloads)
        return cls(
            np.full(n, partition, dtype=np.int32),
            np.asarray(offsets, dtype=np.int64),
            payloads,
            np.asarray(reason_ids, dtype=np.int32),
            tuple(reasons),
            np.full(n, received_s * 1_000_000, dtype=np.int64),
            np.asarray(hours, dtype=np.int64),
        )

    @classmethod
    def from_rows(
        cls, rows: Iterable[DeadLetter], hours: Sequence[int] | None = None
    ) -> DeadLetters:
        """Plain tuples as columns (hours 0 when not given: the COPY does not read them)."""
        rows = list(rows)
        if not rows:
            return _EMPTY
        parts, offs, payloads, reasons, received = zip(*rows, strict=True)
        ids, names = reason_ids(reasons)
        return cls(
            np.array(parts, dtype=np.int32),
            np.array(offs, dtype=np.int64),
            list(payloads),
            ids,
            names,
            np.array([(t - _EPOCH) // _MICROSECOND for t in received], dtype=np.int64),
            np.zeros(len(rows), np.int64) if hours is None else np.array(hours, np.int64),
        )

    def rows(self) -> list[DeadLetter]:
        """The rejects as tuples, in order (tests and tools; the hot path reads columns)."""
        names = self.reasons
        return [
            (p, o, v, names[r], _EPOCH + t * _MICROSECOND)
            for p, o, v, r, t in zip(
                self.partitions.tolist(),
                self.offsets.tolist(),
                self.payloads,
                self.reason_ids.tolist(),
                self.received.tolist(),
                strict=True,
            )
        ]

    def take(self, order: np.ndarray | Sequence[int]) -> DeadLetters:
        """Rows in the order of `order` (positions)."""
        idx = np.asarray(order, dtype=np.int64)
        return DeadLetters(
            self.partitions[idx],
            self.offsets[idx],
            list(map(self.payloads.__getitem__, idx.tolist())),
            self.reason_ids[idx],
            self.reasons,
            self.received[idx],
            self.hours[idx],
        )

    def by_hour(self) -> Counter[int]:
        """Rejects per hour they count in."""
        if not len(self):
            return Counter()
        hours, counts = np.unique(self.hours, return_counts=True)
        return Counter(dict(zip(hours.tolist(), counts.tolist(), strict=True)))


_EMPTY = DeadLetters(
    np.empty(0, np.int32),
    np.empty(0, np.int64),
    [],
    np.empty(0, np.int32),
    (),
    np.empty(0, np.int64),
    np.empty(0, np.int64),
)


def reason_ids(reasons: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each reason's id (int32) into the distinct reasons, in order of first appearance."""
    names = dict.fromkeys(reasons)
    index = {r: i for i, r in enumerate(names)}
    return np.fromiter(map(index.__getitem__, reasons), np.int32, len(reasons)), tuple(names)


def concat(parts: Sequence[DeadLetters]) -> DeadLetters:
    """The parts' rows one after the other (their reasons merged into one list)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return parts[0]
    names: dict[str, int] = {}
    ids = []
    for p in parts:
        remap = np.array([names.setdefault(r, len(names)) for r in p.reasons], dtype=np.int32)
        ids.append(remap[p.reason_ids])
    return DeadLetters(
        np.concatenate([p.partitions for p in parts]),
        np.concatenate([p.offsets for p in parts]),
        list(chain.from_iterable(p.payloads for p in parts)),
        np.concatenate(ids),
        tuple(names),
        np.concatenate([p.received for p in parts]),
        np.concatenate([p.hours for p in parts]),
    )


def encode_copy(topic: str, dead: DeadLetters) -> bytes:
    """The rejects as one binary COPY stream into `dead_letter_batches` (`COPY_COLUMNS`),
    signature and trailer included: one row for each run of rejects of one partition
    received at one time, a run also ending where the payloads written so far pass a
    multiple of `ROW_PAYLOAD_BYTES` (a row holds at most that and one payload more).

    PostgreSQL's binary format: per row a field count, then each field as its length and
    its bytes in network order; an array field is a header (dimensions, element type,
    size) and each element as length and bytes, built here by numpy for a whole run. Why
    not psycopg's `write_row`: its dumpers work per element in Python. A text with a NUL
    character is refused, as PostgreSQL would refuse it.
    """
    n = len(dead)
    if n == 0:
        return _COPY_SIGNATURE + _COPY_TRAILER
    topic_f = _field(_text(topic))
    reasons_f = [_field(_text(r)) for r in dead.reasons]
    payloads = dead.payloads
    try:  # C-level: the usual payloads are bytes
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    except TypeError:  # None: a NULL payload, stored as length -1 and no bytes
        lengths = np.array([-1 if v is None else len(v) for v in payloads], dtype=np.int64)
        payloads = [b"" if v is None else v for v in payloads]
    if int(lengths.max()) > _BYTEA_MAX - ROW_PAYLOAD_BYTES:  # a row holds one past the limit
        raise ValueError("a dead letter's payload is too large for a dead_letter_batches row")
    parts, received = dead.partitions, dead.received
    size = np.maximum(lengths, 0)
    block = (np.cumsum(size) - size) // ROW_PAYLOAD_BYTES  # the bytes before each reject
    cuts = np.flatnonzero(
        (parts[1:] != parts[:-1]) | (received[1:] != received[:-1]) | (block[1:] != block[:-1])
    )
    bounds = [0, *(cuts + 1).tolist(), n]
    rows = [_COPY_SIGNATURE]
    for a, b in zip(bounds, bounds[1:], strict=False):
        # the run's reasons in the order they first appear in it
        used, first, local = np.unique(dead.reason_ids[a:b], return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        local = rank[local]
        names = [reasons_f[i] for i in used[order].tolist()]
        reasons = _ARRAY_HEAD.pack(1, 0, _TEXT_OID, len(names), 1) + b"".join(names)
        blob = b"".join(payloads[a:b])
        rows += [
            _FIELD_COUNT,
            topic_f,
            _INT4_FIELD.pack(4, int(parts[a])),
            _INT8_FIELD.pack(8, int(received[a]) - _PG_EPOCH_US),
            _int_array(dead.offsets[a:b], _INT8_OID, ">i8"),
            _int_array(lengths[a:b], _INT4_OID, ">i4"),
            _int_array(local, _INT4_OID, ">i4"),
            len(reasons).to_bytes(4, "big"),
            reasons,
            len(blob).to_bytes(4, "big"),
            blob,
        ]
    rows.append(_COPY_TRAILER)
    return b"".join(rows)


def _int_array(values: np.ndarray, oid: int, dtype: str) -> bytes:
    """A one-dimensional integer array field: its length, the array header, then each
    element as its size and value (one numpy record array for all of them)."""
    n = len(values)
    body = np.empty(n, dtype=[("size", ">i4"), ("value", dtype)])
    body["size"] = np.dtype(dtype).itemsize
    body["value"] = values
    head = _ARRAY_HEAD.pack(1, 0, oid, n, 1)
    return (len(head) + body.nbytes).to_bytes(4, "big") + head + body.tobytes()


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _text(value: str) -> bytes:
    if "\x00" in value:
        raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
    return value.encode("utf-8")


__all__ = ["COPY_COLUMNS", "DeadLetter", "DeadLetters", "concat", "encode_copy", "reason_ids"]
