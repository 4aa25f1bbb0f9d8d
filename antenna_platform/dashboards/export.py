"""Dashboards edited in Superset's UI, back into the YAML bundle.

`python -m antenna_platform.dashboards.export live-traffic [more slugs]` asks the running
Superset for its export of those dashboards (charts, datasets and all) and merges it into
`superset/assets`: a file whose object is already in the bundle (same UUID) replaces that
file, a new object gets a file named after it, and the database file is left alone (the
export carries this Superset's address; the bundle's holds none and no password).
`--zip FILE` merges an export downloaded from the UI instead.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import yaml

from antenna_platform.config import ConfigError, Settings, load_settings
from antenna_platform.dashboards import bundles, credentials
from antenna_platform.dashboards.server import ADMIN_USER


def _tidy(stem: str) -> str:
    """`Bytes_per_5_minutes_by_app_12` -> `bytes_per_5_minutes_by_app` (drop Superset's id)."""
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"_\d+$", "", stem).lower()).strip("_")


def merge_export(export: bytes, bundle_dir: Path = bundles.BUNDLE_DIR) -> dict[str, list[str]]:
    """Write a Superset export zip into the bundle; returns {"replaced": [...], "added": [...]}."""
    known = {}
    for path, text in bundles.read_bundle(bundle_dir).items():
        data = yaml.safe_load(text)
        if isinstance(data, dict) and "uuid" in data:
            known[str(data["uuid"])] = path
    out: dict[str, list[str]] = {"replaced": [], "added": []}
    with zipfile.ZipFile(io.BytesIO(export)) as zf:
        for name in sorted(zf.namelist()):
            rel = name.split("/", 1)[1] if "/" in name else name
            kind = rel.split("/", 1)[0]
            if not rel.endswith(".yaml") or kind not in ("charts", "dashboards", "datasets"):
                continue  # metadata.yaml and databases/ stay as the bundle has them
            text = zf.read(name).decode()
            target = known.get(str(yaml.safe_load(text)["uuid"]))
            if target is None:
                parent = Path(rel).parent
                target = (parent / f"{_tidy(Path(rel).stem)}.yaml").as_posix()
                out["added"].append(target)
            else:
                out["replaced"].append(target)
            (bundle_dir / target).parent.mkdir(parents=True, exist_ok=True)
            (bundle_dir / target).write_text(text)
    return out


def fetch_export(settings: Settings, slugs: list[str]) -> bytes:
    """Superset's own export (a zip) of the dashboards with these slugs, over its API."""
    import requests  # noqa: PLC0415

    base = settings.superset_url
    s = requests.Session()
    password, _ = credentials.admin_password(settings)
    res = s.post(
        f"{base}/api/v1/security/login",
        json={"username": ADMIN_USER, "password": password, "provider": "db", "refresh": False},
        timeout=60,
    )
    if res.status_code != 200:
        raise ConfigError(f"superset at {base}: login as {ADMIN_USER!r} failed ({res.status_code})")
    s.headers["Authorization"] = f"Bearer {res.json()['access_token']}"
    ids = []
    for slug in slugs:
        got = s.get(f"{base}/api/v1/dashboard/{slug}", timeout=60)
        if got.status_code != 200:
            raise ConfigError(f"superset at {base}: no dashboard {slug!r} ({got.status_code})")
        ids.append(got.json()["result"]["id"])
    res = s.get(
        f"{base}/api/v1/dashboard/export/",
        params={"q": f"!({','.join(map(str, ids))})"},
        timeout=120,
    )
    if res.status_code != 200:
        raise ConfigError(f"superset at {base}: export failed ({res.status_code})")
    return res.content


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m antenna_platform.dashboards.export", description=__doc__
    )
    p.add_argument(
        "slugs", nargs="*", help="dashboards to export (default: every one in the bundle)"
    )
    p.add_argument("--zip", type=Path, help="merge this export zip instead of asking Superset")
    args = p.parse_args(argv)
    try:
        if args.zip:
            export = args.zip.read_bytes()
        else:
            settings = load_settings()
            export = fetch_export(settings, args.slugs or list(bundles.dashboards()))
        result = merge_export(export)
    except ConfigError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
