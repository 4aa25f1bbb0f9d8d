"""Dagster resources: thin, typed handles on the platform's services.

Every field that says where a service is comes from an environment variable through
`dg.EnvVar` (the dagster-open-platform way): the UI's resource pages show which variable
each field reads, never a value, and the value is resolved when a run starts, so
loading the Definitions reads nothing that changes between runs (and tests that set the
environment per test see their own values). `antenna env` and `antenna demo` set every
one of these variables for the Dagster processes (`services.dagster_env`).
"""

import dagster as dg

from resources.dbt import build_dbt_resource
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.postgres import PostgresResource
from resources.spark import SparkResource

# what each resource field reads (checked by tests/unit/test_definitions.py)
ENV_VARS = (
    "ANTENNA_DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "ANTENNA_TOPIC",
    "ANTENNA_CONSUMER_GROUP",
    "ANTENNA_LAKE_DIR",
    "SPARK_MASTER",
)


def build_resources() -> dict[str, object]:
    """The resources every definition may ask for, keyed by parameter name."""
    return {
        "postgres": PostgresResource(database_url=dg.EnvVar("ANTENNA_DATABASE_URL")),
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
            topic=dg.EnvVar("ANTENNA_TOPIC"),
            consumer_group=dg.EnvVar("ANTENNA_CONSUMER_GROUP"),
        ),
        "lake": LakeResource(lake_dir=dg.EnvVar("ANTENNA_LAKE_DIR")),
        "pyspark": SparkResource(spark_master=dg.EnvVar("SPARK_MASTER")),
        "dbt": build_dbt_resource(),
    }


__all__ = [
    "ENV_VARS",
    "KafkaResource",
    "LakeResource",
    "PostgresResource",
    "SparkResource",
    "build_resources",
]
