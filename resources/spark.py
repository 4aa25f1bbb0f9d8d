"""Spark resource: dagster-pyspark's lazy session, configured from the settings.

`spark_master` is `EnvVar("SPARK_MASTER")` in the Definitions, resolved when a run asks
for a session: loading Definitions starts no JVM. Spark Connect (`SPARK_REMOTE`) is read
from the settings when the session starts, not through EnvVar: pyspark itself refuses a
master beside any SPARK_REMOTE variable, even an empty one, so an optional variable
cannot be exported as empty. `spark_config` only holds optional overrides (e.g.
`spark.executor.memory`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from antenna_platform.config import load_settings
from antenna_platform.spark import get_spark


class SparkResource(LazyPySparkResource):
    """`spark_session` is `antenna_platform.spark.get_spark(settings)` (reused if running)."""

    spark_config: dict[str, Any] = {}
    spark_master: str = Field(
        default="local[*]",
        description="local[*], local[N], spark://host:port, yarn or k8s://... "
        "(SPARK_REMOTE=sc://host:port, when set, wins)",
    )

    def _init_session(self) -> None:
        if self._spark_session is None:
            settings = dataclasses.replace(load_settings(), spark_master=self.spark_master)
            self._spark_session = get_spark(settings, self.spark_config)
