"""Which errors the batch retries (antenna_platform.transient)."""

import psycopg
from pyspark.errors import PySparkRuntimeError

from antenna_platform.config import ConfigError
from antenna_platform.transient import is_transient
from antenna_platform.warehouse import DatabaseUnreachable


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:  # noqa: BLE001 - we want the chained exception object
        return exc


def test_services_briefly_away_are_transient():
    assert is_transient(DatabaseUnreachable("ANTENNA_DATABASE_URL: cannot connect"))
    assert is_transient(psycopg.OperationalError("server closed the connection"))
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(TimeoutError())
    gateway = PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={})
    assert is_transient(gateway)
    # found through the chain too (a library wrapping the cause)
    assert is_transient(_raised_from(RuntimeError("scan failed"), ConnectionResetError()))


def test_bugs_bad_data_and_bad_settings_are_not():
    assert not is_transient(ValueError("bad"))
    assert not is_transient(ConfigError("SPARK_MASTER: expected local[*] ..."))
    assert not is_transient(FileNotFoundError("lake file missing"))
    other = PySparkRuntimeError(
        errorClass="CANNOT_CONFIGURE_SPARK_CONNECT_MASTER",
        messageParameters={"master_url": "x", "connect_url": "y"},
    )
    assert not is_transient(other)
    assert not is_transient(_raised_from(RuntimeError("x"), KeyError("y")))
