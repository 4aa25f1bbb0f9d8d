"""Superset dashboards as code: its own venv, its process, the reader role's and admin's
secrets, and the YAML bundles in `superset/assets` imported with Superset's own importer.

Nothing here imports Superset: its pins (SQLAlchemy 1.4, Flask 2.3, pandas 2.1) clash with
Dagster's, so it lives in `.venv-superset` and is driven as subprocesses.
"""
