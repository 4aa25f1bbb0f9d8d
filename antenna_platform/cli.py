"""The `antenna` command: services, provisioning, simulation, status, demo."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

from antenna_platform import services
from antenna_platform.config import ConfigError, Settings, load_settings, redact_url


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    for st in services.up(settings):
        where = "embedded" if st.embedded else "external (not started)"
        print(f"{st.name:9s} {'running' if st.running else 'DOWN':8s} {st.address}  [{where}]")
    services.ensure_topic(settings)
    print(
        f"topic     {settings.topic!r} ready ({settings.topic_partitions} partitions when created)"
    )
    from antenna_platform.dashboards import server  # noqa: PLC0415

    print("\n".join(server.up(settings)))  # Superset, unless ANTENNA_DASHBOARD=0
    return 0


def _cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from antenna_platform import demo  # noqa: PLC0415
    from antenna_platform.dashboards import server  # noqa: PLC0415

    for line in demo.stop_demo(settings):
        print(line)
    server.stop(settings)  # before Postgres, which holds its metadata
    services.down(settings)
    print("embedded services stopped")
    return 0


def _cmd_env(settings: Settings, args: argparse.Namespace) -> int:
    """Shell exports for `eval "$(antenna env)"`: what the `dagster` CLI needs to reach this
    platform's instance and what its resources read (services.dagster_env)."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        print(
            f"antenna: warning: {settings.dagster_home}/dagster.yaml is missing; run `antenna up`",
            file=sys.stderr,
        )
    if urlsplit(settings.database_url).password:
        print("# holds the database password: keep this output out of logs")
    exports = {
        # the same platform for `antenna` itself (e.g. `antenna down` in that shell)
        "ANTENNA_HOME": str(settings.home),
        "ANTENNA_PG_PORT": str(settings.pg_port),
        "ANTENNA_KAFKA_PORT": str(settings.kafka_port),
        **services.dagster_env(settings),
    }
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from antenna_platform import status  # noqa: PLC0415

    report = status.collect(settings)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(status.render(report))
    return 0


def _cmd_provision(settings: Settings, args: argparse.Namespace) -> int:
    from antenna_platform.warehouse import provision  # noqa: PLC0415

    counts = provision(settings)
    print(
        f"tables ready; user_metadata has {counts['users']} users ({counts['seeded']} seeded now)"
    )
    services.ensure_topic(settings, partitions=args.partitions)
    print(f"topic {settings.topic!r} ready")
    return 0


def _parse_start(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from antenna_platform import simulator  # noqa: PLC0415

    if args.start and not args.events:
        raise ConfigError("--start needs --events (how many events to spread over --hours)")
    if not args.events and not args.duration and not args.forever:
        raise ConfigError("say how much: --events N, --duration SECONDS or --forever")
    cfg = simulator.SimConfig(
        antennas=args.antennas,
        devices=args.devices,
        events=args.events,
        duration=args.duration,
        rate=args.rate,
        start=args.start,
        hours=args.hours,
        seed=args.seed,
        bad_ratio=args.bad_ratio,
    )
    topic = args.topic or settings.topic
    services.ensure_topic(settings, topic)
    summary = simulator.run(cfg, settings.kafka_bootstrap_servers, topic, progress=not args.quiet)
    print(
        f"sent {summary['sent']} events ({summary['bad']} malformed) to {topic!r} "
        f"in {summary['seconds']}s"
    )
    for hour, n in summary["per_hour"].items():
        print(f"  {hour}  {n:>9,d} valid events")
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from antenna_platform import demo  # noqa: PLC0415

    code = demo.run(settings, port=args.port, rate=args.rate)
    # Everything is stopped and said: skip the interpreter's teardown of the Dagster
    # modules the shutdown imported (seconds, on a busy machine).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antenna", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start embedded Postgres, Kafka and Superset (idempotent)")
    sub.add_parser(
        "down",
        help="stop a running demo (or what an earlier one left behind), the services and Superset",
    )
    sub.add_parser(
        "env",
        help='print shell exports for the dagster CLI: eval "$(antenna env)"',
    )
    st = sub.add_parser("status", help="services, stream offsets and lag, lake, last batch hour")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    pr = sub.add_parser("provision", help="create tables, seed user_metadata, create the topic")
    pr.add_argument("--partitions", type=int, default=None, help="topic partitions if created")
    sim = sub.add_parser("simulate", help="produce contract events to Kafka")
    sim.add_argument("--antennas", type=int, default=5)
    sim.add_argument("--devices", type=int, default=20)
    sim.add_argument("--rate", type=float, default=20.0, help="events/s in live mode (0 = max)")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run (live mode)")
    sim.add_argument("--events", type=int, default=None, help="total events to send")
    sim.add_argument("--forever", action="store_true", help="live mode until Ctrl-C")
    sim.add_argument(
        "--start",
        type=_parse_start,
        default=None,
        help="ISO time: spread --events over past hours from here",
    )
    sim.add_argument("--hours", type=float, default=1.0, help="span for --start")
    sim.add_argument("--seed", type=int, default=None, help="repeatable run")
    sim.add_argument("--bad-ratio", type=float, default=0.0, help="share of malformed messages")
    sim.add_argument("--topic", default=None)
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    de = sub.add_parser("demo", help="up + provision + simulator + dagster dev (Ctrl-C stops all)")
    de.add_argument("--port", type=int, default=3000)
    de.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="live simulator events/s (1.0 = 3 reports per device per minute)",
    )
    return p


COMMANDS = {
    "up": _cmd_up,
    "down": _cmd_down,
    "env": _cmd_env,
    "status": _cmd_status,
    "provision": _cmd_provision,
    "simulate": _cmd_simulate,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return COMMANDS[args.command](settings, args)
    except (ConfigError, services.ServiceError) as exc:
        print(f"antenna: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser", "redact_url"]
