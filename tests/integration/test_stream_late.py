"""Late events and unknown device ids through the real engine (no Dagster)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from antenna_platform.stream.engine import StreamEngine, StreamOptions
from antenna_platform.warehouse import connect
from tests.integration.test_stream import produce

pytestmark = pytest.mark.integration

KNOWN = "00000000-0000-0000-0000-000000000001"
STRANGER = "99999999-0000-4000-8000-000000000000"
ANT = "11111111-1111-1111-1111-111111111111"


def event(ts: int, nbytes: int, dev: str = KNOWN) -> tuple[bytes, bool]:
    body = {"bytes": nbytes, "timestamp": ts, "app": "SKYPE", "id": dev, "antenna_id": ANT}
    return orjson.dumps(body), True


def naive(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def test_late_events_go_to_the_lake_not_to_bytes_and_unknown_ids_are_counted(make_platform):
    settings = make_platform(partitions=1, ANTENNA_WATERMARK_SECONDS="60")
    now = int(time.time())
    hour = now - now % 3600 - 2 * 3600  # a closed hour, two hours back
    w_late, w_now = hour, hour + 1800  # windows [h, h+5min) and [h+30min, ...)
    payloads = [
        event(w_late + 10, 100),  # on time (nothing later seen yet)
        event(w_now + 10, 1000),  # moves the watermark to w_now+10-60 > w_late+300
        event(w_late + 20, 7),  # late: its window ended before the watermark
        event(w_now + 20, 5, STRANGER),  # on time, unknown device id
        event(w_late + 30, 3, STRANGER),  # late and unknown
    ]
    produce(settings, payloads, partition=0)
    stats = StreamEngine(settings, StreamOptions(stop_when_idle_s=3)).run()
    assert stats.records == 5 and stats.late == 2 and stats.unknown == 2
    with connect(settings) as conn:
        users = dict(
            conn.execute(
                "select id, value from bytes "
                "where type = 'user_total_bytes' and \"timestamp\" = %s",
                (naive(w_late),),
            ).fetchall()
        )
        hours = conn.execute(
            "select late_events, unknown_ids, reported_version = version from lake_hours "
            "where hour = %s",
            (naive(hour),),
        ).fetchone()
        lake = conn.execute(
            "select sum(rows), sum(bytes_sum) from lake_files where hour = %s", (naive(hour),)
        ).fetchone()
    assert users == {KNOWN: 100}  # the late 7 and 3 are not in the speed layer's totals
    assert hours == (2, 2, True)  # counted, and the hour was reported
    assert tuple(int(x) for x in lake) == (5, 1115)  # every event is in the lake
