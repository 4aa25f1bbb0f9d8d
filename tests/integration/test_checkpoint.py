"""The ownership and checkpoint state machines against real Postgres and a real lake, with
a fake consumer (tests/fakes.py): a failure injected at every commit step, a fenced claim,
lost partitions, a revocation mid-commit, a resync with a batch in hand.

Expectations come from the payloads (`test_stream.expected` via `assert_exact`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from antenna_platform import lake
from antenna_platform.stream import sinks
from antenna_platform.stream.checkpoint import STEPS, Checkpoint, Committer, commit
from antenna_platform.stream.consumer import KafkaLog
from antenna_platform.stream.engine import (
    FULL_WITHIN,
    GROUP_COMMIT,
    StreamEngine,
    StreamOptions,
)
from antenna_platform.stream.listener import RebalanceListener
from antenna_platform.stream.maintenance import compact_partitions
from antenna_platform.stream.ownership import Ownership
from antenna_platform.warehouse import connect
from tests.fakes import FakeConsumer
from tests.integration.test_stream import assert_exact, make_payloads, observed

pytestmark = pytest.mark.integration


FUTURE = int(time.time()) + 10 * 3600  # an event time past every test hour


class Boom(RuntimeError):
    pass


def split(payloads, parts: int = 2) -> dict[int, list[bytes]]:
    logs: dict[int, list[bytes]] = {p: [] for p in range(parts)}
    for i, (payload, _ok) in enumerate(payloads):
        logs[i % parts].append(payload)
    return logs


class Worker:
    """One worker's ownership, checkpoint and (fake) consumer, driven step by step."""

    def __init__(self, settings, logs, name: str, generation: int) -> None:
        self.settings, self.root = settings, Path(settings.lake_dir)
        self.consumer = FakeConsumer(settings.topic, logs)
        self.consumer.assigned, self.consumer.generation = sorted(logs), generation
        self.own = Ownership(settings.consumer_group, settings.topic, name)
        self.own.assign(sorted(logs), generation)
        self.cp = Checkpoint(settings.consumer_group, settings.topic, 10**9, 86400)
        self.conn = connect(settings, autocommit=True)

    def claim(self):
        res = self.own.sync(self.conn, KafkaLog(self.consumer, self.settings.topic), self.root)
        for p, state in res.claimed.items():
            self.cp.open(p, state)
        return res

    def read_all(self) -> int:
        n = 0
        while polled := self.consumer.poll(max_records=100_000):
            for tp, recs in polled.items():
                n += self.cp.add(tp.partition, recs)
        return n

    def freeze(self):
        return self.cp.snapshot(self.own.held, None)

    def commit(self, fault=lambda step: None):
        result = commit(self.freeze(), self.conn, self.root, fault)
        self.own.advance(result.states)
        return result


def raise_at(step: str):
    def fault(s: str) -> None:
        if s == step:
            raise Boom(f"injected at {s}")

    return fault


def dataset_files(root: Path) -> list[str]:
    base = root / "device_events"
    return sorted(p.name for p in base.rglob("*.parquet")) if base.is_dir() else []


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_commit_step_then_the_next_claim_is_exact(platform, step):
    payloads = make_payloads(3_000, seed=81, bad_ratio=0.05, hours=2)
    logs = split(payloads)
    a = Worker(platform, logs, "worker-a", generation=0)
    a.claim()
    assert a.read_all() == len(payloads)
    with pytest.raises(Boom):
        a.commit(raise_at(step))
    got = observed(platform)
    committed = STEPS.index(step) >= STEPS.index("committed")
    if not committed:  # rolled back: nothing moved, nothing visible
        assert got["offsets"] == 0 and got["manifest"] == set() and got["bytes"] == {}
        assert got["dead"] == []
    else:
        assert got["offsets"] == len(payloads) and got["manifest"]
    published = step == "published"
    assert bool(got["on_disk"]) == published, "device_events/ must hold only published files"
    assert bool(got["staged"]) == (not published)
    # the next claim (another worker, a newer generation) recovers
    b = Worker(platform, logs, "worker-b", generation=1)
    res = b.claim()
    assert sorted(res.claimed) == [0, 1]
    cleanup = res.cleanup
    if committed and not published:
        assert len(cleanup.published) == len(got["manifest"]) and not cleanup.removed_staged
    elif not committed:
        assert cleanup.removed_staged and not cleanup.published
    b.read_all()
    if b.cp.records:
        b.commit()
    got = assert_exact(platform, payloads)
    assert got["staged"] == []
    # the failed worker is fenced for good: it can neither commit nor claim back
    a.cp.drop()
    a.own.unclaim()
    assert sorted(a.claim().refused) == [0, 1]


def test_a_fenced_worker_can_neither_commit_nor_compact_nor_clean(platform):
    payloads = make_payloads(4_000, seed=82, bad_ratio=0.02, hours=1)
    logs = split(payloads)
    a = Worker(platform, logs, "worker-a", generation=3)
    a.claim()
    a.read_all()
    snap = a.freeze()  # worker A freezes a batch ... and pauses
    b = Worker(platform, logs, "worker-b", generation=4)
    b.claim()  # the group moved on: B claims both partitions
    half = {p: v[: len(v) // 2] for p, v in logs.items()}
    b.consumer.logs = half
    b.read_all()
    b.commit()  # B commits the first half of each partition
    # A wakes: its commit is fenced inside the transaction; nothing of it lands
    before = observed(platform)
    with pytest.raises(sinks.FencedError, match="epoch"):
        commit(snap, a.conn, a.root)
    after = observed(platform)
    assert after["manifest"] == before["manifest"] and after["offsets"] == before["offsets"]
    assert after["on_disk"] == before["on_disk"]
    assert after["staged"], "A's staged files are left for the owner to remove"
    # B reads the rest: now two files per hour and partition, ripe for compaction
    b.consumer.logs = logs
    b.read_all()
    b.commit()
    before = observed(platform)
    # A can neither compact B's files, nor clean, nor claim back (B's lease is fresh)
    with pytest.raises(sinks.FencedError):
        compact_partitions(
            a.conn, a.root, platform.consumer_group, platform.topic, a.own.epochs(), {0: FUTURE}, 0
        )
    assert observed(platform)["manifest"] == before["manifest"]
    assert dataset_files(a.root) == sorted(Path(p).name for p in before["on_disk"])
    with pytest.raises(sinks.FencedError), a.conn.transaction():
        sinks.check_claims(a.conn, platform.consumer_group, platform.topic, a.own.epochs())
    a.own.unclaim()
    refused = a.claim().refused
    assert sorted(refused) == [0, 1] and "generation 4" in str(refused[0])
    # B's next claim removes A's leftovers (A's staged files and compaction output)
    b.own.unclaim()
    res = b.claim()
    assert len(res.cleanup.removed_staged) >= 2
    got = assert_exact(platform, payloads)
    assert got["staged"] == []


def _frozen_events(engine: StreamEngine) -> list[int]:
    """The valid events of each batch the engine freezes for a commit, from now on."""
    frozen: list[int] = []
    snapshot = engine.checkpoint.snapshot

    def recorded(*args, **kwargs):
        snap = snapshot(*args, **kwargs)
        if snap is not None:
            frozen.append(snap.events)
        return snap

    engine.checkpoint.snapshot = recorded
    return frozen


def _engine(settings, logs, **opts) -> tuple[StreamEngine, FakeConsumer]:
    fake = FakeConsumer(settings.topic, logs)
    engine = StreamEngine(settings, StreamOptions(**opts))
    engine.make_consumer = lambda _settings, listener: fake.subscribe(listener)
    return engine, fake


def test_lost_partitions_drop_the_batch_in_hand_and_never_commit_it(platform):
    payloads = make_payloads(2_000, seed=83, bad_ratio=0.02)
    logs = split(payloads)
    engine, fake = _engine(platform, logs, max_batch_s=3600, max_batch_events=10**6)
    fake.rebalance([0, 1], generation=0)
    polls = {"n": 0}
    real_poll = fake.poll

    def poll(**kw):
        polls["n"] += 1
        if polls["n"] == 3:  # a batch is in hand (nothing committed yet): evicted
            assert engine.checkpoint.records == len(payloads)
            fake.evict()
        if polls["n"] == 5:
            raise KeyboardInterrupt  # stop the run here
        return real_poll(**kw)

    fake.poll = poll
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    got = observed(platform)
    assert got["offsets"] == 0 and got["manifest"] == set() and got["dead"] == []
    assert engine.stats.records == 0


def test_a_revocation_during_a_slow_commit_is_bounded_and_drops_it(platform):
    payloads = make_payloads(2_000, seed=84, bad_ratio=0.02)
    logs = split(payloads)
    a = Worker(platform, logs, "worker-a", generation=0)
    a.claim()
    release = threading.Event()

    def slow(step: str) -> None:
        if step == "claims":  # holds the claim rows, like a Postgres that hangs
            release.wait(30)

    committer = Committer(
        lambda: connect(platform, autocommit=True), a.root, lambda r: a.own.advance(r.states), slow
    )
    a.read_all()
    committer.submit(a.freeze())
    listener = RebalanceListener(
        platform.topic, a.own, a.cp, committer, lambda m: None, budget_s=1.0
    )
    listener.consumer = a.consumer
    t0 = time.monotonic()
    listener.on_partitions_revoked(a.consumer.assignment())
    assert time.monotonic() - t0 < 3.0, "the revocation must not wait for a slow commit"
    assert a.own.held == {} and a.cp.positions == {}
    release.set()
    assert committer.close(30)
    # the abandoned commit landed (nobody claimed in between): its state is the truth; a new
    # claim reads on from it and ends exact
    b = Worker(platform, logs, "worker-b", generation=1)
    b.claim()
    b.read_all()
    if b.cp.records:
        b.commit()
    assert_exact(platform, payloads)


def test_a_resync_drops_the_batch_in_hand_and_rereads_from_the_stored_offsets(platform):
    payloads = make_payloads(3_000, seed=85, bad_ratio=0.02)
    logs = split(payloads)
    engine, fake = _engine(platform, logs, max_batch_events=500, stop_when_idle_s=1)
    fake.rebalance([0, 1], generation=0)
    polls = {"n": 0}
    real_poll = fake.poll

    def poll(**kw):
        polls["n"] += 1
        if polls["n"] == 4:
            # e.g. the topic id moved: every partition is claimed again with records in hand
            assert engine.checkpoint.records or engine.committer.busy
            engine._reset()
        return real_poll(**kw)

    fake.poll = poll
    stats = engine.run()
    assert stats.stop_reason.startswith("idle")
    assert_exact(platform, payloads)
    with connect(platform) as conn:
        epochs = conn.execute("select epoch from partition_claims order by partition").fetchall()
    assert [e for (e,) in epochs] == [2, 2], "claimed once, then again after the resync"


def test_a_partly_refused_claim_retried_with_a_batch_in_hand_goes_on_exact(platform):
    """Partition 1's newest claim is another live worker's, from a newer generation: this
    engine claims partition 0, is refused partition 1, and retries that claim every second
    while partition 0's records are in hand. Once the other worker lets go, it takes
    partition 1 and ends exact (the batch of partition 0 is kept across the retries)."""
    payloads = make_payloads(3_000, seed=86, bad_ratio=0.02)
    logs = split(payloads)
    other = Worker(platform, {1: logs[1]}, "worker-other", generation=5)
    assert sorted(other.claim().claimed) == [1]
    engine, fake = _engine(platform, logs, max_batch_events=10**6, stop_when_idle_s=1)
    fake.rebalance([0, 1], generation=0)
    real_poll, t0 = fake.poll, time.monotonic()
    seen = {"polls": 0, "retried_in_hand": False}

    def poll(**kw):
        seen["polls"] += 1
        if engine.ownership.pending() == [1] and engine.checkpoint.records:
            seen["retried_in_hand"] |= time.monotonic() - t0 > 1.5
        if seen["polls"] == 120:
            other.own.release(other.conn)
        time.sleep(0.03)
        return real_poll(timeout_ms=kw.get("timeout_ms", 0), max_records=25)

    fake.poll = poll
    stats = engine.run()
    assert seen["retried_in_hand"], "the claim was never retried with a batch in hand"
    assert stats.refused >= 1 and stats.stop_reason.startswith("idle")
    assert_exact(platform, payloads)
    with connect(platform) as conn:
        epochs = conn.execute("select epoch from partition_claims order by partition").fetchall()
    assert [e for (e,) in epochs] == [1, 2], "partition 1: the other's claim, then this one"


def test_compaction_publishes_the_merge_and_removes_its_inputs_at_once(platform):
    payloads = make_payloads(2_000, seed=86, bad_ratio=0.0, hours=1)
    logs = split(payloads, parts=1)
    a = Worker(platform, logs, "worker-a", generation=0)
    a.claim()
    half = len(logs[0]) // 2
    a.consumer.logs = {0: logs[0][:half]}
    a.read_all()
    a.commit()
    a.consumer.logs = logs
    a.read_all()
    a.commit()
    files_before = dataset_files(a.root)
    assert len(files_before) >= 2
    n = compact_partitions(
        a.conn, a.root, platform.consumer_group, platform.topic, a.own.epochs(), {0: FUTURE}, 0
    )
    assert n >= 1
    after = dataset_files(a.root)
    assert not set(files_before) & set(after), "superseded inputs left in device_events/"
    assert all(lake.writer_of(f) == (0, a.own.epochs()[0]) for f in after)
    assert_exact(platform, payloads)


def test_a_compaction_told_to_stop_mid_merge_swaps_nothing_and_leaves_no_file(platform):
    """A stop (SIGTERM) while a merge is being written: the round ends before its swap, so
    the process can exit without leaving a merged file beside its inputs."""
    payloads = make_payloads(2_000, seed=87, bad_ratio=0.0, hours=1)
    logs = split(payloads, parts=1)
    a = Worker(platform, logs, "worker-a", generation=0)
    a.claim()
    for part in (logs[0][:700], logs[0][:1400], logs[0]):
        a.consumer.logs = {0: part}
        a.read_all()
        a.commit()
    files_before = dataset_files(a.root)
    assert len(files_before) >= 3
    asked = []

    def should_stop() -> bool:  # asked before the merge (go on), then before its swap (stop)
        asked.append(len(asked))
        return len(asked) > 1

    n = compact_partitions(
        a.conn,
        a.root,
        platform.consumer_group,
        platform.topic,
        a.own.epochs(),
        {0: FUTURE},
        0,
        should_stop,
    )
    assert (n, len(asked)) == (0, 2)
    assert dataset_files(a.root) == files_before
    got = assert_exact(platform, payloads)
    assert got["staged"] == [], "the abandoned merge was left in staging"


def test_a_frozen_transaction_holding_the_claims_is_ended_by_the_successor(platform):
    """A worker frozen inside a transaction keeps its row locks (Postgres ends idle
    transactions, not one blocked on a client that stopped reading). Its successor's claim
    times out on the lock, ends the stuck session and goes on."""
    payloads = make_payloads(1_000, seed=87, bad_ratio=0.0)
    logs = split(payloads)
    zombie = psycopg.connect(
        platform.database_url, autocommit=True, application_name="antenna-stream:frozen"
    )
    try:
        with connect(platform, autocommit=True) as conn:
            sinks.lock_claims(conn, platform.consumer_group, platform.topic, [0, 1])  # rows
        zombie.execute("begin")
        sinks.lock_claims(zombie, platform.consumer_group, platform.topic, [0, 1])
        engine, fake = _engine(platform, logs, stop_when_idle_s=1, stuck_transaction_s=2)
        fake.rebalance([0, 1], generation=0)
        stats = engine.run()
        assert stats.failures >= 1  # the claim waited for the lock, then ended the session
        assert any(
            "frozen workers holding locks" in e or "LockNotAvailable" in e for e in stats.errors
        )
        assert zombie.broken or zombie.closed or _is_dead(zombie)
    finally:
        zombie.close()
    assert_exact(platform, payloads)


def _is_dead(conn) -> bool:
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return True
    return False


def test_a_flood_of_rejects_fills_a_batch_in_a_few_polls_and_stays_exact(platform):
    """Under a 1:1 flood a poll asks for the batch's room left times the records a valid
    event came with in the last poll (`_poll_size`), so a batch fills in one or two polls;
    a batch within 1/FULL_WITHIN of its limit is full. Asking for the room alone took 3
    or 4 polls a batch (each bringing half the room's worth of events)."""
    payloads = make_payloads(4_000, seed=87, bad_ratio=0.5)
    engine, fake = _engine(
        platform, split(payloads), max_batch_events=100, max_batch_s=3600, max_events=4_000
    )
    fake.rebalance([0, 1], generation=0)
    polls_per_batch: list[int] = []
    polls = {"n": 0}
    real_poll, snapshot = fake.poll, engine.checkpoint.snapshot

    def poll(**kw):
        got = real_poll(**kw)
        polls["n"] += bool(got)  # the polls that brought records
        return got

    def recorded(*args, **kwargs):
        snap = snapshot(*args, **kwargs)
        if snap is not None:
            polls_per_batch.append(polls["n"])
            polls["n"] = 0
        return snap

    fake.poll, engine.checkpoint.snapshot = poll, recorded
    engine.run()
    assert len(polls_per_batch) >= 5, polls_per_batch
    # the first batch learns the mix (3 polls); then 1 or 2 (the room alone: 3 or 4)
    assert polls_per_batch[0] <= 3 and max(polls_per_batch[1:]) <= 2, polls_per_batch
    assert_exact(platform, payloads)


def test_when_a_flood_ends_a_poll_brings_at_most_twice_the_room_and_stays_exact(platform):
    """A backlog of rejects, then clean traffic: the poll that follows a poll of rejects
    only asks for at most twice the batch's room left (FLOOD_GROWTH), so the first clean
    records take a batch at most that far past its limit, not to its records cap."""
    from antenna_platform.stream.engine import FLOOD_GROWTH

    bad = [(b"[%d]" % i, False) for i in range(1_000)]
    payloads = bad + make_payloads(2_000, seed=90, bad_ratio=0)
    engine, fake = _engine(
        platform, split(payloads), max_batch_events=100, max_batch_s=3600, max_events=3_000
    )
    fake.rebalance([0, 1], generation=0)
    asked: list[tuple[int, int]] = []
    frozen = _frozen_events(engine)
    real_poll = fake.poll

    def poll(**kw):
        room = engine._batch_limit() - engine.checkpoint.valid
        asked.append((kw["max_records"], room))
        return real_poll(**kw)

    fake.poll = poll
    engine.run()
    assert all(n <= max(FLOOD_GROWTH * room, 1) for n, room in asked), asked
    assert any(n > room > 0 for n, room in asked), asked  # the flood's polls asked for more
    assert max(frozen) <= FLOOD_GROWTH * GROUP_COMMIT * 100, frozen
    assert sum(frozen) == engine.stats.events == 2_000
    assert_exact(platform, payloads)


def test_a_poll_is_sized_by_the_room_left_and_under_a_flood_by_the_last_polls_mix(platform):
    """`_poll_size`: the room left (in valid events) as records, unless the previous poll
    was a flood (64 records or more, rejects at least 1/16 of them): then the room times
    that poll's records a valid event (at most 2), less 1/16; not past what is left of the
    batch's records cap, never below the room."""
    from kafka.structs import TopicPartition

    from antenna_platform.stream.engine import MAX_RECORDS_PER_EVENT_SLOT
    from antenna_platform.stream.records import Record

    engine, _fake = _engine(platform, split([]), max_batch_events=1_000)
    cap = 1_000 * MAX_RECORDS_PER_EVENT_SLOT
    assert engine._poll_size(1_000) == 1_000  # no poll yet
    assert engine._poll_size(0) == 0
    engine._last_mix = (1_000, 980)  # 2 % rejects
    assert engine._poll_size(600) == 600
    engine._last_mix = (2_000, 1_000)  # 1:1: twice the room, less 1/16
    assert engine._poll_size(1_000) == 1_875
    assert engine._poll_size(100) == 187
    engine._last_mix = (5_000, 1_000)  # 4 rejects to an event: still at most twice
    assert engine._poll_size(1_000) == 1_875
    engine._last_mix = (500, 0)  # rejects only
    assert engine._poll_size(10) == 18
    engine._last_mix = (40, 0)  # too few records to tell a mix
    assert engine._poll_size(10) == 10

    # what `_add` notes: the records kept and the valid events among them; refused
    # records (partition 1 is not open) and polls under 64 records leave the last mix
    engine.checkpoint.positions[0] = 0  # partition 0 open from offset 0
    good = make_payloads(100, seed=89, bad_ratio=0)
    recs = [Record(o, 0, b"{not json") for o in range(200)]
    recs += [Record(200 + o, 0, p) for o, (p, _ok) in enumerate(good)]
    assert engine._add({TopicPartition(platform.topic, 0): recs}) == 300
    assert engine._last_mix == (300, 100)
    assert engine._add({TopicPartition(platform.topic, 1): recs}) == 0
    tail = [Record(300 + o, 0, b"[1]") for o in range(10)]
    assert engine._add({TopicPartition(platform.topic, 0): tail}) == 10
    assert engine._last_mix == (300, 100)
    assert engine._poll_size(100) == 187

    # the records cap: 4,000 for this batch, 310 held; 1,500 left
    more = [Record(310 + o, 0, b"[1]") for o in range(cap - 1_810)]
    engine.checkpoint.add(0, more)
    assert engine.checkpoint.records == cap - 1_500
    assert engine._poll_size(1_000) == 1_500
    assert engine._poll_size(1_600) == 1_600  # never below the room


def test_a_flood_of_large_messages_fills_a_batch_up_to_its_bytes(platform, monkeypatch):
    """A batch is full at MAX_BATCH_BYTES of values, whatever else it counts: large
    rejects do not pile up for `max_batch_s` (hundreds of MB in memory and in one COPY).
    Polls of 5 records here: a batch stops within one poll of the cap."""
    from antenna_platform.stream import engine as engine_mod

    cap = 60_000
    monkeypatch.setattr(engine_mod, "MAX_BATCH_BYTES", cap)
    big = [(b"{" + b"x" * 4_998 + bytes([48 + i % 10]), False) for i in range(200)]  # 5,000 B
    payloads = make_payloads(100, seed=88, bad_ratio=0) + big
    engine, fake = _engine(
        platform, split(payloads), max_batch_events=10**6, max_batch_s=3600, max_events=300
    )
    fake.rebalance([0, 1], generation=0)
    real_poll, snapshot = fake.poll, engine.checkpoint.snapshot
    fake.poll = lambda **kw: real_poll(**{**kw, "max_records": 5})
    held: list[int] = []

    def recorded(*args, **kwargs):
        batch = engine.checkpoint.batch
        size = batch.bytes if batch is not None else 0
        snap = snapshot(*args, **kwargs)
        if snap is not None:
            held.append(size)
        return snap

    engine.checkpoint.snapshot = recorded
    engine.run()
    total = sum(len(p) for p, _ in payloads)
    assert sum(held) == total
    assert max(held) < cap + 5 * 5_000 and len(held) >= total // (cap + 5 * 5_000), held
    assert_exact(platform, payloads)


def test_a_full_batch_keeps_filling_while_the_previous_commit_runs_up_to_its_cap(platform):
    """Group commit: while a commit is held up, the next batch grows past max_batch_events
    (not past GROUP_COMMIT times it) instead of waiting, and the result stays exact. A
    batch within 1/FULL_WITHIN of its limit counts as full (2 % of the records are
    rejects: a poll sized by the room left does not fill it to the event)."""
    payloads = make_payloads(3_000, seed=86, bad_ratio=0.02)
    engine, fake = _engine(
        platform, split(payloads), max_batch_events=100, max_batch_s=3600, max_events=3_000
    )
    fake.rebalance([0, 1], generation=0)
    cap = 100 * GROUP_COMMIT
    full = cap - cap // FULL_WITHIN
    release, held = threading.Event(), threading.Event()

    def fault(step: str) -> None:
        if step == "claims" and not held.is_set():  # the first commit is held up
            held.set()
            release.wait(60)

    def watch() -> None:  # let it go once the batch in hand has filled to its cap
        deadline = time.monotonic() + 60
        while engine.checkpoint.valid < full and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()

    engine.fault = fault
    frozen = _frozen_events(engine)
    threading.Thread(target=watch, daemon=True).start()
    engine.run()
    assert 100 - 100 // FULL_WITHIN <= frozen[0] <= 100, frozen  # the limit as set
    assert full <= frozen[1] <= cap, frozen  # filled up to the cap while the first was held
    assert max(frozen) <= cap and sum(frozen) == engine.stats.events
    assert_exact(platform, payloads)
