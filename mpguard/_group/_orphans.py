"""Orphans and abandoned children: found, reaped, and killed with their tree.

Two leaks no start method can prevent, because they happen below the
children it starts:

* **Abandoned children.**  A task starts a process and returns without
  waiting for it (``os.posix_spawn``, ``os.spawnl(P_NOWAIT, ...)``, a
  ``Popen`` kept in a list).  When the process exits it stays a zombie of
  the long-lived worker until the worker exits; Celery users report piles
  of ``<defunct>`` processes (celery/celery#6656).  The two fixes the blog
  recipes give are traps: ``signal(SIGCHLD, SIG_IGN)`` and a
  ``waitpid(-1)`` loop both steal the exit statuses ``subprocess`` waits
  for, so ``Popen.wait()`` returns 0 or raises ``ChildProcessError``.
  :class:`AbandonedReaper` reaps a zombie only when no ``Popen`` or
  ``Process`` object of this process still owns its pid, and lets
  ``subprocess`` reap the ``Popen`` objects that were dropped.

* **Orphans of a dead worker.**  A worker that is SIGKILLed or OOM-killed
  leaves its children to init, where nobody can tell them from any other
  process.  :class:`Adopter` makes the owner a child subreaper
  (``PR_SET_CHILD_SUBREAPER``, prctl(2)), so those orphans are reparented
  to the owner instead; when a guarded child exits, the orphans that
  appear are its own, and they are SIGKILLed with everything below them.
  A worker that is a subreaper itself keeps the orphans of its live tasks
  (``sh -c "job &"``) below it, and reaps them when they exit.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading

from .. import _compat, _platform
from .._config import log

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._children import GuardedChild
    from ._guard import Guard

__all__ = ["AbandonedReaper", "Adopter", "owned_pids"]


def owned_pids() -> set[int]:
    """Pids that an object of this process will wait for.

    Live ``subprocess.Popen`` objects that have no exit status yet, and
    ``multiprocessing``/billiard processes.  A garbage-collector scan: it is
    run only when an exited child is found that is not known to be owned.
    """
    kinds: list[type] = [subprocess.Popen]
    import multiprocessing.process  # noqa: PLC0415 - always loaded by then

    kinds.append(multiprocessing.process.BaseProcess)
    billiard_process = sys.modules.get("billiard.process")
    if billiard_process is not None:
        kinds.append(billiard_process.BaseProcess)
    classes = tuple(kinds)
    owned: set[int] = set()
    for obj in gc.get_objects():
        if isinstance(obj, classes):
            pid = getattr(obj, "pid", None)
            if isinstance(obj, subprocess.Popen) and obj.returncode is not None:
                continue
            if isinstance(pid, int):
                owned.add(pid)
    return owned


class AbandonedReaper:
    """Reaps this process's exited children that nobody will wait for.

    :meth:`check` costs one ``waitid(WNOWAIT)`` system call when there is
    nothing to do, so a worker can call it between tasks.

    Args:
        also_owned: more pids that must not be reaped (a guard's children,
            which its own reaper collects).
    """

    def __init__(self, also_owned: object = None) -> None:
        self._also_owned = also_owned
        # Exited children owned by a live object at the last sweep: while
        # one of them is what waitid() reports, there is nothing new.
        self._owned: frozenset[int] = frozenset()

    def check(self) -> list[int]:
        """Sweep if an exited child that is not known to be owned waits."""
        pid = _platform.waiting_child()
        if pid is None:
            return []
        # waitid() names one zombie only, and one its owner will wait for
        # may hide others: a table scan (no garbage-collector scan) tells.
        if pid in self._owned and set(self._zombies()) <= self._owned:
            return []
        return self.sweep()

    @staticmethod
    def _zombies() -> list[int]:
        me = os.getpid()
        return [e.pid for e in _platform.process_table() if e.ppid == me and e.zombie]

    def sweep(self) -> list[int]:
        """Reap every exited child that no live object owns; their pids."""
        # Dropped Popens are subprocess's: let it reap them, statuses and all.
        _compat.reap_dropped_popens()
        zombies = self._zombies()
        if not zombies:
            self._owned = frozenset()
            return []
        owned = owned_pids()
        extra = self._also_owned
        if callable(extra):
            owned.update(extra())
        reaped = []
        for pid in zombies:
            if pid in owned:
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done == pid:
                reaped.append(pid)
        self._owned = frozenset(owned.intersection(zombies))
        if reaped:
            log.debug("reaped abandoned children %s", reaped)
        return reaped


class Adopter:
    """The owner as a child subreaper for its guard's group.

    When a guarded child exits (:meth:`child_exited`, a guard exit hook),
    the processes that were reparented to the owner and are in the guard's
    group are that child's orphans: they are SIGKILLed with everything
    below them, setsid escapees included, and reaped.  Every exited orphan
    is reaped (:meth:`sweep`, from :meth:`child_exited` and from a thread
    every *interval* seconds), so none stays a zombie.

    The attribution is exact when each guarded child is a subreaper itself
    (a Celery integration's pool children are): an orphan of a live child's
    task stays below that child, so only a child's own death sends orphans
    here.  Otherwise an orphan left by a live child is taken for the next
    exiting child's.

    Raises:
        UnsupportedPlatformError: no ``PR_SET_CHILD_SUBREAPER`` here.
        GuardSetupError: prctl failed.
    """

    def __init__(self, guard: Guard, *, interval: float = 1.0) -> None:
        self._guard = guard
        self._lock = threading.Lock()
        self._reaper = AbandonedReaper(self._guarded_pids)
        self._stop = threading.Event()
        _platform.set_child_subreaper(True)
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="mpguard-adopter", daemon=True
        )
        _platform.start_thread_without_signals(self._thread)

    def _guarded_pids(self) -> set[int]:
        # The guardian and the guard's forkserver are children of ours in
        # the group too: never orphans.
        return self._guard.known_pids()

    def _orphans(self) -> tuple[list[int], list[_platform.ProcEntry]]:
        """Live children of ours in the group that we did not start, and
        the process table they were found in."""
        table = _platform.process_table()
        me = os.getpid()
        ours = self._guarded_pids()
        pgid = self._guard.pgid
        found = [
            e.pid
            for e in table
            if e.ppid == me and not e.zombie and e.pgid == pgid and e.pid not in ours
        ]
        return found, table

    def child_exited(self, child: GuardedChild) -> None:
        """Kill the orphans *child* left behind (a guard exit hook)."""
        if self._stop.is_set():
            return
        with self._lock:
            orphans, table = self._orphans()
            if orphans:
                victims = orphans + _platform.descendants(orphans, table)
                log.debug("pid=%d left orphans: killing %s", child.pid, victims)
                for pid in victims:
                    # Each was listed a moment ago and is a child of ours or
                    # below one: an unreaped child's pid cannot be recycled,
                    # and its descendants hold theirs while it lives.
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.sweep()

    def sweep(self) -> list[int]:
        """Reap the orphans that exited; their pids."""
        with self._lock:
            return self._reaper.sweep()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if _platform.waiting_child() is not None:
                    self.sweep()
            except Exception:  # the thread must not die
                log.debug("orphan sweep failed", exc_info=True)

    def strays(self) -> list[int]:
        """What no live guarded child accounts for: members of the group
        (but its guardian and the guarded children) and live orphans
        reparented here, in any group, that no object of ours owns."""
        table = _platform.process_table()
        me = os.getpid()
        ours = self._guarded_pids()
        pgid = self._guard.pgid
        found = [
            e.pid
            for e in table
            if not e.zombie
            and e.pid not in ours
            and e.pid != pgid
            and (e.pgid == pgid or e.ppid == me)
        ]
        if not found:
            return []
        owned = owned_pids()
        return [pid for pid in found if pid not in owned]

    def close(self) -> None:
        """Stop adopting: reap what exited and leave the subreaper role."""
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._reaper.sweep()
        finally:
            _platform.set_child_subreaper(False)
