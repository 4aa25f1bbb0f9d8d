"""Postgres resource: the platform database, named by `ANTENNA_DATABASE_URL`."""

from __future__ import annotations

import dataclasses

import dagster as dg
import psycopg
from pydantic import Field

from antenna_platform.config import Settings, load_settings
from antenna_platform.warehouse import connect


class PostgresResource(dg.ConfigurableResource):
    """The platform database. In the Definitions the URL is `EnvVar("ANTENNA_DATABASE_URL")`:
    resolved when a run starts, shown in the UI by the variable's name only, and kept out
    of `repr` (it may hold a password)."""

    database_url: str = Field(
        repr=False, description="postgresql:// URL of the platform database (a secret)"
    )

    def apply(self, settings: Settings) -> Settings:
        """`settings` pointed at this database."""
        return dataclasses.replace(settings, database_url_env=self.database_url)

    def settings(self) -> Settings:
        """The platform settings (tunables from the environment) on this database."""
        return self.apply(load_settings())

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        return connect(self.settings(), autocommit=autocommit)
