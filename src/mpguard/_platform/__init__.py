"""Platform layer: capability flags and the process primitives mpguard uses.

This is the one dispatch point (psutil's ``_ps<os>.py`` pattern): Linux gets
pidfds and a ``/proc`` scanner; other POSIX systems get the portable
fallbacks from ``_posix``; Windows is unsupported.  Capabilities are probed,
not assumed, and can be forced off with ``MPGUARD_DISABLE`` to exercise the
fallbacks on Linux.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, NamedTuple

from .._config import disabled_capabilities
from .._errors import GuardSetupError, MPGuardError, UnsupportedPlatformError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "HAS_PIDFD",
    "LINUX",
    "MACOS",
    "POSIX",
    "ProcEntry",
    "INLINE_MAX",
    "anon_file",
    "channel_pair",
    "check_supported",
    "descendants",
    "group_members",
    "killpg",
    "pidfd_open",
    "pidfd_send_signal",
    "process_table",
    "read_anon_file",
    "shared_page",
    "spawn_in_group",
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


def spawn_in_group(
    exe: str | bytes,
    argv: Sequence[str | bytes],
    pass_fds: Iterable[int],
    pgid: int,
    reset: Iterable[int],
) -> int:
    """Start *argv* by ``posix_spawn`` as a member of group *pgid*; its pid.

    The child joins the group before it execs (``setpgroup``), so there is
    no instant in which it runs outside the group: a parent SIGKILLed right
    after this call still takes the child down with the group.  Joining
    after exec (in the child's own Python code) would leave it in the
    parent's group, and a bystander of the parent's pipeline, for the
    length of the interpreter's start-up.  The signals in *reset* start with
    their default action (an inherited SIG_IGN does not survive) and the
    mask starts empty.  Only *pass_fds* are inherited (besides 0, 1, 2 and
    descriptors the program made inheritable itself): ``dup2(fd, fd)`` in
    the file actions clears close-on-exec in the child only (POSIX.1-2017,
    glibc >= 2.29), so no other thread's spawn can inherit them.

    Raises:
        GuardSetupError: the group is gone (EPERM) or the spawn failed.
        UnsupportedPlatformError: no ``posix_spawn`` here.
    """
    if not hasattr(os, "posix_spawn"):  # pragma: no cover - not POSIX
        msg = "guarded spawn needs os.posix_spawn"
        raise UnsupportedPlatformError(msg)
    actions = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in sorted(set(pass_fds))]
    try:
        return os.posix_spawn(
            exe,
            list(argv),
            os.environ,
            file_actions=actions,
            setpgroup=pgid,
            setsigdef=tuple(reset),
            setsigmask=(),
        )
    except OSError as e:
        msg = f"could not spawn a guarded child in process group {pgid}"
        raise GuardSetupError(msg, pgid=pgid, errno=e.errno) from e


# --- pool channels -----------------------------------------------------------
#
# A pool worker talks to its parent over its own socketpair whose messages
# are atomic: a reader gets a whole message or nothing, even if it is
# SIGKILLed inside recvmsg().  That is what lets the parent tell exactly
# which task a dead worker had taken (platform-facts §4: the stdlib's shared
# pipe loses that, and a worker killed mid-read or holding the queue lock
# poisons it for everyone, gh-96062).
#
# Linux has SOCK_SEQPACKET for AF_UNIX; macOS does not, but its AF_UNIX
# datagrams are reliable and ordered, with a small size limit
# (net.local.dgram.maxdgram = 2048).  Larger payloads travel as a file
# descriptor attached to a small message (SCM_RIGHTS), still atomically.

_SEQPACKET = getattr(socket, "SOCK_SEQPACKET", None)

#: Largest payload sent inline; larger ones go through :func:`anon_file`.
INLINE_MAX = 60 * 1024 if LINUX else 1024


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of sockets with atomic, ordered, reliable messages."""
    if _SEQPACKET is not None:
        try:
            pair = socket.socketpair(socket.AF_UNIX, _SEQPACKET)
        except OSError:  # pragma: no cover - macOS: EPROTONOSUPPORT
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    else:  # pragma: no cover
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in pair:
        try:
            # Room for a few queued inline tasks per worker.  Best effort:
            # the kernel caps it at net.core.wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        except OSError:  # pragma: no cover
            pass
    return pair


def anon_file(data: bytes) -> int:
    """A file descriptor of an unnamed file holding *data*.

    Linux: ``memfd_create`` (no name on any filesystem).  Elsewhere an
    unlinked temporary file.  The caller owns the descriptor.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mpguard-payload", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS
        fd, path = tempfile.mkstemp(prefix="mpguard-")
        os.unlink(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def shared_page(*, by_fd: bool) -> tuple[mmap.mmap, int | None]:
    """One page of memory shared with children; and its fd if *by_fd*.

    Fork children inherit an anonymous shared mapping as is.  Spawn and
    forkserver children do not inherit memory, so with *by_fd* the page is
    an unnamed file (``memfd_create``) whose descriptor the child maps.
    """
    if not by_fd:
        return mmap.mmap(-1, mmap.PAGESIZE), None
    fd = anon_file(bytes(mmap.PAGESIZE))
    try:
        return mmap.mmap(fd, mmap.PAGESIZE), fd
    except BaseException:
        os.close(fd)
        raise


def read_anon_file(fd: int, size: int) -> bytes:
    """The first *size* bytes of the file behind *fd* (which stays open)."""
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            msg = "payload file is shorter than announced"
            raise EOFError(msg)
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
