"""Spark slots (antenna_platform.spark_slots) against a real Postgres: never more holders
than the limit, however many reach it at once, and a killed holder frees its slot.

Dagster's own pool claim can hand one slot to two runs that reach the batch step at the
same moment (tests/integration/test_operations.py starts two backfills together); these
tests check the guard that holds the limit whatever Dagster decides.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import threading

import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.spark_slots import SPARK_SLOT_LOCK, spark_slot, take_free_slot
from antenna_platform.warehouse import connect
from tests.integration.test_stream_scale import wait_for


@pytest.mark.parametrize(("limit", "workers"), [(1, 5), (2, 6)])
def test_holders_never_exceed_the_limit_when_all_arrive_at_once(platform, limit, workers):
    barrier = threading.Barrier(workers)
    state = threading.Condition()
    holding, most, done, waited = 0, 0, 0, []
    errors: list[BaseException] = []

    def log(message: str) -> None:
        with state:
            waited.append(message)
            state.notify_all()

    def waits() -> int:
        return sum("waiting for a Spark slot" in m for m in waited)

    def worker() -> None:
        nonlocal holding, most, done
        try:
            with connect(platform, autocommit=True) as conn:
                barrier.wait(timeout=60)
                with spark_slot(conn, limit, poll_s=0.02, log=log) as slot:
                    assert 0 <= slot < limit
                    with state:
                        holding += 1
                        most = max(most, holding)
                        state.notify_all()
                        # the first holders stay until the limit is reached and every
                        # other worker has found the slots taken (and said so)
                        state.wait_for(
                            lambda: most >= limit and waits() >= workers - limit, timeout=120
                        )
                    with state:
                        holding -= 1
                        done += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert done == workers
    assert most == limit  # the limit was reached, never passed
    assert waits() == workers - limit
    # every slot is free again: each new session (a session may retake its own lock)
    # gets the next one
    conns = [connect(platform, autocommit=True) for _ in range(limit + 1)]
    try:
        assert [take_free_slot(c, limit) for c in conns] == [*range(limit), None]
    finally:
        for c in conns:
            c.close()


def test_a_killed_holder_frees_its_slot(platform):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from antenna_platform.config import load_settings\n"
            "from antenna_platform.spark_slots import spark_slot\n"
            "from antenna_platform.warehouse import connect\n"
            "with connect(load_settings(), autocommit=True) as conn, spark_slot(conn, 1):\n"
            "    print('holding', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 120)
        assert ready, "the holder process did not take its slot within 120 s"
        assert holder.stdout.readline().strip() == "holding"
        with connect(platform, autocommit=True) as conn:
            held = conn.execute(
                "select count(*) from pg_locks where locktype = 'advisory' "
                "and classid = %s and objid = 0 and granted",
                (SPARK_SLOT_LOCK,),
            ).fetchone()[0]
            assert held == 1
            assert take_free_slot(conn, 1) is None  # taken by the other process
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=60)
            free: list[int | None] = []
            wait_for(
                lambda: free.append(take_free_slot(conn, 1)) or free[-1] == 0,
                60,
                "Postgres to free the killed holder's slot",
            )
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=60)


def test_a_slot_session_lost_mid_work_does_not_fail_the_work(platform):
    """Postgres restarting under a computation ends the slot's session; the computation's
    own result stands (the unlock finds no session, and no lock to release)."""
    with connect(platform, autocommit=True) as other:
        with connect(platform, autocommit=True) as conn, spark_slot(conn, 1):
            pid = conn.info.backend_pid
            assert other.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        # leaving the block raised nothing; the ended session's lock goes with it
        free: list[int | None] = []
        wait_for(
            lambda: free.append(take_free_slot(other, 1)) or free[-1] == 0,
            60,
            "Postgres to end the terminated session",
        )


def test_a_limit_below_one_is_a_clear_error(platform):
    with (
        connect(platform, autocommit=True) as conn,
        pytest.raises(ValueError, match="at least 1"),
        spark_slot(conn, 0),
    ):
        pass


def test_antenna_up_makes_the_dagster_pool_follow_the_configured_limit(tmp_path, monkeypatch):
    """`up` creates pool `spark` with dagster.yaml's limit, recreates it when that limit
    changes (Dagster's own re-initialization fails on Postgres), and leaves a limit set
    in the UI alone."""
    import dagster as dg

    from antenna_platform import services

    if os.environ.get("ANTENNA_DATABASE_URL"):
        pytest.skip("needs a Dagster database of its own (an external server's is shared)")
    settings, _ = services.start_isolated(tmp_path / "home")
    try:
        for key, value in services.dagster_env(settings).items():
            monkeypatch.setenv(key, value)

        def pool() -> tuple[int, bool, int]:
            with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
                storage = instance.event_log_storage
                (limit,) = [p for p in storage.get_pool_limits() if p.name == "spark"]
                slots = storage.get_concurrency_info("spark").slot_count
                return limit.limit, limit.from_default, slots

        assert pool() == (1, True, 1)  # created by start_isolated's `up`
        assert services.prime_spark_pool(settings) is None  # again: nothing to do
        assert pool() == (1, True, 1)
        three = dataclasses.replace(settings, batch_pool_limit=3)
        services.ensure_dagster_home(three)
        # a step holds the slot: the pool is not recreated under it
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            claim = instance.event_log_storage.claim_concurrency_slot("spark", "run-a", "step")
            assert claim.is_claimed
        problem = services.prime_spark_pool(three)
        assert problem is not None and "hold or wait" in problem
        assert pool() == (1, True, 1)
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            instance.event_log_storage.free_concurrency_slots_for_run("run-a")
        assert services.prime_spark_pool(three) is None
        assert pool() == (3, True, 3)
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            instance.event_log_storage.set_concurrency_slots("spark", 2)  # as the UI does
        services.ensure_dagster_home(settings)
        assert services.prime_spark_pool(settings) is None
        assert pool() == (2, False, 2)
    finally:
        services.down(settings)
