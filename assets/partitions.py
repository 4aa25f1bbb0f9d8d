"""The one hourly partitions definition shared by the lake and the batch assets."""

import os

import dagster as dg

# Read once at import: a start date is deployment config, not something that changes per run.
PARTITIONS_START = os.environ.get("ANTENNA_PARTITIONS_START") or "2026-01-01"

HOURLY = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
