"""Schedules and sensors: they decide when runs start, nothing more."""

from schedules.alerts import run_failure_alerts, run_recovery_alerts
from schedules.automation import serving_automation
from schedules.freshness import batch_freshness_sensor
from schedules.health import stream_health_schedule
from schedules.hourly import hourly_batch_schedule, reported_hours_sensor
from schedules.stream_sensor import device_stream_sensor

SCHEDULES: list = [stream_health_schedule, hourly_batch_schedule]
SENSORS: list = [
    serving_automation,
    reported_hours_sensor,
    device_stream_sensor,
    batch_freshness_sensor,
    run_failure_alerts,
    run_recovery_alerts,
]
