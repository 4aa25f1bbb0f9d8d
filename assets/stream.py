"""What the speed layer reads and writes, besides the lake: the topic and `bytes`.

Both are external assets: Dagster does not compute them. `devices` is observed by
`stream_health_job` every few minutes (end offsets, lag, events/s: the UI plots them);
`bytes` is reported by the stream op each time it closes an hour (see jobs/streaming.py),
so the serving views that read it rebuild after it.
"""

import dagster as dg

from assets.freshness import STREAM_FRESHNESS
from assets.tables import BYTES_SCHEMA

devices = dg.AssetSpec(
    key="devices",
    group_name="stream",
    kinds={"kafka"},
    description="The Kafka topic (ANTENNA_TOPIC, default `devices`) the antennas write JSON "
    "usage events to. Observed by stream_health_job: end offsets, consumer lag, events/s.",
)

speed_bytes = dg.AssetSpec(
    key="bytes",
    deps=[devices],
    group_name="stream",
    kinds={"postgres"},
    description="Speed layer: 5-minute totals per antenna, user and app (table `bytes`), "
    "upserted by the stream op every micro-batch; reported when an hour closes.",
    metadata={"dagster/column_schema": BYTES_SCHEMA, "dagster/table_name": "public.bytes"},
    freshness_policy=STREAM_FRESHNESS,
)
