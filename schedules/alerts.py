"""Alert sensors: a failed run opens an incident, a later success clears it.

The rules are in `antenna_platform.incidents` (which incident) and `alerts` (one message
per incident, one when it clears, log + webhook). The stream sensor and the stream_lag
check raise and clear their own incidents the same way.
"""

from __future__ import annotations

from datetime import UTC

import dagster as dg
from dagster import DagsterEventType

from antenna_platform import alerts, incidents
from resources.postgres import PostgresResource
from schedules.runs import run_info

BYTES_HOURLY = dg.AssetKey("bytes_hourly")


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=1000
    ).records
    out = []
    for rec in records:
        evaluation = rec.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed and evaluation.blocking:
            out.append(evaluation.check_name)
    return out


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Alerts (log + ANTENNA_ALERT_WEBHOOK_URL) when a run fails: a batch hour, "
    "a blocking check, a stream worker, anything else; once per incident.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, postgres: PostgresResource):
    run = context.dagster_run
    steps = context.get_step_failure_events()
    error = steps[0].message if steps else (context.failure_event.message or "")
    checks = failed_blocking_checks(context.instance, run.run_id)
    incident = incidents.for_failure(run_info(context.instance, run), checks, error or "")
    alerts.fire(
        postgres.settings(), incident.key, incident.title, incident.text, echo=context.log.warning
    )


def _hours_computed_since(
    instance: dg.DagsterInstance, hours: list[str], since_epoch: float
) -> set[str]:
    if not hours:
        return set()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=BYTES_HOURLY, asset_partitions=hours, after_timestamp=since_epoch
        ),
        limit=10 * len(hours),
    ).records
    return {r.partition_key for r in records if r.partition_key}


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="run_recovery_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Clears run incidents once the work succeeds again: every hour of a failed "
    "batch range computed since, or a later success of the same job.",
)
def run_recovery_alerts(context: dg.RunStatusSensorContext, postgres: PostgresResource):
    settings = postgres.settings()
    info = run_info(context.instance, context.dagster_run)
    candidates = [
        i for i in alerts.list_open(settings) if i.key.split(":", 1)[0] in ("batch", "check", "run")
    ]
    if not candidates:
        return
    computed = {}
    if info.is_batch:
        for inc in candidates:
            if inc.key.startswith(("batch:", "check:")):
                hours = incidents.span_hours(inc.key.split(":", 1)[1])
                since = inc.opened_at.replace(tzinfo=UTC).timestamp()
                computed[inc.key] = _hours_computed_since(context.instance, hours, since)
    for key in incidents.cleared_by_success(info, [i.key for i in candidates], computed):
        alerts.clear(settings, key, f"run {info.run_id[:8]} succeeded", echo=context.log.info)
