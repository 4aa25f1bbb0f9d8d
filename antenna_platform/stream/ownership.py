"""Partition ownership: who may write, commit, compact or delete for a Kafka partition.

Kafka's assignment alone is a belief: a worker that paused (a stop-the-world stall, a
suspended process, a run its sensor gave up on) still believes in an assignment the
group has since handed to another member. So each assignment is turned into a *claim*
recorded in Postgres (`partition_claims`) before any record of the partition is kept:

- a claim bumps the partition's owner epoch (strictly increasing) and records the
  consumer-group generation that made the assignment (KIP-447's fencing identity) and
  the worker that holds it;
- a claim is refused when the newest one comes from a newer generation, or from the same
  generation but another worker, and its holder proved it was alive within the lease
  (`LEASE_S`); so a woken worker cannot steal partitions back (no ping-pong). A released
  claim (clean stop) or an expired lease (its holder is gone) may be taken by anyone, so
  a group whose generations restart (a recreated group, a restarted broker) is not stuck;
- every commit, compaction swap and cleanup checks, inside the transaction that does the
  work, that the caller still holds the newest epoch (`sinks.check_claims`). A worker with
  an older claim can do nothing; it drops its state and waits for its next assignment.

Files carry their writer's epoch in their name (`lake`), so cleanup removes only files of
writers that are provably fenced. The decision is `decide`, a pure function; `Ownership`
keeps the assigned partitions (from the rebalance listener), the claims held, and where
each partition's next commit must find its offsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import psycopg

from antenna_platform import lake
from antenna_platform.stream import sinks

# A holder that has not renewed its claim for this long (it renews with every commit and
# every few seconds when idle) is taken for gone. Above the consumer's max poll interval:
# a live worker that polls in time also renews in time.
LEASE_S = 45.0


@dataclass(frozen=True)
class Refusal:
    """Why a claim was refused: the newest claim's holder is alive and at least as new."""

    holder: str
    generation: int  # the holder's
    epoch: int
    lease_age_s: float
    mine: int  # the generation of the refused assignment

    def __str__(self) -> str:
        return (
            f"held by {self.holder} since generation {self.generation} (epoch {self.epoch}, "
            f"renewed {self.lease_age_s:.0f}s ago); this assignment is from generation "
            f"{self.mine}: this worker was probably paused while the group moved on"
        )


def decide(
    stored: sinks.StoredClaim | None, owner: str, generation: int, lease_s: float = LEASE_S
) -> Refusal | None:
    """None when `owner`, assigned the partition in `generation`, may claim it; else why not."""
    if stored is None or stored.released or stored.owner in ("", owner):
        return None
    if generation > stored.generation or stored.lease_age_s > lease_s:
        return None
    return Refusal(stored.owner, stored.generation, stored.epoch, stored.lease_age_s, generation)


@dataclass(frozen=True)
class PartitionState:
    """A claimed partition: the claim's epoch and where its next commit starts."""

    epoch: int
    fence_offset: int | None  # stored next_offset the next commit must find (None: no row)
    start_offset: int  # first offset to keep
    topic_id: str | None  # the broker's topic id the offsets belong to
    max_event_ts: int | None  # committed max event time (the window watermark's base)


class Log(Protocol):
    """What ownership needs from the consumer (a fake in unit tests)."""

    def topic_id(self) -> str | None: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def seek_to_beginning(self, partition: int) -> None: ...
    def end_offsets(self, partitions: list[int]) -> dict[int, int]: ...
    def pause(self, partitions: list[int]) -> None: ...
    def resume(self, partitions: list[int]) -> None: ...


@dataclass
class SyncResult:
    claimed: dict[int, PartitionState]
    refused: dict[int, Refusal]
    cleanup: lake.Cleanup | None
    rewound: dict[
        int, tuple[int, str | None, str | None]
    ]  # recreated topics: p -> (stored, old id, new id)


class Ownership:
    """Assigned partitions, the claims held on them, and their commit positions.

    Touched by the main loop and by the rebalance listener, which kafka-python runs while
    the main thread waits inside `poll()` or `close()`; never by the committer thread.
    """

    def __init__(self, group: str, topic: str, owner: str) -> None:
        self.group, self.topic, self.owner = group, topic, owner
        self.assigned: dict[int, int] = {}  # partition -> generation of its assignment
        self.held: dict[int, PartitionState] = {}

    # -- from the rebalance listener
    def assign(self, partitions: Iterable[int], generation: int) -> None:
        for p in partitions:
            self.assigned[p] = generation
            self.held.pop(p, None)  # a new assignment is claimed anew

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.assigned.pop(p, None)
            self.held.pop(p, None)

    # -- from the loop
    def pending(self) -> list[int]:
        """Assigned partitions not claimed yet (or no longer: fenced, failed, refused)."""
        return sorted(p for p in self.assigned if p not in self.held)

    def unclaim(self, partitions: Iterable[int] | None = None) -> None:
        """Forget claims (after a failure or a fence): they are claimed again before use."""
        for p in list(self.held) if partitions is None else partitions:
            self.held.pop(p, None)

    def epochs(self) -> dict[int, int]:
        return {p: s.epoch for p, s in self.held.items()}

    def advance(self, states: Mapping[int, PartitionState]) -> None:
        """Adopt what a commit made durable, for the partitions still held by that claim."""
        for p, new in states.items():
            cur = self.held.get(p)
            if cur is not None and cur.epoch == new.epoch:
                self.held[p] = new

    def sync(
        self,
        conn: psycopg.Connection,
        log: Log,
        root: Path,
    ) -> SyncResult:
        """Claim the pending partitions, clean their lake files, seek to their offsets.

        Call with nothing in hand and nothing in flight. Refused partitions stay pending
        (paused on the consumer) and are tried again on the next call.
        """
        parts = self.pending()
        out = SyncResult({}, {}, None, {})
        if not parts:
            return out
        with conn.transaction():
            stored = sinks.lock_claims(conn, self.group, self.topic, parts)
            epochs: dict[int, int] = {}
            by_generation: dict[int, dict[int, int]] = {}
            for p in parts:
                why = decide(stored.get(p), self.owner, self.assigned[p])
                if why is not None:
                    out.refused[p] = why
                    continue
                epochs[p] = stored[p].epoch + 1
                by_generation.setdefault(self.assigned[p], {})[p] = epochs[p]
            for generation, claims in by_generation.items():
                sinks.write_claims(conn, self.group, self.topic, claims, generation, self.owner)
        if out.refused:
            log.pause(sorted(out.refused))
        if not epochs:
            return out
        # cleanup is checked like any other write: inside a transaction holding the claims
        with conn.transaction():
            sinks.check_claims(conn, self.group, self.topic, epochs)
            out.cleanup = lake.clean_partitions(conn, root, epochs)
        offsets = sinks.load_offsets(conn, self.group, self.topic, list(epochs))
        current = log.topic_id()
        changed = [
            p
            for p, s in offsets.items()
            if s.topic_id and current and s.topic_id != current and p in epochs
        ]
        # rewind only on two signals: a new topic id AND a log that now ends below the
        # stored offset; a spurious id change alone must never re-read committed data
        ends = log.end_offsets(changed) if changed else {}
        for p, epoch in epochs.items():
            s = offsets.get(p)
            if s is None:
                log.seek_to_beginning(p)
                state = PartitionState(epoch, None, 0, current, None)
            elif p in changed and ends.get(p) is not None and ends[p] < s.next_offset:
                log.seek_to_beginning(p)
                out.rewound[p] = (s.next_offset, s.topic_id, current)
                state = PartitionState(epoch, s.next_offset, 0, current, s.max_event_ts)
            else:
                log.seek(p, s.next_offset)
                state = PartitionState(
                    epoch, s.next_offset, s.next_offset, current or s.topic_id, s.max_event_ts
                )
            self.held[p] = state
            out.claimed[p] = state
        log.resume(sorted(epochs))
        return out

    def renew(self, conn: psycopg.Connection) -> list[int]:
        """Prove we are alive (lease) and find claims we lost; returns the lost partitions."""
        epochs = self.epochs()
        if not epochs:
            return []
        with conn.transaction():
            stored = sinks.lock_claims(conn, self.group, self.topic, list(epochs))
            lost = [p for p, e in epochs.items() if stored[p].epoch != e or stored[p].released]
            keep = [p for p in epochs if p not in lost]
            if keep:
                sinks.renew_leases(conn, self.group, self.topic, keep)
        self.unclaim(lost)
        return lost

    def release(self, conn: psycopg.Connection) -> None:
        """On a clean stop: give the claims up so the next worker need not wait."""
        epochs = self.epochs()
        if epochs:
            with conn.transaction():
                sinks.release_claims(conn, self.group, self.topic, epochs)
        self.held.clear()


def with_offsets(state: PartitionState, next_offset: int, max_ts: int | None) -> PartitionState:
    """The state after a commit that moved the partition to `next_offset`."""
    return replace(
        state,
        fence_offset=next_offset,
        start_offset=next_offset,
        max_event_ts=max_ts if max_ts is not None else state.max_event_ts,
    )
