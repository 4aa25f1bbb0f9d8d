"""The Superset dashboards as assets, downstream of the serving views they chart.

One asset per dashboard of the YAML bundle (`superset/assets`), kind `superset`, so the
lineage runs from the topic to the lake, the batch tables, the dbt views and the
dashboards. Materializing one re-imports its bundle with Superset's own importer: it
overwrites by UUID, so a chart edited in git is updated and nothing is duplicated.
"""

import dagster as dg

from antenna_platform.dashboards import bundles, server
from resources.postgres import PostgresResource


def _dashboard_asset(spec: bundles.DashboardSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=["dashboards", spec.slug.replace("-", "_")],
        group_name="dashboards",
        kinds={"superset"},
        deps=[dg.AssetKey(["serving", table]) for table in spec.tables],
        description=f"Superset dashboard {spec.title!r} ({len(spec.chart_paths)} charts): "
        f"materializing re-imports {spec.path} and its charts and datasets.",
    )
    def _dashboard(postgres: PostgresResource) -> dg.MaterializeResult:
        settings = postgres.settings()
        if not settings.dashboard:
            raise dg.Failure("dashboards are off (ANTENNA_DASHBOARD=0)")
        result = server.setup(settings, [spec.slug])
        return dg.MaterializeResult(
            metadata={
                "url": dg.MetadataValue.url(server.dashboard_url(settings, spec.slug)),
                "charts": len(spec.chart_paths),
                "superset_id": result["dashboards"][spec.slug],
            }
        )

    return _dashboard


DASHBOARDS: list[dg.AssetsDefinition] = [
    _dashboard_asset(spec) for spec in bundles.dashboards().values()
]
