"""Shared fixtures: real embedded services, started once per session.

`ANTENNA_DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS`, when set, point the tests at
existing services instead. Every test that asks for `platform` gets its own
database, topic, consumer group and lake directory, so tests never see each
other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from antenna_platform import services
from antenna_platform.config import Settings, load_settings, with_database
from antenna_platform.services import free_port  # noqa: F401 - tests import it from here


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start embedded Postgres and Kafka (unless given) and return the env that reaches them."""
    home = tmp_path_factory.mktemp("antenna_home")
    settings, env = services.start_isolated(home)
    env["_ANTENNA_TEST_HOME"] = str(home)
    yield env
    services.down(settings)


@pytest.fixture
def make_platform(service_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory: a fresh database, topic, group and lake; the env points at them.

    Returns Settings. The environment is patched for the test's duration so code
    that calls `load_settings()` (Dagster resources, the CLI) sees the same.
    """
    created: list[str] = []
    admin_url = service_env["ANTENNA_DATABASE_URL"]

    def _make(partitions: int = 3, provision: bool = True, **extra_env: str) -> Settings:
        tag = uuid.uuid4().hex[:10]
        db = f"t_{tag}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
        created.append(db)
        env = {
            "ANTENNA_HOME": service_env["_ANTENNA_TEST_HOME"],
            "ANTENNA_PG_PORT": service_env["ANTENNA_PG_PORT"],
            "ANTENNA_KAFKA_PORT": service_env["ANTENNA_KAFKA_PORT"],
            "ANTENNA_DATABASE_URL": with_database(admin_url, db),
            "KAFKA_BOOTSTRAP_SERVERS": service_env["KAFKA_BOOTSTRAP_SERVERS"],
            "ANTENNA_LAKE_DIR": str(tmp_path / f"lake_{tag}"),
            "ANTENNA_TOPIC": f"devices_{tag}",
            "ANTENNA_TOPIC_PARTITIONS": str(partitions),
            "ANTENNA_CONSUMER_GROUP": f"group_{tag}",
            "DAGSTER_HOME": str(tmp_path / f"dagster_{tag}"),
            **extra_env,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = load_settings()
        # what the Dagster resources read through EnvVar (Spark's defaults included)
        for k, v in services.resource_env(settings).items():
            monkeypatch.setenv(k, v)
        if provision:
            from antenna_platform.warehouse import provision as do_provision

            do_provision(settings)
            services.ensure_topic(settings)
        return settings

    yield _make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for db in created:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db))
            )


@pytest.fixture
def platform(make_platform) -> Settings:
    """A provisioned platform with its own database, topic, group and lake."""
    return make_platform()
