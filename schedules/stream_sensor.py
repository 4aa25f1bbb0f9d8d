"""`device_stream_sensor`: keeps `ANTENNA_STREAM_WORKERS` stream runs alive.

It only decides (never touches Kafka): counts the stream job's active runs, fails a
STARTED run whose event log has been silent too long (the default run launcher never
notices a dead worker), backs off after repeated failures, and otherwise requests one
run per missing worker, tagged with its index. The rules are in
`antenna_platform.stream.supervise`.
"""

from __future__ import annotations

import time
import uuid

import dagster as dg
from dagster import DagsterRunStatus

from antenna_platform.config import load_settings
from antenna_platform.stream.supervise import (
    ActiveRun,
    FinishedRun,
    plan_stream_runs,
)
from jobs.streaming import device_stream_job

WORKER_TAG = "antenna/stream_worker"
ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def _worker(tags: dict[str, str]) -> int | None:
    raw = tags.get(WORKER_TAG)
    return int(raw) if raw is not None and raw.isdigit() else None


@dg.sensor(
    job=device_stream_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the stream job whenever fewer runs than ANTENNA_STREAM_WORKERS go.",
)
def device_stream_sensor(context: dg.SensorEvaluationContext):
    instance = context.instance
    job = device_stream_job.name
    now = time.time()
    active = []
    for rec in instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, statuses=ACTIVE), limit=50
    ):
        run = rec.dagster_run
        last = rec.start_time or rec.create_timestamp.timestamp()
        if run.status == DagsterRunStatus.STARTED:
            logs = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
            if logs:
                last = max(last, logs[0].timestamp)
        active.append(ActiveRun(run.run_id, run.status.value, _worker(run.tags), last))
    recent = [
        FinishedRun(rec.dagster_run.status.value, rec.end_time)
        for rec in instance.get_run_records(
            filters=dg.RunsFilter(job_name=job, statuses=FINISHED), limit=10
        )
    ]
    settings = load_settings()
    plan = plan_stream_runs(
        active, recent, settings.stream_workers, now, stale_after_s=settings.stream_stale_seconds
    )
    for run_id in plan.stale:
        run = instance.get_run_by_id(run_id)
        if run is not None:
            instance.report_run_failed(run, message="stream run silent too long; marked failed")
            context.log.warning(f"marked stale stream run {run_id} as failed")
    if not plan.launch:
        return dg.SkipReason(plan.reason)
    return [
        dg.RunRequest(
            run_key=f"stream-w{i}-{int(now)}-{uuid.uuid4().hex[:6]}", tags={WORKER_TAG: str(i)}
        )
        for i in plan.launch
    ]
