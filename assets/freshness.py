"""Freshness expectations, as Dagster 1.13 FreshnessPolicy objects.

They are evaluated by the daemon's freshness loop, which `dagster.yaml` switches on
(`freshness: enabled: true`, written by `antenna up`); the UI shows each asset's state.
A policy looks at the asset's newest materialization, whatever its partition, so the
batch assets also carry partition-exact checks (`build_time_partition_freshness_checks`,
in assets/checks.py): "the hour that closed before :20 is materialized by :20".
"""

import warnings
from datetime import timedelta

import dagster as dg

# A batch hour is overdue this many minutes after it closes. The sooner batch computes it
# about 2-3 minutes after the hour; the :10 schedule is the fallback.
BATCH_OVERDUE_MINUTES = 20

# bytes_hourly / user_quota_limit: materialized between :00 and :20 of every hour.
BATCH_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=f"{BATCH_OVERDUE_MINUTES} * * * *",
    lower_bound_delta=timedelta(minutes=BATCH_OVERDUE_MINUTES),
)
# device_events / bytes: the stream reports each closed hour 1-2 minutes after it ends.
STREAM_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60 + BATCH_OVERDUE_MINUTES),
    warn_window=timedelta(minutes=70),
)
# serving views: rebuilt after each batch hour (and each reported lake hour).
SERVING_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60 + 2 * BATCH_OVERDUE_MINUTES)
)

# Partition-exact: from :20, the hour that closed before it must be materialized. The
# checks run in every batch run (the job selects its assets' checks) and, between runs, in
# runs started by `batch_freshness_sensor` (schedules/freshness.py). Dagster marks these
# factories "superseded" by FreshnessPolicy, which cannot yet tell partitions apart.
with warnings.catch_warnings():  # chosen knowingly: see above
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    BATCH_FRESHNESS_CHECKS = dg.build_time_partition_freshness_checks(
        assets=[dg.AssetKey("bytes_hourly"), dg.AssetKey("user_quota_limit")],
        deadline_cron=f"{BATCH_OVERDUE_MINUTES} * * * *",
        timezone="UTC",
        severity=dg.AssetCheckSeverity.WARN,
    )
