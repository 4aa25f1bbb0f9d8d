"""The automation sensor that rebuilds the serving views after the hourly batch.

Dagster's default automation sensor is STOPPED on a new deployment, so without this
the views' automation conditions would never be evaluated.
"""

import dagster as dg

from assets.dbt import serving_views

serving_automation = dg.AutomationConditionSensorDefinition(
    "serving_automation",
    target=dg.AssetSelection.assets(serving_views),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the serving views' automation conditions: rebuild after upstream "
    "updates (e.g. a batch hour of bytes_hourly / user_quota_limit).",
)
