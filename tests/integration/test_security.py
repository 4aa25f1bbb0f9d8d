"""Security basics: loopback-only services, no credentials in output, no formatted SQL."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psutil
import pytest

from antenna_platform import services
from antenna_platform.config import load_settings
from resources import PostgresResource, build_resources
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _listening(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addrs = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:  # a short-lived Postgres backend
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                addrs.add(conn.laddr.ip)
    return addrs


def test_embedded_services_listen_on_loopback_only(service_env):
    if os.environ.get("ANTENNA_DATABASE_URL") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("external services configured")
    s = load_settings(
        {k: service_env[k] for k in ("ANTENNA_HOME", "ANTENNA_PG_PORT", "ANTENNA_KAFKA_PORT")}
    )
    for state in (services.postgres_state(s), services.broker_state(s)):
        assert state.running and state.pid
        addrs = _listening(state.pid)
        assert addrs, f"{state.name} listens nowhere?"
        assert addrs <= {"127.0.0.1"}, f"{state.name} listens on {addrs}"


def test_status_and_errors_never_show_the_password(tmp_path):
    env = {
        **os.environ,
        "ANTENNA_HOME": str(tmp_path),
        "ANTENNA_DATABASE_URL": "postgresql://alice:TopSecret99@127.0.0.1:1/antenna",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    for args in (["status", "--json"], ["status"], ["provision"]):
        res = subprocess.run(
            [sys.executable, "-m", "antenna_platform.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = res.stdout + res.stderr
        assert "TopSecret99" not in out, args
        assert "alice:***@127.0.0.1:1" in out, (args, out)


def _python_files() -> list[Path]:
    dirs = ["antenna_platform", "assets", "resources", "jobs", "schedules", "benchmarks"]
    return [p for d in dirs for p in (ROOT / d).rglob("*.py")]


def test_no_sql_is_built_with_string_formatting():
    """execute()/executemany()/copy() never receive an f-string, `%` or `.format` string."""
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in {"execute", "executemany", "copy"} or not node.args:
                continue
            arg = node.args[0]
            formatted = (
                isinstance(arg, ast.JoinedStr)
                or (isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mod | ast.Add))
                or (
                    isinstance(arg, ast.Call)
                    and isinstance(arg.func, ast.Attribute)
                    and arg.func.attr == "format"
                    and isinstance(arg.func.value, ast.Constant)
                )
            )
            if formatted:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_resources_and_runs_never_show_the_database_password(make_platform, monkeypatch):
    """The resource's repr hides the URL; a run that uses it (and fails to connect) keeps
    the password out of its run config and its event log."""
    secret_url = f"postgresql://alice:TopSecret99@127.0.0.1:{free_port()}/antenna"
    assert "TopSecret99" not in repr(PostgresResource(database_url=secret_url))
    make_platform(provision=False)
    monkeypatch.setenv("ANTENNA_DATABASE_URL", secret_url)

    @dg.op
    def touch(postgres: PostgresResource) -> None:
        assert "TopSecret99" not in repr(postgres)
        postgres.connect().close()  # fails: nothing listens there

    @dg.job
    def uses_postgres() -> None:
        touch()

    instance = dg.DagsterInstance.ephemeral()
    result = uses_postgres.execute_in_process(
        resources={"postgres": build_resources()["postgres"]},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert "TopSecret99" not in repr(run.run_config)
    logged = "\n".join(
        (e.message or "") + repr(e.dagster_event.event_specific_data if e.dagster_event else "")
        for e in instance.all_logs(result.run_id)
    )
    assert "ANTENNA_DATABASE_URL: cannot connect" in logged
    assert "alice:***@" in logged and "TopSecret99" not in logged
