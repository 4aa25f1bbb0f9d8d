"""The one module that assembles the Dagster layer into Definitions.

Importing it starts nothing and connects nowhere; everything is wired from the
explicit lists each package exports.
"""

import dagster as dg

from assets import ASSET_CHECKS, ASSETS
from jobs import JOBS
from resources import build_resources
from schedules import SCHEDULES, SENSORS

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(),
)
