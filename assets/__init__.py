"""Dagster assets and asset checks. Each module contributes to the lists below."""

from assets.lake import device_events
from assets.provisioning import user_metadata

ASSETS: list = [user_metadata, device_events]
ASSET_CHECKS: list = []
