"""The stream sensor's rules, as a pure function."""

from antenna_platform.stream.supervise import (
    ActiveRun,
    FinishedRun,
    backoff_s,
    plan_stream_runs,
)

NOW = 1_000_000.0


def test_no_run_launches_one_per_worker():
    assert plan_stream_runs([], [], workers=1, now=NOW).launch == [0]
    assert plan_stream_runs([], [], workers=3, now=NOW).launch == [0, 1, 2]


def test_a_live_run_means_skip():
    plan = plan_stream_runs([ActiveRun("r1", "STARTED", 0, NOW - 5)], [], 1, NOW)
    assert plan.launch == [] and "r1" in plan.reason and not plan.stale


def test_queued_or_canceling_runs_count_as_going():
    for status in ("QUEUED", "NOT_STARTED", "STARTING", "CANCELING"):
        plan = plan_stream_runs([ActiveRun("r", status, 0, None)], [], 1, NOW)
        assert plan.launch == [] and plan.stale == []


def test_silent_started_run_is_stale_and_replaced():
    plan = plan_stream_runs([ActiveRun("r1", "STARTED", 0, NOW - 500)], [], 1, NOW)
    assert plan.stale == ["r1"] and plan.launch == [0]


def test_missing_workers_only():
    runs = [ActiveRun("a", "STARTED", 0, NOW), ActiveRun("b", "STARTED", 2, NOW)]
    assert plan_stream_runs(runs, [], 3, NOW).launch == [1]
    untagged = [ActiveRun("a", "STARTED", None, NOW)]
    assert plan_stream_runs(untagged, [], 2, NOW).launch == [1]


def test_backoff_after_repeated_failures():
    one = [FinishedRun("FAILURE", NOW - 1)]
    assert backoff_s(one, NOW) == 0
    two = [FinishedRun("FAILURE", NOW - 1), FinishedRun("FAILURE", NOW - 50)]
    assert backoff_s(two, NOW) == 29
    plan = plan_stream_runs([], two, 1, NOW)
    assert plan.launch == [] and "backing off" in plan.reason
    many = [FinishedRun("FAILURE", NOW - 1)] * 12
    assert backoff_s(many, NOW) == 599
    recovered = [FinishedRun("SUCCESS", NOW - 1), *two]
    assert backoff_s(recovered, NOW) == 0
    assert plan_stream_runs([], two, 1, NOW + 100).launch == [0]
