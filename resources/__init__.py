"""Dagster resources: thin, typed handles on the platform's services."""

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.postgres import PostgresResource


def build_resources() -> dict[str, object]:
    """The resources every definition may ask for, keyed by parameter name."""
    return {
        "postgres": PostgresResource(),
        "kafka": KafkaResource(),
        "lake": LakeResource(),
    }


__all__ = ["KafkaResource", "LakeResource", "PostgresResource", "build_resources"]
