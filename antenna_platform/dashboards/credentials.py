"""The dashboards' secrets: from the environment, else generated once under ANTENNA_HOME.

Generated files are created with mode 0600 and never printed except the admin password,
shown once when it is created. None of them is ever written into a YAML bundle or a log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from antenna_platform.config import Settings


def superset_home(settings: Settings) -> Path:
    """Superset's state under ANTENNA_HOME: secrets, PID file, logs."""
    return settings.home / "superset"


def _generated(path: Path, nbytes: int = 24) -> tuple[str, bool]:
    """The secret stored at `path`, creating it (0600) on first use. True if just created."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value, True


def secret_key_file(settings: Settings) -> Path:
    """Path of Superset's SECRET_KEY (signs sessions, encrypts stored passwords)."""
    path = superset_home(settings) / "secret_key"
    _generated(path, 42)
    return path


def admin_password(settings: Settings) -> tuple[str, bool]:
    """ANTENNA_SUPERSET_ADMIN_PASSWORD, else a generated one. True if generated just now."""
    if settings.superset_admin_password:
        return settings.superset_admin_password, False
    return _generated(superset_home(settings) / "admin_password")


def admin_password_file(settings: Settings) -> Path:
    return superset_home(settings) / "admin_password"


def reader_password(settings: Settings) -> str:
    """ANTENNA_READER_PASSWORD, else one generated once for the read-only role."""
    if settings.reader_password:
        return settings.reader_password
    return _generated(superset_home(settings) / "reader_password")[0]
