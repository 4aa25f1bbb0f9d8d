"""The Spark session of the batch layer, built from the settings.

`local[*]` by default; `SPARK_MASTER=spark://host:port` for a standalone cluster;
`SPARK_REMOTE=sc://host:port` for Spark Connect (DataFrame API only, no local JVM).
A local driver needs Java 17+: we check for it first so a missing JVM is a one-line
error instead of a Py4J stack trace.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import lru_cache
from typing import Any

from antenna_platform.config import ConfigError, Settings
from antenna_platform.services import which_java

JAVA_HINT = (
    "install Java 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; "
    "macOS: brew install openjdk@17) or set JAVA_HOME"
)


def parse_java_major(version_output: str) -> int | None:
    """Major version from `java -version` output ('1.8.0_292' -> 8, '17.0.15' -> 17)."""
    m = re.search(r'version "([^"]+)"', version_output)
    if not m:
        return None
    parts = m.group(1).split(".")
    try:
        major = int(re.sub(r"\D.*", "", parts[0]) or "0")
        if major == 1 and len(parts) > 1:
            major = int(re.sub(r"\D.*", "", parts[1]) or "0")
    except ValueError:
        return None
    return major


@lru_cache(maxsize=1)
def check_java() -> int:
    """Return the Java major version, or raise ConfigError saying how to install it."""
    java = which_java()
    if java is None:
        raise ConfigError(f"Spark needs Java 17+, and no `java` was found: {JAVA_HINT}")
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"Spark needs Java 17+; `{java} -version` failed ({exc}): {JAVA_HINT}"
        ) from None
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < 17:
        raise ConfigError(
            f"Spark needs Java 17+, found {major or 'unknown'} at {java}: {JAVA_HINT}"
        )
    return major


def spark_conf(settings: Settings, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Spark configuration for the settings: small, quiet and UTC."""
    conf: dict[str, str] = {
        "spark.app.name": "antenna-batch",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.adaptive.enabled": "true",
    }
    if settings.spark_remote:
        conf["spark.remote"] = settings.spark_remote
    else:
        conf.update(
            {
                "spark.master": settings.spark_master,
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "1g"),
                "spark.executor.memory": os.environ.get("SPARK_EXECUTOR_MEMORY", "1g"),
                "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
                "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
            }
        )
        if not settings.spark_master.startswith("local"):
            # Executors on other hosts would need spark.driver.host set to a reachable name;
            # the default here is the single-machine standalone cluster.
            conf["spark.driver.host"] = os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1")
            conf["spark.driver.bindAddress"] = os.environ.get("SPARK_DRIVER_BIND", "127.0.0.1")
    for key, value in (overrides or {}).items():
        conf[key] = str(value)
    return conf


def get_spark(settings: Settings, overrides: dict[str, Any] | None = None):
    """The active SparkSession, created from the settings if there is none yet.

    `getOrCreate` reuses a running session (tests share one), so the master of an
    existing session wins over the settings.
    """
    from pyspark.sql import SparkSession

    conf = spark_conf(settings, overrides)
    if "spark.remote" not in conf:
        check_java()
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if "spark.remote" not in conf:
        session.sparkContext.setLogLevel("ERROR")
    return session
