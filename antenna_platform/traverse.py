"""Let one unprivileged user reach a path without opening it to anyone else.

As root, the embedded Postgres runs as the system user `pgserver`, which must traverse
every directory above its binaries and its data (a home directory holding the project is
often 0700). Adding `o+x` (or worse `o+rx`) there would open it to every user; instead
this adds a POSIX ACL entry naming that one user with search (x) permission only. The
ACL is written as the kernel's `system.posix_acl_access` xattr, so no `setfacl` binary is
needed. Group and other bits keep their effect: the ACL mask is the old group bits plus x,
and the owning group's own entry is unchanged.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
SEARCH = 0o1


class TraverseError(OSError):
    """The user cannot be given traversal of a directory without widening its mode."""


def _read_acl(path: Path) -> list[tuple[int, int, int]] | None:
    try:
        raw = os.getxattr(path, XATTR)
    except OSError:
        return None
    (version,) = struct.unpack_from("<I", raw)
    if version != VERSION:
        return None
    return [struct.unpack_from("<HHI", raw, 4 + 8 * i) for i in range((len(raw) - 4) // 8)]


def _acl_from_mode(mode: int) -> list[tuple[int, int, int]]:
    return [
        (USER_OBJ, (mode >> 6) & 7, UNDEFINED_ID),
        (GROUP_OBJ, (mode >> 3) & 7, UNDEFINED_ID),
        (OTHER, mode & 7, UNDEFINED_ID),
    ]


def can_traverse(path: Path, uid: int, gid: int) -> bool:
    """Whether `uid` (primary group `gid`, no others) may search directory `path`."""
    st = path.stat()
    acl = _read_acl(path)
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if acl:
        entries = {(tag, ident): perm for tag, perm, ident in acl}
        mask = entries.get((MASK, UNDEFINED_ID), 7)
        if (USER, uid) in entries:
            return bool(entries[(USER, uid)] & mask & SEARCH)
        group_perms = [p for (t, i), p in entries.items() if t == GROUP and i == gid]
        if st.st_gid == gid:
            group_perms.append(entries.get((GROUP_OBJ, UNDEFINED_ID), 0))
        if group_perms:
            return any(p & mask & SEARCH for p in group_perms)
    elif st.st_gid == gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def grant_traverse(path: Path, uid: int) -> None:
    """Add (or extend) an ACL entry giving `uid` search permission on directory `path`."""
    mode = path.stat().st_mode
    entries = _read_acl(path) or _acl_from_mode(mode)
    named = {(tag, ident): perm for tag, perm, ident in entries}
    named[(USER, uid)] = named.get((USER, uid), 0) | SEARCH
    mask = 0
    for (tag, _), perm in named.items():
        if tag in (USER, GROUP, GROUP_OBJ):  # the group class the mask bounds
            mask |= perm
    named[(MASK, UNDEFINED_ID)] = mask
    ordered = sorted(named.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    raw = struct.pack("<I", VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for (tag, ident), perm in ordered
    )
    os.setxattr(path, XATTR, raw)


def ensure_path_traversable(target: Path, uid: int, gid: int, project_root: Path) -> list[Path]:
    """Make every directory above `target` searchable by `uid`; returns those changed.

    Uses an ACL entry for that user alone. Where the filesystem has no ACLs, a directory
    inside `project_root` gets `o+x` (search, not list); one outside it is left alone and
    a TraverseError says which and what to do.
    """
    changed = []
    for parent in reversed(target.parents):
        if can_traverse(parent, uid, gid):
            continue
        try:
            grant_traverse(parent, uid)
        except OSError as exc:
            if parent == project_root or project_root in parent.parents:
                parent.chmod(parent.stat().st_mode | 0o001)
            else:
                raise TraverseError(
                    f"user {uid} cannot reach {target}: {parent} is not searchable and has "
                    f"no ACL support ({exc.strerror}); allow it with `chmod o+x {parent}` "
                    "or put the project and ANTENNA_HOME elsewhere"
                ) from None
        changed.append(parent)
    return changed
