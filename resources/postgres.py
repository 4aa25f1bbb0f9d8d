"""Postgres resource: hands out connections to the platform database."""

from __future__ import annotations

import dagster as dg
import psycopg

from antenna_platform.config import Settings, load_settings
from antenna_platform.warehouse import connect


class PostgresResource(dg.ConfigurableResource):
    """The platform database. The URL comes from `ANTENNA_DATABASE_URL` (or the embedded
    default) at run time, so it never appears in run config, the UI or logs."""

    def settings(self) -> Settings:
        return load_settings()

    def connect(self) -> psycopg.Connection:
        return connect(self.settings())
