"""`stream_health_job`: runs the stream's health checks (no asset is materialized)."""

import dagster as dg

from assets.stream_health import stream_lag

stream_health_job = dg.define_asset_job(
    "stream_health_job",
    selection=dg.AssetSelection.checks(stream_lag),
    description="Checks that the stream keeps up (see the stream_lag check).",
)
