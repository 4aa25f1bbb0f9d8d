"""Data-quality rules of the batch layer, as Pandera schemas and plain checks.

The hour's events are validated by Pandera's PySpark backend (`HourEvents`, a
`pandera.pyspark.DataFrameModel`): no null field, bytes >= 0, every timestamp inside
the hour of the file it was registered under. Pandera on PySpark does not raise and
reports only which check failed, not how many rows: the exact per-hour counters of the
batch's one scan (null fields, negative bytes, time outside the hour) give the failing
row count, and one example row is fetched only when something failed.
The batch outputs are small, so they are validated with `pandera.pandas` Schemas that
report every failing row.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from antenna_platform.batch import ANTENNA, APP, EMAIL, HourResult
from antenna_platform.warehouse import BATCH_TYPES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # quiet pyspark/pandera import-time notices
    import pandera.pandas as pa
    import pandera.pyspark as psa
    from pandera.config import ValidationDepth, config_context
    from pyspark.sql import types as T


class HourEvents(psa.DataFrameModel):
    """The lake events of the hours of a run, as `batch.events_frame` reads them
    (`hour_epoch` = start of the hour the file is registered under, epoch seconds)."""

    timestamp: T.TimestampType() = psa.Field(nullable=False)
    id: T.StringType() = psa.Field(nullable=False)
    antenna_id: T.StringType() = psa.Field(nullable=False)
    bytes: T.LongType() = psa.Field(nullable=False, ge=0)
    app: T.StringType() = psa.Field(nullable=False)
    hour_epoch: T.LongType() = psa.Field(nullable=False)

    @psa.dataframe_check
    @classmethod
    def timestamp_inside_hour(cls, df) -> bool:
        """[hour start, hour end) of each row's own hour: one check for multi-hour runs."""
        outside = (
            "unix_micros(timestamp) < hour_epoch * 1000000 "
            "or unix_micros(timestamp) >= (hour_epoch + 3600) * 1000000"
        )
        return df.filter(outside).limit(1).count() == 0

    class Config:
        name = "hour_events"


def validate_events(events) -> dict[str, Any]:
    """Pandera's report on a Spark DataFrame of events: {} when valid, otherwise
    {"SCHEMA"|"DATA": {reason: [{"column", "check", ...}]}}. Data checks are forced on
    (an environment's PANDERA_VALIDATION_DEPTH cannot turn them off here)."""
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        out = HourEvents.validate(check_obj=events)
    return {k: {r: list(v) for r, v in d.items()} for k, d in dict(out.pandera.errors).items()}


def failed_pandera_checks(errors: dict[str, Any]) -> list[str]:
    """`column: check` of every failure in a pandera.pyspark error report, sorted."""
    out = set()
    for by_reason in errors.values():
        for items in by_reason.values():
            for item in items:
                column = item.get("column")
                where = "" if column in (None, HourEvents.Config.name) else f"{column}: "
                out.add(f"{where}{item.get('check')}")
    return sorted(out)


BYTES_HOURLY_SCHEMA = pa.DataFrameSchema(
    {
        "timestamp": pa.Column("datetime64[us]", nullable=False, coerce=True),
        "id": pa.Column(str, nullable=False, coerce=True, checks=pa.Check.str_length(min_value=1)),
        "value": pa.Column("int64", checks=pa.Check.ge(0), nullable=False),
        "type": pa.Column(str, checks=pa.Check.isin(BATCH_TYPES), nullable=False, coerce=True),
    },
    unique=["timestamp", "id", "type"],
    name="bytes_hourly",
)


def quota_schema(known_emails: Sequence[str]) -> pa.DataFrameSchema:
    """user_quota_limit rows: usage strictly over quota, email a known user's."""
    return pa.DataFrameSchema(
        {
            "email": pa.Column(
                str, checks=pa.Check.isin(list(known_emails)), nullable=False, coerce=True
            ),
            "usage": pa.Column("int64", checks=pa.Check.ge(0), nullable=False),
            "quota": pa.Column("int64", checks=pa.Check.ge(0), nullable=False),
            "timestamp": pa.Column("datetime64[us]", nullable=False, coerce=True),
        },
        checks=pa.Check(lambda df: df["usage"] > df["quota"], name="usage_over_quota"),
        unique=["timestamp", "email"],
        name="user_quota_limit",
    )


@dataclass
class Outcome:
    """The verdict of one check over all hours of a run."""

    passed: bool
    failing_rows: int = 0
    example: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"failing_rows": self.failing_rows}
        if self.example is not None:
            meta["example"] = str(self.example)[:500]
        meta.update(self.details)
        return meta


def _pandera(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> Outcome:
    """Validate lazily; report the number of failing rows and the first one."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        idx = [int(i) for i in cases["index"].dropna().unique()] if "index" in cases else []
        first = cases.iloc[0]
        example: dict[str, Any] = {"check": str(first["check"])}
        if idx:
            row = frame.loc[idx[0]].to_dict()
            example["row"] = {k: str(v) for k, v in row.items()}
        else:
            example["failure_case"] = str(first["failure_case"])
        checks = sorted({str(c) for c in cases["check"]})
        return Outcome(
            False,
            failing_rows=len(idx) if idx else len(cases),
            example=example,
            details={"failed_checks": ", ".join(checks)[:500]},
        )
    return Outcome(True)


def bytes_frame(results: Sequence[HourResult]) -> pd.DataFrame:
    rows = [r for res in results for r in res.bytes_rows]
    frame = pd.DataFrame(rows, columns=["timestamp", "id", "value", "type"])
    return frame.astype({"value": "int64"})


def quota_frame(results: Sequence[HourResult]) -> pd.DataFrame:
    rows = [r for res in results for r in res.quota_rows]
    frame = pd.DataFrame(rows, columns=["email", "usage", "quota", "timestamp"])
    return frame.astype({"usage": "int64", "quota": "int64"})


def check_events(
    results: Sequence[HourResult], schema_errors: dict[str, Any], example: Any = None
) -> Outcome:
    """Pandera's verdict on the hour's events (`schema_errors` from `validate_events`),
    with the exact counters for the number of failing rows; and Spark read every row the
    manifest says the hour's files hold. The counters must agree with Pandera: a
    disagreement fails the check too (one of the two is wrong)."""
    bad_hours = {
        f"{r.hour:%Y-%m-%d %H:00}": {
            "null_rows": r.null_rows,
            "negative_bytes_rows": r.negative_rows,
            "outside_hour_rows": r.outside_rows,
        }
        for r in results
        if r.event_failures
    }
    missing = {
        f"{r.hour:%Y-%m-%d %H:00}": {"manifest_rows": r.manifest_rows, "read_rows": r.events}
        for r in results
        if r.manifest_rows != r.events
    }
    failing = sum(r.event_failures for r in results)
    failing += sum(abs(r.manifest_rows - r.events) for r in results)
    failed_checks = failed_pandera_checks(schema_errors)
    details: dict[str, Any] = {
        "validator": "pandera.pyspark HourEvents",
        "pandera_passed": not schema_errors,
        "events": sum(r.events for r in results),
        "null_rows": sum(r.null_rows for r in results),
        "negative_bytes_rows": sum(r.negative_rows for r in results),
        "outside_hour_rows": sum(r.outside_rows for r in results),
    }
    if failed_checks:
        details["failed_checks"] = ", ".join(failed_checks)[:500]
    if bad_hours:
        details["bad_hours"] = str(bad_hours)[:500]
    if missing:
        details["manifest_mismatch"] = str(missing)[:500]
    return Outcome(not schema_errors and failing == 0, failing, example, details)


def check_bytes_hourly(results: Sequence[HourResult]) -> Outcome:
    """Schema of the rows (Pandera), then per hour: antenna and app sums equal the
    hour's bytes as recorded by the lake writer, email sum equals it minus unknown users."""
    outcome = _pandera(BYTES_HOURLY_SCHEMA, bytes_frame(results))
    mismatched = {}
    for r in results:
        a, e, p = r.type_sum(ANTENNA), r.type_sum(EMAIL), r.type_sum(APP)
        expected = r.manifest_bytes
        if (a, p, e) != (expected, expected, expected - r.unknown_bytes):
            mismatched[f"{r.hour:%Y-%m-%d %H:00}"] = {
                "lake_bytes": expected,
                ANTENNA: a,
                APP: p,
                EMAIL: e,
                "unknown_device_bytes": r.unknown_bytes,
            }
    if mismatched:
        outcome.passed = False
        outcome.details["sum_mismatch_hours"] = str(mismatched)[:500]
        if outcome.example is None:
            outcome.example = next(iter(mismatched.items()))
    outcome.details["rows"] = sum(len(r.bytes_rows) for r in results)
    return outcome


def check_quota(results: Sequence[HourResult], known_emails: Sequence[str]) -> Outcome:
    outcome = _pandera(quota_schema(known_emails), quota_frame(results))
    outcome.details["rows"] = sum(len(r.quota_rows) for r in results)
    return outcome
