"""Dagster resources: thin, typed handles on the platform's services."""

from resources.dbt import build_dbt_resource
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.postgres import PostgresResource
from resources.spark import SparkResource


def build_resources() -> dict[str, object]:
    """The resources every definition may ask for, keyed by parameter name."""
    return {
        "postgres": PostgresResource(),
        "kafka": KafkaResource(),
        "lake": LakeResource(),
        "pyspark": SparkResource(),
        "dbt": build_dbt_resource(),
    }


__all__ = ["KafkaResource", "LakeResource", "PostgresResource", "SparkResource", "build_resources"]
