"""The speed layer's loop: Kafka -> Parquet lake + `bytes`, exactly once.

The parts, and who calls whom (imports point one way):
  engine (this loop) -> listener (rebalances) -> ownership (claims, offsets) and
  checkpoint (batch in hand, commit steps, committer thread) -> sinks (SQL) and lake.

The loop:
  1. claims the partitions Kafka assigned (`Ownership.sync`: a new owner epoch in
     Postgres, the partitions' lake files made to agree with the manifest, a seek to the
     stored offsets), before it keeps any of their records;
  2. polls, and adds the records to the checkpoint (parsed as they arrive);
  3. when the batch is full (`max_batch_events` valid events, or within an eighth of it;
     4 times as many records; GROUP_COMMIT times that while the previous commit still
     runs; `MAX_BATCH_BYTES` of values), old (`max_batch_s`) or the topic goes quiet,
     freezes it and hands it to the committer thread, then polls the next batch while
     that commits;
  4. every few seconds, with nothing in flight: renews its claims (and learns of lost
     ones), compacts closed hours, reports closed hours, rereads user_metadata, checks
     the topic was not recreated.
Any failure to commit (Postgres down, lake not writable, a newer claim) drops the batch
in hand and in flight, backs off and claims the partitions again: offsets never moved
past what was written, so nothing is skipped or doubled. A failure that lasts
`give_up_after_s` fails the run (its sensor starts another).

Stopping (SIGTERM, Dagster's terminate, `should_stop`): the batch in hand is committed
within `stop_budget_s` or dropped (its offsets never moved), the claims are released and
the consumer closed, each bounded, so a stop ends in seconds even when Postgres or the
broker is gone.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

from antenna_platform.config import Settings
from antenna_platform.stream import columnar, maintenance, sinks
from antenna_platform.stream.checkpoint import (
    Checkpoint,
    CommitResult,
    Committer,
    LakeWriteError,
)
from antenna_platform.stream.consumer import KafkaLog, make_consumer, topic_id
from antenna_platform.stream.listener import RebalanceListener
from antenna_platform.stream.ownership import Ownership
from antenna_platform.warehouse import connect

__all__ = ["Hooks", "LakeWriteError", "StreamEngine", "StreamFailed", "StreamOptions"]

log = logging.getLogger(__name__)

# Every polled record allocates a handful of short-lived objects (kafka-python's record,
# orjson's dict and strings): with CPython's default gen-0 threshold (700) the collector
# runs thousands of times a second and, measured, takes a fifth of the engine's time.
GC_THRESHOLDS = (100_000, 50, 100)

# a batch holds max_batch_events valid events (a poll after a flood may take it to twice
# its room: `_poll_size`) and at most this many times as many records (a flood of rejects
# adds dead-letter rows, not commits, until this cap)
MAX_RECORDS_PER_EVENT_SLOT = 4

# a batch whose values add up to this many bytes is full, whatever it counts: a flood of
# large messages (up to the contract's 1 MB each, rejects kept whole in `dead_letter`)
# would otherwise fill a batch for `max_batch_s`, hundreds of MB held in memory and sent
# in one COPY. Clean traffic fills a batch of 40,000 events with about 7 MB.
MAX_BATCH_BYTES = 64 * 1024 * 1024

# a batch whose room left is below 1/FULL_WITHIN of its limit counts as full. A poll sized
# by the room left alone (the limit is on valid events, and a poll cannot tell them from
# rejects before parsing) brings half the room's worth of valid events under a 1:1 flood,
# so polls halved to the last event, 13 of them a batch of 10,000 events, each paying a
# poll's and a parse's fixed cost; this made it 3 or 4 (and `_poll_size` 1 or 2).
FULL_WITHIN = 8

# Under a flood a poll asks for more records than the room left, by the records a valid
# event came with in the last poll of FLOOD_SAMPLE records or more (`_poll_size`: at most
# FLOOD_GROWTH times the room), when rejects were at least FLOOD_SHARE of it. Why: a
# poll sized by the room alone brought half of it under a 1:1 flood, and the commit in
# flight ended meanwhile, so batches went to commit half full: 56 to 64 commits for
# 1,000,000 good events against 32 or 33 for clean traffic, each with its fixed cost
# (files, one transaction). Otherwise (clean traffic, a few rejects, small polls) a poll
# asks for the room, as before, and a batch does not pass its limit (but by the one
# record a poll asks for at least). A poll right after a flood ends may bring up to
# FLOOD_GROWTH times the room in valid events.
FLOOD_SHARE = 1 / 16
FLOOD_SAMPLE = 64
FLOOD_GROWTH = 2

# a loop turn this much longer than a poll means the process was stopped (SIGSTOP, a VM
# pause) or starved: the idle clock starts again (a woken worker first rejoins its group)
STALL_S = 5.0

# while the previous commit is still running, a full batch keeps filling up to this many
# times its limits instead of waiting for it (group commit): a commit's fixed cost (files,
# fsyncs, one transaction) is then spread over more records when commits are the bottleneck
GROUP_COMMIT = 4

# server-side limits on the stream's Postgres sessions: a worker paused inside a
# transaction loses it (and its row locks) instead of blocking the partition's next owner
SESSION = {
    "idle_in_transaction_session_timeout": "15s",
    "lock_timeout": "10s",
    "statement_timeout": "30s",
}


@dataclass(frozen=True)
class StreamOptions:
    max_batch_events: int = 10_000
    max_batch_s: float = 1.0
    poll_ms: int = 100
    stop_when_idle_s: float | None = None  # end cleanly after this long without a message
    max_events: int | None = None  # end after committing this many records
    report_every_s: float = 5.0  # heartbeat log + closed-hour reports + claim renewal
    metadata_refresh_s: float = 30.0
    compact_every_s: float = 10.0
    compact_grace_s: int = 60  # compact an hour once event time is this far past its end
    retry_max_s: float = 5.0  # stays below max_poll_interval_ms
    give_up_after_s: float = 300.0  # failing this long without a commit ends the run
    stop_budget_s: float = 5.0  # a stop commits the batch in hand within this, or drops it
    # a stream transaction open this long belongs to a frozen worker (sinks.reap_stuck_sessions)
    stuck_transaction_s: float = 45.0


class Hooks:
    """Where the engine reports; the Dagster op overrides both methods."""

    def log(self, msg: str) -> None:
        log.info(msg)

    def hour_closed(self, hour: datetime, metadata: dict[str, int]) -> None:
        log.info("hour %s: %s", hour, metadata)


@dataclass
class StreamStats:
    records: int = 0  # committed (valid + rejected)
    events: int = 0
    rejects: int = 0
    late: int = 0
    unknown: int = 0
    batches: int = 0
    failures: int = 0
    fenced: int = 0
    refused: int = 0  # claims refused (a newer generation holds the partition)
    hours_reported: int = 0
    compactions: int = 0
    stop_reason: str = ""
    errors: list[str] = field(default_factory=list)


class StreamFailed(RuntimeError):
    """Commits kept failing for `give_up_after_s`: the run fails and its sensor restarts it."""


def worker_id() -> str:
    """This worker's identity in `partition_claims` (unique per engine)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class StreamEngine:
    def __init__(
        self, settings: Settings, options: StreamOptions | None = None, hooks: Hooks | None = None
    ) -> None:
        self.settings = settings
        self.opts = options or StreamOptions()
        self.hooks = hooks or Hooks()
        self.root = Path(settings.lake_dir)
        self.group, self.topic = settings.consumer_group, settings.topic
        self.worker = worker_id()
        self.ownership = Ownership(self.group, self.topic, self.worker)
        self.checkpoint = Checkpoint(
            self.group, self.topic, settings.max_clock_skew_seconds, settings.watermark_seconds
        )
        self.stats = StreamStats()
        self.conn: psycopg.Connection | None = None
        self.consumer = None
        self.committer: Committer | None = None
        self.compactor = maintenance.Compactor(
            self._connect,
            self.root,
            self.group,
            self.topic,
            self.opts.compact_grace_s,
            lambda exc: self._error("compaction failed (will retry)", exc),
        )
        self.listener: RebalanceListener | None = None
        self.fault: Callable[[str], None] = lambda step: None  # tests inject failures
        self.make_consumer = make_consumer  # tests hand in a fake consumer
        self._backoff = 0.0
        self._failing_since: float | None = None
        self._last_refused: dict[int, tuple[str, int, int]] = {}
        self._next_claim = 0.0
        self.last_activity = time.monotonic()
        self._last_mix = (0, 0)  # (records, valid events) of the last poll of FLOOD_SAMPLE+

    # ------------------------------------------------------------------ plumbing
    def _connect(self, timeout: int = 5) -> psycopg.Connection:
        session = {**SESSION, "application_name": f"{sinks.APPLICATION}:{self.worker}"}
        return connect(self.settings, autocommit=True, session=session, connect_timeout=timeout)

    def _connect_quick(self) -> psycopg.Connection:
        return self._connect(timeout=2)

    def _db(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._drop_db()
            self.conn = self._connect()
        return self.conn

    def _drop_db(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self.conn.close()
        self.conn = None

    def _error(self, what: str, exc: BaseException) -> None:
        text = str(exc).strip()
        msg = f"{what}: {type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        self.stats.errors.append(msg)
        del self.stats.errors[:-20]
        self.hooks.log(msg)

    def _adopt(self, result: CommitResult) -> None:
        """A commit is durable: move the claims' positions on and count it."""
        self.ownership.advance(result.states)
        snap, st = result.snapshot, self.stats
        st.batches += 1
        st.events += snap.events
        st.rejects += len(snap.dead)
        st.records += snap.records
        st.late += sum(snap.late.values())
        st.unknown += sum(snap.unknown.values())
        self._backoff = 0.0
        self._failing_since = None

    def _reset(self) -> None:
        """Drop the batch in hand (and in flight) and every claim: claim again, re-read."""
        if self.committer is not None:
            self.committer.abandon()
        self.checkpoint.drop()
        self.ownership.unclaim()
        self._last_mix = (0, 0)  # the partitions' next records may be another mix

    def _failed(self, what: str, exc: BaseException) -> None:
        """A commit, a claim or a resync failed: reset, back off, maybe give up."""
        if isinstance(exc, sinks.FencedError):
            self.stats.fenced += 1
            self._error(f"{what}: fenced, claiming the partitions again", exc)
        else:
            self.stats.failures += 1
            self._drop_db()
            self._error(f"{what} (offsets unchanged), retrying", exc)
            if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
                self._reap()
        self._reset()
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.opts.give_up_after_s:
            last = self.stats.errors[-1] if self.stats.errors else "unknown error"
            raise StreamFailed(
                f"no commit for {self.opts.give_up_after_s:.0f}s, giving up; last error: {last}"
            )
        if not isinstance(exc, sinks.FencedError):
            self._backoff = min(max(self._backoff * 2, 0.25), self.opts.retry_max_s)
            time.sleep(self._backoff)

    def _reap(self) -> None:
        """Blocked by a lock: end the sessions of frozen workers that hold it."""
        try:
            ended = sinks.reap_stuck_sessions(self._db(), self.opts.stuck_transaction_s)
        except Exception as exc:  # noqa: BLE001 - retried with the next failure
            self._error("cannot look for stuck sessions", exc)
            return
        if ended:
            self.hooks.log(
                f"ended {len(ended)} stream session(s) whose transaction was open for over "
                f"{self.opts.stuck_transaction_s:.0f}s (frozen workers holding locks): "
                f"pids {ended}"
            )

    def _settle(self) -> bool:
        """Wait for the commit in flight; False (and reset) if it failed."""
        if self.committer is None:
            return True
        try:
            self.committer.settle()
            return True
        except Exception as exc:  # noqa: BLE001 - handled: re-read from Postgres
            self._failed("batch not committed", exc)
            return False

    # ------------------------------------------------------------------ claims
    def _sync(self) -> None:
        """Claim the assigned partitions that are not held (see Ownership.sync)."""
        if time.monotonic() < self._next_claim or not self._settle():
            return
        pending = self.ownership.pending()
        batch = self.checkpoint.batch
        if batch and set(batch.partitions) & set(pending):
            self._reset()  # never keep records of a partition across its resync
            pending = self.ownership.pending()
        self.checkpoint.close(pending)
        try:
            res = self.ownership.sync(self._db(), KafkaLog(self.consumer, self.topic), self.root)
        except Exception as exc:  # noqa: BLE001
            self._failed("cannot claim the partitions", exc)
            return
        for p, state in res.claimed.items():
            self.checkpoint.open(p, state)
        if res.claimed:
            self._last_mix = (0, 0)  # new partitions: the mix is learnt again
            self.hooks.log(
                f"claimed partitions {sorted(res.claimed)} (epochs "
                + ", ".join(f"{p}:{s.epoch}" for p, s in sorted(res.claimed.items()))
                + ")"
            )
        c = res.cleanup
        if c:
            self.hooks.log(
                f"lake of partitions {sorted(res.claimed)}: published {len(c.published)} "
                f"committed file(s) left in staging, removed {len(c.removed_staged)} "
                f"uncommitted (orphan) file(s) of fenced writers and "
                f"{len(c.removed_superseded)} superseded file(s)"
            )
        for p, (stored, old, new) in res.rewound.items():
            self.hooks.log(
                f"partition {p}: topic {self.topic} was recreated (id {old} -> {new}; e.g. an "
                f"in-memory broker restarted): its log starts again, reading it from the "
                f"beginning instead of stored offset {stored}"
            )
        seen = {p: (r.holder, r.epoch, r.mine) for p, r in res.refused.items()}
        for p, why in res.refused.items():
            if self._last_refused.get(p) != seen[p]:
                self.hooks.log(f"partition {p}: claim refused, {why}")
        self.stats.refused += len(res.refused)
        self._last_refused = seen
        # refused partitions are paused; poll on (the group moves on) and try again soon
        self._next_claim = time.monotonic() + (1.0 if res.refused else 0.0)

    # ------------------------------------------------------------------ batches
    def _submit(self) -> None:
        """Freeze the batch in hand and hand it to the committer (after the one in flight)."""
        if not self._settle():
            return
        try:
            snap = self.checkpoint.snapshot(
                self.ownership.held, topic_id(self.consumer, self.topic)
            )
        except sinks.FencedError as exc:
            self._failed("batch not committed", exc)
            return
        if snap is not None:
            self.committer.submit(snap)

    def _add(self, polled: dict) -> int:
        """Add a poll's records to the batch; returns how many were kept (and, from
        `FLOOD_SAMPLE` kept records, notes how many were valid events: `_poll_size`)."""
        n, valid_before = 0, self.checkpoint.valid
        for tp, recs in polled.items():
            if tp.topic == self.topic and recs:
                n += self.checkpoint.add(tp.partition, recs)
        if n >= FLOOD_SAMPLE:
            self._last_mix = (n, self.checkpoint.valid - valid_before)
        return n

    # ------------------------------------------------------------------ periodic work
    def _refresh_users(self) -> None:
        rows = self._db().execute("select id from user_metadata").fetchall()
        self.checkpoint.users = {r[0].lower() for r in rows}

    def _renew(self) -> None:
        lost = self.ownership.renew(self._db())
        if lost:
            self.hooks.log(f"partitions {lost}: a newer claim took them; dropping their state")
            self._reset()

    def report_hours(self, everything: bool = False) -> int:
        n = maintenance.report_closed_hours(
            self._db(),
            self.group,
            self.topic,
            max(self.settings.watermark_seconds, self.opts.compact_grace_s),
            self.hooks.hour_closed,
            everything,
        )
        self.stats.hours_reported += n
        return n

    def compact(self) -> int:
        """Compact now, on this thread (at the end of a run); returns how many merges."""
        n = maintenance.compact_partitions(
            self._db(),
            self.root,
            self.group,
            self.topic,
            self.ownership.epochs(),
            self.checkpoint.windows.committed,
            self.opts.compact_grace_s,
        )
        self.stats.compactions += n
        return n

    def _compact_in_background(self) -> None:
        self.compactor.start(self.ownership.epochs(), self.checkpoint.windows.committed)

    def _clean_staging(self) -> None:
        """Remove what fenced writers (paused, then woken) left in the staging folder."""
        from antenna_platform import lake

        epochs = self.ownership.epochs()
        if epochs:
            conn = self._db()
            with conn.transaction():
                sinks.check_claims(conn, self.group, self.topic, epochs)
                lake.clean_partitions(conn, self.root, epochs, dataset=False)

    def _check_topic(self) -> None:
        """Claim again when the broker's topic id moved away from the one we synced against."""
        current = topic_id(self.consumer, self.topic)
        moved = [
            p
            for p, s in self.ownership.held.items()
            if current and s.topic_id not in (None, current)
        ]
        if moved:
            self.hooks.log(f"topic {self.topic} changed id to {current}; claiming {moved} again")
            self._reset()

    def lag(self) -> int | None:
        """Messages between the committed offsets and the partitions' high-water marks."""
        total, known = 0, False
        kl = KafkaLog(self.consumer, self.topic)
        for p, s in self.ownership.held.items():
            hw = None
            with contextlib.suppress(Exception):  # not assigned any more
                hw = kl.highwater(p)
            if hw is not None:
                total += max(hw - (s.fence_offset or 0), 0)
                known = True
        return total if known else None

    def _heartbeat(self, dt: float, records_before: int) -> None:
        st = self.stats
        rate = (st.records - records_before) / dt if dt > 0 else 0.0
        tops = [self.checkpoint.windows.committed.get(p) for p in self.ownership.held]
        low = min((t for t in tops if t is not None), default=None)
        behind = f", event time {int(time.time()) - low}s behind" if low else ""
        self.hooks.log(
            f"stream: {rate:,.0f} events/s, lag {self.lag()} msgs{behind}, partitions "
            f"{sorted(self.ownership.held)} of {sorted(self.ownership.assigned)}, committed "
            f"{st.records} ({st.events} valid, {st.rejects} rejects, {st.late} late, "
            f"{st.unknown} unknown ids), {st.batches} batches, {st.failures} failed, "
            f"{st.fenced} fenced, {st.compactions + self.compactor.merges} compactions"
        )

    def _periodic(self, now: float, timers: dict[str, float]) -> None:
        tasks: list[tuple[str, float, Callable[[], object]]] = [
            ("renew", self.opts.report_every_s, self._renew),
            ("users", self.opts.metadata_refresh_s, self._refresh_users),
            ("compact", self.opts.compact_every_s, self._compact_in_background),
            ("report", self.opts.report_every_s, self.report_hours),
            ("staging", 30.0, self._clean_staging),
            ("topic", 2.0, self._check_topic),
        ]
        if now < min(timers.get(name, 0.0) for name in (*(t[0] for t in tasks), "heartbeat")):
            return
        if not self._settle():  # the tasks use the positions the commit in flight moves
            return
        for name, every, fn in tasks:
            if now >= timers.get(name, 0.0):
                timers[name] = now + every
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - never stops the stream
                    self._drop_db()
                    self._error(f"{name} failed (will retry)", exc)
        if now >= timers.get("heartbeat", 0.0):
            last = timers.get("heartbeat_t", now)
            self._heartbeat(now - last, int(timers.get("heartbeat_n", 0)))
            timers["heartbeat"] = now + self.opts.report_every_s
            timers["heartbeat_t"] = now
            timers["heartbeat_n"] = self.stats.records

    # ------------------------------------------------------------------ main loop
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> StreamStats:
        """Consume until stopped, idle or `max_events`; always closes the consumer.

        On an interrupt (any BaseException, e.g. Dagster's DagsterExecutionInterruptedError)
        the batch in hand is committed within `stop_budget_s` or dropped, the consumer
        closed, and the exception re-raised.
        """
        o, st = self.opts, self.stats
        columnar.events_table([], 0, [])  # pyarrow imports pandas on first use: not mid-batch
        try:
            self._refresh_users()
        except Exception as exc:  # noqa: BLE001 - retried periodically
            self._error("cannot read user_metadata yet", exc)
        self.committer = Committer(self._connect, self.root, self._adopt, lambda s: self.fault(s))
        self.listener = RebalanceListener(
            self.topic, self.ownership, self.checkpoint, self.committer, self.hooks.log
        )
        self.consumer = self.make_consumer(self.settings, self.listener)
        self.listener.consumer = self.consumer
        gc_thresholds = gc.get_threshold()
        gc.freeze()  # what start-up loaded (Dagster, pyarrow, ...) is never garbage
        gc.set_threshold(*GC_THRESHOLDS)
        timers: dict[str, float] = {"users": time.monotonic() + o.metadata_refresh_s}
        self.last_activity = loop_at = time.monotonic()
        interrupted = True
        try:
            while True:
                if should_stop():
                    st.stop_reason = "stop requested"
                    break
                if o.max_events is not None and st.records >= o.max_events:
                    st.stop_reason = f"max_events {o.max_events} reached"
                    break
                if self.ownership.pending():
                    self._sync()
                in_hand = self.checkpoint.records + self.committer.in_flight
                if o.max_events is not None and st.records + in_hand >= o.max_events:
                    self._submit()
                    self._settle()  # the loop ends once these are committed
                    continue
                room = self._poll_size(self._batch_limit() - self.checkpoint.valid)
                if o.max_events is not None:
                    room = min(room, o.max_events - st.records - in_hand)
                polled = self.consumer.poll(timeout_ms=o.poll_ms, max_records=max(room, 1))
                n = self._add(polled)
                now = time.monotonic()
                if n or now - loop_at > STALL_S:  # a stall (a frozen process) is not idleness
                    self.last_activity = now
                loop_at = now
                b = self.checkpoint.batch
                limit = self._batch_limit()
                if b and (
                    n == 0
                    or b.valid >= limit - limit // FULL_WITHIN
                    or b.records >= limit * MAX_RECORDS_PER_EVENT_SLOT
                    or b.bytes >= MAX_BATCH_BYTES
                    or (o.max_events is not None and st.records + in_hand + n >= o.max_events)
                    or now - b.started >= o.max_batch_s
                ):
                    self._submit()
                self._periodic(now, timers)
                if self._idle(now):
                    st.stop_reason = f"idle for {o.stop_when_idle_s}s"
                    break
            interrupted = False
        finally:
            try:
                self._finish(final=not interrupted)
            finally:
                gc.set_threshold(*gc_thresholds)
                gc.unfreeze()
        return st

    def _poll_size(self, room: int) -> int:
        """Records to ask the next poll for, the batch having `room` valid events left.

        The room, unless the last poll of `FLOOD_SAMPLE` records or more was a flood
        (rejects at least `FLOOD_SHARE` of them): then the room times the records a valid
        event came with in that poll (at most `FLOOD_GROWTH`), less `FLOOD_SHARE` for the
        mix to vary; not past what is left of the batch's records cap, never below the
        room."""
        if room <= 0:
            return room
        records, valid = self._last_mix
        if records < FLOOD_SAMPLE or records - valid < records * FLOOD_SHARE:
            return room  # no poll yet, a small one, or few rejects
        growth = FLOOD_GROWTH if valid == 0 else min(records / valid, FLOOD_GROWTH)
        cap = self._batch_limit() * MAX_RECORDS_PER_EVENT_SLOT - self.checkpoint.records
        return max(room, min(int(room * growth * (1 - FLOOD_SHARE)), cap))

    def _batch_limit(self) -> int:
        """Valid events a batch may hold before it is committed: `max_batch_events`, or
        GROUP_COMMIT times that while the previous commit is still running."""
        running = self.committer is not None and self.committer.running
        return self.opts.max_batch_events * (GROUP_COMMIT if running else 1)

    def _idle(self, now: float) -> bool:
        """Idle = no message since the last one or the last assignment; a member that
        never gets a partition waits longer (a join can take seconds)."""
        limit = self.opts.stop_when_idle_s
        if limit is None:
            return False
        if not self.ownership.held:
            limit = max(limit, 30.0)
        since = max(self.last_activity, self.listener.assigned_at if self.listener else 0.0)
        return (
            not self.checkpoint.batch
            and not self.committer.busy
            and not self.ownership.pending()
            and now - since >= limit
        )

    def _finish(self, final: bool) -> None:
        """Commit the batch in hand within the stop budget (or drop it), report, release
        the claims and close the consumer; each step bounded."""
        deadline = time.monotonic() + self.opts.stop_budget_s
        try:
            try:
                if self.committer is not None and not self.committer.settle(
                    max(deadline - time.monotonic(), 0.0)
                ):
                    raise TimeoutError("the commit in flight did not finish in time")
                snap = self.checkpoint.snapshot(
                    self.ownership.held, topic_id(self.consumer, self.topic)
                )
                if snap is not None and self.committer is not None:
                    self.committer.submit(snap, timeout_s=max(deadline - time.monotonic(), 0.5))
                    if not self.committer.settle(max(deadline - time.monotonic(), 0.0)):
                        raise TimeoutError("the last commit did not finish in time")
            except Exception as exc:  # noqa: BLE001 - dropped: offsets not moved
                self._reset()
                self._error("batch in hand dropped, not committed (it will be read again)", exc)
            # a clean end lets the compaction round finish; an interrupt ends it before its
            # next swap (a swap in progress takes milliseconds to finish)
            self.compactor.wait(
                None if final else max(deadline - time.monotonic(), 1.0), stop=not final
            )
            self.stats.compactions += self.compactor.merges
            if final:
                try:
                    self.compact()
                    self.report_hours(everything=True)
                except Exception as exc:  # noqa: BLE001
                    self._error("final report failed", exc)
            live = self.conn is not None and not self.conn.closed and not self.conn.broken
            if self.ownership.held and (self.committer is None or not self.committer.busy):
                with contextlib.suppress(Exception):  # best effort: the lease expires anyway
                    if live or deadline - time.monotonic() > 2.5:
                        self.ownership.release(self.conn if live else self._connect_quick())
        finally:
            if self.committer is not None:
                self.committer.close(timeout=max(deadline - time.monotonic(), 0.1))
            if self.consumer is not None:
                try:
                    self.consumer.close(autocommit=False, timeout_ms=3000)
                except Exception as exc:  # noqa: BLE001
                    self._error("consumer close failed", exc)
                self.consumer = None
            self._drop_db()
            self.hooks.log(
                f"stream stopped ({self.stats.stop_reason or 'interrupted'}): committed "
                f"{self.stats.records} records, {self.stats.rejects} rejects, "
                f"{self.stats.late} late, {self.stats.hours_reported} hour reports"
            )
