"""The dashboards as code: the YAML bundle in `superset/assets`, read and shaped for import.

The bundle has Superset's own export layout (metadata.yaml, databases/, datasets/,
charts/, dashboards/), every object with a fixed UUID, so an import creates or
overwrites by UUID and never duplicates. The database file holds no password and a
placeholder address: `import_contents` points it at the platform's database as the
read-only role, and the password travels in the importer's passwords map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from antenna_platform.config import PROJECT_ROOT, READER_ROLE, Settings

BUNDLE_DIR = PROJECT_ROOT / "superset" / "assets"
DATABASE_FILE = "databases/antenna.yaml"
PASSWORD_MASK = "XXXXXXXXXX"  # noqa: S105 - Superset's mask for a password left out of a URI


@dataclass(frozen=True)
class DashboardSpec:
    """One dashboard of the bundle and what it needs."""

    slug: str
    title: str
    path: str  # relative to the bundle
    chart_paths: tuple[str, ...]
    dataset_paths: tuple[str, ...]
    tables: tuple[str, ...]  # serving views its charts and filters read


def read_bundle(bundle_dir: Path = BUNDLE_DIR) -> dict[str, str]:
    """Every YAML file of the bundle: {relative path: text}."""
    files = sorted(p for p in bundle_dir.rglob("*.yaml") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no Superset bundle in {bundle_dir}")
    return {p.relative_to(bundle_dir).as_posix(): p.read_text() for p in files}


def _chart_uuids(position: dict) -> list[str]:
    return [
        node["meta"]["uuid"]
        for node in position.values()
        if isinstance(node, dict) and node.get("type") == "CHART"
    ]


def dashboards(bundle: dict[str, str] | None = None) -> dict[str, DashboardSpec]:
    """The bundle's dashboards by slug, each with the charts, datasets and views it uses."""
    bundle = bundle if bundle is not None else read_bundle()
    parsed = {path: yaml.safe_load(text) for path, text in bundle.items()}
    charts = {d["uuid"]: p for p, d in parsed.items() if p.startswith("charts/")}
    datasets = {d["uuid"]: p for p, d in parsed.items() if p.startswith("datasets/")}
    out: dict[str, DashboardSpec] = {}
    for path, dash in parsed.items():
        if not path.startswith("dashboards/"):
            continue
        chart_paths = [charts[u] for u in _chart_uuids(dash["position"])]
        dataset_uuids = {parsed[c]["dataset_uuid"] for c in chart_paths}
        for flt in dash.get("metadata", {}).get("native_filter_configuration", []):
            dataset_uuids |= {t["datasetUuid"] for t in flt.get("targets", []) if t}
        dataset_paths = sorted(datasets[u] for u in dataset_uuids)
        out[dash["slug"]] = DashboardSpec(
            slug=dash["slug"],
            title=dash["dashboard_title"],
            path=path,
            chart_paths=tuple(chart_paths),
            dataset_paths=tuple(dataset_paths),
            tables=tuple(sorted(parsed[d]["table_name"] for d in dataset_paths)),
        )
    return out


def reader_uri(settings: Settings) -> str:
    """The platform database as the read-only role, password masked (SQLAlchemy form)."""
    parts = urlsplit(settings.database_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{quote(READER_ROLE)}:{PASSWORD_MASK}@{host}:{parts.port or 5432}"
    return urlunsplit(("postgresql+psycopg2", netloc, parts.path, parts.query, ""))


def import_contents(
    settings: Settings, slugs: list[str] | None = None, bundle: dict[str, str] | None = None
) -> dict[str, str]:
    """The files to import for `slugs` (all dashboards when None), aimed at this platform."""
    bundle = bundle if bundle is not None else read_bundle()
    specs = dashboards(bundle)
    chosen = list(specs) if slugs is None else slugs
    unknown = set(chosen) - set(specs)
    if unknown:
        raise KeyError(f"no dashboard {sorted(unknown)} in the bundle (have {sorted(specs)})")
    paths = {"metadata.yaml", DATABASE_FILE}
    for slug in chosen:
        spec = specs[slug]
        paths |= {spec.path, *spec.chart_paths, *spec.dataset_paths}
    contents = {p: bundle[p] for p in sorted(paths)}
    database = yaml.safe_load(contents[DATABASE_FILE])
    database["sqlalchemy_uri"] = reader_uri(settings)
    contents[DATABASE_FILE] = yaml.safe_dump(database, sort_keys=False)
    return contents
