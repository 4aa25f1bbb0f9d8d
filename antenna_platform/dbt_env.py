"""The bridge from platform settings to dbt: environment variables and the manifest.

`dbt_project/profiles.yml` reads only environment variables, so no secret ever sits in
a file; this module derives them from `Settings.database_url` (the same database the
rest of the platform uses). The password goes in `DBT_ENV_SECRET_ANTENNA_PASSWORD`:
dbt scrubs `DBT_ENV_SECRET_*` values from its logs.

Loading the Dagster definitions needs `dbt_project/target/manifest.json`; `make test` and
`make demo` run `dbt parse` to produce it, and `ensure_manifest` is the fallback for a
fresh checkout (it parses only when the manifest is missing or older than the models).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from antenna_platform.config import PROJECT_ROOT, ConfigError, Settings, environ_set, redact_url

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
SERVING_SCHEMA = "serving"
PASSWORD_VAR = "DBT_ENV_SECRET_ANTENNA_PASSWORD"  # noqa: S105 - a variable name, not a secret
DBT_ENV_VARS = (
    "ANTENNA_DBT_HOST",
    "ANTENNA_DBT_PORT",
    "ANTENNA_DBT_USER",
    PASSWORD_VAR,
    "ANTENNA_DBT_DBNAME",
    "ANTENNA_DBT_SSLMODE",
)
# Inputs of `dbt parse`: a manifest older than any of them is stale.
_PARSE_INPUTS = ("models", "macros", "tests", "dbt_project.yml")


def dbt_env(database_url: str) -> dict[str, str]:
    """Map a postgresql:// URL to the variables profiles.yml reads.

    Supports user, password, host, port, database and the `sslmode` / `host` (Unix
    socket directory) query parameters, as libpq does.
    """
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"ANTENNA_DATABASE_URL: expected postgresql://..., got {redact_url(database_url)!r}"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host")
    if not host:
        raise ConfigError(f"ANTENNA_DATABASE_URL: no host in {redact_url(database_url)!r}")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ConfigError(f"ANTENNA_DATABASE_URL: no database in {redact_url(database_url)!r}")
    return {
        "ANTENNA_DBT_HOST": host,
        "ANTENNA_DBT_PORT": str(parts.port or 5432),
        "ANTENNA_DBT_USER": unquote(parts.username or "postgres"),
        PASSWORD_VAR: unquote(parts.password or ""),
        "ANTENNA_DBT_DBNAME": dbname,
        "ANTENNA_DBT_SSLMODE": query.get("sslmode", "prefer"),
    }


@contextmanager
def dbt_environment(settings: Settings) -> Iterator[dict[str, str]]:
    """Set the dbt variables in os.environ for the block, then restore them.

    dagster-dbt copies os.environ into the dbt subprocess (and reads the profile
    in-process too), so the variables must be in this process's environment.
    """
    values = dbt_env(settings.database_url)
    with environ_set(values):
        yield values


def dbt_executable() -> str:
    """The dbt next to this interpreter (the venv's), else whatever `dbt` is on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def manifest_path(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    return project_dir / "target" / "manifest.json"


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """True when the manifest is missing or older than any model, macro, test or config."""
    manifest = manifest_path(project_dir)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    for name in _PARSE_INPUTS:
        root = project_dir / name
        paths = [root] if root.is_file() else root.rglob("*") if root.is_dir() else []
        if any(p.is_file() and p.stat().st_mtime > built for p in paths):
            return True
    return False


def parse_manifest(
    project_dir: Path = DBT_PROJECT_DIR, env: Mapping[str, str] | None = None
) -> Path:
    """Run `dbt parse` (no database needed) and move the manifest into place atomically.

    Parsing into a private target directory and renaming keeps concurrent callers
    (e.g. parallel test processes) from ever reading a half-written manifest.
    """
    target = manifest_path(project_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="parse-", dir=target.parent))
    try:
        result = subprocess.run(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(project_dir),
                "--profiles-dir",
                str(project_dir),
                "--target-path",
                str(scratch),
                "--log-path",
                str(scratch),
            ],
            env={**os.environ, **(env or {}), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise ConfigError("dbt parse failed in dbt_project/: " + " | ".join(tail))
        os.replace(scratch / "manifest.json", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def ensure_manifest(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    """Return the manifest path, parsing first only if it is missing or stale."""
    if manifest_is_stale(project_dir):
        return parse_manifest(project_dir)
    return manifest_path(project_dir)


def prune_run_targets(project_dir: Path = DBT_PROJECT_DIR, keep: int = 10) -> list[Path]:
    """Delete all but the newest `keep` per-run target dirs (`<op>-<run id>-<uuid>`).

    dagster-dbt gives every invocation its own target dir (about 3 MB each); an hourly
    rebuild would otherwise grow dbt_project/target by tens of MB a day. The newest
    ones stay for debugging; the run's logs are in Dagster's event log anyway.
    """
    target = project_dir / "target"
    if not target.is_dir():
        return []
    runs = [p for p in target.iterdir() if p.is_dir() and p.name.count("-") >= 2]
    runs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = runs[keep:]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


if __name__ == "__main__":  # `python -m antenna_platform.dbt_env`: what `make` runs
    print(ensure_manifest())
