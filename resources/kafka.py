"""Kafka resource: where the stream reads from (bootstrap servers, topic, group)."""

from __future__ import annotations

import dagster as dg

from antenna_platform.config import load_settings


class KafkaResource(dg.ConfigurableResource):
    """Topic and consumer group default to the settings (`ANTENNA_TOPIC`, ...)."""

    topic: str | None = None
    consumer_group: str | None = None

    def bootstrap_servers(self) -> str:
        return load_settings().kafka_bootstrap_servers

    def topic_name(self) -> str:
        return self.topic or load_settings().topic

    def group(self) -> str:
        return self.consumer_group or load_settings().consumer_group
