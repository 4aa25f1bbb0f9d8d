"""device_stream_sensor against a real (ephemeral) Dagster instance."""

from __future__ import annotations

import time
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster import DagsterRunStatus

import schedules.stream_sensor as stream_sensor
from jobs.streaming import device_stream_job
from schedules.stream_sensor import WORKER_TAG, device_stream_sensor

pytestmark = pytest.mark.integration


def evaluate(instance):
    return device_stream_sensor(dg.build_sensor_context(instance=instance))


def started_run(instance, worker: int) -> dg.DagsterRun:
    return instance.create_run_for_job(
        device_stream_job, status=DagsterRunStatus.STARTED, tags={WORKER_TAG: str(worker)}
    )


def test_no_run_requests_one_and_a_going_run_requests_none(make_platform):
    make_platform(provision=False)
    instance = dg.DagsterInstance.ephemeral()
    first = evaluate(instance)
    assert isinstance(first, list) and len(first) == 1
    assert isinstance(first[0], dg.RunRequest) and first[0].tags[WORKER_TAG] == "0"
    run = started_run(instance, 0)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason) and run.run_id[:8] in skip.skip_message
    queued = instance.create_run_for_job(device_stream_job, status=DagsterRunStatus.NOT_STARTED)
    instance.report_run_failed(run)
    skip = evaluate(instance)  # a run about to start counts: no second run
    assert isinstance(skip, dg.SkipReason) and queued.run_id[:8] in skip.skip_message


def test_stale_started_run_is_failed_and_replaced(make_platform, monkeypatch):
    make_platform(provision=False, ANTENNA_STREAM_STALE_SECONDS="30")
    instance = dg.DagsterInstance.ephemeral()
    run = started_run(instance, 0)
    real_time = time.time
    monkeypatch.setattr(stream_sensor, "time", SimpleNamespace(time=lambda: real_time() + 20))
    assert isinstance(evaluate(instance), dg.SkipReason)  # silent 20 s: still alive
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    monkeypatch.setattr(stream_sensor, "time", SimpleNamespace(time=lambda: real_time() + 40))
    out = evaluate(instance)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert isinstance(out, list) and out[0].tags[WORKER_TAG] == "0"


def test_workers_setting_keeps_that_many_runs(make_platform):
    make_platform(provision=False, ANTENNA_STREAM_WORKERS="3")
    instance = dg.DagsterInstance.ephemeral()
    started_run(instance, 1)
    out = evaluate(instance)
    assert sorted(r.tags[WORKER_TAG] for r in out) == ["0", "2"]
    assert len({r.run_key for r in out}) == 2


def test_backoff_after_repeated_failures(make_platform):
    make_platform(provision=False)
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(3):
        instance.report_run_failed(started_run(instance, 0))
    out = evaluate(instance)
    assert isinstance(out, dg.SkipReason) and "backing off" in out.skip_message
