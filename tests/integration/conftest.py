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


@pytest.fixture
def own_postgres(make_platform, tmp_path, monkeypatch):
    """A provisioned platform (2 partitions, a day of watermark) on an embedded Postgres of
    the test's own, which the test may stop and start: (settings, stop, start)."""
    from antenna_platform import services
    from antenna_platform.warehouse import provision
    from tests.conftest import free_port

    base = make_platform(partitions=2, provision=False, ANTENNA_WATERMARK_SECONDS="86400")
    monkeypatch.delenv("ANTENNA_DATABASE_URL")
    monkeypatch.setenv("ANTENNA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANTENNA_PG_PORT", str(free_port()))
    settings = load_settings()
    # the Dagster resources read the URL through EnvVar: name the embedded server (still
    # "embedded": it is its own URL)
    monkeypatch.setenv("ANTENNA_DATABASE_URL", settings.database_url)
    assert settings.embedded_postgres and settings.topic == base.topic
    services.start_postgres(settings)
    try:
        provision(settings)
        services.ensure_topic(settings)
        yield (
            settings,
            lambda: services.stop_postgres(settings),
            lambda: services.start_postgres(settings),
        )
    finally:
        services.stop_postgres(settings)
