"""Spark settings and the Java prerequisite check (no JVM started)."""

import pytest

from antenna_platform import spark
from antenna_platform.config import ConfigError, load_settings


@pytest.mark.parametrize(
    "text,major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2-ea"', 11),
        ("nonsense", None),
    ],
)
def test_parse_java_major(text, major):
    assert spark.parse_java_major(text) == major


def test_missing_java_is_a_one_line_error_with_install_hint(monkeypatch, tmp_path):
    spark.check_java.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ConfigError) as err:
        spark.check_java()
    spark.check_java.cache_clear()
    msg = str(err.value)
    assert "\n" not in msg
    assert "openjdk-17-jre-headless" in msg and "brew install openjdk@17" in msg


def test_old_java_is_rejected(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'java version \"1.8.0_292\"' >&2\n")
    fake.chmod(0o755)
    spark.check_java.cache_clear()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="found 8"):
        spark.check_java()
    spark.check_java.cache_clear()


def test_local_conf_is_small_quiet_utc_and_loopback():
    conf = spark.spark_conf(load_settings({}))
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert int(conf["spark.sql.shuffle.partitions"]) <= 8


def test_cluster_and_connect_conf():
    conf = spark.spark_conf(load_settings({"SPARK_MASTER": "spark://10.0.0.5:7077"}))
    assert conf["spark.master"] == "spark://10.0.0.5:7077"
    remote = spark.spark_conf(load_settings({"SPARK_REMOTE": "sc://h:15002"}))
    assert remote["spark.remote"] == "sc://h:15002" and "spark.master" not in remote
    over = spark.spark_conf(load_settings({}), {"spark.executor.memory": "4g"})
    assert over["spark.executor.memory"] == "4g"
