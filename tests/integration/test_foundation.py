"""Foundation: provisioning, service lifecycle, simulator, configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from antenna_platform import contract, services, simulator
from antenna_platform.config import load_settings
from antenna_platform.warehouse import SEED_USERS, connect, provision
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_provision_twice_keeps_twenty_users_and_operator_edits(platform):
    with connect(platform) as conn:
        conn.execute("update user_metadata set quota = 42 where name = 'fede'")
        conn.commit()
    counts = provision(platform)
    assert counts == {"seeded": 0, "users": 20}
    with connect(platform) as conn:
        rows = conn.execute(
            "select id, name, email, quota from user_metadata order by id"
        ).fetchall()
        tables = {
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema='public'"
            )
        }
    assert len(rows) == 20
    assert rows[0] == ("00000000-0000-0000-0000-000000000001", "andres", "andres@gmail.com", 200000)
    assert rows[19] == (
        "00000000-0000-0000-0000-000000000020",
        "emilio",
        "emilio@gmail.com",
        200000,
    )
    assert dict((r[1], r[3]) for r in rows)["fede"] == 42
    expected = {name: q for name, q in SEED_USERS}
    assert {r[1]: r[3] for r in rows if r[1] != "fede"} == {
        k: v for k, v in expected.items() if k != "fede"
    }
    assert {"user_metadata", "bytes", "bytes_hourly", "user_quota_limit"} <= tables


def test_provision_of_a_current_schema_does_not_wait_for_the_streams_writes(platform):
    """A stream commit holds row-exclusive locks on its tables while it runs. `provision`
    of a database whose schema is current (the `user_metadata` asset materialized beside a
    running stream) must not queue behind them: it would hold up the next commits, and
    deadlock with a commit that holds one table and wants another."""
    tables = (
        "bytes",
        "dead_letter_batches",
        "lake_files",
        "lake_hours",
        "stream_offsets",
        "partition_claims",
        "user_metadata",
    )
    done, errors = threading.Event(), []

    def run() -> None:
        try:
            provision(platform)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    holder = connect(platform)
    try:
        holder.execute(
            sql.SQL("lock table {} in row exclusive mode").format(
                sql.SQL(", ").join(map(sql.Identifier, tables))
            )
        )
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        finished = done.wait(60)  # generous: the guarded provision takes milliseconds
    finally:
        holder.rollback()  # releases the locks: a provision that waited now goes on
        holder.close()
    worker.join(60)
    assert finished, "provision waited for the locks of a transaction writing the tables"
    assert not errors, errors


def test_up_twice_is_a_noop_and_down_stops_both(tmp_path):
    if os.environ.get("ANTENNA_DATABASE_URL") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("external services configured: lifecycle of embedded ones not exercised")
    s = load_settings(
        {
            "ANTENNA_HOME": str(tmp_path / "home"),
            "ANTENNA_PG_PORT": str(free_port()),
            "ANTENNA_KAFKA_PORT": str(free_port()),
        }
    )
    try:
        first = services.up(s)
        assert all(st.running for st in first)
        second = services.up(s)
        assert [st.pid for st in second] == [st.pid for st in first]
        assert services.port_open("127.0.0.1", s.pg_port)
        assert services.port_open("127.0.0.1", s.kafka_port)
    finally:
        services.down(s)
    assert not services.postgres_state(s).running
    assert not services.broker_state(s).running
    assert not services.port_open("127.0.0.1", s.pg_port)
    assert not services.port_open("127.0.0.1", s.kafka_port)


def test_port_taken_gives_clear_error(tmp_path, service_env):
    if os.environ.get("ANTENNA_DATABASE_URL"):
        pytest.skip("external Postgres configured")
    s = load_settings(
        {
            "ANTENNA_HOME": str(tmp_path / "home"),
            # the session's broker port is taken: Postgres must refuse to start there
            "ANTENNA_PG_PORT": service_env["ANTENNA_KAFKA_PORT"],
            "ANTENNA_KAFKA_PORT": str(free_port()),
        }
    )
    with pytest.raises(services.ServiceError, match="ANTENNA_PG_PORT"):
        services.start_postgres(s)


def _read_all(settings, expected: int, timeout_s: float = 60) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(settings.topic)
        tps = [TopicPartition(settings.topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[bytes] = []
        import time

        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
        # nothing beyond the expected count
        for records in consumer.poll(timeout_ms=1000).values():
            out.extend(r.value for r in records)
        return out
    finally:
        consumer.close()


def test_simulator_sends_exactly_n_valid_repeatable_events(platform):
    from datetime import UTC, datetime

    # a fixed start makes timestamps part of the repeatable output too
    cfg = simulator.SimConfig(events=10_000, seed=1, start=datetime(2026, 11, 1, tzinfo=UTC))
    summary = simulator.run(cfg, platform.kafka_bootstrap_servers, platform.topic, progress=False)
    assert summary["sent"] == 10_000 and summary["bad"] == 0
    received = _read_all(platform, 10_000)
    assert len(received) == 10_000
    parsed = [contract.parse(v) for v in received]
    assert all(isinstance(e, contract.Event) for e in parsed)
    # same seed, same events (the broker may interleave partitions, so compare as multisets)
    regenerated = [p for p, _ in simulator.generate(cfg)]
    assert Counter(parsed) == Counter(contract.parse(p) for p in regenerated)
    assert len(set(regenerated)) > 9_000  # not one event repeated
    assert {e.id for e in parsed} == {f"00000000-0000-0000-0000-{n:012d}" for n in range(1, 21)}
    assert len({e.antenna_id for e in parsed}) == 5


def test_simulator_history_mode_spreads_over_hours_and_mixes_bad():
    from datetime import UTC, datetime

    cfg = simulator.SimConfig(
        events=3000, seed=7, start=datetime(2026, 3, 1, 10, tzinfo=UTC), hours=3, bad_ratio=0.1
    )
    out = list(simulator.generate(cfg))
    assert len(out) == 3000
    good = [contract.parse(p) for p, ok in out if ok]
    bad = [contract.parse(p) for p, ok in out if not ok]
    assert all(isinstance(e, contract.Event) for e in good)
    assert all(isinstance(e, contract.Rejected) for e in bad)
    assert 200 < len(bad) < 400
    hours = Counter(datetime.fromtimestamp(e.ts, UTC).hour for e in good)
    assert set(hours) == {10, 11, 12}
    assert list(simulator.generate(cfg)) == out


def test_bad_database_url_fails_with_one_line_naming_the_variable(tmp_path):
    env = {
        **os.environ,
        "ANTENNA_DATABASE_URL": f"postgresql://nobody:s3cret@127.0.0.1:{free_port()}/nope",
        "ANTENNA_HOME": str(tmp_path),
    }
    res = subprocess.run(
        [sys.executable, "-m", "antenna_platform.cli", "provision"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "ANTENNA_DATABASE_URL" in lines[0]
    assert "s3cret" not in res.stderr + res.stdout
