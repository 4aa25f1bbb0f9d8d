"""Scale-out path through Spark Connect: a Connect server started from the pyspark wheel
on 127.0.0.1, and a 3-hour `dagster asset materialize --partition-range` with
SPARK_REMOTE=sc://127.0.0.1:PORT, launched from the repo root. Rows must be exact and
the Pandera check of the events must run (and pass) over the Connect DataFrame.

The materialization runs in a subprocess: a Connect session and the session-wide local
`spark` fixture cannot share one Python process (`getOrCreate` would hand back the
classic session, or the other way round).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyspark
import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.warehouse import load_user_metadata
from tests.conftest import free_port
from tests.integration.test_batch import (
    KEYS,
    expected,
    materialize_range_cmd,
    table_rows,
    write_hours,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPARK_HOME = Path(pyspark.__file__).parent
STARTED = "Spark Connect server started at"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def connect_server(tmp_path: Path):
    """A Spark Connect server (local[1]) bound to 127.0.0.1; killed with its process group."""
    port = free_port()
    log = tmp_path / "connect-server.log"
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp_path),
        "SPARK_PID_DIR": str(tmp_path),
        "PYSPARK_PYTHON": sys.executable,
    }
    cmd = [
        str(SPARK_HOME / "sbin" / "start-connect-server.sh"),
        "--master",
        "local[1]",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.extraJavaOptions=-Duser.timezone=UTC",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown kills script and JVM
        )
    try:
        deadline = time.monotonic() + 90
        while not (STARTED in log.read_text() and _port_open(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Spark Connect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the JVM, should it outlive the script
        except ProcessLookupError:
            pass


def test_range_materialization_through_spark_connect(platform, connect_server):
    remote, server_log = connect_server
    events = write_hours(platform)
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_REMOTE": remote}
    before = server_log.read_text().count("ExecuteHolder")
    proc = subprocess.run(
        materialize_range_cmd(),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The queries ran on the Connect server (no local JVM in the CLI process).
    assert server_log.read_text().count("ExecuteHolder") > before
    want_bytes, want_quota = expected(events, load_user_metadata(platform))
    assert table_rows(platform) == (want_bytes, want_quota)

    with dg.DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("bytes_hourly")) == set(KEYS)
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("bytes_hourly"), "hour_events_valid")]
        )[dg.AssetCheckKey(dg.AssetKey("bytes_hourly"), "hour_events_valid")]
        evaluation = check.event.dagster_event.event_specific_data
    assert evaluation.passed
    assert evaluation.metadata["validator"].value == "pandera.pyspark HourEvents"
    assert evaluation.metadata["pandera_passed"].value is True
