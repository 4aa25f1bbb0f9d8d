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

from antenna_platform.stream.sinks import encode_dead_letters

_TYPES = ("text", "int4", "int8", "bytea", "text", "timestamp")


def psycopg_copy(topic: str, rows) -> bytes:
    tx = Transformer()
    tx.set_dumper_types([types[name].oid for name in _TYPES], Format.BINARY)
    fmt = BinaryFormatter(tx)
    out = bytearray()
    for row in rows:
        out += fmt.write_row((topic, *row))
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
