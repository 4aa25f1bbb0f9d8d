"""Spark resource: dagster-pyspark's lazy session, configured from the settings.

The master (`SPARK_MASTER`, `SPARK_REMOTE`) is read when the first run asks for a
session, never when the definitions load, so loading Definitions starts no JVM.
`spark_config` only holds optional overrides (e.g. `spark.executor.memory`).
"""

from __future__ import annotations

from typing import Any

from dagster_pyspark import LazyPySparkResource

from antenna_platform.config import load_settings
from antenna_platform.spark import get_spark


class SparkResource(LazyPySparkResource):
    """`spark_session` is `antenna_platform.spark.get_spark(settings)` (reused if running)."""

    spark_config: dict[str, Any] = {}

    def _init_session(self) -> None:
        if self._spark_session is None:
            self._spark_session = get_spark(load_settings(), self.spark_config)
