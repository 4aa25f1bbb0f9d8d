"""A fake kafka-python consumer for the stream's state-machine tests (Postgres stays real).

It serves records from in-memory partition logs, honours seek/pause/resume, and runs
rebalance callbacks inside `poll()` and `close()` the way kafka-python 3 does (the
listener runs while the caller waits in `poll`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord


def record(topic: str, partition: int, offset: int, value: bytes | None, ts_ms: int = 0):
    return ConsumerRecord(topic, partition, 0, offset, ts_ms, 0, None, value, [], None, -1, 0, -1)


class FakeConsumer:
    def __init__(self, topic: str, logs: dict[int, list[bytes | None]], ts_ms: int = 0) -> None:
        self.topic, self.logs, self.ts_ms = topic, logs, ts_ms
        self.listener = None
        self.generation = -1
        self.assigned: list[int] = []
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()
        self._pending: list[Callable[[], None]] = []
        self.closed = False
        self.topic_uuid: str | None = None

    # what the engine and the listener use
    def subscribe(self, listener) -> FakeConsumer:
        self.listener = listener
        return self

    def _tps(self, parts) -> set[TopicPartition]:
        return {TopicPartition(self.topic, p) for p in parts}

    def assignment(self) -> set[TopicPartition]:
        return self._tps(self.assigned)

    def group_metadata(self):
        return SimpleNamespace(generation_id=self.generation, member_id="fake")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp.partition] = offset

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp.partition] = 0

    def end_offsets(self, tps) -> dict:
        return {tp: len(self.logs.get(tp.partition, [])) for tp in tps}

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs.get(tp.partition, []))

    def pause(self, *tps) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, *tps) -> None:
        self.paused -= {tp.partition for tp in tps}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        while self._pending:
            self._pending.pop(0)()
        out = {}
        budget = max_records or 10**9
        for p in self.assigned:
            if p in self.paused or budget <= 0:
                continue
            pos = self.positions.get(p, 0)
            log = self.logs.get(p, [])
            take = log[pos : pos + budget]
            if take:
                out[TopicPartition(self.topic, p)] = [
                    record(self.topic, p, pos + i, v, self.ts_ms) for i, v in enumerate(take)
                ]
                self.positions[p] = pos + len(take)
                budget -= len(take)
        return out

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        if self.assigned and self.listener is not None:
            self.listener.on_partitions_revoked(self._tps(self.assigned))
        self.assigned = []
        self.closed = True

    # what tests do to it (takes effect inside the next poll, as a real rebalance does)
    def rebalance(self, partitions: list[int], generation: int) -> None:
        def run() -> None:
            if self.assigned:
                self.listener.on_partitions_revoked(self._tps(self.assigned))
            self.generation, self.assigned = generation, sorted(partitions)
            self.paused.clear()
            for p in self.assigned:
                self.positions[p] = 0  # no committed offsets in Kafka: earliest
            self.listener.on_partitions_assigned(self._tps(self.assigned))

        self._pending.append(run)

    def evict(self) -> None:
        def run() -> None:
            lost, self.assigned = self._tps(self.assigned), []
            self.listener.on_partitions_lost(lost)

        self._pending.append(run)
