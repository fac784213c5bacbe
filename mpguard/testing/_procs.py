"""Which processes run, which are zombies, and which a test left behind.

A process counts as *gone* once psutil cannot find it **or** it is a zombie:
an orphan reparented to PID 1 (or to a container's init) can stay a zombie
for a while before that init reaps it, and a check that waited for the zombie
to vanish would fail for reasons that have nothing to do with the code under
test.  :func:`zombies` is the check for a process that does not reap its own
children.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psutil

from ._wait import SHORT, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterable


def alive(pid: int) -> bool:
    """True if *pid* runs; a zombie or a pid that does not exist is not alive."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def survivors(pids: Iterable[int]) -> list[int]:
    """The pids of *pids* that are still :func:`alive`, in their order."""
    return [p for p in pids if alive(p)]


def wait_gone(pids: Iterable[int], timeout: float = SHORT) -> list[int]:
    """Wait until no pid of *pids* is :func:`alive`, for at most *timeout* s.

    Returns the survivors, so ``assert not wait_gone(pids)`` checks that all
    are gone and ``assert wait_gone(pids, 1.0) == pids`` that none is (a
    negative control).  Polls; it never signals or reaps anything.
    """
    pids = list(pids)
    wait_for(lambda: not survivors(pids), timeout)
    return survivors(pids)


def describe(pids: Iterable[int]) -> str:
    """One line per pid (status and command line) for an assertion message.

    Example: ``"4242 sleeping sleep 600; 4243 gone"``.
    """
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.status()} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            out.append(f"{pid} gone")
    return "; ".join(out)


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of *pid* (default: this process), zombies excluded.

    Children, their children, and so on, as far as parentage still shows
    it: a process whose parent died was reparented and is no longer found.
    Returns ``[]`` if *pid* itself is gone.
    """
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for c in kids:
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                out.append(c.pid)
        except psutil.Error:
            pass
    return out


def zombies(pid: int | None = None) -> list[int]:
    """The children of *pid* (default: this process) that are zombies.

    A zombie is a child that exited and that its parent has not waited for
    (reaped) yet; only its parent can reap it (see ``wait(2)``).  Returns
    ``[]`` if *pid* itself is gone.
    """
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return []
    out = []
    for c in kids:
        try:
            if c.status() == psutil.STATUS_ZOMBIE:
                out.append(c.pid)
        except psutil.Error:
            pass
    return out


def _identities(procs: Iterable[psutil.Process]) -> frozenset[tuple[int, float]]:
    out = set()
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add((p.pid, p.create_time()))
        except psutil.Error:
            pass
    return frozenset(out)


class ProcessSnapshot:
    """The live descendants of a process at one moment, to find leaks later.

    Take one with :func:`snapshot` before a test and ask :meth:`leaked`
    after it.  Processes are told apart by pid *and* start time, so a pid
    that was reused by a new process in between still counts as new.
    """

    __slots__ = ("_ids", "pid", "taken_at")

    def __init__(self, pid: int | None = None) -> None:
        proc = psutil.Process(pid)
        #: The process whose descendants are watched.
        self.pid: int = proc.pid
        #: When the snapshot was taken (:func:`time.monotonic`).
        self.taken_at: float = time.monotonic()
        self._ids = _identities(proc.children(recursive=True))

    @property
    def pids(self) -> frozenset[int]:
        """The pids of the live descendants when the snapshot was taken."""
        return frozenset(pid for pid, _ in self._ids)

    def new(self) -> list[int]:
        """Live descendants now that were not there at the snapshot."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []
        now = _identities(kids)
        return sorted(pid for pid, t in now - self._ids)

    def leaked(self, timeout: float = SHORT) -> list[int]:
        """Descendants started since the snapshot that are still alive.

        New processes get up to *timeout* seconds to end on their own
        first (a pool's workers and a resource tracker take a moment to
        exit); whatever still runs then is returned.  Nothing is signalled.
        """
        return wait_gone(self.new(), timeout)

    def __repr__(self) -> str:
        return f"<ProcessSnapshot pid={self.pid} descendants={sorted(self.pids)}>"


def snapshot(pid: int | None = None) -> ProcessSnapshot:
    """A :class:`ProcessSnapshot` of *pid*'s live descendants (default: ours).

    Example (a leak check around a test)::

        before = snapshot()
        run_the_test()
        assert not before.leaked(), describe(before.leaked(0))
    """
    return ProcessSnapshot(pid)
