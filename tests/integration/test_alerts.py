"""Alerts end to end: real failed runs, the real sensors, a real local HTTP receiver.

A failed batch run, a failed blocking check and a stalled stream each give exactly one
alert however often they are seen again, and one "resolved" once the work succeeds.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from antenna_platform import lake
from antenna_platform.definitions import defs
from antenna_platform.warehouse import connect
from resources import build_resources
from schedules.alerts import run_failure_alerts, run_recovery_alerts
from tests.integration.test_batch import H1, H3, KEYS, materialize, plant, write_hours
from tests.integration.test_status import _produce, _set_offsets

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/s3cr3tpath"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, state: str) -> list[str]:
        return sorted(b["antenna"]["key"] for b in self.bodies if b["antenna"]["state"] == state)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def failure_sensor(instance: dg.DagsterInstance, result) -> None:
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources=build_resources(),
    ).for_run_failure()
    run_failure_alerts(ctx)


def success_sensor(instance: dg.DagsterInstance, result) -> None:
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_recovery_alerts",
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources=build_resources(),
    )
    run_recovery_alerts(ctx)


def test_one_alert_per_incident_and_one_when_it_clears(make_platform, spark, receiver, caplog):
    caplog.set_level(logging.INFO, logger="antenna.alerts")
    settings = make_platform(ANTENNA_ALERT_WEBHOOK_URL=receiver.url)
    write_hours(settings)
    instance = dg.DagsterInstance.ephemeral()

    # 1. A batch run fails: a file of H1's manifest is missing on disk (not transient).
    missing = lake.LakeFile(
        f"{lake.hour_relpath(int(H1.timestamp()))}/gone.parquet",
        H1.replace(tzinfo=None),
        None,
        1,
        1,
        1,
    )
    with connect(settings) as conn, conn.transaction():
        lake.register_files(conn, [missing])
    for _ in range(2):  # failing twice is still one incident
        failed = materialize(instance, KEYS[0], ok=False)
        assert not [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        failure_sensor(instance, failed)
        failure_sensor(instance, failed)  # the same failure seen again
    assert receiver.of("firing") == [f"batch:{KEYS[0]}...{KEYS[0]}"]

    # 2. A blocking check fails on H3: one more incident, one more alert.
    base = int(H3.timestamp())
    plant(settings, H3, [(base + 5, -50)], "bad-negative")
    bad = materialize(instance, KEYS[2], ok=False)
    failure_sensor(instance, bad)
    failure_sensor(instance, bad)
    assert receiver.of("firing") == [
        f"batch:{KEYS[0]}...{KEYS[0]}",
        f"check:{KEYS[2]}...{KEYS[2]}",
    ]
    check_alert = next(b for b in receiver.bodies if b["antenna"]["key"].startswith("check:"))
    assert "hour_events_valid" in check_alert["text"]

    # 3. The stream stalls: a partition has waited 300 s without a commit.
    _produce(settings, {0: 30})
    now = datetime.now(UTC).replace(tzinfo=None)
    _set_offsets(settings, [(0, 10, now - timedelta(seconds=300))])
    health = defs.resolve_job_def("stream_health_job")
    for _ in range(2):
        evals = health.execute_in_process(instance=instance).get_asset_check_evaluations()
        assert not evals[0].passed
    assert receiver.of("firing") == [
        f"batch:{KEYS[0]}...{KEYS[0]}",
        f"check:{KEYS[2]}...{KEYS[2]}",
        "stream_lag",
    ]
    assert receiver.of("resolved") == []

    # The stream catches up: one "resolved"; passing again sends nothing more.
    _set_offsets(settings, [(0, 30, now)])
    for _ in range(2):
        assert health.execute_in_process(instance=instance).get_asset_check_evaluations()[0].passed
    assert receiver.of("resolved") == ["stream_lag"]

    # H1 is fixed and computed again: its incident clears; H3 (still bad) stays open.
    with connect(settings) as conn:
        conn.execute("delete from lake_files where path = %s", (missing.path,))
        conn.commit()
    ok = materialize(instance, KEYS[0])
    success_sensor(instance, ok)
    success_sensor(instance, ok)
    assert receiver.of("resolved") == [f"batch:{KEYS[0]}...{KEYS[0]}", "stream_lag"]
    assert len(receiver.of("firing")) == 3

    # Slack-compatible bodies; every alert in the log; the URL (a credential) in no log line.
    assert all(isinstance(b["text"], str) and b["text"] for b in receiver.bodies)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for b in receiver.bodies:
        assert b["text"] in logged
    assert "s3cr3tpath" not in logged and "s3cr3tpath" not in caplog.text


def test_webhook_down_still_logs_and_never_shows_the_url(make_platform, caplog):
    from antenna_platform import alerts
    from tests.conftest import free_port

    caplog.set_level(logging.INFO, logger="antenna.alerts")
    url = f"http://127.0.0.1:{free_port()}/hooks/t0ps3cret"
    settings = make_platform(provision=False, ANTENNA_ALERT_WEBHOOK_URL=url)
    assert alerts.fire(settings, "demo:x", "something broke", "details")
    assert not alerts.fire(settings, "demo:x", "something broke", "details")  # still open
    assert "something broke" in caplog.text and "not delivered" in caplog.text
    assert "t0ps3cret" not in caplog.text
    assert "t0ps3cret" not in repr(settings)
