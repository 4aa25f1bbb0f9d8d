"""Asset checks of the batch assets.

They are declared as `check_specs` on the batch multi-asset and evaluated inside its
step: partitioned checks cannot run on their own (no shared PartitionsDefinition), and
the numbers they look at are computed by the same Spark scan anyway. All three are
blocking: if one fails, the run writes nothing, keeps the hour's previous rows and
fails, so nothing downstream reads wrong numbers.
"""

import dagster as dg

from antenna_platform.quality import Outcome

EVENTS_VALID = dg.AssetCheckSpec(
    "hour_events_valid",
    asset="bytes_hourly",
    blocking=True,
    description="Pandera (pandera.pyspark HourEvents) on the hour's lake events, read "
    "through the manifest: no null field, bytes >= 0, every timestamp inside the hour; "
    "exact failing-row counts from the scan's counters; every manifest row read.",
)
BYTES_HOURLY_VALID = dg.AssetCheckSpec(
    "bytes_hourly_valid",
    asset="bytes_hourly",
    blocking=True,
    description="Pandera: types in the allowed set, value >= 0, one row per "
    "(timestamp, id, type); antenna and app sums equal the hour's lake bytes, the email "
    "sum equals it minus unknown devices.",
)
QUOTA_VALID = dg.AssetCheckSpec(
    "user_quota_limit_valid",
    asset="user_quota_limit",
    blocking=True,
    description="Pandera: usage > quota strictly, email a known user's, one row per "
    "(timestamp, email).",
)

BATCH_CHECK_SPECS = [EVENTS_VALID, BYTES_HOURLY_VALID, QUOTA_VALID]


def check_result(spec: dg.AssetCheckSpec, outcome: Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=spec.asset_key,
        check_name=spec.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=outcome.metadata(),
    )
