"""The speed layer's consume loop: Kafka -> Parquet lake + `bytes`, exactly once.

Records are parsed as they are polled (`microbatch`: rejects become dead letters). One
micro-batch (at most `max_batch_events` valid events, 4 times as many records, or
`max_batch_s` seconds, or whatever is there when the topic goes quiet) is committed so:
  1. write each partition's valid events to the lake (atomic files, not yet in the
     manifest), named `p<partition>-<first>-<last>-<rand>`;
  2. ONE Postgres transaction (`sinks`): fence the offsets, register the files, upsert
     the 5-minute `bytes` deltas, insert dead letters, bump `lake_hours`, move offsets.
Only after that commit is the batch done. A crash before it leaves orphan files (not in
the manifest, removed when the partition is next assigned) and the old offsets, so the
batch is read again; a crash after it replays nothing. `kill -9` at any instant therefore
leaves every event exactly once in the lake manifest and in `bytes`.

Commits run on one committer thread, at most one batch in flight, while the main thread
polls and parses the next batch: the Parquet writer and Postgres work outside the GIL.
Commits stay in order, and whatever touches the connection, the offsets or the window
state (resync, revocation, periodic work, the end) first waits for the batch in flight.

Offsets live in Postgres (`stream_offsets`), not in Kafka. On assignment the main loop
(not the listener: kafka-python 3 runs listeners on its IO thread, where blocking calls
fail) removes the partitions' orphan files and seeks to the stored offsets before it
keeps any record; on revocation the listener commits the batch in hand (or, if that
fails, drops it: its offsets were not moved). The broker's topic id is stored with the
offsets: a topic that was recreated (an in-memory broker restarted) starts its offsets
again at 0, and is read from the beginning instead of being skipped.
Any failure to commit (Postgres down, lake not writable, fenced) drops the batch in
hand, backs off and re-reads from the stored offsets: nothing is skipped or doubled.

File count per hour stays bounded by compaction: once a partition's event time is
`compact_grace_s` past the end of an hour (independent of the watermark: compaction
changes no result, and late files that arrive after it are merged in the next round),
that partition's files of the hour are merged into one, swapped in the manifest in one
transaction, and the old files are deleted after a delay (readers that listed them just
before the swap can still read them; after a crash they are orphans and removed on the
next assignment). An hour still open is merged too whenever one partition has written
more than 32 files into it (a slow trickle commits a small file every second).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from antenna_platform import lake
from antenna_platform.config import Settings
from antenna_platform.stream import maintenance, sinks
from antenna_platform.stream.consumer import make_consumer
from antenna_platform.stream.microbatch import MicroBatch
from antenna_platform.stream.windows import WindowAggregator
from antenna_platform.warehouse import connect

log = logging.getLogger(__name__)

# a batch holds at most max_batch_events valid events and this many times as many records
# (a flood of rejects adds dead-letter rows, not commits, until this cap)
MAX_RECORDS_PER_EVENT_SLOT = 4


@dataclass(frozen=True)
class StreamOptions:
    max_batch_events: int = 10_000
    max_batch_s: float = 1.0
    poll_ms: int = 100
    stop_when_idle_s: float | None = None  # end cleanly after this long without a message
    max_events: int | None = None  # end after committing this many records
    report_every_s: float = 5.0  # heartbeat log + closed-hour reports
    metadata_refresh_s: float = 30.0
    compact_every_s: float = 10.0
    compact_grace_s: int = 120  # compact an hour once event time is this far past its end
    trash_delay_s: float = 300.0
    retry_max_s: float = 5.0  # stays below max_poll_interval_ms
    give_up_after_s: float = 300.0  # failing this long without a commit ends the run


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
    hours_reported: int = 0
    compactions: int = 0
    stop_reason: str = ""
    errors: list[str] = field(default_factory=list)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine

    def on_partitions_revoked(self, revoked):
        self.engine._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.engine._on_assigned(assigned)


class LakeWriteError(RuntimeError):
    """The lake directory is not writable; the batch is retried, offsets stay put."""


class StreamFailed(RuntimeError):
    """Commits kept failing for `give_up_after_s`: the run fails and its sensor restarts it."""


class StreamEngine:
    def __init__(
        self, settings: Settings, options: StreamOptions | None = None, hooks: Hooks | None = None
    ) -> None:
        self.settings = settings
        self.opts = options or StreamOptions()
        self.hooks = hooks or Hooks()
        self.root = Path(settings.lake_dir)
        self.group, self.topic = settings.consumer_group, settings.topic
        self.windows = WindowAggregator(settings.watermark_seconds)
        self.grace = self.opts.compact_grace_s
        self.expected: dict[int, int | None] = {}  # assigned partition -> stored next_offset
        self.rebase: set[int] = set()  # partitions whose topic was recreated: offsets restart
        self.log_id: dict[int, str | None] = {}  # topic id each partition was synced against
        self.pending: MicroBatch | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None
        self._inflight_records = 0
        self.needs_resync = False
        self.conn: psycopg.Connection | None = None
        self.consumer = None
        self.users: set[str] | None = None
        self.trash = maintenance.Trash(self.root, self.opts.trash_delay_s)
        self.stats = StreamStats()
        self._backoff = 0.0
        self._failing_since: float | None = None
        self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ plumbing
    def _db(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._drop_db()
            self.conn = connect(self.settings, autocommit=True)
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

    def _tp(self, p: int) -> TopicPartition:
        return TopicPartition(self.topic, p)

    # ------------------------------------------------------------------ rebalance
    def _on_assigned(self, assigned) -> None:
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.topic)
        self.hooks.log(f"assigned partitions {parts}")
        self.last_activity = time.monotonic()  # the idle clock starts at assignment
        for p in parts:
            self.expected.setdefault(p, None)
        # kafka-python 3 runs this callback on its IO thread, where blocking consumer calls
        # (end_offsets) fail: the main loop resyncs (orphans, stored offsets, seek) before
        # it keeps any record, and drops what this poll fetched from unsynced positions.
        self.needs_resync = True

    def _on_revoked(self, revoked) -> None:
        parts = sorted(tp.partition for tp in revoked if tp.topic == self.topic)
        self.hooks.log(f"revoked partitions {parts}")
        # runs inside consumer.poll(): the main thread is waiting, a commit may be in flight
        try:
            if self.pending and not self.needs_resync:
                self._flush()
            else:
                self._wait_inflight()
        except Exception as exc:  # noqa: BLE001 - dropped: its offsets did not move
            self._drop_db()
            self._error("revocation: batch in hand dropped (not committed)", exc)
        self._drop_pending()
        for p in parts:
            self.expected.pop(p, None)
            self.log_id.pop(p, None)
        self.rebase.difference_update(parts)
        self.windows.forget(parts)

    def _resync(self, parts: list[int]) -> None:
        """Remove the partitions' orphan files and seek them to their stored offsets."""
        conn = self._db()
        removed = lake.remove_orphans(conn, self.root, parts)
        if removed:
            self.hooks.log(f"removed {len(removed)} orphan lake file(s) of partitions {parts}")
        stored = sinks.load_offsets(conn, self.group, self.topic, parts)
        current = self._topic_id()
        changed = [p for p, s in stored.items() if s.topic_id and current and s.topic_id != current]
        # rewind only on two signals: a new topic id AND a log that now ends below the
        # stored offset; a spurious id change alone must never re-read committed data
        ends = self.consumer.end_offsets([self._tp(p) for p in changed]) if changed else {}
        for p in parts:
            s = stored.get(p)
            self.log_id[p] = current
            end = ends.get(self._tp(p))
            if s is not None and p in changed and end is not None and end < s.next_offset:
                self.hooks.log(
                    f"partition {p}: topic {self.topic} was recreated (id {s.topic_id} -> "
                    f"{current}; e.g. an in-memory broker restarted): its log starts again, "
                    f"reading it from the beginning instead of stored offset {s.next_offset}"
                )
                self.consumer.seek_to_beginning(self._tp(p))
                self.windows.load(p, s.max_event_ts)
                self.expected[p] = s.next_offset
                self.rebase.add(p)
            elif s is None:
                self.rebase.discard(p)
                self.consumer.seek_to_beginning(self._tp(p))
                self.windows.load(p, None)
                self.expected[p] = None
            else:
                self.rebase.discard(p)
                self.consumer.seek(self._tp(p), s.next_offset)
                self.windows.load(p, s.max_event_ts)
                self.expected[p] = s.next_offset

    def _try_resync(self) -> bool:
        self._settle()
        parts = sorted(self.expected)
        try:
            self._resync(parts)
        except Exception as exc:  # noqa: BLE001
            self._drop_db()
            self._error("cannot resume from stored offsets, retrying", exc)
            self._failed()
            self._sleep_backoff()
            if self.consumer is not None:
                self.consumer.poll(timeout_ms=0, max_records=1)  # keeps group membership
                self._drop_pending()
            return False
        self.needs_resync = False
        self._backoff = 0.0
        return True

    def _failed(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.opts.give_up_after_s:
            last = self.stats.errors[-1] if self.stats.errors else "unknown error"
            raise StreamFailed(
                f"no commit for {self.opts.give_up_after_s:.0f}s, giving up; last error: {last}"
            )

    def _sleep_backoff(self) -> None:
        self._backoff = min(max(self._backoff * 2, 0.25), self.opts.retry_max_s)
        time.sleep(self._backoff)

    # ------------------------------------------------------------------ batches
    def _drop_pending(self) -> None:
        self.pending = None

    def _pending_records(self) -> int:
        return self.pending.records if self.pending is not None else 0

    def _add(self, polled: dict) -> int:
        n = 0
        for tp, recs in polled.items():
            if tp.topic != self.topic or not recs:
                continue
            if self.pending is None:
                self.pending = MicroBatch(self.settings.max_clock_skew_seconds)
            n += self.pending.add(tp.partition, recs)
        return n

    # ------------------------------------------------------------------ commits
    # One batch may be in flight on the committer thread while the main thread polls and
    # parses the next: Postgres and the Parquet writer work outside the GIL, so that time
    # is no longer lost. Commits stay strictly in order (the next one waits for the one
    # in flight), and everything else that touches the connection, the offsets or the
    # window state (resync, revocation, periodic work, the end) first waits for it too.
    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a commit step; on failure drop the batch in hand and re-read from Postgres."""
        try:
            step()
        except sinks.FencedError as exc:
            self.stats.fenced += 1
            self._drop_pending()
            self.needs_resync = True
            self._error("batch fenced (offsets moved elsewhere), re-reading", exc)
        except Exception as exc:  # noqa: BLE001 - Postgres or lake trouble: retry the batch
            self.stats.failures += 1
            self._drop_pending()
            self._drop_db()
            self.needs_resync = True
            self._error("batch not committed (offsets unchanged), retrying", exc)
            self._failed()
            self._sleep_backoff()

    def _flush_or_retry(self) -> None:
        self._guarded(self._submit)

    def _settle(self) -> None:
        """Wait for the batch in flight (handling its failure like any other)."""
        if self._inflight is not None:
            self._guarded(self._wait_inflight)

    def _wait_inflight(self) -> None:
        fut = self._inflight
        if fut is None:
            return
        try:
            fut.result()
        finally:
            if fut.done():  # (an interrupt while waiting leaves it in flight, to wait again)
                self._inflight = None
                self._inflight_records = 0

    def _submit(self) -> None:
        """Hand the batch in hand to the committer thread (after the one in flight)."""
        self._wait_inflight()
        if not self.pending:
            return
        batch, self.pending = self.pending, None
        if self._committer is None:
            self._commit(batch)
            return
        self._inflight_records = batch.records
        self._inflight = self._committer.submit(self._commit, batch)

    def _flush(self) -> None:
        """Commit the batch in flight and the batch in hand, and wait for both."""
        self._submit()
        self._wait_inflight()

    def _commit(self, batch: MicroBatch) -> None:
        new_next: dict[int, int] = {}
        for p, pb in batch.parts.items():
            if p not in self.expected:
                raise sinks.FencedError(f"partition {p} is no longer assigned")
            exp = self.expected[p]
            if exp is not None and p not in self.rebase:
                pb.trim(exp)  # never re-commit old offsets
            if pb.next_offset > pb.first_offset:
                new_next[p] = pb.next_offset
        if not new_next:
            return
        live = self._topic_id()
        if live and any(self.log_id.get(p) not in (None, live) for p in new_next):
            raise sinks.FencedError(f"topic {self.topic} was recreated under this batch")
        events = {p: batch.parts[p].events for p in new_next}
        dead = [d for p in new_next for d in batch.parts[p].dead]
        unknown = batch.unknown_by_hour(self.users)
        rejects = batch.rejects_by_hour()
        totals = self.windows.aggregate(events)
        files: list[lake.LakeFile] = []
        for p, evs in events.items():
            if evs:
                offs = batch.parts[p].offsets
                name = f"p{p}-{offs[0]}-{offs[-1]}-{uuid.uuid4().hex[:8]}"
                try:
                    files += lake.write_events(
                        self.root, evs, kafka_partition=p, kafka_offsets=offs, name=name
                    )
                except OSError as exc:
                    raise LakeWriteError(
                        f"cannot write the lake under {self.root} (ANTENNA_LAKE_DIR): "
                        f"{exc.strerror or exc} ({exc.filename or ''})"
                    ) from exc
        conn = self._db()
        # the topic id the records were read under (not the live one: the topic may have
        # been recreated since, and these offsets belong to the old log)
        state = {
            p: sinks.OffsetState(
                n, totals.max_ts.get(p, self.windows.committed.get(p)), self.log_id.get(p)
            )
            for p, n in new_next.items()
        }
        with conn.transaction():
            sinks.fence(conn, self.group, self.topic, {p: self.expected[p] for p in new_next})
            lake.register_files(conn, files)
            sinks.upsert_bytes(conn, totals.sorted_rows())
            sinks.insert_dead_letters(conn, self.topic, dead)
            hours = {sinks.naive_to_epoch(f.hour) for f in files}
            sinks.bump_hours(conn, hours, totals.late_by_hour, unknown, rejects)
            sinks.save_offsets(conn, self.group, self.topic, state)
        # committed: adopt the new state
        self.windows.commit(totals)
        self.expected.update(new_next)
        self.rebase.difference_update(new_next)
        self._backoff = 0.0
        self._failing_since = None
        n_valid = sum(len(e) for e in events.values())
        st = self.stats
        st.batches += 1
        st.events += n_valid
        st.rejects += len(dead)
        st.records += n_valid + len(dead)
        st.late += totals.late
        st.unknown += sum(unknown.values())

    def _check_topic(self) -> None:
        """Resync when the broker's topic id moved away from the one we synced against."""
        current = self._topic_id()
        if current and any(t and t != current for t in self.log_id.values()):
            self.hooks.log(f"topic {self.topic} changed id to {current}; resyncing partitions")
            self.needs_resync = True

    def _topic_id(self) -> str | None:
        """The broker's id of our topic (kafka-python keeps it in its cluster metadata)."""
        cluster = getattr(getattr(self.consumer, "_client", None), "cluster", None)
        tid = cluster.topic_id(self.topic) if cluster is not None else None
        return str(tid) if tid else None

    # ------------------------------------------------------------------ periodic work
    def _refresh_users(self) -> None:
        rows = self._db().execute("select id from user_metadata").fetchall()
        self.users = {r[0].lower() for r in rows}

    def report_hours(self, everything: bool = False) -> int:
        n = maintenance.report_closed_hours(
            self._db(),
            self.group,
            self.topic,
            self.settings.watermark_seconds,
            self.hooks.hour_closed,
            everything,
        )
        self.stats.hours_reported += n
        return n

    def compact(self) -> int:
        n = maintenance.compact_partitions(
            self._db(), self.root, self.expected, self.windows.committed, self.grace, self.trash
        )
        self.stats.compactions += n
        return n

    def empty_trash(self, everything: bool = False) -> None:
        self.trash.empty(everything)

    def lag(self) -> int | None:
        """Messages between the stored offsets and the partitions' high-water marks."""
        total, known = 0, False
        for p, exp in self.expected.items():
            hw = None
            with contextlib.suppress(Exception):  # not assigned any more
                hw = self.consumer.highwater(self._tp(p))
            if hw is not None:
                total += max(hw - (exp or 0), 0)
                known = True
        return total if known else None

    def _heartbeat(self, dt: float, records_before: int) -> None:
        st = self.stats
        rate = (st.records - records_before) / dt if dt > 0 else 0.0
        low = self.windows.low_watermark(self.expected)
        behind = (
            f", event time {int(time.time()) - low - self.settings.watermark_seconds}s behind"
            if low
            else ""
        )
        self.hooks.log(
            f"stream: {rate:,.0f} events/s, lag {self.lag()} msgs{behind}, partitions "
            f"{sorted(self.expected)}, committed {st.records} ({st.events} valid, "
            f"{st.rejects} rejects, {st.late} late, {st.unknown} unknown ids), "
            f"{st.batches} batches, {st.failures} failed, {st.compactions} compactions"
        )

    def _periodic(self, now: float, timers: dict[str, float]) -> None:
        tasks: list[tuple[str, float, Callable[[], object]]] = [
            ("users", self.opts.metadata_refresh_s, self._refresh_users),
            ("report", self.opts.report_every_s, self.report_hours),
            ("compact", self.opts.compact_every_s, self.compact),
            ("trash", 30.0, self.empty_trash),
            ("topic", 2.0, self._check_topic),
        ]
        if now < min(timers.get(name, 0.0) for name in (*(t[0] for t in tasks), "heartbeat")):
            return
        self._settle()  # the tasks share the connection and state with the committer
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
        the batch in hand is committed if possible, the consumer closed, and the
        exception re-raised.
        """
        o, st = self.opts, self.stats
        try:
            self._refresh_users()
        except Exception as exc:  # noqa: BLE001 - retried periodically
            self._error("cannot read user_metadata yet", exc)
        self.consumer = make_consumer(self.settings, _Listener(self))
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="antenna-commit")
        timers: dict[str, float] = {"users": time.monotonic() + o.metadata_refresh_s}
        self.last_activity = time.monotonic()
        interrupted = True
        try:
            while True:
                if should_stop():
                    st.stop_reason = "stop requested"
                    break
                if o.max_events is not None and st.records >= o.max_events:
                    st.stop_reason = f"max_events {o.max_events} reached"
                    break
                if self.needs_resync and not self._try_resync():
                    continue
                in_hand = self._pending_records() + self._inflight_records
                if o.max_events is not None and st.records + in_hand >= o.max_events:
                    self._flush_or_retry()
                    self._settle()  # the loop ends once these are committed
                    continue
                valid = self.pending.valid if self.pending is not None else 0
                room = o.max_batch_events - valid
                if o.max_events is not None:
                    room = min(room, o.max_events - st.records - in_hand)
                polled = self.consumer.poll(timeout_ms=o.poll_ms, max_records=max(room, 1))
                if self.needs_resync:  # an assignment failed inside poll: these may be stale
                    self._drop_pending()
                    continue
                n = self._add(polled)
                now = time.monotonic()
                if n:
                    self.last_activity = now
                b = self.pending
                if b and (
                    n == 0
                    or b.valid >= o.max_batch_events
                    or b.records >= o.max_batch_events * MAX_RECORDS_PER_EVENT_SLOT
                    or (o.max_events is not None and st.records + in_hand + n >= o.max_events)
                    or now - b.started >= o.max_batch_s
                ):
                    self._flush_or_retry()
                self._periodic(now, timers)
                # idle = no message since the last one or the last assignment; a member
                # that never gets a partition waits longer (a join can take seconds)
                idle_limit = o.stop_when_idle_s
                if idle_limit is not None and not self.expected:
                    idle_limit = max(idle_limit, 30.0)
                if (
                    idle_limit is not None
                    and not self.pending
                    and self._inflight is None
                    and not self.needs_resync
                    and now - self.last_activity >= idle_limit
                ):
                    st.stop_reason = f"idle for {o.stop_when_idle_s}s"
                    break
            interrupted = False
        finally:
            self._finish(final=not interrupted)
        return st

    def _finish(self, final: bool) -> None:
        """Commit the batch in hand (or drop it), report, and always close the consumer."""
        try:
            try:
                if self.pending and not self.needs_resync:
                    self._flush()
                else:
                    self._wait_inflight()
            except Exception as exc:  # noqa: BLE001 - dropped: offsets not moved
                self._error("final batch not committed (it will be re-read)", exc)
            self._drop_pending()
            if final:
                try:
                    self.compact()
                    self.report_hours(everything=True)
                except Exception as exc:  # noqa: BLE001
                    self._error("final report failed", exc)
            self.empty_trash(everything=True)
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=True)  # a commit in flight ends before the close
                self._committer = None
            if self.consumer is not None:
                try:
                    self.consumer.close(autocommit=False)
                except Exception as exc:  # noqa: BLE001
                    self._error("consumer close failed", exc)
                self.consumer = None
            self._drop_db()
            self.hooks.log(
                f"stream stopped ({self.stats.stop_reason or 'interrupted'}): committed "
                f"{self.stats.records} records, {self.stats.rejects} rejects, "
                f"{self.stats.late} late, {self.stats.hours_reported} hour reports"
            )
