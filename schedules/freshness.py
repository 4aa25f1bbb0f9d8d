"""Runs the batch assets' partition freshness checks when one could have become overdue."""

import warnings

import dagster as dg

from assets.freshness import BATCH_FRESHNESS_CHECKS

with warnings.catch_warnings():  # superseded by FreshnessPolicy, used knowingly
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    batch_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=BATCH_FRESHNESS_CHECKS,
        name="batch_freshness_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
