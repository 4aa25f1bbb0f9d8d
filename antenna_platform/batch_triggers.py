"""When the batch computes an hour: the rules, free of Dagster.

The stream reports an hour (a `device_events` partition materialization) once its low
watermark has passed the hour's end and the hour's files are compacted, and again when
late events change it. Each report of hour H at time t is settled by exactly one of:

- a batch run covering H is queued or running: wait (the report stays pending: that run
  may have read the manifest before the late files landed, so it is judged when it ends);
- H was materialized by a run that started at or after t: done (that run read them);
- otherwise: run H now (never computed: the "sooner batch"; computed before t: the
  late-data rerun).

The hourly schedule at :10 applies the same rule to the hour that just closed, so it
only runs an hour the reports did not already bring in (an hour with no events is never
reported, and still gets its empty result).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

# the tags Dagster puts on a run of one partition, or of a range of partitions
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class Decision(Enum):
    RUN = "run"
    WAIT = "wait"
    DONE = "done"


@dataclass(frozen=True)
class Report:
    """A report of an hour by the stream: its event's storage id and time (epoch s)."""

    partition: str
    storage_id: int
    reported_at: float


def decide(report_at: float | None, computed_by_run_started: float | None, busy: bool) -> Decision:
    """The rule above. `report_at` None means "never reported" (the schedule's case): an
    hour already computed is done, one never computed runs."""
    if busy:
        return Decision.WAIT
    if computed_by_run_started is not None and (
        report_at is None or computed_by_run_started >= report_at
    ):
        return Decision.DONE
    return Decision.RUN


def run_covers(tags: Mapping[str, str], partition: str) -> bool:
    """Whether a run with these tags computes `partition` (hourly keys sort as times)."""
    if tags.get(PARTITION_TAG) is not None:
        return tags[PARTITION_TAG] == partition
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    return start is not None and end is not None and start <= partition <= end


def partitions_of(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """(first, last) partition a run covers, or None for an unpartitioned run."""
    if tags.get(PARTITION_TAG) is not None:
        return tags[PARTITION_TAG], tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start is not None and end is not None:
        return start, end
    return None


@dataclass
class Cursor:
    """The sensor's cursor: the last report read, and reports not settled yet."""

    after: int = 0
    pending: dict[str, Report] = field(default_factory=dict)

    def add(self, reports: Iterable[Report]) -> None:
        """Read new reports (ascending storage ids); the newest report of an hour wins."""
        for r in reports:
            self.after = max(self.after, r.storage_id)
            old = self.pending.get(r.partition)
            if old is None or r.storage_id > old.storage_id:
                self.pending[r.partition] = r

    def dumps(self) -> str:
        return json.dumps(
            {
                "after": self.after,
                "pending": {p: [r.storage_id, r.reported_at] for p, r in self.pending.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def loads(cls, raw: str) -> Cursor:
        """Also reads the old cursor format, a bare storage id."""
        if raw.strip().isdigit():
            return cls(after=int(raw))
        data = json.loads(raw)
        pending = {p: Report(p, int(sid), float(at)) for p, (sid, at) in data["pending"].items()}
        return cls(after=int(data["after"]), pending=pending)
