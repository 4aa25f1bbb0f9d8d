"""Property: the columnar path and the per-row path (PerRowBatch.add = contract.parse per
record, WindowAggregator) agree on random mixes of valid and malformed payloads: the same
accepted events at the same offsets, the same dead letters (reason included), the same
reject and unknown-id hours, the same window deltas, late counts and max event times."""

from __future__ import annotations

import json
from collections import namedtuple
from unittest import mock

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antenna_platform.contract import MAX_MESSAGE_BYTES, MIN_TS
from antenna_platform.stream import columnar
from antenna_platform.stream.windows import BatchTotals, WindowAggregator
from tests import per_row as per_row_module

NOW = 1_790_000_000
SKEW = 300
Record = namedtuple("Record", "offset value timestamp")

DEVICES = [f"00000000-0000-0000-0000-0000000000{n:02d}" for n in (1, 2, 3, 17)] + [
    "ABCDEF00-0000-4000-8000-0000000000AA",  # stored lower-case
    "abcdef00-0000-4000-8000-0000000000aa\n",  # Python's `$` matches before a last newline
    "abcdef00-0000-4000-8000-0000000000a",  # one digit short
    "{abcdef00-0000-4000-8000-0000000000aa}",
    "1' or '1'='1",
]
ANTENNAS = ["11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"]
APPS = ["SKYPE", "TELEGRAM", "FACETIME", "Üñí €", "😀", "x'); drop table bytes; --", "A" * 64]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
VALID = {
    "timestamp": st.integers(NOW - 2 * 3600, NOW + SKEW)
    | st.integers(NOW // 300 - 24, NOW // 300).flatmap(  # on and beside window edges
        lambda w: st.sampled_from([w * 300 - 1, w * 300, w * 300 + 1])
    ),
    "bytes": st.integers(0, 9999),
    "id": st.sampled_from(DEVICES[:6]),
    "antenna_id": st.sampled_from(ANTENNAS + DEVICES[:1]),
    "app": st.sampled_from(APPS),
}
EDGES = {  # per field: values at the edges of its rules
    "timestamp": [MIN_TS - 1, MIN_TS, NOW + SKEW, NOW + SKEW + 1, 10**11, 10**11 + 1, NOW * 1000]
    + [0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**70, True, False, float(NOW), NOW - 0.5],
    "bytes": [0, -1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, 2**70, 12.0, 1.5, -2.0, -0.0]
    + [True, False, "12"],
    "id": DEVICES[5:] + [DEVICES[0] + " ", " " + DEVICES[0], DEVICES[0].replace("-", "")],
    "antenna_id": DEVICES[5:] + [ANTENNAS[0].upper(), ANTENNAS[0][:-1] + "g"],
    "app": ["", "A" * 65, "É" * 64, "É" * 65, "SKY\x00PE", "A\x7f", "WHATS\nAPP", "\u2028", "\x1f"],
}
ODD = {  # per field: any other value that is wrong, or right only by a rule left to the contract
    "timestamp": st.one_of(
        st.integers(NOW - 7200, NOW).map(float),  # whole float: accepted as an integer
        st.integers(NOW - 7200, NOW).map(lambda t: t + 0.5),
        st.sampled_from(
            ["2026-09-21T13:00:00Z", "2026-09-21T15:00:00+02:00", "2026-09-21 12:59:59", "1e9"]
        ),
        JUNK,
    ),
    "bytes": st.one_of(st.integers(-(2**65), 2**65), JUNK),
    "id": st.one_of(st.text(max_size=40), JUNK),
    "antenna_id": st.one_of(st.text(max_size=40), JUNK),
    "app": st.one_of(st.text(max_size=70), JUNK),  # control characters, any unicode
}
extras = st.dictionaries(
    st.sampled_from(["extra", "nested", "bytes2", "ts"]),
    st.recursive(st.none() | st.integers() | st.text(max_size=4), st.lists, max_leaves=4),
    max_size=2,
)
BIG_VALID = orjson.dumps(
    {"bytes": 1, "timestamp": NOW, "app": "A", "id": DEVICES[0], "antenna_id": ANTENNAS[0]}
    | {"pad": "x" * MAX_MESSAGE_BYTES}
)
CONSTANTS = [None, b"", b"null", b"[1, 2]", b"  [1]", b'"str"', b"42", b"{}", b"{not json"]
CONSTANTS += [b"\xff\xfe", BIG_VALID]


@st.composite
def payloads(draw, odd_pct: int) -> bytes | None:
    """A valid course event; with probability odd_pct % one thing wrong with it (or odd)."""
    obj = {name: draw(strategy) for name, strategy in VALID.items()}
    odd = draw(st.integers(0, 99)) < odd_pct
    kind = draw(st.integers(0, 13)) if odd else -1
    if kind in range(10):  # one field at an edge of its rule, or odd
        name = list(VALID)[kind // 2]
        obj[name] = draw(st.sampled_from(EDGES[name]) if kind % 2 else ODD[name])
    elif kind == 10:
        del obj[draw(st.sampled_from(list(VALID)))]
    elif kind == 11:
        obj.update(draw(extras))
    elif kind == 12:
        return draw(st.sampled_from(CONSTANTS) | st.binary(max_size=20))
    # json, not orjson: it writes any int (2**70) and can escape non-ASCII as \uXXXX
    raw = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
    if kind == 13 and draw(st.booleans()):  # duplicate key: the last one counts (orjson, like json)
        key = draw(st.sampled_from([b"bytes", b"id", b"timestamp", b"app"]))
        first = draw(st.sampled_from([b"1", b'"x"', b"null", b"-3"]))
        return b'{"' + key + b'": ' + first + b", " + raw[1:]
    if kind == 13 and draw(st.booleans()):  # JSON whitespace around it, or cut short
        if draw(st.booleans()):
            return draw(st.sampled_from([b" ", b"\n\t", b"\r\n "])) + raw + b" "
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == 13 and draw(
        st.booleans()
    ):  # an invalid UTF-8 byte, a byte-order mark, a lone surrogate escape
        i = draw(st.integers(0, len(raw)))
        return draw(
            st.sampled_from(
                [
                    raw[:i] + b"\xff" + raw[i:],
                    b"\xef\xbb\xbf" + raw,
                    raw.replace(b'"app": "', b'"app": "\\ud800', 1),
                ]
            )
        )
    if kind == 13:  # two objects in one message, a trailing comma
        return draw(st.sampled_from([raw + raw, raw + b" " + raw, raw[:-1] + b",}"]))
    return raw


kafka_times = st.one_of(
    st.integers((NOW - 5 * 3600) * 1000, NOW * 1000), st.sampled_from([-1, 0, None])
)


@st.composite
def partitions(draw):
    """{partition: [Record]} with ascending offsets (gaps allowed, as compaction leaves)."""
    odd_pct = draw(st.sampled_from([0, 2, 10, 50, 100]))
    out = {}
    for p in draw(st.sets(st.integers(0, 5), min_size=1, max_size=3)):
        offset = draw(st.integers(0, 10**6))
        recs = []
        for payload, ts_ms in draw(
            st.lists(st.tuples(payloads(odd_pct), kafka_times), min_size=1, max_size=40)
        ):
            recs.append(Record(offset, payload, ts_ms))
            offset += draw(st.integers(1, 3))
        out[p] = recs
    return out


def per_row(parts):
    """The per-row path (contract.parse per record) at wall clock NOW."""
    with mock.patch.object(per_row_module, "time") as clock:
        clock.time.return_value = NOW
        mb = per_row_module.PerRowBatch(SKEW)
        for p, recs in parts.items():
            mb.add(p, recs)
    return mb


@settings(
    max_examples=300,
    deadline=None,  # a busy machine must not fail the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    parts=partitions(),
    committed=st.dictionaries(st.integers(0, 5), st.integers(NOW - 3 * 3600, NOW + SKEW)),
    watermark_s=st.sampled_from([0, 60, 300, 600, 3600, 86400]),
    users=st.none() | st.sets(st.sampled_from([d.lower() for d in DEVICES]), max_size=4),
    cut=st.integers(0, 40),
)
def test_columnar_path_equals_the_per_row_path(parts, committed, watermark_s, users, cut):
    mb = per_row(parts)
    agg = WindowAggregator(watermark_s)
    for p, m in committed.items():
        agg.load(p, m)
    expected = agg.aggregate({p: pb.events for p, pb in mb.parts.items()})

    totals = BatchTotals()
    unknown, rejects = {}, {}
    for p, recs in parts.items():
        # two polls of the partition, concatenated, as the batch in hand collects them
        polls = [recs[:cut], recs[cut:]] if 0 < cut < len(recs) else [recs]
        got = columnar.concat_chunks(
            [columnar.parse_records(p, poll, now=NOW, max_skew_s=SKEW) for poll in polls]
        )
        pb = mb.parts[p]
        assert got.table.schema == columnar.SCHEMA
        assert columnar.table_events(got.table) == pb.events
        assert got.table.column("kafka_offset").to_pylist() == pb.offsets
        assert set(got.table.column("kafka_partition").to_pylist()) <= {p}
        assert got.dead.rows() == pb.dead
        assert got.dead_hours == pb.dead_hours
        assert (got.first_offset, got.next_offset) == (pb.first_offset, pb.next_offset)
        columnar.window_totals(got.table, p, committed.get(p), watermark_s, totals=totals)
        for h, c in columnar.unknown_by_hour(got.table, users).items():
            unknown[h] = unknown.get(h, 0) + c
        for h, c in columnar.rejects_by_hour(got.dead).items():
            rejects[h] = rejects.get(h, 0) + c
        _check_split(got.table)

    assert totals.deltas == expected.deltas
    assert totals.late_by_hour == expected.late_by_hour
    assert totals.max_ts == expected.max_ts
    assert unknown == mb.unknown_by_hour(users)
    assert rejects == mb.rejects_by_hour()


def _check_split(table: pa.Table) -> None:
    parts = columnar.split_by_hour(table)
    hours = [h for h, _ in parts]
    assert hours == sorted(set(hours))
    rows = []
    for h, t in parts:
        secs = columnar.event_seconds(t).to_pylist()
        assert secs and all(s - s % 3600 == h for s in secs)
        offs = t.column("kafka_offset").to_pylist()
        assert offs == sorted(offs)
        rows += t.to_pylist()
    assert sorted(rows, key=lambda r: r["kafka_offset"]) == table.to_pylist()
