"""Column schemas of the platform's tables, shown on their assets (`dagster/column_schema`).

They describe the DDL in antenna_platform/warehouse.py (a unit test compares them).
"""

import dagster as dg


def _col(name: str, type_: str, description: str) -> dg.TableColumn:
    return dg.TableColumn(name, type_, description=description)


BYTES_SCHEMA = dg.TableSchema(
    columns=[
        _col("timestamp", "timestamp", "start of the 5-minute window (UTC)"),
        _col("id", "text", "antenna id, user (device) id or app name, by type"),
        _col("value", "bigint", "bytes in the window"),
        _col("type", "text", "antenna_total_bytes, user_total_bytes or app_total_bytes"),
    ]
)

BYTES_HOURLY_SCHEMA = dg.TableSchema(
    columns=[
        _col("timestamp", "timestamp", "start of the hour (UTC)"),
        _col("id", "text", "antenna id, user email or app name, by type"),
        _col("value", "bigint", "bytes in the hour"),
        _col("type", "text", "antenna_total_bytes, email_total_bytes or app_total_bytes"),
    ]
)

USER_QUOTA_LIMIT_SCHEMA = dg.TableSchema(
    columns=[
        _col("email", "text", "the user over quota"),
        _col("usage", "bigint", "bytes the user sent in the hour"),
        _col("quota", "bigint", "the user's hourly quota in bytes (usage > quota)"),
        _col("timestamp", "timestamp", "start of the hour (UTC)"),
    ]
)
