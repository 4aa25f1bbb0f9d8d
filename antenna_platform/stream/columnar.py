"""The stream's hot path as columns: one partition's polled records -> an Arrow table.

Why: parsing into per-event Python objects (`contract.parse`, `Event` tuples, window
keys, Parquet rows) costs several microseconds per event. Here the per-record Python
work is `orjson.loads` and a C-level pick of the five fields, for the values the decoder
found shaped like `{...}` (`shapes`); the others are mostly rejected without decoding,
their reasons and dead letters taken from the decoder's codes at once, as columns
(`dead_letters`: a flood of garbage costs no Python object per reject but its payload).
The contract's rules then run as Arrow kernels over whole columns (times, bytes) or once
per distinct value through the contract's own functions (`as_uuid`, `app_problem`: a
network has few devices, antennas and apps). Only the records this fast path does not
accept go through `contract.parse` (or `contract.reject_undecodable` when orjson has
already refused them), so every reject gets exactly its reason and every accepted event
is exactly what `contract.parse` returns (ISO times, whole floats, upper-case ids, JSON
whitespace first: all decided there).

Why orjson and not pyarrow's JSON reader over the joined values (faster on clean values):
the reader fails a whole block on one odd value (a string where a number was, a duplicate
key), which a 2 % mix puts in every poll, and it accepts what orjson refuses (nesting
deeper than 1024, surrogates encoded as UTF-8 in an ignored field), so it could accept an
event that the contract rejects. Never `pa.array(values, pa.int64())` on JSON numbers
either: it truncates 1.5 to 1; type inference (`_ints`) keeps ints apart from floats.

The functions are pure: nothing here touches Kafka, Postgres or the lake directory.
  - `parse_block` / `parse_chunk` / `parse_records`: records of one partition (a
    `records.RecordBlock`, columns, or record objects) -> `ParsedChunk` (the lake table of
    the valid events, in offset order, plus dead letters and their hours);
  - `window_totals`: what `WindowAggregator.aggregate` computes, for one partition's table;
  - `unknown_by_hour`, `rejects_by_hour`: the per-hour counts of `lake_hours`;
  - `split_by_hour`: the table cut into one table per event-time hour (one file each).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from antenna_platform.contract import (
    FIELDS,
    MAX_BYTES_VALUE,
    MAX_MESSAGE_BYTES,
    MIN_TS,
    Event,
    app_problem,
    as_uuid,
    parse,
    reject_undecodable,
)
from antenna_platform.lake import SCHEMA
from antenna_platform.stream.dead_letters import DeadLetters, reason_ids
from antenna_platform.stream.dead_letters import concat as concat_dead
from antenna_platform.stream.records import RecordBlock, as_block
from antenna_platform.stream.shapes import DECODE, REASONS, SHAPED, classify_values
from antenna_platform.stream.windows import ANTENNA, APP, USER, WINDOW_S, BatchTotals

MAX_TS_SECONDS = 100_000_000_000  # above this the contract says "looks like milliseconds"
_TS_TYPE = SCHEMA.field("timestamp").type
_EMPTY: dict[str, Any] = {}  # stands for a value that is not a JSON object (never mutated)


@dataclass(frozen=True)
class ParsedChunk:
    """Records `[first_offset, next_offset)` of one partition, parsed.

    `table` holds the valid events in offset order with exactly the lake's columns and
    types (`lake.SCHEMA`); `dead` the rejects in offset order, as columns, each counted
    in the UTC hour of its Kafka record time (`dead.hours`).
    """

    partition: int
    first_offset: int
    next_offset: int
    table: pa.Table
    dead: DeadLetters

    @property
    def valid(self) -> int:
        return self.table.num_rows

    @property
    def records(self) -> int:
        return self.table.num_rows + len(self.dead)

    @property
    def dead_hours(self) -> list[int]:
        """The hour (epoch s) each reject counts in, in the order of `dead`."""
        return self.dead.hours.tolist()


def concat_chunks(chunks: Sequence[ParsedChunk]) -> ParsedChunk:
    """Consecutive chunks of one partition (in offset order) as one."""
    if not chunks:
        raise ValueError("concat_chunks: no chunk")
    first = chunks[0]
    for a, b in zip(chunks, chunks[1:], strict=False):
        if b.partition != first.partition or b.first_offset < a.next_offset:
            raise ValueError(
                f"concat_chunks: chunk of partition {b.partition} from offset {b.first_offset} "
                f"does not follow partition {a.partition} up to {a.next_offset}"
            )
    if len(chunks) == 1:
        return first
    return ParsedChunk(
        first.partition,
        first.first_offset,
        chunks[-1].next_offset,
        pa.concat_tables([c.table for c in chunks]),
        concat_dead([c.dead for c in chunks]),
    )


def parse_records(
    partition: int,
    records: Sequence[Any],
    *,
    now: float | None = None,
    max_skew_s: int = 300,
) -> ParsedChunk:
    """`parse_block` over what a poll gave for one partition (offset order): the installed
    consumer's `RecordBlock`s, or kafka-python `ConsumerRecord`s or `Record`s."""
    return parse_block(partition, as_block(records), now=now, max_skew_s=max_skew_s)


def parse_block(
    partition: int, block: RecordBlock, *, now: float | None = None, max_skew_s: int = 300
) -> ParsedChunk:
    """`parse_chunk` over a block's columns, with the shapes the decoder classified."""
    return parse_chunk(
        partition,
        block.offsets,
        block.values,
        block.stamps,
        now=now,
        max_skew_s=max_skew_s,
        codes=block.codes,
    )


def parse_chunk(
    partition: int,
    offsets: Sequence[int] | np.ndarray,
    values: Sequence[bytes | None],
    timestamps_ms: Sequence[int | None] | np.ndarray,
    *,
    now: float | None = None,
    max_skew_s: int = 300,
    codes: np.ndarray | None = None,
) -> ParsedChunk:
    """Parse one partition's records (ascending offsets) against the event contract.

    Same outcome as `contract.parse(value, now, max_skew_s)` per record, as
    `MicroBatch.add` keeps it: valid events as rows of the lake table (ids lower-cased,
    `kafka_partition`/`kafka_offset` set), rejects as dead letters received at `now`
    (naive UTC, whole seconds), each counted in the hour of its Kafka record time (the
    hour of `now` when the record has none: None, or Kafka's -1). `now` defaults to the
    wall clock. `codes`: the values' `shapes` codes when the decoder has them (else
    `shapes.classify_values` says them here).
    """
    n = len(values)
    if n == 0:
        raise ValueError("parse_chunk: no records")
    if len(offsets) != n or len(timestamps_ms) != n:
        raise ValueError(
            f"parse_chunk: {len(offsets)} offsets, {n} values, {len(timestamps_ms)} timestamps"
        )
    now = time.time() if now is None else now
    offs_np = np.asarray(offsets, dtype=np.int64)
    if n > 1 and not (offs_np[1:] > offs_np[:-1]).all():
        raise ValueError(f"parse_chunk: offsets of partition {partition} not ascending")
    first_offset, next_offset = int(offs_np[0]), int(offs_np[-1]) + 1
    offs = pa.array(offs_np)
    if codes is None:
        codes = classify_values(values)
    elif len(codes) != n:
        raise ValueError(f"parse_chunk: {len(codes)} codes for {n} values")

    if not codes.any():  # the usual case: every value looks like {...}
        keep, others = None, None
        cand, cand_offs = values, offs
    else:  # the others are left to the contract (most rejected without decoding)
        shaped = codes == SHAPED
        keep = np.flatnonzero(shaped).tolist()
        others = np.flatnonzero(~shaped)
        cand = list(map(values.__getitem__, keep))
        cand_offs = pa.array(offs_np[shaped])
    if cand:
        table, undecided, undecodable = _fast_path(partition, cand, cand_offs, now, max_skew_s)
        if keep is not None:
            undecided = [keep[j] for j in undecided]
            undecodable = {keep[j] for j in undecodable}
    else:
        table, undecided, undecodable = SCHEMA.empty_table(), [], set()
    if not undecided and others is None:
        return ParsedChunk(partition, first_offset, next_offset, table, DeadLetters.empty())

    received = int(now)
    stamps = _stamps_array(timestamps_ms)
    dead = DeadLetters.empty()
    if others is not None:  # garbage, mostly: rejected without decoding, all at once
        o_codes = codes[others]
        to_decode = o_codes == DECODE
        if to_decode.any():  # led by JSON whitespace: the contract decodes these below
            undecided = sorted(undecided + others[to_decode].tolist())
            others, o_codes = others[~to_decode], o_codes[~to_decode]
        used, ids = np.unique(o_codes, return_inverse=True)
        dead = DeadLetters.of(
            partition,
            offs_np[others],
            list(map(values.__getitem__, others.tolist())),
            ids,
            [REASONS[c] for c in used.tolist()],
            received,
            _reject_hours(stamps[others], now, max_skew_s),
        )

    # the per-row contract decides the rest: every reject gets its exact reason
    more_events: list[Event] = []
    more_offsets: list[int] = []
    more_dead: list[bytes | None] = []
    more_reasons: list[str] = []
    more_dead_at: list[int] = []  # the record index of each of more_dead
    for i in undecided:
        value = values[i]
        res = reject_undecodable(value) if i in undecodable else parse(value, now, max_skew_s)
        if type(res) is Event:
            more_events.append(res)
            more_offsets.append(int(offs_np[i]))
        else:
            more_dead.append(value)
            more_reasons.append(res[0])
            more_dead_at.append(i)
    if more_dead:
        ids, names = reason_ids(more_reasons)
        at = np.array(more_dead_at, dtype=np.int64)
        more = DeadLetters.of(
            partition,
            offs_np[at],
            more_dead,
            ids,
            names,
            received,
            _reject_hours(stamps[at], now, max_skew_s),
        )
        if len(dead):  # both kinds: back into offset order
            dead = concat_dead([dead, more])
            dead = dead.take(np.argsort(dead.offsets, kind="stable"))
        else:
            dead = more
    if more_events:
        extra = events_table(more_events, partition, more_offsets)
        table = pa.concat_tables([table, extra]).sort_by("kafka_offset")
    return ParsedChunk(partition, first_offset, next_offset, table, dead)


def _stamps_array(timestamps_ms: Sequence[int | None] | np.ndarray) -> np.ndarray:
    """Record times (ms) as int64, -1 where a record has none."""
    if isinstance(timestamps_ms, np.ndarray):
        return timestamps_ms
    return np.array([-1 if t is None else t for t in timestamps_ms], dtype=np.int64)


def _reject_hours(stamps_ms: np.ndarray, now: float, max_skew_s: int) -> np.ndarray:
    """The UTC hour (epoch s) each reject counts in: its Kafka record time's, or `now`'s
    when the record has none (-1: `_stamps_array`) or one no event could have (before
    `MIN_TS` or past `now + max_skew_s`, the contract's bounds). Why the bounds: the
    record time is the producer's to set, and an hour past year 9999 cannot be written
    to `lake_hours` (a commit that tried would fail on every retry)."""
    plausible = (stamps_ms >= MIN_TS * 1000) & (stamps_ms <= (math.floor(now) + max_skew_s) * 1000)
    return np.where(plausible, stamps_ms // 3_600_000 * 3600, int(now) // 3600 * 3600)


def _fast_path(
    partition: int, values: Sequence[bytes], offs: pa.Array, now: float, max_skew_s: int
) -> tuple[pa.Table, list[int], set[int]]:
    """The lake table of the values this path can accept (each `{...}`), the indices of the
    others (for the contract), and those of the values orjson refused."""
    n = len(values)
    objs, undecodable = _decode(values)
    ts_l, id_l, ant_l, bytes_l, app_l = _columns(objs)
    ts = _ints(ts_l)
    nbytes = _ints(bytes_l)
    dev = _per_distinct(_strings(id_l), as_uuid)
    ant = _per_distinct(_strings(ant_l), as_uuid)
    app = _per_distinct(_strings(app_l), _app_or_none)
    ts_max = min(MAX_TS_SECONDS, math.floor(now + max_skew_s))
    ok = _all_true(
        [
            pc.greater_equal(ts, MIN_TS),
            pc.less_equal(ts, ts_max),
            pc.greater_equal(nbytes, 0),
            pc.less_equal(nbytes, MAX_BYTES_VALUE),
            dev.is_valid(),
            ant.is_valid(),
            app.is_valid(),
        ]
    )
    big = _too_big(values)
    if big:
        ok = pc.and_(ok, pa.array([i not in big for i in range(n)]))
    table = pa.Table.from_arrays(  # (pa.table would look for pandas first)
        [
            pc.multiply(ts, 1_000_000).cast(_TS_TYPE),
            dev,
            ant,
            nbytes,
            app,
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            offs,
        ],
        schema=SCHEMA,
    )
    undecided = pc.indices_nonzero(pc.invert(ok)).to_pylist()
    if undecided:
        table = table.filter(ok)
    return table, undecided, undecodable


def events_table(events: Sequence[Event], partition: int, offsets: Sequence[int]) -> pa.Table:
    """`Event`s of one partition as a lake table (what `lake.build_table` builds)."""
    n = len(events)
    return pa.Table.from_arrays(
        [
            pa.array([e.ts * 1_000_000 for e in events], pa.int64()).cast(_TS_TYPE),
            pa.array([e.id for e in events], pa.string()),
            pa.array([e.antenna_id for e in events], pa.string()),
            pa.array([e.bytes for e in events], pa.int64()),
            pa.array([e.app for e in events], pa.string()),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(offsets, pa.int64()),
        ],
        schema=SCHEMA,
    )


def table_events(table: pa.Table) -> list[Event]:
    """The rows of a lake table as `Event`s (for tests and tools, not the hot path)."""
    ts = event_seconds(table).to_pylist()
    cols = [table.column(c).to_pylist() for c in ("id", "antenna_id", "bytes", "app")]
    return [Event(t, *rest) for t, *rest in zip(ts, *cols, strict=True)]


def event_seconds(table: pa.Table) -> pa.Array:
    """The `timestamp` column as int64 epoch seconds (the contract's whole seconds)."""
    us = table.column("timestamp").combine_chunks().cast(pa.int64())
    return pc.divide(us, 1_000_000)


# ---------------------------------------------------------------------- decoding helpers
def _decode(values: Sequence[bytes]) -> tuple[list[Any], set[int]]:
    """orjson.loads of every value, an empty dict where it fails; and the indices where
    it failed (the contract then says why without decoding again).

    `list.extend(map(...))` runs the loop in C; when a value fails, the values before it
    are already in the list and the iterator stands after it, so the loop resumes there.
    """
    out: list[Any] = []
    failed: set[int] = set()
    it = iter(values)
    loads = orjson.loads
    while True:
        try:
            out.extend(map(loads, it))
            break
        except orjson.JSONDecodeError:
            failed.add(len(out))
            out.append(_EMPTY)
    if len(out) != len(values):  # never: the resume above keeps one item per value
        raise AssertionError(f"decoded {len(out)} of {len(values)} values")
    return out, failed


def _columns(objs: list[Any]) -> list[list[Any]]:
    """The five fields of the decoded objects as five lists (None where missing), by a
    C-level `dict.get` per field; objects that are not dicts count as empty."""
    n = len(objs)
    try:
        return [list(map(dict.get, objs, repeat(name, n))) for name in FIELDS]
    except TypeError:  # valid JSON that is not an object ([1], "x", 3): the contract says so
        objs = [o if type(o) is dict else _EMPTY for o in objs]
        return [list(map(dict.get, objs, repeat(name, n))) for name in FIELDS]


def _ints(col: list[Any]) -> pa.Array:
    """int64 of the values that are JSON integers within int64; null for anything else.

    Type inference, not `pa.array(col, pa.int64())`: that one silently truncates 1.5 to 1.
    Inference yields int64 only when every value is an int (never a bool or a float).
    """
    try:
        arr = pa.array(col)
        if arr.type == pa.int64():
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    lo, hi = -(2**63), 2**63 - 1
    return pa.array([v if type(v) is int and lo <= v <= hi else None for v in col], pa.int64())


def _strings(col: list[Any]) -> pa.Array:
    """string of the values that are JSON strings; null for anything else."""
    try:
        return pa.array(col, pa.string())  # refuses ints, bools, lists, dicts
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        pass
    try:
        return pa.array([v if type(v) is str else None for v in col], pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):  # e.g. a lone surrogate
        return pa.nulls(len(col), pa.string())


def _app_or_none(value: str) -> str | None:
    return value if app_problem(value) is None else None


def _per_distinct(arr: pa.Array, fn: Callable[[str], str | None]) -> pa.Array:
    """`fn` applied once per distinct value (None -> null): the contract's own rule, at the
    cost of a hash per row."""
    enc = arr.dictionary_encode()
    mapped = pa.array([fn(v) for v in enc.dictionary.to_pylist()], pa.string())
    return mapped.take(enc.indices)


def _all_true(conds: list[pa.Array]) -> pa.Array:
    ok = conds[0]
    for c in conds[1:]:
        ok = pc.and_(ok, c)
    return ok.fill_null(False)


def _too_big(values: Sequence[bytes | None]) -> set[int]:
    """Indices of values over the contract's size limit (usually none: one C-level pass)."""
    try:
        if max(map(len, values)) <= MAX_MESSAGE_BYTES:
            return set()
    except TypeError:  # a None value
        pass
    return {i for i, v in enumerate(values) if v is not None and len(v) > MAX_MESSAGE_BYTES}


# ---------------------------------------------------------------------- windows and counts
def window_totals(
    table: pa.Table,
    partition: int,
    committed_max_ts: int | None,
    watermark_s: int,
    window_s: int = WINDOW_S,
    totals: BatchTotals | None = None,
) -> BatchTotals:
    """`WindowAggregator.aggregate` for one partition's lake table (rows in offset order).

    The partition's running max event time starts at `totals.max_ts[partition]` if
    present, else `committed_max_ts` (what `WindowAggregator.committed` holds) and grows
    row by row (a cumulative max). A row is late when its window ends at or before that
    running max minus `watermark_s`: late rows are counted per event hour and left out;
    the others add their bytes per (window start, id, type) for antenna, user and app.
    Adds to `totals` (a new one by default) and returns it.
    """
    out = totals if totals is not None else BatchTotals()
    start_max = out.max_ts.get(partition, committed_max_ts)
    if table.num_rows == 0:
        if start_max is not None:
            out.max_ts[partition] = start_max
        return out
    ts = event_seconds(table)
    running = pc.cumulative_max(ts)
    if start_max is not None:
        running = pc.max_element_wise(running, pa.scalar(start_max, pa.int64()))
    starts = pc.subtract(ts, pc.modulo(ts, window_s))
    late = pc.less_equal(pc.add(starts, window_s), pc.subtract(running, watermark_s))
    n_late = pc.sum(late).as_py() or 0
    nbytes = table.column("bytes").combine_chunks()
    cols = {
        ANTENNA: table.column("antenna_id").combine_chunks(),
        USER: table.column("id").combine_chunks(),
        APP: table.column("app").combine_chunks(),
    }
    if n_late:
        late_ts = ts.filter(late)
        out.late_by_hour.update(_counts(pc.subtract(late_ts, pc.modulo(late_ts, 3600))))
        keep = pc.invert(late)
        starts, nbytes = starts.filter(keep), nbytes.filter(keep)
        cols = {typ: col.filter(keep) for typ, col in cols.items()}
    if len(nbytes):
        top = pc.max(nbytes).as_py()
        if top * len(nbytes) >= 2**63:  # an int64 sum could overflow: Python's ints cannot
            _python_deltas(out.deltas, starts, cols, nbytes)
        else:
            for typ, col in cols.items():
                g = pa.Table.from_arrays([starts, col, nbytes], names=["s", "k", "b"])
                g = g.group_by(["s", "k"], use_threads=False).aggregate([("b", "sum")])
                deltas = out.deltas
                for s, k, v in zip(
                    g.column("s").to_pylist(),
                    g.column("k").to_pylist(),
                    g.column("b_sum").to_pylist(),
                    strict=True,
                ):
                    deltas[(s, k, typ)] += v
    out.max_ts[partition] = running[len(running) - 1].as_py()
    return out


def _python_deltas(
    deltas: Counter, starts: pa.Array, cols: dict[str, pa.Array], nbytes: pa.Array
) -> None:
    s_l, b_l = starts.to_pylist(), nbytes.to_pylist()
    for typ, col in cols.items():
        for s, k, b in zip(s_l, col.to_pylist(), b_l, strict=True):
            deltas[(s, k, typ)] += b


def _counts(arr: pa.Array) -> Counter[int]:
    vc = pc.value_counts(arr)
    return Counter(
        dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
    )


def unknown_by_hour(table: pa.Table, users: Iterable[str] | pa.Array | None) -> Counter[int]:
    """Rows whose (lower-case) device id is not in `users`, per event hour; nothing when
    `users` is None (not known yet). Pass an Arrow string array to skip its conversion."""
    if users is None or table.num_rows == 0:
        return Counter()
    known = users if isinstance(users, pa.Array) else pa.array(list(users), pa.string())
    unknown = pc.invert(pc.is_in(table.column("id"), value_set=known))
    ts = event_seconds(table).filter(unknown.combine_chunks())
    if not len(ts):
        return Counter()
    return _counts(pc.subtract(ts, pc.modulo(ts, 3600)))


def rejects_by_hour(dead: DeadLetters) -> Counter[int]:
    """Rejects per hour of their Kafka record time (`DeadLetters.hours`)."""
    return dead.by_hour()


def split_by_hour(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """The table cut by event-time hour: [(hour start epoch s, rows of that hour)], hours
    ascending, rows in their original (offset) order: one lake file each."""
    if table.num_rows == 0:
        return []
    ts = event_seconds(table)
    hours = pc.subtract(ts, pc.modulo(ts, 3600))
    lo_hi = pc.min_max(hours)
    lo, hi = lo_hi["min"].as_py(), lo_hi["max"].as_py()
    if lo == hi:
        return [(lo, table)]
    order = pc.sort_indices(hours)  # stable: offset order within an hour
    table, hours = table.take(order), hours.take(order)
    out: list[tuple[int, pa.Table]] = []
    pos = 0
    for h, c in sorted(_counts(hours).items()):
        out.append((h, table.slice(pos, c)))
        pos += c
    return out
