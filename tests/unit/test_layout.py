"""The generic top-level package names must resolve inside this repository."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["antenna_platform", "assets", "resources", "jobs", "schedules"])
def test_top_level_packages_resolve_inside_the_repo(name):
    mod = importlib.import_module(name)
    assert Path(mod.__file__).resolve().parent == ROOT / name


def test_antenna_platform_init_is_empty():
    assert (ROOT / "antenna_platform" / "__init__.py").read_text().strip() == ""


def test_workspace_points_at_definitions():
    text = (ROOT / "workspace.yaml").read_text()
    assert "antenna_platform.definitions" in text
