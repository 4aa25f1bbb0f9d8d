from pathlib import Path

import pytest

from antenna_platform.config import ConfigError, load_settings, redact_url


def test_defaults_are_embedded_and_local():
    s = load_settings({})
    assert s.embedded_postgres and s.embedded_kafka
    assert s.database_url.startswith("postgresql://postgres@127.0.0.1:")
    assert s.kafka_bootstrap_servers.startswith("127.0.0.1:")
    assert s.spark_master == "local[*]"
    assert s.lake_dir == s.home / "lake"
    assert s.lake_dir.is_absolute()
    assert s.watermark_seconds == 60
    assert s.topic == "devices" and s.topic_partitions == 3


def test_given_urls_are_used():
    s = load_settings(
        {
            "ANTENNA_DATABASE_URL": "postgresql://u:pw@db.example:5432/x",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "ANTENNA_LAKE_DIR": "/data/lake",
        }
    )
    assert not s.embedded_postgres and not s.embedded_kafka
    assert s.database_url == "postgresql://u:pw@db.example:5432/x"
    assert s.dagster_database_url == "postgresql://u:pw@db.example:5432/dagster"
    assert s.lake_dir == Path("/data/lake")


def test_password_never_in_repr():
    s = load_settings({"ANTENNA_DATABASE_URL": "postgresql://u:hunter2@db:5432/x"})
    assert "hunter2" not in repr(s)
    assert redact_url(s.database_url) == "postgresql://u:***@db:5432/x"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ANTENNA_DATABASE_URL": "mysql://u:secretpw@h/x"}, "ANTENNA_DATABASE_URL"),
        ({"ANTENNA_DATABASE_URL": "not a url"}, "ANTENNA_DATABASE_URL"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"SPARK_MASTER": "mesos://x"}, "SPARK_MASTER"),
        ({"SPARK_REMOTE": "http://x"}, "SPARK_REMOTE"),
        ({"ANTENNA_WATERMARK_SECONDS": "abc"}, "ANTENNA_WATERMARK_SECONDS"),
        ({"ANTENNA_TOPIC_PARTITIONS": "0"}, "ANTENNA_TOPIC_PARTITIONS"),
        ({"ANTENNA_PARTITIONS_START": "2026/01/01"}, "ANTENNA_PARTITIONS_START"),
        ({"ANTENNA_STREAM_STALE_SECONDS": "10"}, "ANTENNA_STREAM_STALE_SECONDS"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    msg = str(err.value)
    assert msg.startswith(variable + ":")
    assert "\n" not in msg
    assert "secretpw" not in msg


def test_stream_stale_limit_is_a_setting():
    assert load_settings({}).stream_stale_seconds == 120
    assert load_settings({"ANTENNA_STREAM_STALE_SECONDS": "300"}).stream_stale_seconds == 300
