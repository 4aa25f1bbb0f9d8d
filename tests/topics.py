"""What tests and benchmarks need of a topic before they load it."""

from __future__ import annotations

import time


def wait_for_partitions(client, topic: str, want: int, timeout: float = 60.0) -> int:
    """Until the client's own metadata shows `want` partitions with a leader (a new
    topic's first view can be partial); returns how many it shows."""
    deadline = time.monotonic() + timeout
    while True:
        t = client.list_topics(topic, timeout=10).topics.get(topic)
        seen = [m for m in (t.partitions.values() if t and not t.error else []) if m.leader >= 0]
        if len(seen) >= want:
            return len(seen)
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic}: {len(seen)} of {want} partitions with a leader")
        time.sleep(0.2)
