"""The columnar hot path: lake table, dead letters, windows and hours from Arrow columns.

Expectations are written out by hand (or come from the per-row contract, the source of
truth); the property test beside this file compares random mixes at scale.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import pyarrow as pa
import pytest

from antenna_platform.contract import MAX_MESSAGE_BYTES, Event, parse
from antenna_platform.lake import SCHEMA
from antenna_platform.stream import columnar
from antenna_platform.stream.dead_letters import DeadLetters
from antenna_platform.stream.sinks import utc_naive
from antenna_platform.stream.windows import ANTENNA, APP, USER

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z
HOUR = NOW - NOW % 3600
TS = NOW - 100
DEV = "00000000-0000-0000-0000-00000000000a"
ANT = "11111111-1111-1111-1111-111111111111"
RECEIVED = datetime(2026, 9, 21, 14, 13, 20)


def good(ts=TS, nbytes=9082, dev=DEV, app="SKYPE", **extra) -> bytes:
    return orjson.dumps(
        {"bytes": nbytes, "timestamp": ts, "app": app, "id": dev, "antenna_id": ANT, **extra}
    )


def chunk(values, partition=0, first=100, ts_ms=None):
    offsets = list(range(first, first + len(values)))
    stamps = ts_ms if ts_ms is not None else [NOW * 1000] * len(values)
    return columnar.parse_chunk(partition, offsets, values, stamps, now=NOW, max_skew_s=300)


def test_course_message_becomes_one_lake_row_with_the_lake_schema():
    raw = (
        b'{"bytes":9082,"timestamp":1600545287,"app":"SKYPE",'
        b'"id":"00000000-0000-0000-0000-000000000001",'
        b'"antenna_id":"00000000-0000-0000-0000-000000000000"}'
    )
    out = columnar.parse_chunk(2, [41], [raw], [NOW * 1000], now=NOW)
    assert out.table.schema == SCHEMA
    assert out.table.to_pylist() == [
        {
            "timestamp": datetime.fromisoformat("2020-09-19T19:54:47+00:00"),
            "id": "00000000-0000-0000-0000-000000000001",
            "antenna_id": "00000000-0000-0000-0000-000000000000",
            "bytes": 9082,
            "app": "SKYPE",
            "kafka_partition": 2,
            "kafka_offset": 41,
        }
    ]
    assert (out.first_offset, out.next_offset, out.valid, out.records) == (41, 42, 1, 1)
    assert out.dead.rows() == [] and out.dead_hours == []


def test_rejects_keep_their_offset_payload_reason_and_record_hour():
    values = [good(nbytes=1), b"[1]", b"\xff", None, good(nbytes=-5), b"{nope", good(nbytes=2)]
    three_hours_ago = (NOW - 3 * 3600) * 1000
    stamps = [NOW * 1000, three_hours_ago, -1, None, NOW * 1000, 0, NOW * 1000]
    out = chunk(values, partition=3, first=10, ts_ms=stamps)
    assert out.table.column("kafka_offset").to_pylist() == [10, 16]
    assert out.table.column("bytes").to_pylist() == [1, 2]
    assert out.dead.rows() == [
        (3, 11, b"[1]", "not a JSON object", RECEIVED),
        (3, 12, b"\xff", "not valid UTF-8", RECEIVED),
        (3, 13, None, "empty message", RECEIVED),
        (3, 14, values[4], "bytes: negative", RECEIVED),
        (3, 15, b"{nope", "not valid JSON", RECEIVED),
    ]
    # the hour of the Kafka record time; the hour of `now` when the record has none
    assert out.dead_hours == [HOUR - 3 * 3600, HOUR, HOUR, HOUR, HOUR]
    assert (out.first_offset, out.next_offset, out.records, out.valid) == (10, 17, 7, 2)


def test_a_reject_with_a_record_time_no_event_could_have_counts_in_the_hour_of_now():
    """The record time is the producer's: one past year 9999 (or the int64 range) would
    make an hour `lake_hours` cannot hold, and its commit fail on every retry."""
    stamps = [
        10**15,  # year 33658
        2**63 - 1,
        -(2**63),  # what an int64 time past its range wraps to in the decoders
        5,  # 1970
        (946_684_800 - 1) * 1000,  # a second before MIN_TS (2000-01-01)
        946_684_800 * 1000,  # MIN_TS itself: plausible
        (NOW + 300) * 1000,  # the skew's edge: plausible
        (NOW + 301) * 1000,  # past it
        (NOW - 2 * 3600) * 1000,
    ]
    out = chunk([b"[1]"] * len(stamps), ts_ms=stamps)
    assert out.dead_hours == [HOUR] * 5 + [946_684_800, HOUR, HOUR, HOUR - 2 * 3600]
    assert [utc_naive(h).minute for h in out.dead_hours] == [0] * len(stamps)


def test_events_the_fast_path_leaves_to_the_contract_are_kept_in_offset_order():
    iso = orjson.dumps(
        {"bytes": 5, "timestamp": "2026-09-21T14:00:00Z", "app": "A", "id": DEV, "antenna_id": ANT}
    )
    dup = b'{"bytes":1,"bytes":7,"timestamp":%d,"app":"A","id":"%s","antenna_id":"%s"}' % (
        TS,
        DEV.encode(),
        ANT.encode(),
    )
    values = [
        good(nbytes=1),
        iso,  # ISO-8601 time
        good(nbytes=3.0),  # whole float
        good(dev=DEV.upper()),  # upper-case id: stored lower-case
        b"  \n" + good(nbytes=4),  # JSON whitespace first
        dup,  # duplicate key: the last one wins, as orjson and the contract say
        good(dev=DEV + "\n"),  # `$` of Python's re matches before a final newline
        good(extra={"nested": [1, {"a": None}]}, nbytes=6),
        good(app="Üñí €😀", nbytes=8),
    ]
    out = chunk(values)
    assert columnar.table_events(out.table) == [
        Event(TS, DEV, ANT, 1, "SKYPE"),
        Event(1790000000 - 1790000000 % 3600, DEV, ANT, 5, "A"),
        Event(TS, DEV, ANT, 3, "SKYPE"),
        Event(TS, DEV, ANT, 9082, "SKYPE"),
        Event(TS, DEV, ANT, 4, "SKYPE"),
        Event(TS, DEV, ANT, 7, "A"),
        Event(TS, DEV + "\n", ANT, 9082, "SKYPE"),
        Event(TS, DEV, ANT, 6, "SKYPE"),
        Event(TS, DEV, ANT, 8, "Üñí €😀"),
    ]
    assert out.table.column("kafka_offset").to_pylist() == list(range(100, 109))
    assert out.dead.rows() == []


HOSTILE = [
    b"",
    b"{not json",
    b"\xff\xfe\xfa",
    b"\xef\xbb\xbf" + good(),  # a byte-order mark: orjson refuses it, so does the contract
    b"[1, 2]",
    b'"just a string"',
    b"null",
    b"  [1]",
    good() + b" " + good(),
    good(nbytes=1.5),
    good(nbytes="12"),
    good(nbytes=True),
    good(nbytes=2**62 + 1),
    good(nbytes=2**63),
    good(nbytes=2**64 - 1),
    b'{"bytes":1180591620717411303424,"timestamp":%d,"app":"A","id":"%s","antenna_id":"%s"}'
    % (TS, DEV.encode(), ANT.encode()),
    good(ts=TS * 1000),
    good(ts=946684799),
    good(ts=NOW + 301),
    good(ts=TS + 0.5),
    good(ts=True),
    good(ts="yesterday"),
    good(ts=[1]),
    good(ts=None),
    good(dev="1' or '1'='1"),
    good(dev=7),
    good(dev=DEV + "0"),
    good(app=""),
    good(app="A" * 65),
    good(app=3),
    good(app="SKY\u0000PE"),
    good(app="WHATS\nAPP"),
    orjson.dumps({"bytes": 1, "timestamp": TS, "id": DEV, "antenna_id": ANT}),
    b"{" + b" " * MAX_MESSAGE_BYTES + b"}",
    good(pad="x" * MAX_MESSAGE_BYTES),  # valid JSON, too large
    b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"," + good()[1:],  # deeper than orjson allows
    b'{"x":"\xed\xa0\x80",' + good()[1:],  # a surrogate encoded as UTF-8
    None,
]


def test_every_hostile_payload_gets_the_contracts_own_reason():
    values = [x for i, h in enumerate(HOSTILE) for x in (h, good(nbytes=i))]  # good between
    out = chunk(values)
    expected_dead = []
    expected_events = []
    for i, v in enumerate(values):
        res = parse(v, NOW, 300)
        if isinstance(res, Event):
            expected_events.append((100 + i, res))
        else:
            expected_dead.append((0, 100 + i, v, res.reason, RECEIVED))
    assert len(expected_dead) == len(HOSTILE)  # each hostile payload is a reject
    assert out.dead.rows() == expected_dead
    offsets = out.table.column("kafka_offset").to_pylist()
    assert list(zip(offsets, columnar.table_events(out.table), strict=True)) == expected_events
    reasons = {d[3] for d in out.dead.rows()}
    assert "message larger than 1000000 bytes" in reasons
    assert "bytes: expected a non-negative integer" in reasons  # 1.5 and True


def test_bad_calls_get_a_clear_error():
    with pytest.raises(ValueError, match="no records"):
        columnar.parse_chunk(0, [], [], [], now=NOW)
    with pytest.raises(ValueError, match="not ascending"):
        columnar.parse_chunk(0, [5, 5], [good(), good()], [0, 0], now=NOW)
    with pytest.raises(ValueError, match="2 offsets, 1 values"):
        columnar.parse_chunk(0, [5, 6], [good()], [0, 0], now=NOW)


def test_parse_records_reads_kafka_python_records():
    from kafka.consumer.fetcher import ConsumerRecord

    recs = [
        ConsumerRecord("devices", 1, 0, o, ts, 0, None, v, [], None, -1, 0, -1)
        for o, v, ts in [(7, good(nbytes=1), NOW * 1000), (9, b"x", (NOW - 7200) * 1000)]
    ]
    out = columnar.parse_records(1, recs, now=NOW)
    assert out.table.column("kafka_offset").to_pylist() == [7]
    assert out.dead.rows() == [(1, 9, b"x", "not a JSON object", RECEIVED)]
    assert out.dead_hours == [HOUR - 7200]
    assert (out.first_offset, out.next_offset) == (7, 10)


def test_concat_keeps_each_offset_once():
    a = chunk([good(nbytes=o) if o % 2 else b"bad" for o in range(100, 110)], first=100)
    b = chunk([good(nbytes=1), b"bad"], first=110)
    both = columnar.concat_chunks([a, b])
    assert (both.first_offset, both.next_offset, both.records) == (100, 112, 12)
    assert both.table.column("kafka_offset").to_pylist() == [101, 103, 105, 107, 109, 110]
    assert [d[1] for d in both.dead.rows()] == [100, 102, 104, 106, 108, 111]
    with pytest.raises(ValueError, match="does not follow"):
        columnar.concat_chunks([b, a])


# ------------------------------------------------------------------------- windows
W0 = 1_790_000_100 - 1_790_000_100 % 300


def lake(rows, partition=0):
    """rows: (ts, id, antenna, bytes, app) in offset order."""
    events = [Event(*r) for r in rows]
    return columnar.events_table(events, partition, list(range(len(events))))


def test_window_totals_per_antenna_user_and_app():
    t = lake(
        [
            (W0, "d1", "a1", 5, "SKYPE"),
            (W0 + 10, "d2", "a1", 7, "SKYPE"),
            (W0 + 301, "d1", "a1", 1, "X"),
            (W0 + 302, "d1", "a2", 0, "X"),
        ]
    )
    out = columnar.window_totals(t, 0, None, watermark_s=60)
    assert dict(out.deltas) == {
        (W0, "a1", ANTENNA): 12,
        (W0, "d1", USER): 5,
        (W0, "d2", USER): 7,
        (W0, "SKYPE", APP): 12,
        (W0 + 300, "a1", ANTENNA): 1,
        (W0 + 300, "a2", ANTENNA): 0,  # a zero-byte event still makes its row
        (W0 + 300, "d1", USER): 1,
        (W0 + 300, "X", APP): 1,
    }
    assert out.late == 0 and out.max_ts == {0: W0 + 302}


def test_late_rows_use_the_running_max_in_offset_order():
    # watermark 60: after W0+660 the watermark is W0+600, so [W0, W0+300) is closed; the
    # row at W0+10 BEFORE it in offset order is not late, the one after it is
    t = lake(
        [
            (W0 + 10, "d1", "a1", 1, "A"),
            (W0 + 660, "d1", "a1", 2, "A"),
            (W0 + 20, "d1", "a1", 99, "A"),
            (W0 + 359, "d1", "a1", 4, "A"),  # window [W0+300, W0+600) ends at the mark: late
        ]
    )
    out = columnar.window_totals(t, 0, None, watermark_s=60)
    assert out.late_by_hour == {W0 - W0 % 3600: 2}
    assert out.deltas[(W0, "d1", USER)] == 1
    assert out.deltas[(W0 + 600, "d1", USER)] == 2
    assert (W0 + 300, "d1", USER) not in out.deltas
    assert out.max_ts == {0: W0 + 660}


def test_committed_max_and_earlier_totals_carry_into_the_running_max():
    t = lake([(W0, "d1", "a1", 3, "A")])
    assert columnar.window_totals(t, 4, W0 + 1000, watermark_s=60).late == 1
    assert columnar.window_totals(t, 4, None, watermark_s=60).late == 0
    first = columnar.window_totals(lake([(W0 + 2000, "d1", "a1", 1, "A")]), 4, None, 60)
    both = columnar.window_totals(t, 4, None, 60, totals=first)  # same partition, next chunk
    assert both is first and both.late == 1 and both.max_ts == {4: W0 + 2000}
    other = columnar.window_totals(t, 5, None, 60, totals=first)  # per-partition watermark
    assert other.late == 1 and other.max_ts == {4: W0 + 2000, 5: W0}
    empty = columnar.window_totals(t.slice(0, 0), 6, W0 + 5, 60)
    assert empty.max_ts == {6: W0 + 5} and not empty.deltas


def test_window_sums_beyond_int64_stay_exact():
    big = 2**62
    t = lake([(W0, "d1", "a1", big, "A"), (W0 + 1, "d1", "a1", big, "A")])
    out = columnar.window_totals(t, 0, None, watermark_s=60)
    assert out.deltas[(W0, "d1", USER)] == 2**63


def test_unknown_ids_and_rejects_per_hour():
    t = lake(
        [
            (W0, "d1", "a1", 1, "A"),
            (W0 + 1, "d2", "a1", 1, "A"),
            (W0 - 7200, "d2", "a1", 1, "A"),
        ]
    )
    h = W0 - W0 % 3600
    assert columnar.unknown_by_hour(t, None) == {}
    assert columnar.unknown_by_hour(t, {"d1"}) == {h: 1, h - 7200: 1}
    assert columnar.unknown_by_hour(t, pa.array(["d1", "d2"])) == {}
    rows = [(0, o, b"x", "r", datetime(2026, 1, 1)) for o in range(3)]
    dead = DeadLetters.from_rows(rows, hours=[h, h, h - 3600])
    assert columnar.rejects_by_hour(dead) == {h: 2, h - 3600: 1}
    assert columnar.rejects_by_hour(DeadLetters.empty()) == {}


def test_split_by_hour_keeps_offset_order_within_each_hour():
    h = W0 - W0 % 3600
    rows = [(h + 3600 * (k % 3) + k, "d", "a", k, "A") for k in (4, 0, 2, 1, 5, 3)]
    parts = columnar.split_by_hour(lake(rows))
    assert [p[0] for p in parts] == [h, h + 3600, h + 7200]
    assert [p[1].column("bytes").to_pylist() for p in parts] == [[0, 3], [4, 1], [2, 5]]
    assert all(p[1].schema == SCHEMA for p in parts)
    one = lake([(h + 5, "d", "a", 1, "A"), (h + 6, "d", "a", 2, "A")])
    assert columnar.split_by_hour(one) == [(h, one)]
    assert columnar.split_by_hour(one.slice(0, 0)) == []
