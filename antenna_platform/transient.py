"""Which errors are worth retrying: a service briefly away, not a bug or bad data.

The batch step's retry policy retries only these (assets/batch.py); everything else
fails at once, a failed blocking check included: the same input fails the same way.
"""

from __future__ import annotations

from antenna_platform.warehouse import DatabaseUnreachable

# Spark that did not start or cannot be reached (by class name: pyspark's error classes
# live in optional modules, e.g. Spark Connect's only exist with its extras)
_SPARK_UNREACHABLE = {"Py4JNetworkError", "SparkConnectGrpcException"}
_SPARK_START_FAILED = {"JAVA_GATEWAY_EXITED", "CANNOT_CONNECT_TO_JVM"}


def _one(exc: BaseException) -> bool:
    import psycopg  # noqa: PLC0415

    if isinstance(exc, DatabaseUnreachable | psycopg.OperationalError | ConnectionError):
        return True
    if isinstance(exc, TimeoutError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _SPARK_UNREACHABLE:
        return True
    get_class = getattr(exc, "getErrorClass", None)
    return (
        "PySparkRuntimeError" in names
        and callable(get_class)
        and (get_class() in _SPARK_START_FAILED)
    )


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from, is a transient one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _one(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
