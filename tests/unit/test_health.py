from datetime import datetime, timedelta

from antenna_platform.health import partition_health

NOW = datetime(2026, 11, 23, 12, 0, 0)


def test_caught_up_lagging_and_never_committed_partitions():
    committed = {
        0: (100, NOW, NOW - timedelta(seconds=500)),  # caught up: stall 0 however old
        1: (40, NOW, NOW - timedelta(seconds=90)),  # 60 waiting for 90 s
    }
    ends = {0: 100, 1: 100, 2: 7}  # partition 2 never committed
    p0, p1, p2 = partition_health(committed, ends, NOW)
    assert (p0.lag, p0.stalled_seconds) == (0, 0.0)
    assert (p1.lag, p1.stalled_seconds) == (60, 90.0)
    assert (p2.committed_offset, p2.lag, p2.stalled_seconds) == (None, 7, None)


def test_unknown_end_offset_gives_unknown_lag():
    (p,) = partition_health({3: (5, None, NOW)}, {}, NOW)
    assert p.lag is None and p.stalled_seconds is None and p.end_offset is None
