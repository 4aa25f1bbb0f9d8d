"""Windows and watermark with explicit timestamps; no broker."""

from antenna_platform.contract import Event
from antenna_platform.stream.windows import ANTENNA, APP, USER, WindowAggregator, window_start

T0 = 1_790_000_100  # an arbitrary epoch second
W0 = T0 - T0 % 300


def ev(ts: int, nbytes: int = 10, dev: str = "d1", ant: str = "a1", app: str = "SKYPE") -> Event:
    return Event(ts, dev, ant, nbytes, app)


def test_window_start_is_five_minute_aligned():
    assert window_start(W0 + 299) == W0
    assert window_start(W0 + 300) == W0 + 300


def test_totals_per_antenna_user_and_app():
    agg = WindowAggregator(watermark_s=60)
    out = agg.aggregate({0: [ev(W0, 5), ev(W0 + 10, 7, dev="d2"), ev(W0 + 301, 1, app="X")]})
    assert out.deltas[(W0, "a1", ANTENNA)] == 12
    assert out.deltas[(W0, "d1", USER)] == 5
    assert out.deltas[(W0, "d2", USER)] == 7
    assert out.deltas[(W0, "SKYPE", APP)] == 12
    assert out.deltas[(W0 + 300, "X", APP)] == 1
    assert out.late == 0
    assert out.max_ts == {0: W0 + 301}


def test_late_event_counted_not_added():
    agg = WindowAggregator(watermark_s=60)
    # max time W0+600+60 -> watermark W0+600: window [W0, W0+300) ended -> late
    out = agg.aggregate({0: [ev(W0 + 660), ev(W0 + 10, 99)]})
    assert out.late == 1
    assert (W0, "d1", USER) not in out.deltas
    assert out.late_by_hour[(W0 + 10) - (W0 + 10) % 3600] == 1


def test_window_end_equal_to_watermark_is_late_and_just_before_is_not():
    agg = WindowAggregator(watermark_s=60)
    on_edge = agg.aggregate({0: [ev(W0 + 360), ev(W0)]})  # watermark = W0+300 = window end
    assert on_edge.late == 1
    agg2 = WindowAggregator(watermark_s=60)
    before = agg2.aggregate({0: [ev(W0 + 359), ev(W0)]})  # watermark W0+299 < window end
    assert before.late == 0


def test_watermark_is_per_partition():
    agg = WindowAggregator(watermark_s=0)
    out = agg.aggregate({0: [ev(W0 + 3000)], 1: [ev(W0)]})
    assert out.late == 0  # partition 1 has not moved past W0
    assert out.max_ts == {0: W0 + 3000, 1: W0}


def test_aggregate_is_pure_until_commit():
    agg = WindowAggregator(watermark_s=0)
    first = agg.aggregate({0: [ev(W0 + 900)]})
    assert agg.committed == {}
    again = agg.aggregate({0: [ev(W0)]})  # nothing committed: W0 is not late
    assert again.late == 0
    agg.commit(first)
    assert agg.committed == {0: W0 + 900}
    assert agg.aggregate({0: [ev(W0)]}).late == 1
    assert agg.watermark(0) == W0 + 900
    assert agg.low_watermark() == W0 + 900


def test_loaded_state_from_storage_applies_to_replay():
    agg = WindowAggregator(watermark_s=60)
    agg.load(3, W0 + 1000)
    assert agg.aggregate({3: [ev(W0)]}).late == 1
    agg.forget([3])
    assert agg.aggregate({3: [ev(W0)]}).late == 0


def test_sorted_rows_are_in_key_order():
    agg = WindowAggregator(watermark_s=60)
    out = agg.aggregate({0: [ev(W0 + 301, dev="z"), ev(W0, dev="b")]})
    rows = out.sorted_rows()
    assert rows == sorted(rows)
    assert len(rows) == 6
