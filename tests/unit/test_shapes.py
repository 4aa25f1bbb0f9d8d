"""Values classified on the fetch buffer (numpy) say what the contract says of them.

`shapes.classify_spans` reads first and last bytes and per-value maxima from a Kafka
batch's buffer; `shapes.classify_values` asks the contract (`_object_shaped`'s rule and
`contract.reasons_before_decoding`) value by value. They must agree on every value, and
the bytes between values (record headers, other records) must never change a verdict.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.memory_records import MemoryRecords

from antenna_platform.contract import MAX_MESSAGE_BYTES, Rejected, parse
from antenna_platform.stream import records, shapes
from tests.unit.test_records import build_batch, decoder

PIECES = [b"{", b"}", b" ", b"\t", b"\n", b"[1]", b'"a"', b"x", b"\xff", b"\x80", b"\xc3\xa9"]
PIECES += [b"\xe2\x82", b"\xc0\xaf", b"\xf5", b"\xed\xa0\x80", b'{"bytes": 1}', b"\x00", b"7"]
value_st = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join),
    st.text(max_size=10).map(str.encode),
)


def spans_of(values: list[bytes | None], filler: bytes) -> list[int]:
    """`classify_spans` over the values laid out with `filler` between and around them."""
    data, start, length = filler, [], []
    for v in values:
        start.append(len(data))
        length.append(-1 if v is None else len(v))
        data += (v or b"") + filler
    buf = np.frombuffer(data + bytes(16), dtype=np.uint8)
    codes = shapes.classify_spans(
        buf, data, np.array(start, dtype=np.int64), np.array(length, dtype=np.int64)
    )
    return codes.tolist()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(value_st, max_size=30),
    filler=st.sampled_from([b"", b"\xff", b"\x80\x80 ", b"}", b"{"]),
)
def test_the_buffer_says_what_the_contract_says(values, filler) -> None:
    assert spans_of(values, filler) == shapes.classify_values(values).tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(value_st, min_size=1, max_size=40))
def test_decoded_batches_carry_the_contracts_verdicts(values) -> None:
    data = build_batch(0, [(1_700_000_000_000 + i, None, v, []) for i, v in enumerate(values)])
    for path in ("scalar", "vector"):
        with decoder(path):
            block = records.decode_block(MemoryRecords(data).next_batch())
        assert block.codes.tolist() == shapes.classify_values(values).tolist(), path
        assert block.values == values


def test_codes_mean_what_the_contract_rejects_for() -> None:
    """Independent of both classifiers: literal cases, and `contract.parse` for each."""
    cases = {
        b'{"a": 1}': shapes.SHAPED,
        b"{}": shapes.SHAPED,
        b" {}": shapes.DECODE,
        b"{} ": shapes.DECODE,
        b"": shapes.EMPTY,
        None: shapes.EMPTY,
        b"[1]": shapes.NOT_OBJECT,
        b"7": shapes.NOT_OBJECT,
        "é".encode(): shapes.NOT_OBJECT,
        b"\xff\xfe": shapes.NOT_UTF8,
        b"\xc3": shapes.NOT_UTF8,
        b"{not json": shapes.NOT_JSON,
        b"{": shapes.NOT_JSON,
        "{é".encode(): shapes.NOT_JSON,
        b"{\xff": shapes.NOT_UTF8,
    }
    values = list(cases)
    assert shapes.classify_values(values).tolist() == list(cases.values())
    assert spans_of(values, b"\xff") == list(cases.values())
    for value, code in cases.items():
        if code not in (shapes.SHAPED, shapes.DECODE):
            res = parse(value, 1_700_000_000, 300)
            assert isinstance(res, Rejected) and res.reason == shapes.REASONS[code], value


def test_values_over_the_size_limit_are_too_large_unless_shaped() -> None:
    big = MAX_MESSAGE_BYTES + 1
    values = [b"x" * big, b"{" + b" " * (big - 2) + b"}", b"[" * big, b"{" * big]
    want = [shapes.TOO_LARGE, shapes.SHAPED, shapes.TOO_LARGE, shapes.TOO_LARGE]
    assert shapes.classify_values(values).tolist() == want
    assert spans_of(values, b"\xff") == want
