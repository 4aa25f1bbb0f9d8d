"""Operator status and the stream_lag check, against a real broker, Postgres and Dagster."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from kafka import KafkaProducer

from antenna_platform import services, status
from antenna_platform.warehouse import connect

pytestmark = pytest.mark.integration


def _produce(settings, per_partition: dict[int, int]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for partition, n in per_partition.items():
        for i in range(n):
            producer.send(settings.topic, value=b"{}", partition=partition, key=str(i).encode())
    producer.flush()
    producer.close()


def _set_offsets(settings, rows: list[tuple[int, int, datetime]]) -> None:
    with connect(settings) as conn:
        for partition, nxt, updated in rows:
            conn.execute(
                "insert into stream_offsets (consumer_group, topic, partition, next_offset, "
                "updated_at) values (%s, %s, %s, %s, %s) on conflict "
                "(consumer_group, topic, partition) do update set "
                "next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                (settings.consumer_group, settings.topic, partition, nxt, updated),
            )
        conn.commit()


def test_status_reports_lag_per_partition_and_the_check_warns(platform, monkeypatch):
    services.ensure_dagster_home(platform)
    monkeypatch.setenv("DAGSTER_PG_URL", services.dagster_env(platform)["DAGSTER_PG_URL"])
    _produce(platform, {0: 30, 1: 12, 2: 5})
    now = datetime.now(UTC).replace(tzinfo=None)
    # partition 0: 10 read, waiting for 300 s; partition 1: caught up; partition 2: never read
    _set_offsets(platform, [(0, 10, now - timedelta(seconds=300)), (1, 12, now)])

    report = status.collect(platform)
    assert "stream" in report
    parts = {p["partition"]: p for p in report["stream"]["partitions"]}
    assert {p: (v["committed_offset"], v["end_offset"], v["lag"]) for p, v in parts.items()} == {
        0: (10, 30, 20),
        1: (12, 12, 0),
        2: (None, 5, 5),
    }
    assert report["stream"]["total_lag"] == 25
    assert 290 <= parts[0]["stalled_seconds"] <= 400
    assert parts[1]["stalled_seconds"] == 0
    assert report["stream_runs"] == []  # Dagster's instance is readable; no stream run yet

    from antenna_platform.definitions import defs

    job = defs.resolve_job_def("stream_health_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        evals = result.get_asset_check_evaluations()
        assert len(evals) == 1 and not evals[0].passed
        assert evals[0].severity == dg.AssetCheckSeverity.WARN
        assert evals[0].metadata["total_lag"].value == 25

        _set_offsets(platform, [(0, 30, now), (2, 5, now)])
        evals = job.execute_in_process(instance=instance).get_asset_check_evaluations()
        assert evals[0].passed
        assert evals[0].metadata["total_lag"].value == 0


def test_status_json_names_the_services(platform):
    res = subprocess.run(
        [sys.executable, "-m", "antenna_platform.cli", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(res.stdout)
    assert data["database_url"] == platform.database_url  # no password in the test URL
    assert data["kafka_bootstrap_servers"] == platform.kafka_bootstrap_servers
    assert data["lake_dir"] == str(platform.lake_dir)
    assert data["services"]["postgres"]["running"] and data["services"]["kafka"]["running"]
    assert data["lake_manifest"] == {"files": 0, "rows": 0, "bytes": 0}


def test_activity_counts_rejects_and_late_events_of_the_hours_touched_in_the_last_hour(platform):
    from antenna_platform import health

    now = datetime.now(UTC).replace(tzinfo=None)
    hour = now.replace(minute=0, second=0, microsecond=0)
    with connect(platform) as conn, conn.cursor() as cur:
        cur.execute("delete from lake_hours")
        cur.executemany(
            "insert into lake_hours (hour, late_events, rejects, updated_at) "
            "values (%s, %s, %s, %s)",
            [
                (hour, 2, 5, now),  # touched now
                (hour - timedelta(hours=1), 1, 4, now - timedelta(minutes=20)),
                (hour - timedelta(hours=3), 9, 7, now - timedelta(hours=2)),  # long ago
            ],
        )
        conn.commit()
    got = health.activity(platform)
    assert (got["rejects_last_hour"], got["late_events_last_hour"]) == (9, 3)
