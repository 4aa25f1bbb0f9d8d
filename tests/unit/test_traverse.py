"""The pg user reaches its files through an ACL naming it, nothing else is widened."""

from __future__ import annotations

import os
import subprocess

import pytest

from antenna_platform.traverse import can_traverse, ensure_path_traversable, grant_traverse

NOBODY = 65534


def as_nobody(*cmd: str) -> int:
    return subprocess.run(
        list(cmd), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, check=False
    ).returncode


@pytest.fixture
def private_tree(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (switches to user nobody)")
    home = tmp_path / "home"  # like /root: private to its owner
    data = home / "project" / ".antenna" / "pg"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("16\n")
    (data / "PG_VERSION").chmod(0o644)
    for d in (tmp_path, home, home / "project", home / "project" / ".antenna"):
        d.chmod(0o700)
    try:
        grant_traverse(tmp_path / "probe_acl_support", NOBODY)
    except FileNotFoundError:
        pass
    except OSError as exc:
        pytest.skip(f"no ACL support here: {exc.strerror}")
    return tmp_path, home, data


def test_only_the_named_user_gains_search_and_nothing_is_listable(private_tree):
    tmp_path, home, data = private_tree
    assert as_nobody("cat", str(data / "PG_VERSION")) != 0
    assert not can_traverse(home, NOBODY, NOBODY)
    changed = ensure_path_traversable(data, NOBODY, NOBODY, home / "project")
    assert home in changed and home / "project" in changed
    assert as_nobody("cat", str(data / "PG_VERSION")) == 0  # reachable now
    assert as_nobody("ls", str(home)) != 0  # but not listable
    for d in (home, home / "project", home / "project" / ".antenna"):
        assert can_traverse(d, NOBODY, NOBODY)
        assert d.stat().st_mode & 0o007 == 0, d  # no bit for others
        assert not can_traverse(d, 12345, 12345), d  # another user gains nothing
    assert ensure_path_traversable(data, NOBODY, NOBODY, home / "project") == []  # idempotent
