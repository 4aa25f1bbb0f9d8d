"""Dagster assets and asset checks. Each module contributes to the lists below."""

from assets.batch import batch_hourly
from assets.dashboards import DASHBOARDS
from assets.dbt import serving_views
from assets.freshness import BATCH_FRESHNESS_CHECKS
from assets.lake import device_events
from assets.provisioning import user_metadata
from assets.stream import devices, speed_bytes
from assets.stream_health import stream_lag

ASSETS: list = [
    devices,
    speed_bytes,
    user_metadata,
    device_events,
    serving_views,
    batch_hourly,
    *DASHBOARDS,
]
ASSET_CHECKS: list = [stream_lag, *BATCH_FRESHNESS_CHECKS]
