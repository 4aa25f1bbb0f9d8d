"""The dead-letter COPY encoder against psycopg's own binary COPY formatter.

`sinks.encode_dead_letters` builds the binary COPY stream by hand (psycopg's per-row
dumpers cost a flood of garbage more than the rest of a reject). psycopg's formatter,
given the table's column types, is the independent expectation: the bytes must be equal.
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

_TYPES = ("text", "int4", "int8", "timestamp", "bytea", "text")  # dead_letters.COPY_COLUMNS


def psycopg_copy(topic: str, rows) -> bytes:
    tx = Transformer()
    tx.set_dumper_types([types[name].oid for name in _TYPES], Format.BINARY)
    fmt = BinaryFormatter(tx)
    out = bytearray()
    for partition, offset, payload, reason, received in rows:
        out += fmt.write_row((topic, partition, offset, received, payload, reason))
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
