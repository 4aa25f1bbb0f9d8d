"""The demo's process mechanics on plain processes: the mark finds every descendant,
wherever it went, and the sweep stops even one that ignores SIGTERM."""

import subprocess
import sys
import time

from antenna_platform import processes

# a child that starts a grandchild in a session of its own (escaping the child's group),
# then both sleep; the grandchild ignores SIGTERM
TREE = """
import os, signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
    start_new_session=True)
print("started", flush=True)
time.sleep(120)
"""


def test_children_and_escaped_descendants_are_found_and_stopped(tmp_path):
    mark = str(tmp_path / "home")
    children = processes.Children(mark, log=lambda _: None)
    proc = children.start("tree", [sys.executable, "-c", TREE], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"started"
    deadline = time.monotonic() + 30
    while len(processes.marked(mark)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert processes.marked(str(tmp_path / "other")) == []  # another home's mark
    children.stop(timeout_s=5)
    assert proc.poll() is not None
    left = processes.marked(mark)
    assert len(left) == 1  # the grandchild left the group: only the mark finds it
    stopped = processes.sweep(mark, grace_s=1)
    assert len(stopped) == 1
    assert processes.marked(mark) == []
