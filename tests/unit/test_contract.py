"""The event contract, including the hostile inputs of issue 6 (accepted or rejected by rule)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_platform.contract import MAX_MESSAGE_BYTES, Event, Rejected, parse, validate

NOW = 1_790_000_000  # 2026-09-21
GOOD = {
    "bytes": 9082,
    "timestamp": 1600545287,
    "app": "SKYPE",
    "id": "00000000-0000-0000-0000-000000000001",
    "antenna_id": "11111111-1111-1111-1111-111111111111",
}


def _json(d) -> bytes:
    import json

    return json.dumps(d).encode()


def test_course_simulator_message_is_accepted_unchanged():
    raw = (
        b'{"bytes":9082,"timestamp":1600545287,"app":"SKYPE",'
        b'"id":"00000000-0000-0000-0000-000000000001",'
        b'"antenna_id":"00000000-0000-0000-0000-000000000000"}'
    )
    assert parse(raw, now=NOW) == Event(
        1600545287,
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000000",
        9082,
        "SKYPE",
    )


def test_iso_timestamp_accepted_and_naive_means_utc():
    a = validate({**GOOD, "timestamp": "2020-09-19T19:54:47Z"}, now=NOW)
    b = validate({**GOOD, "timestamp": "2020-09-19T19:54:47"}, now=NOW)
    c = validate({**GOOD, "timestamp": "2020-09-19T21:54:47+02:00"}, now=NOW)
    assert a.ts == b.ts == c.ts == 1600545287


def test_extra_fields_are_ignored_and_uuids_lowercased():
    ev = validate({**GOOD, "extra": [1, 2], "id": GOOD["id"].upper()}, now=NOW)
    assert isinstance(ev, Event) and ev.id == GOOD["id"]


def test_whole_float_bytes_accepted():
    assert validate({**GOOD, "bytes": 12.0}, now=NOW).bytes == 12


def test_sql_looking_strings_are_kept_literally():
    app = "x'); drop table bytes; --"
    ev = validate({**GOOD, "app": app}, now=NOW)
    assert isinstance(ev, Event) and ev.app == app
    assert isinstance(validate({**GOOD, "id": "1' or '1'='1"}, now=NOW), Rejected)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\xfa", "UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (_json({k: v for k, v in GOOD.items() if k != "app"}), "app: missing"),
        (_json({**GOOD, "id": None}), "id: missing or null"),
        (_json({**GOOD, "bytes": -1}), "bytes: negative"),
        (_json({**GOOD, "bytes": 1.5}), "bytes: expected a non-negative integer"),
        (_json({**GOOD, "bytes": "12"}), "bytes: expected"),
        (_json({**GOOD, "bytes": True}), "bytes: expected"),
        (_json({**GOOD, "bytes": 2**70}), "implausibly large"),
        (_json({**GOOD, "timestamp": 1600545287000}), "milliseconds"),
        (_json({**GOOD, "timestamp": 946684799}), "before 2000"),
        (_json({**GOOD, "timestamp": NOW + 3600}), "in the future"),
        (_json({**GOOD, "timestamp": 1600545287.5}), "fraction"),
        (_json({**GOOD, "timestamp": "yesterday"}), "ISO-8601"),
        (_json({**GOOD, "timestamp": [1]}), "timestamp: expected"),
        (_json({**GOOD, "antenna_id": "antenna-1"}), "antenna_id: expected a UUID"),
        (_json({**GOOD, "id": 7}), "id: expected a UUID"),
        (_json({**GOOD, "app": ""}), "app: expected"),
        (_json({**GOOD, "app": "A" * 65}), "app: expected"),
        (_json({**GOOD, "app": 3}), "app: expected"),
        (_json({**GOOD, "app": "SKY\u0000PE"}), "control characters"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "larger than"),
        (None, "empty"),
    ],
)
def test_hostile_inputs_are_rejected_with_a_reason(payload, reason):
    out = parse(payload, now=NOW)
    assert isinstance(out, Rejected), out
    assert reason in out.reason


def test_clock_skew_is_configurable():
    assert isinstance(validate({**GOOD, "timestamp": NOW + 200}, now=NOW, max_skew_s=300), Event)
    assert isinstance(validate({**GOOD, "timestamp": NOW + 200}, now=NOW, max_skew_s=100), Rejected)


def test_checked_ids_and_apps_are_remembered_without_loosening_the_rules():
    upper = "ABCDEF00-0000-0000-0000-0000000000AA"
    for _ in range(2):  # the second time through the cache
        ev = validate({**GOOD, "id": upper, "app": "WHATSAPP"}, now=NOW)
        assert isinstance(ev, Event) and ev.id == upper.lower() and ev.app == "WHATSAPP"
    assert isinstance(validate({**GOOD, "id": upper + "0"}, now=NOW), Rejected)
    assert isinstance(validate({**GOOD, "id": [upper]}, now=NOW), Rejected)  # unhashable
    assert isinstance(validate({**GOOD, "antenna_id": {"a": 1}}, now=NOW), Rejected)
    for _ in range(2):
        assert "control" in validate({**GOOD, "app": "WHATS\nAPP"}, now=NOW).reason


@pytest.mark.parametrize(
    "payload",
    [None, b"", b"{not json", b"\xff\xfe", b"{\xff}", b"[1] x", b"12 34", b'{"a":1}{"b":2}'],
)
def test_the_reason_for_an_undecodable_payload_is_the_one_parse_gives(payload):
    from antenna_platform.contract import reject_undecodable

    out = reject_undecodable(payload)
    assert out == parse(payload, now=NOW)
    assert out.reason in {"empty message", "not valid JSON", "not valid UTF-8", "not a JSON object"}


@pytest.mark.parametrize(
    "payload",
    [b"{", b"{not json", b"{\xff", b'{"a": 1} x', b'{"a": 1}\x00', b'{"a": 1} \t\r\n', b"{}\n"],
)
def test_a_brace_without_a_closing_brace_is_judged_as_orjson_would(payload):
    """The shortcut for '{' payloads without a final '}' gives what decoding would give."""
    import orjson

    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            payload.decode("utf-8")
            expected = "not valid JSON"
        except UnicodeDecodeError:
            expected = "not valid UTF-8"
    else:
        expected = validate(obj, now=NOW).reason
    assert parse(payload, now=NOW).reason == expected


def _decoded_reason(payload: bytes | None) -> str | None:
    """What decoding says of a payload (None: it decodes to an object the rules judge).
    The contract's one shortcut: what cannot start a JSON object (after JSON whitespace)
    is "not a JSON object" when it is UTF-8, whatever a decoder would add."""
    import orjson

    if not payload:
        return "empty message"
    if len(payload) > MAX_MESSAGE_BYTES:
        return f"message larger than {MAX_MESSAGE_BYTES} bytes"
    utf8 = True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        utf8 = False
    if payload[:1] not in (b"{", b" ", b"\t", b"\r", b"\n"):
        return "not a JSON object" if utf8 else "not valid UTF-8"
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "not valid JSON" if utf8 else "not valid UTF-8"
    return None if isinstance(obj, dict) else "not a JSON object"


_GARBAGE = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.builds(
        bytes.__add__,
        st.sampled_from([b"{", b" {", b"\n", b"[", b'"', b"\xff", b"\xc3\xa9", b"7", b"{}"]),
        st.binary(max_size=20),
    ),
    st.builds(lambda b: b + b"}", st.binary(max_size=20)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_GARBAGE, max_size=30))
def test_reasons_before_decoding_are_what_decoding_would_say(payloads):
    """For many payloads at once: a reason given without decoding is exactly the one
    decoding gives (orjson is the judge); None only where a decoder could still find an
    object: one led by '{' or by JSON whitespace."""
    from antenna_platform.contract import reasons_before_decoding

    reasons = reasons_before_decoding(payloads)
    assert len(reasons) == len(payloads)
    for payload, reason in zip(payloads, reasons, strict=True):
        if reason is not None:
            assert reason == _decoded_reason(payload), payload
        else:
            assert payload and payload[:1] in (b"{", b" ", b"\t", b"\r", b"\n"), payload
