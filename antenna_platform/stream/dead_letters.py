"""Rejected records as columns, from the parser to PostgreSQL's binary COPY.

Why columns: under a flood of garbage half of what the stream reads is rejects. A Python
tuple per reject (the parser's), a struct pack per COPY row (the encoder's) and a
`Counter` step per reject (the hour counts) cost about 0.5 us a reject together, and the
tuples are objects the garbage collector tracks. Here a micro-batch's rejects are arrays
(partition, offset, reason id, receive time, hour) beside the list of their payloads (the
bytes the decoder already holds); the COPY stream is assembled by numpy: one fixed-size
header per row built for all rows at once, then `bytes.join` over header, payload and the
row's reason (a few distinct reasons, each encoded once).
"""

from __future__ import annotations

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

# The binary COPY stream's columns, in this order: the reason last, so a row is one
# fixed-size header, the payload, and the reason's bytes (shared by every row with it).
COPY_COLUMNS = ("topic", "partition", "offset", "received_at", "payload", "reason")
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # + flags, header extension length
_COPY_TRAILER = b"\xff\xff"


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
    """The rows as one binary COPY stream for `COPY_COLUMNS`, signature and trailer included.

    PostgreSQL's binary format: per row a field count, then each field as its length (-1
    for NULL) and its bytes in network order. Why not psycopg's `write_row`: its bytea
    dumper runs in Python and a flood of garbage would pay it on every reject. A text with
    a NUL character is refused, as PostgreSQL would refuse it.
    """
    n = len(dead)
    if n == 0:
        return _COPY_SIGNATURE + _COPY_TRAILER
    topic_b = _text(topic)
    # the fixed part of a row, as bytes: field count, topic, partition, offset,
    # received_at (each field's length, then its bytes), then the payload's length
    t = len(topic_b)
    template = b"".join(
        (
            len(COPY_COLUMNS).to_bytes(2, "big"),
            t.to_bytes(4, "big"),
            topic_b,
            (4).to_bytes(4, "big"),
            bytes(4),
            (8).to_bytes(4, "big"),
            bytes(8),
            (8).to_bytes(4, "big"),
            bytes(8),
            bytes(4),
        )
    )
    size = len(template)
    heads = np.empty((n, size), dtype=np.uint8)
    heads[:] = np.frombuffer(template, dtype=np.uint8)
    at = 6 + t + 4  # the partition's bytes
    heads[:, at : at + 4] = _big_endian(dead.partitions, ">i4")
    heads[:, at + 8 : at + 16] = _big_endian(dead.offsets, ">i8")
    heads[:, at + 20 : at + 28] = _big_endian(dead.received - _PG_EPOCH_US, ">i8")
    payloads = dead.payloads
    try:  # C-level: the usual payloads are bytes
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    except TypeError:  # None: a NULL payload
        lengths = np.array([-1 if v is None else len(v) for v in payloads], dtype=np.int64)
        payloads = [b"" if v is None else v for v in payloads]
    if int(lengths.max()) > 2**31 - 1:
        raise ValueError("a dead letter's payload is larger than PostgreSQL's bytea")
    heads[:, size - 4 :] = _big_endian(lengths, ">i4")
    tails = np.empty(len(dead.reasons), dtype=object)
    for i, r in enumerate(dead.reasons):
        r_b = _text(r)
        tails[i] = len(r_b).to_bytes(4, "big") + r_b
    pieces = np.empty((n, 3), dtype=object)
    pieces[:, 0] = heads.view(f"V{size}").ravel().tolist()
    pieces[:, 1] = payloads
    pieces[:, 2] = tails[dead.reason_ids]
    return b"".join([_COPY_SIGNATURE, *pieces.ravel().tolist(), _COPY_TRAILER])


def _big_endian(values: np.ndarray, dtype: str) -> np.ndarray:
    """Each value's bytes in network order, as rows of a uint8 matrix."""
    out = np.ascontiguousarray(values, dtype=dtype)
    return out.view(np.uint8).reshape(len(values), out.itemsize)


def _text(value: str) -> bytes:
    if "\x00" in value:
        raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
    return value.encode("utf-8")


__all__ = ["COPY_COLUMNS", "DeadLetter", "DeadLetters", "concat", "encode_copy", "reason_ids"]
