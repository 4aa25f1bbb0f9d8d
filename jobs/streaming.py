"""`device_stream_job`: the long-running speed-layer op (Kafka -> lake + `bytes`).

In-process executor: a killed multiprocess worker would orphan its step process, and an
idle consumer left in the group blocks it (DAGSTER_NOTES sections 0 and 9). The huge
`dagster/max_runtime` shields it from a global run timeout. Terminating the run raises
DagsterExecutionInterruptedError in the op; the engine commits the batch in hand,
closes the consumer and lets it propagate (the run ends CANCELED).
"""

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import dagster as dg

from antenna_platform.runworker import identity_tags
from antenna_platform.stream.engine import Hooks, StreamEngine, StreamOptions
from assets.lake import device_events
from assets.stream import speed_bytes
from resources import KafkaResource, LakeResource, PostgresResource


class StreamConfig(dg.Config):
    stop_when_idle_s: float | None = None  # end cleanly after N s without a message
    max_events: int | None = None  # end after committing this many records
    max_batch_events: int = 10_000
    max_batch_s: float = 1.0
    give_up_after_s: float = 300.0  # commits failing this long fail the run (sensor restarts)


class DagsterHooks(Hooks):
    """Heartbeat lines go to the run log; a closed hour becomes a materialization of its
    `device_events` partition and of `bytes` (whose 5-minute rows it completed)."""

    def __init__(self, context: dg.OpExecutionContext, partitions_start: datetime) -> None:
        self.context = context
        self.start = partitions_start

    def log(self, msg: str) -> None:
        self.context.log.info(msg)

    def hour_closed(self, hour: datetime, metadata: dict[str, int]) -> None:
        if hour < self.start:
            self.context.log.info(f"hour {hour} is before the partitions start; not reported")
            return
        partition = hour.strftime("%Y-%m-%d-%H:00")
        self.context.log_event(
            dg.AssetMaterialization(
                asset_key=device_events.key, partition=partition, metadata=metadata
            )
        )
        self.context.log_event(
            dg.AssetMaterialization(asset_key=speed_bytes.key, metadata={"hour": partition})
        )


@contextmanager
def stop_flag_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Also remember an interrupt (SIGINT/SIGTERM, or Dagster's terminate) in a flag.

    Dagster raises DagsterExecutionInterruptedError from its signal handler; if that
    exception lands inside a library that turns it into an ordinary error (a database
    driver cancelling its query, say), the engine would treat it as a failed batch and
    go on. The flag makes the loop stop at its next turn in every case.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return
    original = signal.getsignal(signal.SIGINT)

    def handler(signo, frame) -> None:
        stop.set()
        if callable(original):
            original(signo, frame)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, original)
        signal.signal(signal.SIGTERM, original)


@dg.op(description="Consume the topic forever (or until idle) into the lake and `bytes`.")
def device_stream(
    context: dg.OpExecutionContext,
    config: StreamConfig,
    postgres: PostgresResource,
    kafka: KafkaResource,
    lake: LakeResource,
) -> None:
    # who runs this run: device_stream_sensor may have to stop this very process
    context.instance.add_run_tags(context.run_id, identity_tags())
    settings = lake.apply(kafka.apply(postgres.settings()))
    options = StreamOptions(
        stop_when_idle_s=config.stop_when_idle_s,
        max_events=config.max_events,
        max_batch_events=config.max_batch_events,
        max_batch_s=config.max_batch_s,
        give_up_after_s=config.give_up_after_s,
    )
    start = settings.partitions_start_dt.replace(tzinfo=None)
    with stop_flag_on_interrupt() as should_stop:
        stats = StreamEngine(settings, options, DagsterHooks(context, start)).run(should_stop)
    context.log.info(f"stream ended: {stats.stop_reason}")


@dg.job(
    executor_def=dg.in_process_executor,
    tags={
        "dagster/max_runtime": str(10 * 365 * 86400),
        "dagster/max_retries": "0",  # run retries never restart it: the sensor owns it
    },
    description="The speed layer; kept alive by device_stream_sensor.",
)
def device_stream_job() -> None:
    device_stream()
