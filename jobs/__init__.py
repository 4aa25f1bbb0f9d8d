"""Dagster jobs."""

from jobs.batch import hourly_batch_job
from jobs.health import stream_health_job
from jobs.streaming import device_stream_job

JOBS: list = [stream_health_job, hourly_batch_job, device_stream_job]
