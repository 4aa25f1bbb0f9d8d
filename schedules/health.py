"""Every five minutes, check that the stream keeps up."""

import dagster as dg

from jobs.health import stream_health_job

stream_health_schedule = dg.ScheduleDefinition(
    name="stream_health_schedule",
    job=stream_health_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
