"""Traffic simulator: contract events shaped like the course simulator's, on Kafka.

One report per device and tick; a few heavy devices push past their quota in
some hours. Deterministic for a given seed: the same arguments give the same
events in the same order (useful for tests and benchmarks).
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from antenna_platform.warehouse import device_id

APPS = ("SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK")
APP_WEIGHTS = (0.3, 0.3, 0.15, 0.25)
BAD_KINDS = ("not-json", "missing-field", "negative-bytes", "string-bytes", "bad-uuid", "array")


def antenna_id(n: int) -> str:
    """Antenna n (1-based): `11111111-1111-1111-1111-111111111111` style for 1..9."""
    if 1 <= n <= 9:
        d = str(n)
        return f"{d * 8}-{d * 4}-{d * 4}-{d * 4}-{d * 12}"
    return f"{n:08x}-aaaa-4aaa-8aaa-{n:012x}"


@dataclass(frozen=True)
class SimConfig:
    antennas: int = 5
    devices: int = 20
    events: int | None = None  # total; None = run for `duration` seconds (live mode)
    duration: float | None = None
    rate: float = 20.0  # events per second in live mode (0 = as fast as possible)
    start: datetime | None = None  # historic mode: spread events over [start, start+hours)
    hours: float = 1.0
    seed: int | None = None
    bad_ratio: float = 0.0
    heavy_devices: int = 2  # how many devices burst above their quota in some hours


def _bad_message(rng: random.Random, good: dict) -> bytes:
    kind = rng.choice(BAD_KINDS)
    if kind == "not-json":
        return b"{not json" + str(rng.random()).encode()
    if kind == "array":
        return orjson.dumps([good])
    bad = dict(good)
    if kind == "missing-field":
        bad.pop(rng.choice(["timestamp", "id", "antenna_id", "bytes", "app"]))
    elif kind == "negative-bytes":
        bad["bytes"] = -1 - rng.randint(0, 1000)
    elif kind == "string-bytes":
        bad["bytes"] = str(good["bytes"])
    else:
        bad["id"] = "not-a-uuid"
    return orjson.dumps(bad)


def generate(cfg: SimConfig, now: float | None = None) -> Iterator[tuple[bytes, bool]]:
    """Yield (payload, is_valid) pairs.

    Historic mode (`start` set) needs `events`: they are spread evenly over
    `hours` from `start`. Live mode stamps each event with the wall clock.
    """
    rng = random.Random(cfg.seed)
    devices = [device_id(i) for i in range(1, cfg.devices + 1)]
    antennas = [antenna_id(i) for i in range(1, cfg.antennas + 1)]
    # each device mostly uses one "home" antenna, sometimes roams
    home = {d: rng.randrange(cfg.antennas) for d in devices}
    heavy = set(rng.sample(devices, min(cfg.heavy_devices, len(devices))))
    span = cfg.hours * 3600.0
    start_ts = cfg.start.timestamp() if cfg.start else None
    i = 0
    while cfg.events is None or i < cfg.events:
        dev = devices[i % len(devices)]
        if start_ts is not None:
            ts = int(start_ts + (i * span) // cfg.events)
        else:
            ts = int(time.time() if now is None else now)
        hour = ts // 3600
        nbytes = rng.randint(0, 9999)
        # heavy devices burst in roughly every other hour
        if dev in heavy and (hour + int(dev[-2:])) % 2 == 0:
            nbytes *= rng.randint(5, 20)
        ant = antennas[home[dev]] if rng.random() < 0.8 else rng.choice(antennas)
        good = {
            "bytes": nbytes,
            "timestamp": ts,
            "app": rng.choices(APPS, APP_WEIGHTS)[0],
            "id": dev,
            "antenna_id": ant,
        }
        if cfg.bad_ratio and rng.random() < cfg.bad_ratio:
            yield _bad_message(rng, good), False
        else:
            yield orjson.dumps(good), True
        i += 1


def _progress(sent: int, total: int | None, t0: float) -> None:
    rate = sent / max(time.monotonic() - t0, 1e-9)
    if total:
        width = 30
        done = int(width * sent / total)
        bar = "#" * done + "-" * (width - done)
        sys.stderr.write(f"\r[{bar}] {sent}/{total} events  {rate:,.0f}/s")
    else:
        sys.stderr.write(f"\r{sent} events  {rate:,.0f}/s")
    sys.stderr.flush()


def run(cfg: SimConfig, bootstrap: str, topic: str, progress: bool = True) -> dict:
    """Produce the configured traffic; returns a summary (sent, bad, per-hour counts)."""
    from kafka import KafkaProducer  # noqa: PLC0415

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        acks="all",
        retries=10,
        # a new topic's first metadata can list fewer partitions: see them all within 10 s,
        # not after the default 5 minutes of sending to too few
        metadata_max_age_ms=10000,
    )
    per_hour: Counter[str] = Counter()
    sent = bad = 0
    t0 = time.monotonic()
    last_progress = 0.0
    deadline = t0 + cfg.duration if cfg.duration else None
    try:
        for payload, valid in generate(cfg):
            if deadline is not None and time.monotonic() >= deadline:
                break
            producer.send(topic, value=payload)
            sent += 1
            if valid:
                ts = orjson.loads(payload)["timestamp"]
                per_hour[datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:00")] += 1
            else:
                bad += 1
            if cfg.start is None and cfg.rate > 0:
                ahead = t0 + sent / cfg.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if progress and time.monotonic() - last_progress > 0.5:
                last_progress = time.monotonic()
                _progress(sent, cfg.events, t0)
    finally:
        producer.flush()
        producer.close()
    if progress:
        _progress(sent, cfg.events, t0)
        sys.stderr.write("\n")
    return {
        "sent": sent,
        "bad": bad,
        "per_hour": dict(sorted(per_hour.items())),
        "seconds": round(time.monotonic() - t0, 2),
    }
