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

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from antenna_platform.config import Settings
from antenna_platform.stream import records

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
    """A subscribed consumer in the platform's group; values stay raw bytes, and polls
    return, per partition, `records.RecordBlock`s (offsets, timestamps, values and their
    shapes as columns), not `ConsumerRecord`s."""
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
        # the group leader notices new partitions (or a partial first view of a new topic)
        # within this, and rebalances: well inside a worker's idle limit, so no member
        # goes idle on a partial view (one small metadata request per 10 s)
        metadata_max_age_ms=10000,
    )
    records.install(consumer)  # batches decoded straight into columns
    consumer.subscribe([settings.topic], listener=listener)
    return consumer


def topic_id(consumer: KafkaConsumer | None, topic: str) -> str | None:
    """The broker's id of `topic` from the consumer's cluster metadata (no request)."""
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    tid = cluster.topic_id(topic) if cluster is not None else None
    return str(tid) if tid else None


class KafkaLog:
    """`ownership.Log` on a kafka-python consumer: partitions as plain ints."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic

    def _tps(self, partitions: list[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in partitions]

    def topic_id(self) -> str | None:
        return topic_id(self.consumer, self.topic)

    def seek(self, partition: int, offset: int) -> None:
        self.consumer.seek(TopicPartition(self.topic, partition), offset)

    def seek_to_beginning(self, partition: int) -> None:
        self.consumer.seek_to_beginning(TopicPartition(self.topic, partition))

    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        ends = self.consumer.end_offsets(self._tps(partitions))
        return {tp.partition: off for tp, off in ends.items() if off is not None}

    def pause(self, partitions: list[int]) -> None:
        assigned = self.consumer.assignment()
        self.consumer.pause(*[tp for tp in self._tps(partitions) if tp in assigned])

    def resume(self, partitions: list[int]) -> None:
        assigned = self.consumer.assignment()
        self.consumer.resume(*[tp for tp in self._tps(partitions) if tp in assigned])

    def highwater(self, partition: int) -> int | None:
        return self.consumer.highwater(TopicPartition(self.topic, partition))
