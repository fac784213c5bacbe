"""Platform layer: capability flags and the process primitives mpguard uses.

This is the one dispatch point (psutil's ``_ps<os>.py`` pattern): Linux gets
pidfds and a ``/proc`` scanner; other POSIX systems get the portable
fallbacks from ``_posix``; Windows is unsupported.  Capabilities are probed,
not assumed, and can be forced off with ``MPGUARD_DISABLE`` to exercise the
fallbacks on Linux.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NamedTuple

from .._config import disabled_capabilities
from .._errors import MPGuardError, UnsupportedPlatformError

__all__ = [
    "HAS_PIDFD",
    "LINUX",
    "MACOS",
    "POSIX",
    "ProcEntry",
    "check_supported",
    "descendants",
    "group_members",
    "killpg",
    "pidfd_open",
    "pidfd_send_signal",
    "process_table",
]

POSIX = os.name == "posix"
LINUX = sys.platform.startswith("linux")
MACOS = sys.platform == "darwin"


class ProcEntry(NamedTuple):
    """One row of the process table."""

    pid: int
    ppid: int
    pgid: int
    zombie: bool


def _probe_pidfd() -> bool:
    if "pidfd" in disabled_capabilities():
        return False
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False  # Python < 3.9 or not Linux
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS: kernel < 5.3; EPERM: seccomp filters
        return False
    os.close(fd)
    return True


HAS_PIDFD = POSIX and _probe_pidfd()

if LINUX:
    from ._linux import process_table
elif POSIX:
    from ._posix import process_table
else:  # pragma: no cover - Windows is refused by check_supported()

    def process_table() -> list[ProcEntry]:
        """Unsupported on this platform."""
        msg = "mpguard needs a POSIX system"
        raise UnsupportedPlatformError(msg)


def check_supported() -> None:
    """Raise UnsupportedPlatformError unless fork and process groups exist."""
    if not POSIX or not hasattr(os, "fork"):
        msg = f"mpguard needs fork() and process groups (got {sys.platform})"
        raise UnsupportedPlatformError(msg)


def pidfd_open(pid: int) -> int:
    """Open a pidfd for *pid* (Linux >= 5.3).  Raises OSError."""
    return os.pidfd_open(pid)


def pidfd_send_signal(fd: int, sig: int) -> None:
    """Signal the process behind pidfd *fd*.

    A pidfd names one process, never a recycled pid: signalling a process
    that was already reaped raises ProcessLookupError instead of hitting a
    stranger (platform-facts §2.3).
    """
    signal.pidfd_send_signal(fd, sig)


def descendants(roots: list[int], table: list[ProcEntry]) -> list[int]:
    """Pids below *roots* in *table*, parents before children."""
    by_parent: dict[int, list[int]] = {}
    for e in table:
        by_parent.setdefault(e.ppid, []).append(e.pid)
    out: list[int] = []
    todo = list(roots)
    seen = set(roots)
    while todo:
        for child in by_parent.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                out.append(child)
                todo.append(child)
    return out


def group_members(pgid: int, table: list[ProcEntry]) -> list[int]:
    """Live (non-zombie) members of process group *pgid*."""
    return [e.pid for e in table if e.pgid == pgid and not e.zombie]


def killpg(pgid: int, sig: int) -> None:
    """``os.killpg`` with the guard rules of platform-facts §2.4.

    Never pgid 0 (the caller's own group), 1 (init's) or a negative one
    (``kill(-1)`` would hit everything), and never the caller's own group:
    that is seed 001/003's ``killpg(getpgid(getpid()))``, which also kills
    ``tee``/``gzip`` in the shell pipeline.
    """
    if pgid <= 1:
        msg = "refusing to signal a process group <= 1"
        raise MPGuardError(msg, pgid=pgid, signal=sig)
    if pgid == os.getpgrp():
        msg = "refusing to signal the caller's own process group"
        raise MPGuardError(msg, pgid=pgid, signal=sig)
    os.killpg(pgid, sig)
