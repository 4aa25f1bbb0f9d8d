"""The kafka-python consumer of the stream, with the settings verified on Tansu.

Offsets are NOT committed to Kafka: Postgres (`stream_offsets`) is the truth and the
rebalance listener seeks to it. `session_timeout_ms=6000` makes a new member join in
about 3 s and a killed one leave in about 6 s (DAGSTER_NOTES section 9); a small
`fetch_max_wait_ms` keeps produce-to-visible latency low.
"""

from __future__ import annotations

import logging
import os
import socket

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from antenna_platform.config import Settings

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000
MAX_POLL_INTERVAL_MS = 30000
FETCH_MAX_WAIT_MS = 20

# kafka-python 3 warns whenever its I/O task waits >100 ms for the GIL, which a busy
# consumer on 2 cores does all the time; the warning says nothing actionable here.
logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


def make_consumer(
    settings: Settings, listener: ConsumerRebalanceListener, *, client_id: str | None = None
) -> KafkaConsumer:
    """A subscribed consumer in the platform's group; values stay raw bytes."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        group_id=settings.consumer_group,
        client_id=client_id or f"antenna-stream-{socket.gethostname()}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        request_timeout_ms=40000,
        reconnect_backoff_max_ms=2000,
    )
    consumer.subscribe([settings.topic], listener=listener)
    return consumer
