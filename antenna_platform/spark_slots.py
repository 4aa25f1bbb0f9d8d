"""Spark slots: at most N batch computations at once, enforced by Postgres itself.

The batch step runs in Dagster's pool `spark`, and Dagster queues runs for it. But on
Postgres, Dagster's slot claim is not atomic (its queries run in autocommit, so the
`select ... for update skip locked` of a slot holds no lock by the time the slot row is
updated): two in-process runs that reach the step at the same moment (two
`dagster asset materialize` backfills started together) can both be handed the one slot
and run Spark side by side. This guard makes the limit hold whatever Dagster decides:
a slot is a session-level advisory lock `(SPARK_SLOT_LOCK, i)`, `i < limit`, held on
its own connection for the length of the computation. Postgres releases it when the
holder's connection ends, so a killed run never keeps a slot (and a computation whose
slot session is lost, Postgres restarting, finishes without one: the limit is a
resource bound, not a correctness guard; each hour's write takes its own lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

SPARK_POOL = "spark"  # the Dagster pool of the batch's Spark step
SPARK_SLOT_LOCK = 771005  # advisory-lock namespace of "a batch computation is running"


def take_free_slot(conn: psycopg.Connection, limit: int) -> int | None:
    """Take the first free slot of `limit` on `conn` (autocommit); its number, or None."""
    for slot in range(limit):
        row = conn.execute(
            "select pg_try_advisory_lock(%s, %s)", (SPARK_SLOT_LOCK, slot)
        ).fetchone()
        if row and row[0]:
            return slot
    return None


@contextmanager
def spark_slot(
    conn: psycopg.Connection,
    limit: int,
    *,
    poll_s: float = 2.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> Iterator[int]:
    """Hold one of `limit` Spark slots while the block runs; wait (polling) until one is free.

    `conn` must be an autocommit connection used for nothing else: the slot lives as long
    as its session. Logs once when it has to wait, then when it holds the slot.
    """
    if limit < 1:
        raise ValueError(f"the Spark slot limit must be at least 1, got {limit}")
    started = time.monotonic()
    slot = take_free_slot(conn, limit)
    if slot is None:
        log(
            f"waiting for a Spark slot: all {limit} are held by other batch runs "
            f"(pool spark, limit {limit})"
        )
        while slot is None:
            time.sleep(poll_s)
            slot = take_free_slot(conn, limit)
    log(f"holding Spark slot {slot} of {limit} (waited {time.monotonic() - started:.1f} s)")
    try:
        yield slot
    finally:
        try:
            conn.execute("select pg_advisory_unlock(%s, %s)", (SPARK_SLOT_LOCK, slot))
        except psycopg.Error:
            pass  # the session is gone (Postgres restarted), and its locks with it
