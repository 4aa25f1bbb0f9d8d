"""The hourly batch job: the batch assets (and their checks) for one hour or a range."""

import dagster as dg

BATCH_ASSETS = dg.AssetSelection.assets("bytes_hourly", "user_quota_limit")

hourly_batch_job = dg.define_asset_job(
    "hourly_batch_job",
    selection=BATCH_ASSETS,
    executor_def=dg.in_process_executor,  # one Spark step: no need for a subprocess per step
    description="bytes_hourly and user_quota_limit for the hour(s) of the run, from the lake.",
)
