"""The rebalance listener: what happens to the batch in hand when partitions move.

kafka-python 3 calls it on its IO thread while the main thread waits inside `poll()` or
`close()`, so it may touch the checkpoint and the ownership, but a blocking call here
stalls heartbeats: everything it does is bounded by `budget_s`.

- assigned: remember the partitions and the group generation that assigned them; the
  main loop claims them (Postgres) before it keeps any of their records;
- revoked: commit the batch in hand (it holds only partitions still claimed), within the
  budget; if the commit fails or does not finish in time it is dropped (its offsets did
  not move, and it holds claims that a newer claim fences). Then forget the partitions;
- lost (evicted from the group: a pause, a missed heartbeat): drop the batch in hand,
  never commit it; the partitions already belong to someone else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka.consumer.subscription_state import ConsumerRebalanceListener

from antenna_platform.stream.checkpoint import Checkpoint, Committer
from antenna_platform.stream.consumer import topic_id
from antenna_platform.stream.ownership import Ownership

# a plain (sync) listener runs inline on kafka-python's event loop, heartbeats included:
# the budget stays below the session timeout (6 s) less one heartbeat interval (2 s)
REVOKE_BUDGET_S = 2.5


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(
        self,
        topic: str,
        ownership: Ownership,
        checkpoint: Checkpoint,
        committer: Committer,
        log: Callable[[str], None],
        budget_s: float = REVOKE_BUDGET_S,
    ) -> None:
        self.topic = topic
        self.ownership, self.checkpoint, self.committer = ownership, checkpoint, committer
        self._log = log
        self.budget_s = budget_s
        self.consumer = None  # set once the consumer that calls us exists
        self.assigned_at = time.monotonic()  # when partitions last arrived (idle clock)

    def _generation(self) -> int:
        return self.consumer.group_metadata().generation_id if self.consumer is not None else -1

    def _mine(self, tps) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == self.topic)

    def on_partitions_assigned(self, assigned) -> None:
        parts = self._mine(assigned)
        generation = self._generation()
        self._log(f"assigned partitions {parts} (generation {generation})")
        self.ownership.assign(parts, generation)
        self.assigned_at = time.monotonic()

    def on_partitions_revoked(self, revoked) -> None:
        parts = self._mine(revoked)
        self._log(f"revoked partitions {parts}")
        self._commit_in_hand()
        self.checkpoint.close(parts)
        self.ownership.revoke(parts)

    def on_partitions_lost(self, lost) -> None:
        parts = self._mine(lost)
        self._log(
            f"lost partitions {parts} (evicted from the group): batch in hand dropped, "
            "not committed"
        )
        self.committer.abandon()
        self.checkpoint.drop()
        self.ownership.revoke(parts)
        self.ownership.unclaim()

    def _commit_in_hand(self) -> None:
        deadline = time.monotonic() + self.budget_s
        try:
            if not self.committer.settle(self.budget_s):
                raise TimeoutError(f"the commit in flight took over {self.budget_s:.1f}s")
            snap = self.checkpoint.snapshot(
                self.ownership.held, topic_id(self.consumer, self.topic)
            )
            if snap is not None:
                self.committer.submit(snap, timeout_s=max(deadline - time.monotonic(), 0.5))
                if not self.committer.settle(max(deadline - time.monotonic(), 0.0)):
                    raise TimeoutError(f"the revocation commit took over {self.budget_s:.1f}s")
        except Exception as exc:  # noqa: BLE001 - dropped: its offsets did not move
            self.committer.abandon()
            self.checkpoint.drop()
            self.ownership.unclaim()
            text = str(exc).strip().splitlines()
            self._log(
                "revocation: batch in hand dropped, not committed (it will be read again): "
                f"{type(exc).__name__}: {text[-1] if text else ''}"
            )
