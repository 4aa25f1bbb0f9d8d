"""Exactly once when a worker pauses and comes back (issue 10): ownership fencing.

Two workers (`python -m antenna_platform.stream` processes in one group) consume while
traffic keeps arriving. At random moments one is frozen with SIGSTOP past the session
timeout, so the group hands its partitions to the other, which claims them and writes;
then the frozen one is resumed beside its successor. Several rounds, then drained.
Expectations come from the produced payloads; the lake is read by a plain reader too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from antenna_platform.config import PROJECT_ROOT
from antenna_platform.warehouse import connect
from tests.integration.test_stream import assert_exact, make_payloads, observed, produce
from tests.integration.test_stream_faults import committed, run_to_idle
from tests.integration.test_stream_scale import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def claims_by_pid(settings) -> dict[int, int]:
    """Live (not released) claims per worker process id."""
    with connect(settings) as conn:
        rows = conn.execute(
            "select owner from partition_claims where topic = %s and not released",
            (settings.topic,),
        ).fetchall()
    out: dict[int, int] = {}
    for (owner,) in rows:
        pid = int(owner.split("/")[1])
        out[pid] = out.get(pid, 0) + 1
    return out


def start_worker(log_path, *args: str) -> subprocess.Popen:
    """A stream worker whose output goes to a file (readable when a wait times out)."""
    out = open(log_path, "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        [sys.executable, "-m", "antenna_platform.stream", *args],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_paused_workers_resumed_beside_their_successors_stay_exact(make_platform, tmp_path):
    parts = 4
    settings = make_platform(partitions=parts, ANTENNA_WATERMARK_SECONDS="86400")
    payloads = make_payloads(120_000, seed=71, bad_ratio=0.02)
    rounds = 4
    # a piece of the traffic before each freeze (the victim is busy with it) and one while
    # it sleeps (its successor writes it), so each pause lands in the middle of the work
    step = len(payloads) // (2 * rounds + 1)
    pieces = [payloads[i * step : (i + 1) * step] for i in range(2 * rounds)]
    pieces.append(payloads[2 * rounds * step :])
    produce(settings, pieces[0])
    args = ("--batch", "400", "--idle", "15")
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    workers = [start_worker(logs[0], *args), start_worker(logs[1], *args)]
    rng = random.Random(17)
    paused_at: list[int] = []
    try:
        wait_for(lambda: len(claims_by_pid(settings)) == 2, 120, "both workers to claim")
        for r in range(rounds):
            victim = workers[rng.randrange(2)]
            other = next(w for w in workers if w is not victim)
            if r:
                produce(settings, pieces[2 * r])
            wait_for(lambda: committed(settings) > 0, 60, "a commit")
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment (often mid-commit)
            victim.send_signal(signal.SIGSTOP)
            paused_at.append(committed(settings))
            try:
                # the group evicts the frozen member; its successor claims everything, then
                # writes new traffic (files, offsets) while the frozen one sleeps
                wait_for(
                    lambda o=other: claims_by_pid(settings).get(o.pid) == parts,
                    120,
                    "the successor to claim every partition",
                )
                before = committed(settings)
                produce(settings, pieces[2 * r + 1])
                wait_for(lambda b=before: committed(settings) > b, 60, "the successor to commit")
                time.sleep(rng.uniform(0.0, 2.0))
            finally:
                victim.send_signal(signal.SIGCONT)
            # resumed beside its successor: the group splits the partitions again
            wait_for(lambda: len(claims_by_pid(settings)) == 2, 120, "the woken worker to rejoin")
        produce(settings, pieces[-1])
        for w in workers:
            w.wait(timeout=300)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGCONT)
                w.kill()
                w.wait()
        outs = [p.read_text() for p in logs]
        for i, out in enumerate(outs):
            print(f"---- worker {i} (pid {workers[i].pid})\n{out[-6000:]}")
    assert all(w.returncode == 0 for w in workers), [o[-2000:] for o in outs]
    assert any("fenced" in o or "lost partitions" in o for o in outs), "no worker was fenced"
    assert paused_at and paused_at[-1] < len(payloads), f"pauses came after the load: {paused_at}"
    # both workers stopped cleanly: device_events/ holds exactly the manifest, nothing more
    got = observed(settings)
    assert got["on_disk"] == got["manifest"]
    assert got["lake_rows"] == got["unique_keys"]
    run_to_idle()  # drain whatever is left (nothing, normally), then check everything
    got = assert_exact(settings, payloads)
    assert got["staged"] == [], "files of fenced writers left in the staging folder"


def test_a_run_the_sensor_gives_up_on_wakes_beside_its_successor_and_stays_exact(
    make_platform, tmp_path, monkeypatch
):
    """A stream run (a real `dagster job execute`) is frozen mid-work; its successor takes
    the partitions over and writes; the sensor then gives up on the silent run and stops
    it: it wakes (SIGCONT, SIGTERM) beside its successor, holding a batch under an older
    claim. Nothing of it may land twice, nothing may be lost."""
    from types import SimpleNamespace

    import dagster as dg

    import schedules.stream_sensor as stream_sensor
    from antenna_platform import runworker
    from schedules.stream_sensor import device_stream_sensor
    from tests.integration.test_stream_stop import dagster_stream

    parts = 3
    settings = make_platform(
        partitions=parts, ANTENNA_WATERMARK_SECONDS="86400", ANTENNA_STREAM_STALE_SECONDS="30"
    )
    payloads = make_payloads(60_000, seed=91, bad_ratio=0.02)
    pieces = [payloads[:20_000], payloads[20_000:30_000], payloads[30_000:50_000]]
    produce(settings, pieces[0])
    run_proc, run_lines = dagster_stream(tmp_path, max_batch_events=400)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    successor = None
    try:
        instance = dg.DagsterInstance.get()

        def the_run():
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="device_stream_job"))
            return runs[0] if runs and runworker.PID_TAG in runs[0].tags else None

        wait_for(lambda: the_run() is not None, 120, "the run's tags")
        wait_for(lambda: committed(settings) > 0, 120, "the run's first commit")
        produce(settings, pieces[1])
        time.sleep(random.Random(5).uniform(0.0, 1.0))  # mid-work
        run_proc.send_signal(signal.SIGSTOP)
        frozen_at = committed(settings)
        successor = start_worker(tmp_path / "successor.log", "--batch", "400", "--idle", "15")
        wait_for(
            lambda: claims_by_pid(settings).get(successor.pid) == parts,
            120,
            "the successor to claim every partition",
        )
        before = committed(settings)
        produce(settings, pieces[2])
        wait_for(lambda: committed(settings) > before, 60, "the successor to commit")
        # the sensor gives up on the silent run: it wakes it and stops it
        ahead = time.time() + 120
        monkeypatch.setattr(stream_sensor, "time", SimpleNamespace(time=lambda: ahead))
        device_stream_sensor(dg.build_sensor_context(instance=instance))
        run_proc.wait(timeout=90)
        produce(settings, payloads[50_000:])
        successor.wait(timeout=300)
    finally:
        for p in (run_proc, successor):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        print("".join(run_lines)[-6000:])
    assert frozen_at < len(payloads)
    assert successor.returncode == 0, (tmp_path / "successor.log").read_text()[-3000:]
    run_to_idle()
    got = assert_exact(settings, payloads)
    assert got["staged"] == []
