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


def test_rates_between_two_readings():
    from antenna_platform.health import rates

    assert rates(None, (100.0, 50, 40)) == {"produced_per_s": None, "consumed_per_s": None}
    got = rates((100.0, 50, 40), (110.0, 150, 90))  # 100 produced, 50 committed in 10 s
    assert got == {"produced_per_s": 10.0, "consumed_per_s": 5.0}
    # offsets went back (a recreated topic): unknown, not negative
    assert rates((100.0, 150, 90), (110.0, 20, 20)) == {
        "produced_per_s": None,
        "consumed_per_s": None,
    }
    assert rates((100.0, 1, 1), (100.0, 2, 2))["produced_per_s"] is None  # no time passed
