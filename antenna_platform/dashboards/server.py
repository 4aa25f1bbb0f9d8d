"""Superset as one of the platform's services: set up, import, start, stop, state.

Superset runs from `.venv-superset` (`make superset-install`) under gunicorn on
127.0.0.1:ANTENNA_SUPERSET_PORT. Its metadata lives in database `superset` on the
platform's Postgres; its config is `superset/superset_config.py`, which reads the
metadata URL and the path of the SECRET_KEY file from the environment given here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from antenna_platform.config import PROJECT_ROOT, SUPERSET_DB, Settings, redact_url, with_database
from antenna_platform.dashboards import bundles, credentials
from antenna_platform.services import ServiceError, ServiceState, _pid_alive, _read_pid, port_open

SUPERSET_VENV = PROJECT_ROOT / ".venv-superset"
CONFIG_FILE = PROJECT_ROOT / "superset" / "superset_config.py"
IN_SUPERSET = Path(__file__).with_name("in_superset.py")
ADMIN_USER = "admin"
INSTALL_HINT = "run `make superset-install` (or set ANTENNA_DASHBOARD=0)"


def _bin(name: str) -> Path:
    return SUPERSET_VENV / "bin" / name


def installed() -> bool:
    """True when `make superset-install` has built the Superset venv."""
    return (SUPERSET_VENV / ".installed").exists() and _bin("gunicorn").exists()


def _files(settings: Settings) -> tuple[Path, Path]:
    home = credentials.superset_home(settings)
    return home / "gunicorn.pid", home / "superset.log"


def metadata_url(settings: Settings) -> str:
    """Superset's own database (secret when the platform URL has a password)."""
    url = with_database(settings.database_url, SUPERSET_DB)
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def superset_env(settings: Settings) -> dict[str, str]:
    """Environment of every Superset process: config, metadata DB, SECRET_KEY file."""
    home = credentials.superset_home(settings)
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    return {
        **{k: os.environ[k] for k in keep if k in os.environ},
        "HOME": str(home),  # Superset writes ~/.superset otherwise
        "SUPERSET_HOME": str(home / "data"),
        "SUPERSET_CONFIG_PATH": str(CONFIG_FILE),
        "ANTENNA_SUPERSET_SECRET_KEY_FILE": str(credentials.secret_key_file(settings)),
        "ANTENNA_SUPERSET_METADATA_URL": metadata_url(settings),
        "PYTHONUNBUFFERED": "1",
    }


def ensure_metadata_database(settings: Settings) -> None:
    """Create database `superset` on the platform's server if it is missing."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    url = with_database(settings.database_url, "postgres")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute(
                "select 1 from pg_database where datname = %s", (SUPERSET_DB,)
            ).fetchone()
            if not found:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(SUPERSET_DB)))
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"superset: cannot create its metadata database {SUPERSET_DB!r} on "
            f"{redact_url(url)}: {reason}"
        ) from None


def setup(
    settings: Settings,
    slugs: list[str] | None = None,
    bundle: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict:
    """Upgrade Superset's metadata, ensure the admin user, import the bundle (idempotent).

    Works whether or not the server runs (Superset's importer writes the metadata
    database directly). `bundle` ({path: yaml}) replaces the one in superset/assets.
    Returns {"dashboards": {slug: id}, "charts": n}.
    """
    if not installed():
        raise ServiceError(f"superset: not installed: {INSTALL_HINT}")
    ensure_metadata_database(settings)
    password, _ = credentials.admin_password(settings)
    contents = bundles.import_contents(settings, slugs, bundle)
    request = {
        "admin_user": ADMIN_USER,
        "admin_password": password,
        "contents": contents,
        "passwords": {bundles.DATABASE_FILE: credentials.reader_password(settings)},
        "slugs": list(bundles.dashboards(bundle) if slugs is None else slugs),
    }
    _, log = _files(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        res = subprocess.run(
            [str(_bin("python")), "-I", str(IN_SUPERSET)],
            input=json.dumps(request).encode(),
            stdout=subprocess.PIPE,
            stderr=err,
            env=superset_env(settings),
            cwd=credentials.superset_home(settings),
            timeout=timeout,
            check=False,
        )
    lines = res.stdout.decode(errors="replace").strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if res.returncode != 0 or "dashboards" not in result:
        detail = result.get("error") or _log_tail(log)
        raise ServiceError(f"superset: setup and import failed ({detail}); see {log}")
    return result


def dashboard_url(settings: Settings, slug: str) -> str:
    return f"{settings.superset_url}/superset/dashboard/{slug}/"


def _log_tail(log: Path, n: int = 2) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return " | ".join(lines[-n:])


def state(settings: Settings) -> ServiceState:
    pidfile, log = _files(settings)
    pid = _read_pid(pidfile)
    running = _pid_alive(pid) and port_open("127.0.0.1", settings.superset_port)
    detail = f"log {log}" if installed() else f"not installed: {INSTALL_HINT}"
    return ServiceState(
        "superset", True, running, settings.superset_url, pid if running else None, detail
    )


def healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.superset_url}/health", timeout=5) as resp:  # noqa: S310 - our own loopback URL
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(settings: Settings, timeout: float = 180.0) -> ServiceState:
    """Set up, import the dashboards and serve Superset on 127.0.0.1 (idempotent)."""
    current = state(settings)
    if current.running:
        return current
    if port_open("127.0.0.1", settings.superset_port):
        raise ServiceError(
            f"superset: port 127.0.0.1:{settings.superset_port} is taken by another process; "
            "set ANTENNA_SUPERSET_PORT to a free port"
        )
    setup(settings)
    pidfile, log = _files(settings)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(_bin("gunicorn")),
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
                "--bind",
                f"127.0.0.1:{settings.superset_port}",
                "superset.app:create_app()",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=superset_env(settings),
            cwd=credentials.superset_home(settings),
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"superset: gunicorn exited with code {proc.returncode}; see {log}")
        if healthy(settings):
            return state(settings)
        time.sleep(0.5)
    stop(settings)
    raise ServiceError(f"superset: no answer on {settings.superset_url}/health; see {log}")


def stop(settings: Settings, timeout: float = 20.0) -> None:
    """Stop the gunicorn started by `start` (its whole process group)."""
    pidfile, _ = _files(settings)
    pid = _read_pid(pidfile)
    if _pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    pidfile.unlink(missing_ok=True)


def up(settings: Settings) -> list[str]:
    """Start Superset when dashboards are on; lines for the console (admin login included).

    A generated admin password is shown here once, when it is created; afterwards the
    lines only say where it is kept.
    """
    if not settings.dashboard:
        return ["superset  off (ANTENNA_DASHBOARD=0)"]
    if not installed():
        raise ServiceError(f"superset: not installed: {INSTALL_HINT}")
    password, generated = credentials.admin_password(settings)
    st = start(settings)
    lines = [f"superset  {'running' if st.running else 'DOWN':8s} {st.address}  [embedded]"]
    if generated:
        lines.append(
            f"          log in as {ADMIN_USER!r} with password {password} "
            f"(generated, shown once; kept in {credentials.admin_password_file(settings)})"
        )
    elif settings.superset_admin_password:
        lines.append(f"          log in as {ADMIN_USER!r} (ANTENNA_SUPERSET_ADMIN_PASSWORD)")
    else:
        lines.append(
            f"          log in as {ADMIN_USER!r}, password in "
            f"{credentials.admin_password_file(settings)}"
        )
    for spec in bundles.dashboards().values():
        lines.append(f"          {spec.title:14s} {dashboard_url(settings, spec.slug)}")
    return lines
