"""Scale-out path and CLI backfill: a standalone Spark master and worker, started from
the pyspark wheel on 127.0.0.1, run a 3-hour `dagster asset materialize --partition-range`
launched from the repo root against a real (sqlite) Dagster instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SPARK_HOME / "bin" / "spark-class"), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: teardown kills the JVM and wrapper
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def standalone_cluster(tmp_path: Path):
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
        "SPARK_LOG_DIR": str(tmp_path),
        "PYSPARK_PYTHON": sys.executable,
    }
    master = _start(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        tmp_path / "master.log",
        env,
    )
    procs = [master]
    try:
        worker = _start(
            [
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(worker_ui),
            ],
            tmp_path / "worker.log",
            env,
        )
        procs.append(worker)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    if json.load(r).get("aliveworkers", 0) >= 1:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = [(tmp_path / f).read_text()[-2000:] for f in ("master.log", "worker.log")]
                pytest.fail(f"standalone Spark did not come up: {logs}")
            time.sleep(1)
        yield f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}/json/"
    finally:
        for p in reversed(procs):
            _stop(p)


def test_cli_range_backfill_on_standalone_cluster(platform, standalone_cluster, tmp_path):
    master_url, status_url = standalone_cluster
    events = write_hours(platform)
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_MASTER": master_url, "PYSPARK_PYTHON": sys.executable}
    cmd = materialize_range_cmd()
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with urllib.request.urlopen(status_url, timeout=5) as r:
        apps = json.load(r)["completedapps"]
    assert [a["name"] for a in apps] == ["antenna-batch"]  # it ran on the cluster
    want_bytes, want_quota = expected(events, load_user_metadata(platform))
    assert table_rows(platform) == (want_bytes, want_quota)
    # The run is in the instance under DAGSTER_HOME, with one materialization per hour.
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        keys = instance.get_materialized_partitions(dg.AssetKey("bytes_hourly"))
    assert keys == set(KEYS)
