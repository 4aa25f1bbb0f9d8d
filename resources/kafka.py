"""Kafka resource: where the stream reads from (bootstrap servers, topic, group)."""

from __future__ import annotations

import dataclasses

import dagster as dg
from pydantic import Field

from antenna_platform.config import Settings


class KafkaResource(dg.ConfigurableResource):
    """In the Definitions each field is an `EnvVar` (`KAFKA_BOOTSTRAP_SERVERS`,
    `ANTENNA_TOPIC`, `ANTENNA_CONSUMER_GROUP`), resolved when a run starts."""

    bootstrap_servers: str = Field(description="host:port[,host:port] of the brokers")
    topic: str = Field(description="the topic the stream consumes")
    consumer_group: str = Field(description="the stream's consumer group")

    def apply(self, settings: Settings) -> Settings:
        """`settings` pointed at this broker, topic and group."""
        return dataclasses.replace(
            settings,
            kafka_bootstrap_env=self.bootstrap_servers,
            topic=self.topic,
            consumer_group=self.consumer_group,
        )
