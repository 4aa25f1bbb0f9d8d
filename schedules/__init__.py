"""Schedules and sensors: they decide when runs start, nothing more."""

from schedules.automation import serving_automation
from schedules.health import stream_health_schedule
from schedules.hourly import hourly_batch_schedule, late_data_sensor
from schedules.stream_sensor import device_stream_sensor

SCHEDULES: list = [stream_health_schedule, hourly_batch_schedule]
SENSORS: list = [serving_automation, late_data_sensor, device_stream_sensor]
