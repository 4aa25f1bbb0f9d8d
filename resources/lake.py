"""Lake resource: the root of the Parquet lake (`ANTENNA_LAKE_DIR`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
from pydantic import Field

from antenna_platform.config import Settings


class LakeResource(dg.ConfigurableResource):
    """In the Definitions `lake_dir` is `EnvVar("ANTENNA_LAKE_DIR")`."""

    lake_dir: str = Field(description="directory holding device_events/ (absolute)")

    def root(self) -> Path:
        return Path(self.lake_dir)

    def apply(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, lake_dir=self.root())
