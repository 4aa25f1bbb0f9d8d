"""Run the stream engine without Dagster: `python -m antenna_platform.stream [--idle S]`.

Used by fault tests (a plain process that can be SIGKILLed) and for debugging. SIGTERM
and SIGINT stop it gracefully: the batch in hand is committed and the consumer closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from antenna_platform.config import load_settings
from antenna_platform.stream.engine import StreamEngine, StreamOptions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m antenna_platform.stream")
    ap.add_argument("--idle", type=float, default=None, help="stop after N s without a message")
    ap.add_argument("--max-events", type=int, default=None)
    ap.add_argument("--batch", type=int, default=10_000, help="max events per micro-batch")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = {"flag": False}

    def _stop(_signo, _frame) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    opts = StreamOptions(
        stop_when_idle_s=args.idle, max_events=args.max_events, max_batch_events=args.batch
    )
    stats = StreamEngine(load_settings(), opts).run(lambda: stop["flag"])
    print(f"committed={stats.records} rejects={stats.rejects} reason={stats.stop_reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
