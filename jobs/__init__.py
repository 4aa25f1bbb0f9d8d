"""Dagster jobs."""

JOBS: list = []
