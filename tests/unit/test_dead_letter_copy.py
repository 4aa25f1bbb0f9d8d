"""The dead-letter COPY encoder against psycopg's own binary COPY formatter.

`sinks.encode_dead_letters` builds the binary COPY stream by hand (psycopg's per-element
dumpers cost a flood of garbage more than the rest of a reject). psycopg's formatter,
given the table's column types and each run of rejects as plain lists, is the independent
expectation: the bytes must be equal. (That the view `dead_letter` gives the rows back is
tested against PostgreSQL in tests/integration/test_stream.py.)
"""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg._copy_base import BinaryFormatter
from psycopg.adapt import Transformer
from psycopg.postgres import types
from psycopg.pq import Format

from antenna_platform.stream import dead_letters
from antenna_platform.stream.dead_letters import DeadLetters
from antenna_platform.stream.sinks import encode_dead_letters

# dead_letters.COPY_COLUMNS: topic, partition, received_at, offsets, lengths, reason_ids,
# reasons, payloads
_OIDS = (
    types["text"].oid,
    types["int4"].oid,
    types["timestamp"].oid,
    types["int8"].array_oid,
    types["int4"].array_oid,
    types["int4"].array_oid,
    types["text"].array_oid,
    types["bytea"].oid,
)


def runs(rows, limit: int = dead_letters.ROW_PAYLOAD_BYTES):
    """The rows cut into runs of one partition and one receive time, a run also ending
    after the reject that takes the payloads seen so far past a multiple of `limit`."""
    out, seen = [], 0
    for row in rows:
        partition, _, payload, _, received = row
        block = seen // limit
        seen += len(payload or b"")
        if out and out[-1][0] == (partition, received) and out[-1][1] == block:
            out[-1][2].append(row)
        else:
            out.append(((partition, received), block, [row]))
    return [run for _, _, run in out]


def psycopg_copy(topic: str, rows, limit: int = dead_letters.ROW_PAYLOAD_BYTES) -> bytes:
    tx = Transformer()
    tx.set_dumper_types(list(_OIDS), Format.BINARY)
    fmt = BinaryFormatter(tx)
    out = bytearray()
    for run in runs(rows, limit):
        reasons = sorted({r[3] for r in run}, key=[r[3] for r in run].index)
        out += fmt.write_row(
            (
                topic,
                run[0][0],
                run[0][4],
                [r[1] for r in run],
                [-1 if r[2] is None else len(r[2]) for r in run],
                [reasons.index(r[3]) for r in run],
                reasons,
                b"".join(r[2] or b"" for r in run),
            )
        )
    out += fmt.end()
    return bytes(out)


_text = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=40)
_row = st.tuples(
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.none() | st.binary(max_size=300),
    st.sampled_from(["not valid JSON", "empty message", "bytes: negative"]) | _text,
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
)


@settings(max_examples=300, deadline=None)
@given(topic=_text, rows=st.lists(_row, max_size=30))
def test_encoded_rows_are_the_bytes_psycopg_would_send(topic, rows):
    assert encode_dead_letters(topic, rows) == psycopg_copy(topic, rows)


def test_a_batch_of_shared_reasons_and_times_encodes_each_row():
    recv = datetime(2026, 12, 2, 3, 4, 5)
    rows = [(i % 3, i, bytes([i % 256]) * (i % 7), ("a", "b")[i % 2], recv) for i in range(500)]
    assert encode_dead_letters("devices", rows) == psycopg_copy("devices", rows)


@pytest.mark.parametrize("topic, reason", [("dev\x00ices", "r"), ("devices", "a\x00b")])
def test_a_nul_character_in_a_text_is_refused(topic, reason):
    with pytest.raises(ValueError, match="NUL"):
        encode_dead_letters(topic, [(0, 1, b"x", reason, datetime(2026, 1, 1))])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_row, max_size=30), cuts=st.lists(st.integers(0, 30), max_size=4))
def test_columns_concatenated_from_parts_keep_every_row(rows, cuts):
    """Parts with their own reason lists, joined: the same rows and the same COPY bytes as
    the rows encoded at once (a micro-batch joins its partitions' rejects this way)."""
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    parts = [DeadLetters.from_rows(rows[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    joined = dead_letters.concat(parts)
    assert joined.rows() == rows
    assert len(joined) == len(rows)
    assert encode_dead_letters("devices", joined) == psycopg_copy("devices", rows)


def test_columns_of_one_partition_and_their_order():
    recv = datetime(2026, 12, 2, 3, 4, 5)
    dead = DeadLetters.of(4, [9, 7], [b"a", None], [1, 0], ["r0", "r1"], 1_796_180_645, [7200, 0])
    assert dead.rows() == [(4, 9, b"a", "r1", recv), (4, 7, None, "r0", recv)]
    assert dead.take([1, 0]).rows() == [(4, 7, None, "r0", recv), (4, 9, b"a", "r1", recv)]
    assert dead.by_hour() == {7200: 1, 0: 1}
    assert encode_dead_letters("t", dead) == psycopg_copy("t", dead.rows())
    assert dead_letters.concat([]).rows() == [] and len(DeadLetters.empty()) == 0
    with pytest.raises(ValueError, match="unequal lengths"):
        DeadLetters.of(0, [1, 2], [b"a"], [0], ["r"], 0, [0])
    with pytest.raises(ValueError, match="reason id"):
        DeadLetters.of(0, [1], [b"a"], [1], ["r"], 0, [0])


def test_runs_end_at_a_new_partition_a_new_time_and_past_the_payload_limit(monkeypatch):
    """Rows of 5 payloads of 4 bytes, a limit of 10 bytes: a run ends after the reject
    that takes the payloads past a multiple of 10 (runs of 3, 2 and 2), and at every change
    of partition or receive time."""
    monkeypatch.setattr(dead_letters, "ROW_PAYLOAD_BYTES", 10)
    t0, t1 = datetime(2026, 12, 3, 9), datetime(2026, 12, 3, 10)
    rows = [(0, i, b"abcd", "r", t0) for i in range(7)]
    rows += [(1, 7, b"x", "q", t0), (1, 8, None, "r", t1), (0, 9, b"", "r", t1)]
    got = runs(rows, 10)
    assert [[r[1] for r in run] for run in got] == [[0, 1, 2], [3, 4], [5, 6], [7], [8], [9]]
    assert encode_dead_letters("devices", rows) == psycopg_copy("devices", rows, 10)


def test_a_payload_a_row_could_not_hold_is_refused(monkeypatch):
    """A row holds its run's payloads up to the limit and one more: a payload that could
    take a row past PostgreSQL's 1 GB a value is refused before the COPY is sent."""
    monkeypatch.setattr(dead_letters, "ROW_PAYLOAD_BYTES", dead_letters._BYTEA_MAX - 10)
    recv = datetime(2026, 1, 1)
    assert encode_dead_letters("t", [(0, 1, b"x" * 10, "r", recv)])
    with pytest.raises(ValueError, match="too large"):
        encode_dead_letters("t", [(0, 1, b"x" * 11, "r", recv)])
