"""What a run computes, read from Dagster's records (for the sensors that judge runs)."""

from __future__ import annotations

import dagster as dg
from dagster import DagsterEventType

from antenna_platform.incidents import RunInfo


def planned_assets(instance: dg.DagsterInstance, run_id: str) -> frozenset[str]:
    """The assets a run announced it would materialize when it was created."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=1000
    ).records
    return frozenset(
        key.to_user_string()
        for r in records
        if (key := r.event_log_entry.dagster_event.asset_key) is not None
    )


def run_info(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunInfo:
    """The run's job, assets (its selection, else what it planned) and tags."""
    keys = frozenset(k.to_user_string() for k in (run.asset_selection or ()))
    if not keys and run.job_name != "device_stream_job":
        keys = planned_assets(instance, run.run_id)
    return RunInfo(run.run_id, run.job_name, keys, dict(run.tags))
