"""What the stream sensor should do, as a pure function of the runs it can see.

`ANTENNA_STREAM_WORKERS=N` keeps N runs of the stream job alive in one consumer group,
one consumer per run, each tagged with its worker index. A run per consumer keeps the
Dagster layer simple (the in-process executor, no child processes to orphan) and lets
each worker be restarted, failed or terminated on its own; Kafka spreads the
partitions across the members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from antenna_platform.config import DEFAULT_STREAM_STALE_SECONDS

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 600.0


@dataclass(frozen=True)
class ActiveRun:
    run_id: str
    status: str  # QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING
    worker: int | None
    last_activity: float | None  # epoch s of its newest event log record (or start)


@dataclass(frozen=True)
class FinishedRun:
    status: str  # SUCCESS, FAILURE, CANCELED
    end_time: float | None


@dataclass
class Plan:
    stale: list[str] = field(default_factory=list)  # STARTED runs to mark failed
    launch: list[int] = field(default_factory=list)  # worker indices to start
    reason: str = ""


def backoff_s(recent: Sequence[FinishedRun], now: float) -> float:
    """Seconds still to wait: 30 s after 2 failures in a row, doubling, at most 10 min."""
    fails = 0
    for r in recent:  # newest first
        if r.status != "FAILURE":
            break
        fails += 1
    if fails < 2 or recent[0].end_time is None:
        return 0.0
    wait = min(BACKOFF_BASE_S * 2 ** (fails - 2), BACKOFF_MAX_S)
    return max(0.0, recent[0].end_time + wait - now)


def plan_stream_runs(
    active: Sequence[ActiveRun],
    recent: Sequence[FinishedRun],
    workers: int,
    now: float,
    stale_after_s: float = DEFAULT_STREAM_STALE_SECONDS,
) -> Plan:
    plan = Plan()
    alive: list[ActiveRun] = []
    for run in active:
        quiet = now - run.last_activity if run.last_activity is not None else None
        if run.status == "STARTED" and (quiet is None or quiet > stale_after_s):
            plan.stale.append(run.run_id)
        else:
            alive.append(run)
    taken = {r.worker for r in alive if r.worker is not None}
    untagged = sum(1 for r in alive if r.worker is None)
    missing = [i for i in range(workers) if i not in taken][untagged:]
    if not missing:
        plan.reason = f"{len(alive)} stream run(s) going for {workers} worker(s): " + ", ".join(
            f"{r.run_id[:8]} {r.status}" for r in alive
        )
        return plan
    wait = backoff_s(recent, now)
    if wait > 0:
        plan.reason = f"stream runs failed repeatedly; backing off {wait:.0f}s more"
        return plan
    plan.launch = missing
    return plan
