"""Pure parts of the batch layer: hour math, result assembly, checks, metadata."""

from datetime import UTC, datetime, timedelta, timezone

from antenna_platform import quality
from antenna_platform.batch import (
    ANTENNA,
    APP,
    EMAIL,
    HourManifest,
    HourResult,
    build_results,
    epoch,
    hours_between,
    summarize,
)

H = datetime(2026, 3, 5, 14)


def test_hours_between_is_half_open_and_utc():
    start = datetime(2026, 3, 5, 14, tzinfo=UTC)
    assert hours_between(start, start + timedelta(hours=3)) == [
        H,
        H + timedelta(hours=1),
        H + timedelta(hours=2),
    ]
    assert hours_between(start, start) == []
    cet = timezone(timedelta(hours=1))
    assert hours_between(datetime(2026, 3, 5, 15, tzinfo=cet), start + timedelta(hours=1)) == [H]


def _agg(g, value, n=1, antenna=None, email=None, app=None, quota=None, **bad):
    row = {
        "hour_epoch": epoch(H),
        "antenna_id": antenna,
        "email": email,
        "app": app,
        "g": g,
        "value": value,
        "n": n,
        "quota": quota,
        "null_rows": 0,
        "negative_rows": 0,
        "outside_rows": 0,
    }
    row.update(bad)
    return row


def test_build_results_splits_grouping_sets_and_finds_users_strictly_over_quota():
    manifests = {
        H: HourManifest(H, ("a.parquet",), 5, 60),
        H + timedelta(hours=1): HourManifest(H + timedelta(hours=1), (), 0, 0),
    }
    rows = [
        _agg(0b0111, 60, n=5),
        _agg(0b0011, 60, antenna="ant-1", n=5),
        _agg(0b0110, 35, app="SKYPE", n=3),
        _agg(0b0110, 25, app="FACETIME", n=2),
        _agg(0b0101, 30, email="over@x", quota=29, n=2),
        _agg(0b0101, 20, email="equal@x", quota=20, n=2),
        _agg(0b0101, 10, email=None, n=1),  # unknown devices
    ]
    res, empty = build_results(manifests, rows)
    assert (res.events, res.total_bytes, res.unknown_events, res.unknown_bytes) == (5, 60, 1, 10)
    assert res.type_sum(ANTENNA) == res.type_sum(APP) == 60
    assert res.type_sum(EMAIL) == 50
    assert res.quota_rows == [("over@x", 30, 29, H)]
    assert empty.events == 0 and empty.bytes_rows == [] and empty.quota_rows == []
    assert quality.check_bytes_hourly([res, empty]).passed
    assert quality.check_quota([res, empty], ["over@x", "equal@x"]).passed
    assert quality.check_events([res, empty], {}).passed


def test_events_check_counts_failures_and_manifest_mismatch():
    bad = HourResult(H, files=1, manifest_rows=10, events=9, negative_rows=2, outside_rows=1)
    out = quality.check_events([bad], {}, example={"bytes": -1})
    assert not out.passed
    assert out.failing_rows == 2 + 1 + 1
    meta = out.metadata()
    assert meta["negative_bytes_rows"] == 2 and "manifest_mismatch" in meta
    assert "-1" in meta["example"]


def test_bytes_hourly_check_catches_duplicates_bad_types_and_sum_mismatch():
    res = HourResult(
        H,
        manifest_bytes=10,
        bytes_rows=[
            (H, "a", 5, ANTENNA),
            (H, "a", 5, ANTENNA),
            (H, "x", -1, "user_total_bytes"),
            (H, "SKYPE", 10, APP),
            (H, "u@x", 10, EMAIL),
        ],
    )
    out = quality.check_bytes_hourly([res])
    assert not out.passed
    assert out.failing_rows == 3
    assert "multiple_fields_uniqueness" in out.details["failed_checks"]
    assert "sum_mismatch_hours" not in out.details  # antenna 10, app 10, email 10: consistent

    res2 = HourResult(H, manifest_bytes=10, unknown_bytes=3, bytes_rows=[(H, "u@x", 10, EMAIL)])
    out2 = quality.check_bytes_hourly([res2])
    assert not out2.passed and "sum_mismatch_hours" in out2.details


def test_quota_check_rejects_equal_usage_and_unknown_email():
    res = HourResult(H, quota_rows=[("a@x", 5, 5, H), ("ghost@x", 9, 5, H), ("b@x", 6, 5, H)])
    out = quality.check_quota([res], ["a@x", "b@x"])
    assert not out.passed
    assert out.failing_rows == 2
    assert "usage_over_quota" in out.details["failed_checks"]


def test_summary_has_markdown_tables_sorted_by_bytes():
    res = HourResult(
        H,
        events=3,
        total_bytes=30,
        bytes_rows=[(H, "a1", 10, ANTENNA), (H, "a2", 20, ANTENNA), (H, "u@x", 30, EMAIL)],
        quota_rows=[("u@x", 30, 25, H)],
    )
    s = summarize([res, HourResult(H + timedelta(hours=1))])
    assert s["events"] == 3 and s["empty_hours"] == 1 and s["users_over_quota"] == 1
    lines = s["top_antennas"].splitlines()
    assert lines[0] == "| antenna | bytes |" and lines[2] == "| a2 | 20 |"
    assert "| u@x @ 2026-03-05 14:00 | 5 |" in s["over_quota"]


PANDERA_ERRORS = {
    "SCHEMA": {"SERIES_CONTAINS_NULLS": [{"column": "id", "check": "not_nullable"}]},
    "DATA": {
        "DATAFRAME_CHECK": [
            {"column": "hour_events", "check": "timestamp_inside_hour"},
            {"column": "bytes", "check": "greater_than_or_equal_to(0)"},
        ]
    },
}


def test_events_check_follows_pandera_and_names_its_failed_checks():
    res = HourResult(H, files=1, manifest_rows=3, events=3, null_rows=1)
    out = quality.check_events([res], PANDERA_ERRORS)
    assert not out.passed and out.failing_rows == 1
    assert out.details["failed_checks"] == (
        "bytes: greater_than_or_equal_to(0), id: not_nullable, timestamp_inside_hour"
    )
    # Pandera fails while the counters see nothing (e.g. a column of the wrong type): fails.
    clean = HourResult(H, files=1, manifest_rows=3, events=3)
    assert not quality.check_events([clean], PANDERA_ERRORS).passed
    assert quality.check_events([clean], {}).passed
