"""The serving views: every dbt model in dbt_project/ as a Dagster asset.

dbt sources map to the assets that write those tables, so the lineage reads
devices -> device_events -> bytes_hourly / user_quota_limit -> serving views, and
devices -> bytes -> the live view. Each model carries SERVING_FRESHNESS. dbt tests on
the models become asset checks; tests on sources are reported as observations.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from antenna_platform.dbt_env import dbt_environment, prune_run_targets
from assets.freshness import SERVING_FRESHNESS
from resources.dbt import DBT_PROJECT
from resources.postgres import PostgresResource

# dbt source table -> the asset that writes it (`bytes`: the speed layer's own asset).
SOURCE_ASSET_KEYS: dict[str, dg.AssetKey] = {
    "user_metadata": dg.AssetKey("user_metadata"),
    "bytes_hourly": dg.AssetKey("bytes_hourly"),
    "user_quota_limit": dg.AssetKey("user_quota_limit"),
    "bytes": dg.AssetKey("bytes"),
}

# Rebuild after any upstream update (a batch hour, a reported lake hour, re-provisioning).
# Unlike `eager()` this does not wait for *every* upstream partition: hours before the
# platform started are missing forever and would block the views.
SERVING_AUTOMATION = (
    (
        dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after upstream updates")


class AntennaDbtTranslator(DagsterDbtTranslator):
    """Sources -> the platform's asset keys; models -> `serving/<model>`, group `serving`."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            key = SOURCE_ASSET_KEYS.get(dbt_resource_props["name"])
            if key is not None:
                return key
        return super().get_asset_key(dbt_resource_props)

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("model."):
            return spec.replace_attributes(freshness_policy=SERVING_FRESHNESS)
        return spec

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "serving"

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        return SERVING_AUTOMATION


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    project=DBT_PROJECT,
    dagster_dbt_translator=AntennaDbtTranslator(),
    name="serving_views",
)
def serving_views(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, postgres: PostgresResource
):
    """`dbt build`: create or replace the views in schema `serving`, then run their tests."""
    with dbt_environment(postgres.settings()):
        yield from dbt.cli(["build"], context=context).stream()
    prune_run_targets()
