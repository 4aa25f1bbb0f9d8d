"""Integration fixtures shared by several test modules.

`spark` is ONE local SparkSession for the whole test session (JVM start-up costs
about 5 s). The batch resource builds its session with `getOrCreate`, so Dagster
runs inside the tests reuse this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from antenna_platform.config import load_settings


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from antenna_platform.spark import get_spark

    settings = load_settings({"SPARK_MASTER": "local[2]"})
    session = get_spark(settings)
    yield session
    session.stop()
