"""Which incident a failed run is, and which open incidents a later success clears.

Keys (see `alerts`): `stream:w<i>` for stream worker i, `check:<hours>` for a batch run
stopped by a blocking check, `batch:<hours>` for any other failed batch run, and
`run:<job or assets>` for the rest. `<hours>` is `first...last` partition keys, so an
incident of a range clears once every hour of it has been computed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from antenna_platform.batch_triggers import partitions_of

STREAM_JOB = "device_stream_job"
BATCH_JOB = "hourly_batch_job"
ASSET_JOB = "__ASSET_JOB"  # Dagster's name for runs of an asset selection (UI, CLI, backfills)
BATCH_ASSETS = frozenset({"bytes_hourly", "user_quota_limit"})
WORKER_TAG = "antenna/stream_worker"  # set by device_stream_sensor
HOUR_FORMAT = "%Y-%m-%d-%H:%M"
MAX_TEXT = 600


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    job_name: str
    asset_keys: frozenset[str]  # user strings of the run's asset selection (may be empty)
    tags: Mapping[str, str]

    @property
    def is_batch(self) -> bool:
        return self.job_name == BATCH_JOB or bool(self.asset_keys & BATCH_ASSETS)

    @property
    def target(self) -> str:
        """The job, or for an asset-selection run its sorted assets."""
        if self.job_name == ASSET_JOB and self.asset_keys:
            return ",".join(sorted(self.asset_keys))
        return self.job_name


@dataclass(frozen=True)
class Incident:
    key: str
    title: str
    text: str


def stream_key(worker: int | None) -> str:
    return f"stream:w{worker or 0}"


def worker_of(tags: Mapping[str, str]) -> int | None:
    raw = tags.get(WORKER_TAG)
    return int(raw) if raw is not None and raw.isdigit() else None


def hours_span(tags: Mapping[str, str]) -> str:
    span = partitions_of(tags)
    return "unpartitioned" if span is None else f"{span[0]}...{span[1]}"


def span_hours(span: str) -> list[str]:
    """Every hourly partition key of `first...last` (empty for anything else)."""
    first, sep, last = span.partition("...")
    try:
        start, end = datetime.strptime(first, HOUR_FORMAT), datetime.strptime(last, HOUR_FORMAT)  # noqa: DTZ007
    except ValueError:
        return []
    out = []
    while sep and start <= end:
        out.append(start.strftime(HOUR_FORMAT))
        start += timedelta(hours=1)
    return out


def for_failure(run: RunInfo, failed_checks: Sequence[str], error: str) -> Incident:
    """The incident a failed run belongs to."""
    short = run.run_id[:8]
    text = error.strip()[:MAX_TEXT]
    if run.job_name == STREAM_JOB:
        worker = worker_of(run.tags)
        return Incident(
            stream_key(worker), f"stream worker {worker or 0}: run {short} failed", text
        )
    if run.is_batch:
        span = hours_span(run.tags)
        if failed_checks:
            names = ", ".join(sorted(set(failed_checks)))
            return Incident(
                f"check:{span}",
                f"blocking check {names} failed for hours {span} (run {short}); "
                "nothing written, previous rows kept",
                text,
            )
        return Incident(f"batch:{span}", f"batch run {short} failed for hours {span}", text)
    return Incident(f"run:{run.target}", f"run {short} of {run.target} failed", text)


def cleared_by_success(
    run: RunInfo,
    open_keys: Iterable[str],
    computed_since: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """Open incident keys that the success of `run` clears.

    `computed_since[key]` holds the hours of bytes_hourly materialized since incident `key`
    opened: a batch or check incident clears when that covers all its hours (whatever runs
    computed them). A `run:` incident clears with a success of the same target, or of an
    asset selection that includes its assets.
    """
    out = []
    for key in open_keys:
        kind, _, rest = key.partition(":")
        if kind in ("batch", "check") and run.is_batch:
            hours = span_hours(rest)
            done = (computed_since or {}).get(key, set())
            if (hours and set(hours) <= done) or (not hours and rest == hours_span(run.tags)):
                out.append(key)
        elif kind == "run" and not run.is_batch and run.job_name != STREAM_JOB:
            if rest == run.target or (
                run.job_name == ASSET_JOB and set(rest.split(",")) <= run.asset_keys
            ):
                out.append(key)
    return out
