"""The `user_metadata` asset: tables created and the exercise's users seeded."""

import dagster as dg

from antenna_platform.warehouse import provision
from resources.postgres import PostgresResource


@dg.asset(
    key="user_metadata",
    group_name="provisioning",
    description="Creates every platform table (idempotent) and seeds the 20 exercise users "
    "when missing; operators' edits are kept.",
)
def user_metadata(postgres: PostgresResource) -> dg.MaterializeResult:
    counts = provision(postgres.settings())
    return dg.MaterializeResult(metadata={"users": counts["users"], "seeded_now": counts["seeded"]})
