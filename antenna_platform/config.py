"""One frozen settings object, read from the environment (and a `.env` file).

Embedded services are used when a URL is unset; a given URL means "use that
service and do not start one". Nothing here starts anything or connects anywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PLATFORM_DB = "antenna"
DAGSTER_DB = "dagster"
SUPERSET_DB = "superset"  # Superset's own metadata (users, charts, dashboards)
READER_ROLE = "antenna_reader"  # the least-privilege role dashboards read through


class ConfigError(ValueError):
    """A bad setting: the message names the variable and says what is expected."""


@contextmanager
def environ_set(values: Mapping[str, str]) -> Iterator[None]:
    """Set these variables in os.environ for the block, then restore what was there
    (for libraries that read their settings only from the process environment)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by `***` (safe for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def load_dotenv(path: Path) -> dict[str, str]:
    """Parse a simple KEY=VALUE `.env` file (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        values[key] = value.strip().strip("'\"")
    return values


DEFAULT_STREAM_STALE_SECONDS = 120  # the stream op logs a heartbeat every 5 s


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected 1 or 0, got {raw!r}")


def _path(env: dict[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    p = Path(raw) if raw else default
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the platform. Build it with `load_settings()`."""

    home: Path
    lake_dir: Path
    dagster_home: Path
    database_url_env: str | None = field(repr=False)
    kafka_bootstrap_env: str | None
    spark_master: str
    spark_remote: str | None
    pg_port: int
    kafka_port: int
    topic: str
    topic_partitions: int
    consumer_group: str
    watermark_seconds: int
    max_clock_skew_seconds: int
    partitions_start: str
    stream_workers: int
    stream_lag_warn_seconds: int
    stream_stale_seconds: int  # a STARTED stream run silent this long is given up on
    dashboard: bool = True  # Superset dashboards on (ANTENNA_DASHBOARD=0 leaves them out)
    superset_port: int = 8088
    superset_admin_password: str | None = field(default=None, repr=False)
    reader_password: str | None = field(default=None, repr=False)
    batch_pool_limit: int = 1  # batch (Spark) steps allowed to run at once
    alert_webhook_url: str | None = field(default=None, repr=False)  # secret

    @property
    def embedded_database_url(self) -> str:
        """The URL of the embedded server (what `ANTENNA_DATABASE_URL` defaults to)."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{PLATFORM_DB}"

    @property
    def embedded_postgres(self) -> bool:
        """Unset, or naming the embedded server itself (as `antenna env` exports it)."""
        return self.database_url_env in (None, self.embedded_database_url)

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_env in (None, f"127.0.0.1:{self.kafka_port}")

    @property
    def database_url(self) -> str:
        """URL of the platform database (secret: never log it, use `redact_url`)."""
        return self.database_url_env or self.embedded_database_url

    @property
    def dagster_database_url(self) -> str:
        """URL of Dagster's own storage database on the same server."""
        return with_database(self.database_url, DAGSTER_DB)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_env or f"127.0.0.1:{self.kafka_port}"

    @property
    def superset_url(self) -> str:
        return f"http://127.0.0.1:{self.superset_port}"

    @property
    def partitions_start_dt(self) -> datetime:
        return datetime.strptime(self.partitions_start, "%Y-%m-%d").replace(tzinfo=UTC)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and validate settings; raises ConfigError with a one-line message."""
    env = dict(load_dotenv(PROJECT_ROOT / ".env"))
    env.update(os.environ if environ is None else environ)

    home = _path(env, "ANTENNA_HOME", Path(".antenna"))
    db_url = env.get("ANTENNA_DATABASE_URL") or None
    if db_url is not None:
        scheme = urlsplit(db_url).scheme if "://" in db_url else ""
        if scheme not in ("postgresql", "postgres") or not urlsplit(db_url).hostname:
            raise ConfigError(
                "ANTENNA_DATABASE_URL: expected postgresql://user[:password]@host[:port]/db, "
                f"got {redact_url(db_url)!r}"
            )
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS") or None
    if bootstrap is not None:
        for hp in bootstrap.split(","):
            if not _HOSTPORT.match(hp.strip()):
                raise ConfigError(
                    f"KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port], got {bootstrap!r}"
                )
    spark_master = env.get("SPARK_MASTER") or "local[*]"
    if not re.match(r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://.+|yarn|k8s://.+)$", spark_master):
        raise ConfigError(
            f"SPARK_MASTER: expected local[*], local[N], spark://host:port, yarn or k8s://..., "
            f"got {spark_master!r}"
        )
    spark_remote = env.get("SPARK_REMOTE") or None
    if spark_remote is not None and not spark_remote.startswith("sc://"):
        raise ConfigError(f"SPARK_REMOTE: expected sc://host:port, got {spark_remote!r}")
    start = env.get("ANTENNA_PARTITIONS_START") or "2026-01-01"
    try:
        datetime.strptime(start, "%Y-%m-%d")  # noqa: DTZ007 - only validating the shape
    except ValueError:
        raise ConfigError(f"ANTENNA_PARTITIONS_START: expected YYYY-MM-DD, got {start!r}") from None
    webhook = env.get("ANTENNA_ALERT_WEBHOOK_URL") or None
    if webhook is not None and not re.match(r"^https?://[^/\s]+", webhook):
        # the URL is a secret (a Slack webhook's path is its credential): never echo it
        raise ConfigError("ANTENNA_ALERT_WEBHOOK_URL: expected an http:// or https:// URL")
    topic = env.get("ANTENNA_TOPIC") or "devices"
    if not re.match(r"^[A-Za-z0-9._\-]{1,249}$", topic):
        raise ConfigError(f"ANTENNA_TOPIC: not a valid Kafka topic name: {topic!r}")

    return Settings(
        home=home,
        lake_dir=_path(env, "ANTENNA_LAKE_DIR", home / "lake"),
        dagster_home=_path(env, "DAGSTER_HOME", home / "dagster"),
        database_url_env=db_url,
        kafka_bootstrap_env=bootstrap,
        spark_master=spark_master,
        spark_remote=spark_remote,
        pg_port=_int(env, "ANTENNA_PG_PORT", 55432, 1),
        kafka_port=_int(env, "ANTENNA_KAFKA_PORT", 19092, 1),
        topic=topic,
        topic_partitions=_int(env, "ANTENNA_TOPIC_PARTITIONS", 3, 1),
        consumer_group=env.get("ANTENNA_CONSUMER_GROUP") or "antenna-stream",
        watermark_seconds=_int(env, "ANTENNA_WATERMARK_SECONDS", 60, 0),
        max_clock_skew_seconds=_int(env, "ANTENNA_MAX_CLOCK_SKEW_SECONDS", 300, 0),
        partitions_start=start,
        stream_workers=_int(env, "ANTENNA_STREAM_WORKERS", 1, 1),
        stream_lag_warn_seconds=_int(env, "ANTENNA_STREAM_LAG_WARN_SECONDS", 120, 1),
        # the op logs a heartbeat every 5 s; below 30 s a busy run could be taken for dead
        stream_stale_seconds=_int(
            env, "ANTENNA_STREAM_STALE_SECONDS", DEFAULT_STREAM_STALE_SECONDS, 30
        ),
        dashboard=_bool(env, "ANTENNA_DASHBOARD", True),
        superset_port=_int(env, "ANTENNA_SUPERSET_PORT", 8088, 1),
        superset_admin_password=env.get("ANTENNA_SUPERSET_ADMIN_PASSWORD") or None,
        reader_password=env.get("ANTENNA_READER_PASSWORD") or None,
        batch_pool_limit=_int(env, "ANTENNA_BATCH_POOL_LIMIT", 1, 1),
        alert_webhook_url=webhook,
    )
