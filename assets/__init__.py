"""Dagster assets and asset checks. Each module contributes to the lists below."""

from assets.provisioning import user_metadata

ASSETS: list = [user_metadata]
ASSET_CHECKS: list = []
