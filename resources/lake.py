"""Lake resource: the root of the Parquet lake (`ANTENNA_LAKE_DIR`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from antenna_platform.config import load_settings


class LakeResource(dg.ConfigurableResource):
    lake_dir: str | None = None

    def root(self) -> Path:
        return Path(self.lake_dir) if self.lake_dir else load_settings().lake_dir
