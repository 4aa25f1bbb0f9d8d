"""`device_stream_sensor`: keeps `ANTENNA_STREAM_WORKERS` stream runs alive.

It never touches Kafka: it counts the stream job's active runs, gives up on a STARTED
run whose event log has been silent too long (the default run launcher never notices a
dead worker), backs off after repeated failures, and otherwise requests one run per
missing worker, tagged with its index. The rules are in
`antenna_platform.stream.supervise`.

Giving up on a run stops it, not only marks it failed: a worker that is merely paused
would otherwise wake up beside its successor. The op records its pid, host and start
time as run tags (`antenna_platform.runworker`); when that process is on this host, the
sensor sends it SIGTERM (it commits or drops the batch in hand and exits), then SIGKILL;
elsewhere it asks the run launcher to terminate the run. Giving up, and restarting a
worker whose run failed, raise the worker's alert incident; a worker running healthy for
the staleness limit clears it.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import dagster as dg
from dagster import DagsterRunStatus

from antenna_platform import alerts, runworker
from antenna_platform.config import Settings, load_settings
from antenna_platform.incidents import stream_key
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
    started: dict[str, float | None] = {}
    for rec in instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, statuses=ACTIVE), limit=50
    ):
        run = rec.dagster_run
        started[run.run_id] = rec.start_time
        last = rec.start_time or rec.create_timestamp.timestamp()
        if run.status == DagsterRunStatus.STARTED:
            logs = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
            if logs:
                last = max(last, logs[0].timestamp)
        active.append(ActiveRun(run.run_id, run.status.value, _worker(run.tags), last))
    finished = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, statuses=FINISHED), limit=10
    )
    recent = [FinishedRun(rec.dagster_run.status.value, rec.end_time) for rec in finished]
    last_finished: dict[int, tuple[str, str]] = {}  # worker -> (run id, status), newest
    for rec in finished:
        w = _worker(rec.dagster_run.tags) or 0
        last_finished.setdefault(w, (rec.dagster_run.run_id, rec.dagster_run.status.value))
    settings = load_settings()
    plan = plan_stream_runs(
        active, recent, settings.stream_workers, now, stale_after_s=settings.stream_stale_seconds
    )
    quiet = {a.run_id: now - (a.last_activity or now) for a in active}
    for run_id in plan.stale:
        give_up(context, settings, run_id, quiet[run_id])
    healthy = {
        a.worker or 0
        for a in active
        if a.status == "STARTED"
        and a.run_id not in plan.stale
        and a.last_activity is not None
        and (started.get(a.run_id) or now) <= now - settings.stream_stale_seconds
    }
    _clear_recovered(context, settings, healthy)
    if not plan.launch:
        return dg.SkipReason(plan.reason)
    for worker in plan.launch:
        last = last_finished.get(worker)
        if last is not None and last[1] == "FAILURE":
            alerts.fire(
                settings,
                stream_key(worker),
                f"stream worker {worker}: restarting after run {last[0][:8]} failed",
                echo=context.log.warning,
            )
    return [
        dg.RunRequest(
            run_key=f"stream-w{i}-{int(now)}-{uuid.uuid4().hex[:6]}", tags={WORKER_TAG: str(i)}
        )
        for i in plan.launch
    ]


def give_up(
    context: dg.SensorEvaluationContext, settings: Settings, run_id: str, quiet_s: float
) -> None:
    """Stop a run that has been silent too long, mark it failed, raise its alert."""
    instance = context.instance
    run = instance.get_run_by_id(run_id)
    if run is None:
        return
    proc = runworker.local_worker(run.tags)
    if proc is not None:
        how = f"its worker (pid {proc.pid}) was {runworker.stop_process(proc)}"
    elif run.tags.get(runworker.HOST_TAG) not in (None, runworker.host_id()):
        how = "asked the run launcher to terminate it (its worker is on another host)"
        with contextlib.suppress(Exception):  # best effort: the worker may be unreachable
            instance.run_launcher.terminate(run_id)
    else:
        how = "no live worker process found for it on this host"
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status not in FINISHED:
        instance.report_run_failed(
            run, message=f"stream run silent for {quiet_s:.0f} s: given up; {how}"
        )
    context.log.warning(f"gave up on stream run {run_id}: silent {quiet_s:.0f} s; {how}")
    worker = _worker(run.tags) if run is not None else None
    alerts.fire(
        settings,
        stream_key(worker),
        f"stream worker {worker or 0}: gave up on run {run_id[:8]}",
        f"silent for {quiet_s:.0f} s (limit {settings.stream_stale_seconds} s); {how}",
        echo=context.log.warning,
    )


def _clear_recovered(
    context: dg.SensorEvaluationContext, settings: Settings, healthy: set[int]
) -> None:
    """Clear the incident of each worker whose run has been alive for the staleness limit."""
    if not healthy:
        return
    for incident in alerts.list_open(settings, "stream:w"):
        if incident.key in {stream_key(w) for w in healthy}:
            alerts.clear(settings, incident.key, "running and logging again", echo=context.log.info)
