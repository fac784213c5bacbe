"""Platform layer: the capabilities record and the process primitives.

This is the one dispatch point (psutil's ``_ps<os>.py`` pattern): Linux gets
pidfds and a ``/proc`` scanner; other POSIX systems get the portable
fallbacks from ``_posix``; Windows is unsupported.  Capabilities are probed
once, into :data:`CAPS`, not assumed, and every branch elsewhere reads that
record.  ``MPGUARD_DISABLE`` forces capabilities off, to exercise the
fallbacks on Linux.
"""

from __future__ import annotations

import errno
import functools
import math
import mmap
import os
import select
import signal
import socket
import sys
import tempfile
import threading
from collections import namedtuple

from .._config import disabled_capabilities, record
from .._errors import GuardSetupError, MPGuardError, UnsupportedPlatformError

# typing.TYPE_CHECKING without importing typing: a spawn or forkserver
# worker loads this module, and typing costs it 2 ms at start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, NamedTuple

__all__ = [
    "ALL_SIGNALS",
    "CAPS",
    "Capabilities",
    "LINUX",
    "MACOS",
    "PERL",
    "POSIX",
    "ProcEntry",
    "INLINE_MAX",
    "anon_file",
    "channel_pair",
    "check_supported",
    "children_of",
    "child_subreaper",
    "descendants",
    "group_has_others",
    "group_members",
    "killpg",
    "pidfd_open",
    "pidfd_send_signal",
    "probe",
    "process_table",
    "read_anon_file",
    "set_child_subreaper",
    "shared_page",
    "spawn_in_group",
    "subtree",
    "waiting_child",
    "WakePipe",
]

#: Every signal: blocked while mpguard forks a child or starts a helper
#: thread, so that no handler runs in between.
ALL_SIGNALS = frozenset(signal.valid_signals())

POSIX = os.name == "posix"
LINUX = sys.platform.startswith("linux")
MACOS = sys.platform == "darwin"

#: ``pidfd_send_signal`` flag (Linux 6.9): signal the process group the
#: pidfd's process leads (include/uapi/linux/pidfd.h).
PIDFD_SIGNAL_PROCESS_GROUP = 1 << 2


if TYPE_CHECKING:

    class ProcEntry(NamedTuple):
        """One row of the process table."""

        pid: int
        ppid: int
        pgid: int
        zombie: bool
        #: When it started, in a unit of the platform's own (clock ticks
        #: since boot on Linux): with the pid, it names one process, never
        #: its recycled pid.  0.0 where unknown.
        start: float = 0.0

else:
    # The class typing.NamedTuple would build, without importing typing.
    ProcEntry = namedtuple("ProcEntry", "pid ppid pgid zombie start", defaults=(0.0,))
    ProcEntry.__doc__ = "One row of the process table."


@record
class Capabilities:
    """What this machine offers mpguard, probed once, when first needed.

    Every platform branch in mpguard reads this record (``CAPS``) and
    nothing else.  A capability named in ``MPGUARD_DISABLE`` reads as
    missing, so that the fallbacks can be tested on Linux.

    Attributes:
        system: ``sys.platform``.
        kernel: the kernel release (``os.uname().release``).
        kernel_version: its leading numbers, ``(6, 8)``; ``()`` if unknown.
        python: ``sys.version_info[:3]``.
        fork: ``os.fork`` and process groups exist (POSIX).
        posix_spawn: ``os.posix_spawn`` exists (guarded spawn and forkserver).
        pidfd: ``pidfd_open`` works (Linux >= 5.3): exact exit wake-ups,
            and signals that cannot hit a recycled pid.
        pidfd_group_signal: ``pidfd_send_signal`` takes
            ``PIDFD_SIGNAL_PROCESS_GROUP`` (Linux >= 6.9).
        subreaper: ``PR_SET_CHILD_SUBREAPER`` exists (Linux >= 3.4).
        cgroup2: this process is in a cgroup v2 hierarchy.
        cgroup_kill: its cgroup has ``cgroup.kill`` (Linux >= 5.14).
        memfd: ``os.memfd_create`` exists (unnamed payload files).
        seqpacket: ``AF_UNIX`` + ``SOCK_SEQPACKET`` socket pairs work.
        perl: a ``perl`` on ``PATH``: the guardian runs in it, which starts
            in 2 ms of CPU where a ``python -I -S`` takes 15 (without one,
            or with ``MPGUARD_DISABLE=perl``, the guardian is a python).
    """

    system: str
    kernel: str
    kernel_version: tuple[int, ...]
    python: tuple[int, int, int]
    fork: bool
    posix_spawn: bool
    pidfd: bool
    pidfd_group_signal: bool
    subreaper: bool
    cgroup2: bool
    cgroup_kill: bool
    memfd: bool
    seqpacket: bool
    perl: bool

    def as_dict(self) -> dict[str, object]:
        """The record as plain data (for logs and machine-readable output)."""
        return {n: getattr(self, n) for n in self._mpguard_fields}  # type: ignore[attr-defined]


def _kernel_version(release: str) -> tuple[int, ...]:
    out = []
    for part in release.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _probe_pidfd() -> tuple[bool, bool]:
    """(pidfd works, pidfd group signalling works)."""
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False, False  # not Linux, or Python < 3.9
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS: kernel < 5.3; EPERM: seccomp filters
        return False, False
    try:
        # Signal 0 only checks permission: nothing is delivered.  EINVAL
        # means the kernel does not know the flag.
        signal.pidfd_send_signal(fd, 0, None, PIDFD_SIGNAL_PROCESS_GROUP)
        group = True
    except OSError as e:
        # ESRCH (we lead no group) or EPERM still mean the flag is known.
        group = e.errno != errno.EINVAL
    finally:
        os.close(fd)
    return True, group


def _probe_cgroup() -> tuple[bool, bool]:
    """(in a cgroup v2 hierarchy, its cgroup has ``cgroup.kill``)."""
    try:
        with open("/proc/self/cgroup", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return False, False
    for line in lines:
        if line.startswith(b"0::"):  # the unified (v2) hierarchy
            path = line[3:].decode(errors="replace")
            kill = os.path.exists(f"/sys/fs/cgroup{path.rstrip('/')}/cgroup.kill")
            return True, kill
    return False, False


def _probe_seqpacket() -> bool:
    kind = getattr(socket, "SOCK_SEQPACKET", None)
    if kind is None:
        return False
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
    except OSError:  # macOS: EPROTONOSUPPORT
        return False
    a.close()
    b.close()
    return True


def _find_perl() -> str | None:
    """The first executable ``perl`` in an absolute ``PATH`` directory."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        # A relative entry would name a different perl in every directory
        # the program changes to.  One access(2) per entry; the stat of
        # isfile() only for a hit (this runs in every spawn worker too).
        if d.startswith("/"):
            path = d.rstrip("/") + "/perl"
            if os.access(path, os.X_OK) and os.path.isfile(path):
                return path
    return None


_PERL = _find_perl() if POSIX else None


def probe(disabled: frozenset[str] = frozenset()) -> Capabilities:
    """Probe the machine now; capabilities in *disabled* read as missing."""
    release = os.uname().release if POSIX else ""
    kernel = _kernel_version(release) if LINUX else ()
    pidfd, pidfd_group = _probe_pidfd() if POSIX else (False, False)
    cgroup2, cgroup_kill = _probe_cgroup() if LINUX else (False, False)
    found = {
        "fork": POSIX and hasattr(os, "fork"),
        "posix_spawn": hasattr(os, "posix_spawn"),
        "pidfd": pidfd,
        "pidfd_group_signal": pidfd and pidfd_group,
        "subreaper": LINUX and kernel >= (3, 4),
        "cgroup2": cgroup2,
        "cgroup_kill": cgroup_kill,
        "memfd": hasattr(os, "memfd_create"),
        "seqpacket": _probe_seqpacket(),
        "perl": _PERL is not None,
    }
    if "pidfd" in disabled:  # the group flag rides on pidfds
        disabled = disabled | {"pidfd_group_signal"}
    flags = {k: v and k not in disabled for k, v in found.items()}
    return Capabilities(
        system=sys.platform,
        kernel=release,
        kernel_version=kernel,
        python=(sys.version_info[0], sys.version_info[1], sys.version_info[2]),
        **flags,
    )


#: This machine's capabilities, probed once.
CAPS = probe(disabled_capabilities())

#: The perl the guardian runs in; None: it runs in this Python.
PERL = _PERL if CAPS.perl else None

if LINUX:
    from ._linux import children_of, group_has_others, process_table
    from ._linux import subtree as _subtree
elif POSIX:
    from ._posix import children_of, group_has_others, process_table
    from ._posix import subtree as _subtree
else:  # pragma: no cover - Windows is refused by check_supported()

    def process_table() -> list[ProcEntry]:
        """Unsupported on this platform."""
        msg = "mpguard needs a POSIX system"
        raise UnsupportedPlatformError(msg)

    def _subtree(root: int) -> list[ProcEntry] | None:
        return process_table()

    def children_of(pid: int) -> list[int] | None:
        """Unsupported on this platform."""
        del pid
        return None

    def group_has_others(pgid: int, leader: int) -> bool:
        """Unsupported on this platform."""
        del pgid, leader
        return process_table() != []


def subtree(root: int) -> list[ProcEntry]:
    """Every descendant of *root*, zombies included, parents before children.

    On Linux only *root*'s subtree is read; elsewhere the whole table is
    scanned.
    """
    entries = _subtree(root)
    if entries is not None:
        return entries
    table = process_table()
    by_pid = {e.pid: e for e in table}
    return [by_pid[pid] for pid in descendants([root], table)]


def check_supported() -> None:
    """Raise UnsupportedPlatformError unless fork and process groups exist."""
    if not CAPS.fork:
        msg = f"mpguard needs fork() and process groups (got {sys.platform})"
        raise UnsupportedPlatformError(msg)


def start_thread_without_signals(thread: threading.Thread) -> None:
    """Start *thread* with every signal blocked in it.

    For mpguard's own helper threads.  A signal sent to the process goes to
    any one thread that does not block it (signal(7)), and CPython runs its
    handler only in the main thread: delivered to a helper thread, a
    SIGTERM only sets a flag, and a main thread blocked in a system call
    (``join()`` polling a pidfd) never wakes to run the handler, so the
    guard's teardown never happens.  A new thread inherits its creator's
    mask, so the mask is set before it exists, with no window.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def wait_readable(fd: int, timeout: float | None = None) -> bool:
    """Wait until *fd* is readable or hung up (a pidfd: its process
    exited), at most *timeout* seconds (None: no limit).  True if it is.

    One ``poll(2)`` call: ``multiprocessing.connection.wait`` builds a
    selector in Python on each call, which cost a pool's ``terminate()``
    1-2 ms over 32 workers.  ``poll``, not ``select``: a descriptor may be
    numbered above ``FD_SETSIZE``.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(ms))


def pidfd_open(pid: int) -> int:
    """Open a pidfd for *pid* (Linux >= 5.3).  Raises OSError."""
    return os.pidfd_open(pid)


def pidfd_send_signal(fd: int, sig: int) -> None:
    """Signal the process behind pidfd *fd*.

    A pidfd names one process, never a recycled pid: signalling a process
    that was already reaped raises ProcessLookupError instead of hitting a
    stranger (pidfd_send_signal(2)).
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


#: prctl(2) options: orphans below the caller are reparented to it, not init.
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@functools.cache
def _libc() -> Any:
    """The C library, loaded once (a leak check asks prctl every test)."""
    import ctypes  # noqa: PLC0415 - only where prctl is used

    return ctypes.CDLL(None, use_errno=True)


def child_subreaper() -> bool:
    """Whether this process is a child subreaper now (False off Linux)."""
    if not CAPS.subreaper:
        return False
    import ctypes  # noqa: PLC0415 - only where a subreaper is used

    flag = ctypes.c_int(0)
    if _libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        return False  # pragma: no cover - PR_GET exists wherever PR_SET does
    return bool(flag.value)


def set_child_subreaper(on: bool) -> None:
    """Make this process a child subreaper (or stop being one).

    A process that dies leaves its children to the nearest ancestor that is
    a subreaper, instead of init (prctl(2), ``PR_SET_CHILD_SUBREAPER``), so
    that orphans can still be found, and must then be reaped, here.

    Raises:
        UnsupportedPlatformError: not Linux >= 3.4.
        GuardSetupError: prctl failed.
    """
    if not CAPS.subreaper:
        msg = "a child subreaper needs Linux >= 3.4 (PR_SET_CHILD_SUBREAPER)"
        raise UnsupportedPlatformError(msg)
    import ctypes  # noqa: PLC0415 - only where a subreaper is used

    if _libc().prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        msg = f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(err)}"
        raise GuardSetupError(msg, errno=err)


def waiting_child() -> int | None:
    """The pid of one exited, unreaped child of this process, or None.

    Reaps nothing (``WNOWAIT``): one system call that tells whether a
    zombie-finding scan is needed at all.
    """
    try:
        res = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if res is None else res.si_pid


def killpg(pgid: int, sig: int) -> None:
    """``os.killpg`` that can never hit a bystander.

    Never pgid 0 (the caller's own group), 1 (init's) or a negative one
    (``kill(-1)`` would hit everything, kill(2)), and never the caller's own
    group: the widely copied ``os.killpg(os.getpgid(os.getpid()), SIGKILL)``
    "kill my whole tree" recipe also kills ``tee``/``gzip`` in
    ``python app.py | tee log``, because a shell puts every command of a
    pipeline in one process group (setpgid(2), credentials(7)).
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
    if not CAPS.posix_spawn:  # pragma: no cover - not POSIX
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
# which task a dead worker had taken (the stdlib's shared
# pipe loses that, and a worker killed mid-read or holding the queue lock
# poisons it for everyone, gh-96062).
#
# Linux has SOCK_SEQPACKET for AF_UNIX; macOS does not, but its AF_UNIX
# datagrams are reliable and ordered, with a small size limit
# (net.local.dgram.maxdgram = 2048).  Larger payloads travel as a file
# descriptor attached to a small message (SCM_RIGHTS), still atomically.


#: Largest payload sent inline; larger ones go through :func:`anon_file`.
INLINE_MAX = 60 * 1024 if CAPS.seqpacket else 1024


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of sockets with atomic, ordered, reliable messages."""
    if CAPS.seqpacket:
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    else:  # pragma: no cover - macOS
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in pair:
        try:
            # Room for a few queued inline tasks per worker.  Best effort:
            # the kernel caps it at net.core.wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        except OSError:  # pragma: no cover
            pass
    return pair


class WakePipe:
    """A self-pipe that wakes a thread blocked in ``select``; safe to use
    after :meth:`close`.

    Its descriptors are plain numbers, and the kernel hands a closed
    number to the next ``open``/``pipe``/``socket`` at once.  A late
    ``wake()`` from another thread (a pool's handler thread that outlived a
    bounded join, a reaper finishing after ``shutdown()``) would otherwise
    write its byte into whatever now has that number (a new pool's result
    pipe, whose reader then waits forever for the rest of a message), and
    a late drain would steal bytes from it.  One lock covers every use and
    the close, and a closed pipe does nothing.
    """

    __slots__ = ("_lock", "_r", "_w")

    def __init__(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._r, self._w = r, w
        # Reentrant: a garbage-collector finalizer may wake() from inside.
        self._lock = threading.RLock()

    def fileno(self) -> int:
        """The read end, to register with a selector (-1 once closed)."""
        return self._r

    def wake(self) -> None:
        """Make the read end readable; nothing once closed or already full."""
        with self._lock:
            if self._w >= 0:
                try:
                    os.write(self._w, b"\0")
                except OSError:  # full: a wake-up is pending anyway
                    pass

    def drain(self) -> None:
        """Read every pending wake-up."""
        with self._lock:
            if self._r < 0:
                return
            try:
                while os.read(self._r, 512):
                    pass
            except OSError:  # BlockingIOError: empty
                pass

    def close(self) -> None:
        """Close both ends.  Idempotent."""
        with self._lock:
            r, w = self._r, self._w
            self._r = self._w = -1
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


def anon_file(data: bytes) -> int:
    """A file descriptor of an unnamed file holding *data*.

    Linux: ``memfd_create`` (no name on any filesystem).  Elsewhere an
    unlinked temporary file.  The caller owns the descriptor.
    """
    if CAPS.memfd:
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
