"""The rules that decide when the batch computes an hour (no Dagster, no services)."""

import pytest

from antenna_platform.batch_triggers import Cursor, Decision, Report, decide, run_covers


@pytest.mark.parametrize(
    ("report_at", "computed_by_run_started", "busy", "want"),
    [
        (100.0, None, False, Decision.RUN),  # reported, never computed: the sooner batch
        (100.0, 90.0, False, Decision.RUN),  # computed by a run that started before: late data
        (100.0, 100.0, False, Decision.DONE),  # that run started when it was reported
        (100.0, 120.0, False, Decision.DONE),
        (100.0, None, True, Decision.WAIT),  # a run of the hour is under way
        (100.0, 90.0, True, Decision.WAIT),
        (None, None, False, Decision.RUN),  # the schedule: never reported nor computed
        (None, 50.0, False, Decision.DONE),
    ],
)
def test_decide(report_at, computed_by_run_started, busy, want):
    assert decide(report_at, computed_by_run_started, busy) is want


def test_run_covers_one_partition_or_a_range_inclusive():
    one = {"dagster/partition": "2026-03-05-10:00"}
    assert run_covers(one, "2026-03-05-10:00")
    assert not run_covers(one, "2026-03-05-11:00")
    rng = {
        "dagster/asset_partition_range_start": "2026-03-04-23:00",
        "dagster/asset_partition_range_end": "2026-03-05-01:00",
    }
    covered = ["2026-03-04-23:00", "2026-03-05-00:00", "2026-03-05-01:00"]
    assert [
        k for k in ["2026-03-04-22:00", *covered, "2026-03-05-02:00"] if run_covers(rng, k)
    ] == (covered)
    assert not run_covers({}, "2026-03-05-10:00")


def test_cursor_keeps_the_newest_report_per_hour_and_round_trips():
    c = Cursor(after=5)
    c.add([Report("h1", 7, 1.5), Report("h2", 8, 2.5), Report("h1", 9, 3.5)])
    assert c.after == 9
    assert c.pending == {"h1": Report("h1", 9, 3.5), "h2": Report("h2", 8, 2.5)}
    c.add([Report("h1", 6, 0.5)])  # an older report never replaces a newer one
    assert c.pending["h1"].storage_id == 9
    assert Cursor.loads(c.dumps()) == c
    assert Cursor.loads("42") == Cursor(after=42)  # the old format: a bare storage id
