"""The event contract of topic `devices`: parse one Kafka message or say why not.

Rules (also in the README):
- a UTF-8 JSON object of at most `MAX_MESSAGE_BYTES`; unknown extra fields are ignored;
- `timestamp`: integer epoch seconds, or an ISO-8601 string (no offset means UTC);
  values that look like milliseconds, before 2000-01-01, or further ahead than the
  allowed clock skew are rejected;
- `id`, `antenna_id`: UUID strings (stored lower-case);
- `bytes`: a non-negative integer (booleans, fractions and strings are rejected);
- `app`: a non-empty string of at most 64 characters without control characters
  (Postgres text cannot hold NUL), stored literally.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

MAX_MESSAGE_BYTES = 1_000_000
MIN_TS = 946_684_800  # 2000-01-01T00:00:00Z
MAX_BYTES_VALUE = 2**62
MAX_APP_LEN = 64
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FIELDS = ("timestamp", "id", "antenna_id", "bytes", "app")


class Event(NamedTuple):
    """A valid event. `ts` is epoch seconds (UTC)."""

    ts: int
    id: str
    antenna_id: str
    bytes: int
    app: str


class Rejected(NamedTuple):
    reason: str


def _parse_ts(value: object, now: float, max_skew_s: int) -> int | str:
    if isinstance(value, bool):
        return "timestamp: expected epoch seconds or ISO-8601, got a boolean"
    if isinstance(value, int):
        ts = value
    elif isinstance(value, float):
        if not value.is_integer():
            return "timestamp: expected whole epoch seconds, got a fraction"
        ts = int(value)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return "timestamp: not epoch seconds nor an ISO-8601 string"
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = int(dt.timestamp())
    else:
        return f"timestamp: expected epoch seconds or ISO-8601, got {type(value).__name__}"
    if ts > 100_000_000_000:
        return "timestamp: looks like milliseconds, expected seconds"
    if ts < MIN_TS:
        return "timestamp: before 2000-01-01"
    if ts > now + max_skew_s:
        return f"timestamp: more than {max_skew_s}s in the future"
    return ts


def validate(obj: object, now: float | None = None, max_skew_s: int = 300) -> Event | Rejected:
    """Check a decoded JSON value against the contract."""
    if not isinstance(obj, dict):
        return Rejected(f"not a JSON object (got {type(obj).__name__})")
    for name in FIELDS:
        if obj.get(name) is None:
            return Rejected(f"{name}: missing or null")
    ts = _parse_ts(obj["timestamp"], time.time() if now is None else now, max_skew_s)
    if isinstance(ts, str):
        return Rejected(ts)
    dev, ant = as_uuid(obj["id"]), as_uuid(obj["antenna_id"])
    if dev is None:
        return Rejected("id: expected a UUID string")
    if ant is None:
        return Rejected("antenna_id: expected a UUID string")
    nbytes = obj["bytes"]
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        if isinstance(nbytes, float) and nbytes.is_integer() and nbytes >= 0:
            nbytes = int(nbytes)
        else:
            return Rejected("bytes: expected a non-negative integer")
    if nbytes < 0:
        return Rejected("bytes: negative")
    if nbytes > MAX_BYTES_VALUE:
        return Rejected("bytes: implausibly large")
    app = obj["app"]
    problem = app_problem(app)
    if problem is not None:
        return Rejected(problem)
    return Event(ts, dev, ant, nbytes, app)


# ids and app names already checked: a network has few devices, antennas and apps, and
# skipping their regular expressions saves a fifth of the cost of a valid event
_CACHE_MAX = 100_000
_VALID_IDS: dict[str, str] = {}  # UUID text as sent -> lower case
_VALID_APPS: set[str] = set()


def as_uuid(value: object) -> str | None:
    """The lower-case UUID, or None when `value` is not a UUID string (the rule of `id`
    and `antenna_id`; the columnar parser applies it once per distinct value)."""
    if not isinstance(value, str):
        return None
    low = _VALID_IDS.get(value)
    if low is None:
        if not _UUID.match(value):
            return None
        if len(_VALID_IDS) >= _CACHE_MAX:
            _VALID_IDS.clear()
        low = _VALID_IDS[value] = value.lower()
    return low


_APP_SHAPE = f"app: expected a non-empty string of at most {MAX_APP_LEN} characters"


def app_problem(value: object) -> str | None:
    """Why `value` is not a valid `app`, or None when it is (the rule of `app`; the
    columnar parser applies it once per distinct value)."""
    if not isinstance(value, str) or not value or len(value) > MAX_APP_LEN:
        return _APP_SHAPE
    if value not in _VALID_APPS:
        if _CONTROL.search(value):
            return "app: contains control characters"
        if len(_VALID_APPS) >= _CACHE_MAX:
            _VALID_APPS.clear()
        _VALID_APPS.add(value)
    return None


def parse(
    payload: bytes | None, now: float | None = None, max_skew_s: int = 300
) -> Event | Rejected:
    """Decode and validate one raw Kafka message value."""
    early = _reject_undecoded(payload)
    if early is not None:
        return early
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _NOT_UTF8 if not _is_utf8(payload) else _NOT_JSON
    return validate(obj, now, max_skew_s)


def reject_undecodable(payload: bytes | None) -> Rejected:
    """What `parse` says of a payload that `orjson.loads` refuses, without a second try
    (the columnar parser has made the first: a JSONDecodeError costs microseconds)."""
    early = _reject_undecoded(payload)
    if early is not None:
        return early
    return _NOT_UTF8 if not _is_utf8(payload) else _NOT_JSON


def _reject_undecoded(payload: bytes | None) -> Rejected | None:
    """The checks before decoding: empty, too large, cannot start a JSON object."""
    reason = reasons_before_decoding((payload,))[0]
    return None if reason is None else Rejected(reason)


def reasons_before_decoding(payloads: Iterable[bytes | None]) -> list[str | None]:
    """For each payload, the reason `parse` rejects it for without decoding it (empty, too
    large, cannot start a JSON object, "{" without a closing "}"), or None where it must
    be decoded to tell. One loop over many payloads: a flood of garbage costs a fraction
    of a microsecond a message, not three function calls each."""
    out: list[str | None] = []
    add = out.append
    for payload in payloads:
        if not payload:  # None or empty
            add(_EMPTY.reason)
        elif len(payload) > MAX_MESSAGE_BYTES:
            add(_TOO_LARGE.reason)
        elif payload[0] not in _OBJECT_STARTS:
            # cannot be a JSON object: rejected without parsing
            add(_NOT_OBJECT.reason if payload.isascii() or _is_utf8(payload) else _NOT_UTF8.reason)
        elif (
            payload[0] == 0x7B
            and payload[-1] != 0x7D
            and not payload.rstrip(b" \t\r\n").endswith(b"}")
        ):
            # "{" but no "}" at the end: orjson would refuse it; a JSONDecodeError costs more
            add(_NOT_JSON.reason if payload.isascii() or _is_utf8(payload) else _NOT_UTF8.reason)
        else:
            add(None)
    return out


_OBJECT_STARTS = frozenset(b"{ \t\r\n")  # "{" or JSON whitespace before it
_EMPTY = Rejected("empty message")
_TOO_LARGE = Rejected(f"message larger than {MAX_MESSAGE_BYTES} bytes")
_NOT_UTF8 = Rejected("not valid UTF-8")
_NOT_JSON = Rejected("not valid JSON")
_NOT_OBJECT = Rejected("not a JSON object")
# every reason `reasons_before_decoding` gives (the stream's `shapes` codes them by position)
REASONS_BEFORE_DECODING: tuple[str, ...] = tuple(
    r.reason for r in (_EMPTY, _TOO_LARGE, _NOT_OBJECT, _NOT_UTF8, _NOT_JSON)
)


def _is_utf8(payload: bytes) -> bool:
    # classify without formatting orjson's message: a flood of garbage must stay cheap
    if payload.isascii():
        return True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_json(event: Event) -> bytes:
    """Serialize an event the way the course simulator does."""
    return orjson.dumps(
        {
            "bytes": event.bytes,
            "timestamp": event.ts,
            "app": event.app,
            "id": event.id,
            "antenna_id": event.antenna_id,
        }
    )
