"""What each record's value looks like before it is decoded: one small code a record.

Why: in a flood of garbage most values are rejected without decoding (empty, not a JSON
object, "{" without "}", not UTF-8: `contract.reasons_before_decoding`), and the Python
steps to say so cost more than the rest of a reject. The fetch buffer already holds every
value's first and last byte, so numpy classifies a whole Kafka batch at once
(`classify_spans`) while the records are decoded; `classify_values` says the same for
values in hand (Python, built on the contract's own function). The two must agree
exactly (tests/unit/test_shapes.py); what `classify_spans` cannot tell from the bytes at
hand it leaves to `classify_values`.

Codes:
  - `SHAPED` (0): first byte "{", last "}": the columnar fast path decodes it;
  - `DECODE`: not shaped, but only decoding tells (JSON whitespace first): the contract
    decides, record by record;
  - the rest: rejected without decoding, for the reason `REASONS[code]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

from antenna_platform.contract import (
    MAX_MESSAGE_BYTES,
    REASONS_BEFORE_DECODING,
    reasons_before_decoding,
)

SHAPED, DECODE, EMPTY, TOO_LARGE, NOT_OBJECT, NOT_UTF8, NOT_JSON = range(7)
REASONS: tuple[str | None, ...] = (None, None, *REASONS_BEFORE_DECODING)
_CODE_OF = {r: c for c, r in enumerate(REASONS) if r is not None} | {None: DECODE}
REASON_ARRAY = np.array(REASONS, dtype=object)  # codes -> reasons in one numpy take

_WS = b" \t\r\n"
_OBJECT_START = np.zeros(256, dtype=bool)  # "{" or JSON whitespace
_OBJECT_START[list(b"{" + _WS)] = True
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[list(_WS)] = True
# bytes no UTF-8 text starts with: continuation bytes, overlong leads, beyond U+10FFFF
_NO_UTF8_START = np.zeros(256, dtype=bool)
_NO_UTF8_START[0x80:0xC2] = True
_NO_UTF8_START[0xF5:] = True


def classify_values(values: Sequence[bytes | None]) -> np.ndarray:
    """The code (int8) of each value: SHAPED when it is `{...}`, else its reason's code as
    `contract.reasons_before_decoding` gives it (DECODE where that says "decode to tell")."""
    n = len(values)
    codes = np.zeros(n, dtype=np.int8)
    try:  # C-level loops: the usual values are bytes
        starts = np.fromiter(map(bytes.startswith, values, repeat(b"{", n)), bool, n)
        ends = np.fromiter(map(bytes.endswith, values, repeat(b"}", n)), bool, n)
        others = np.flatnonzero(~(starts & ends)).tolist()
    except TypeError:  # None (or a non-bytes value)
        others = [
            i
            for i, v in enumerate(values)
            if not (type(v) is bytes and v[:1] == b"{" and v[-1:] == b"}")
        ]
    if others:
        reasons = reasons_before_decoding([values[i] for i in others])
        codes[others] = [_CODE_OF[r] for r in reasons]
    return codes


def classify_spans(
    buf: np.ndarray, data: bytes, start: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """What `classify_values` gives for the values `data[start:start+length]` (a negative
    length: a null value), from `buf` (`data` as uint8, padded past its end), all at once.

    Decided here: empty, too large, shaped, a first byte that starts no JSON object (ASCII
    values: "not a JSON object"; a byte no UTF-8 text starts with: "not valid UTF-8"),
    and ASCII "{" values whose last byte is neither "}" nor whitespace ("not valid JSON").
    The few others (non-ASCII text, whitespace at an end) go to `classify_values`.
    """
    n = len(start)
    codes = np.zeros(n, dtype=np.int8)
    if n == 0:
        return codes
    nonempty = length > 0
    first = buf[start]
    last = buf[np.maximum(start + length - 1, 0)]
    shaped = nonempty & (first == 0x7B) & (last == 0x7D)
    if shaped.all():  # the usual case
        return codes
    codes[~nonempty] = EMPTY
    big = nonempty & ~shaped & (length > MAX_MESSAGE_BYTES)
    codes[big] = TOO_LARGE
    rest = np.flatnonzero(nonempty & ~shaped & ~big)
    if rest.size == 0:
        return codes
    f, la = first[rest], last[rest]
    bad_lead = _NO_UTF8_START[f]
    codes[rest[bad_lead]] = NOT_UTF8
    rest, f, la = rest[~bad_lead], f[~bad_lead], la[~bad_lead]
    if rest.size:
        # ASCII = the largest byte of the value below 0x80 (reduceat over [start, end) pairs)
        bounds = np.empty(2 * rest.size, dtype=np.int64)
        bounds[0::2] = start[rest]
        bounds[1::2] = start[rest] + length[rest]
        ascii = np.maximum.reduceat(buf, bounds)[0::2] < 0x80
        not_object = ascii & ~_OBJECT_START[f]
        no_close = ascii & (f == 0x7B) & ~_IS_WS[la]  # (the last byte is not "}": not shaped)
        codes[rest[not_object]] = NOT_OBJECT
        codes[rest[no_close]] = NOT_JSON
        left = rest[~(not_object | no_close)]
        if left.size:
            lo, hi = start[left].tolist(), (start[left] + length[left]).tolist()
            values = list(map(data.__getitem__, map(slice, lo, hi)))
            codes[left] = classify_values(values)
    return codes


__all__ = [
    "DECODE",
    "REASONS",
    "REASON_ARRAY",
    "SHAPED",
    "classify_spans",
    "classify_values",
]
