"""The raw lake as a Dagster asset: `device_events`, hourly partitions.

The streaming op writes the files and reports a materialization of an hour's
partition when its watermark passes the end of that hour (and again when late
events change a closed hour). There is no compute function: it is an external
asset whose materializations come from the stream.
"""

import dagster as dg

from assets.freshness import STREAM_FRESHNESS
from assets.partitions import HOURLY
from assets.stream import devices

device_events = dg.AssetSpec(
    key="device_events",
    deps=[devices],
    partitions_def=HOURLY,
    group_name="lake",
    description="Raw device events in Parquet, "
    "$ANTENNA_LAKE_DIR/device_events/year=/month=/day=/hour=, written by the stream.",
    kinds={"parquet"},
    freshness_policy=STREAM_FRESHNESS,
)
