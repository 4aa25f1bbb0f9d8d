"""dbt resource: the one `DbtProject` for dbt_project/ and the `DbtCliResource` factory."""

from __future__ import annotations

from dagster_dbt import DbtCliResource, DbtProject

from antenna_platform.dbt_env import DBT_PROJECT_DIR, dbt_executable, ensure_manifest

# The one project object. `make test` / `make demo` write the manifest (`dbt parse`);
# `ensure_manifest` re-parses only when it is missing or older than the models (a fresh
# checkout, or a model edited under `dagster dev`). Not `prepare_if_dev()`: it calls a
# bare `dbt`, which is not on PATH when the venv is not activated.
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
ensure_manifest(DBT_PROJECT_DIR)


def build_dbt_resource() -> DbtCliResource:
    """dbt from this venv; connection details reach it as env vars at run time."""
    return DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable())
