"""Data-quality rules of the batch layer, as Pandera schemas and plain checks.

The hour's events are checked in Spark, from counters computed in the batch's one
scan (null fields, negative bytes, time outside the file's hour): exact, and free at
10M events. Pandera's PySpark backend cannot be used here: `pandera.pyspark` imports
`pyspark.pandas`, which fails with the pinned pandas 3 (`DateOffset` import error).
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
    warnings.simplefilter("ignore")  # pyspark warns about pandas 3 when pandera probes it
    import pandera.pandas as pa


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


def check_events(results: Sequence[HourResult], example: Any = None) -> Outcome:
    """No null field, bytes >= 0, every timestamp inside its file's hour; and Spark read
    every row the manifest says the hour's files hold."""
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
    details: dict[str, Any] = {
        "events": sum(r.events for r in results),
        "null_rows": sum(r.null_rows for r in results),
        "negative_bytes_rows": sum(r.negative_rows for r in results),
        "outside_hour_rows": sum(r.outside_rows for r in results),
    }
    if bad_hours:
        details["bad_hours"] = str(bad_hours)[:500]
    if missing:
        details["manifest_mismatch"] = str(missing)[:500]
    return Outcome(failing == 0, failing, example, details)


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
