"""Which processes a test left behind, who started them, and what to do.

:class:`LeakWatch` is the engine of the pytest plugin and of
:func:`no_leaked_processes`.  It watches this process's subtree, read from
``/proc/<pid>/task/<tid>/children`` (a few system calls for a small tree, not
a scan of every process), and tells processes apart by pid *and* start time,
so a recycled pid still counts as new.

With ``subreaper=True`` this process becomes a child subreaper (Linux,
``PR_SET_CHILD_SUBREAPER``, prctl(2)): a process whose parent exits is
reparented here instead of to PID 1, so an orphaned grandchild stays in view
and is charged to the test that made it.  What that implies is handled here:
orphans that exit are reaped (nobody else can), but never a child that a live
``subprocess.Popen`` or ``multiprocessing`` process object, or mpguard's guard,
will wait for: reaping those would steal the exit status its owner waits for.
"""

from __future__ import annotations

import fnmatch
import os
import time
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import _platform
from .._group import AbandonedReaper, escalate, guard_pids, owned_pids, pids_target
from . import _tree
from ._procs import wait_gone

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Iterator

    from .._platform import ProcEntry

__all__ = [
    "DEFAULT_ALLOW",
    "MODES",
    "LeakWatch",
    "LeakedProcessError",
    "LeakedProcessWarning",
    "no_leaked_processes",
]

#: What to do about a leak: fail, warn, or kill the leaked tree and fail.
MODES = ("fail", "warn", "kill")

#: Command-line patterns (:func:`fnmatch.fnmatch`) of processes that are kept
#: on purpose for the life of the test process, never leaks: mpguard's
#: guardian, the stdlib's and billiard's resource trackers and forkservers,
#: and mpguard's guarded forkserver.  Their descendants are still checked.
DEFAULT_ALLOW = (
    f"*{_tree.GUARDIAN_MARK}*",
    "*from multiprocessing.resource_tracker import main*",
    "*from multiprocessing.forkserver import main*",
    "*from mpguard._start._bootstrap import forkserver_main*",
    "*from billiard.semaphore_tracker import main*",
    "*from billiard.forkserver import main*",
)

# How often the grace period re-checks the leftovers.
_POLL = 0.02

Identity = tuple[int, float]


class LeakedProcessError(AssertionError):
    """A test, a fixture or a block left processes running or unreaped.

    An ``AssertionError``, so that pytest and unittest report it as a
    failure.  The message holds the tree; :attr:`pids` the leaked pids.
    """

    def __init__(self, message: str, pids: Iterable[int] = ()) -> None:
        super().__init__(message)
        #: The pids that leaked.
        self.pids: tuple[int, ...] = tuple(pids)

    def __reduce__(
        self,
    ) -> tuple[type[LeakedProcessError], tuple[str, tuple[int, ...]]]:
        return (type(self), (str(self), self.pids))


class LeakedProcessWarning(UserWarning):
    """A leak found in ``warn`` mode."""


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        msg = f"mode must be one of {', '.join(MODES)}, not {mode!r}"
        raise ValueError(msg)
    return mode


class LeakWatch:
    """Finds the processes started since a baseline that are still there.

    Args:
        allow: more command-line patterns of processes that are never leaks
            (added to :data:`DEFAULT_ALLOW`).
        grace: seconds a new process gets to exit (and be reaped by its
            owner) after the test, before it counts as leaked.
        subreaper: make this process a child subreaper while the watch is
            open, so that orphaned descendants stay in view.

    Raises:
        ValueError: *grace* is negative.
        UnsupportedPlatformError: *subreaper* where there is none (Linux
            >= 3.4 only).
    """

    def __init__(
        self, *, allow: Iterable[str] = (), grace: float = 1.0, subreaper: bool = True
    ) -> None:
        if not grace >= 0:  # also NaN
            msg = f"grace must be >= 0 seconds, not {grace!r}"
            raise ValueError(msg)
        self.pid = os.getpid()
        self.grace = float(grace)
        self.allow = (*DEFAULT_ALLOW, *allow)
        self._known: set[Identity] = set()
        self._allowed: set[Identity] = set()
        # Processes started while an owner (a fixture) was being set up, and
        # the owners still alive, by key: label.
        self._owner_of: dict[Identity, Hashable] = {}
        self._owners: dict[Hashable, str] = {}
        self._released: dict[Hashable, str] = {}
        self._reaper = AbandonedReaper(also_owned=self._not_to_reap)
        # Our zombie children that a live object owned at the last sweep:
        # while no other shows up, no garbage-collector scan is needed.
        self._owned_zombies: frozenset[int] = frozenset()
        self._was_subreaper: bool | None = None
        self._suspended = False
        if subreaper:
            self._was_subreaper = _platform.child_subreaper()
            _platform.set_child_subreaper(True)
        self.baseline()

    # --- scanning -------------------------------------------------------------

    def _scan(self) -> dict[Identity, ProcEntry]:
        return {(e.pid, e.start): e for e in _platform.subtree(self.pid)}

    def _is_allowed(self, pid: int) -> bool:
        row = _tree.read_row(pid)
        return row is not None and any(
            fnmatch.fnmatch(row["cmd"], p) for p in self.allow
        )

    def _not_to_reap(self) -> set[int]:
        pids = guard_pids()
        pids.update(ident[0] for ident in self._owner_of)
        return pids

    def baseline(self) -> None:
        """Everything that runs now is known: only later processes can leak."""
        if self._was_subreaper is not None and not self._suspended:
            # Other code may have cleared the flag (one prctl to be sure).
            _platform.set_child_subreaper(True)
        now = set(self._scan())
        # A scan may miss a process: the kernel's children files skip a
        # child when another one exits during the read (proc(5): "some
        # children might be skipped").  A process seen by an earlier scan
        # therefore stays known while its pid exists, or the next test
        # would be charged with it.  A stale identity is harmless: a
        # recycled pid has another start time.
        self._known = now | {i for i in self._known if i not in now and _exists(i[0])}

    # --- owners (fixtures) ------------------------------------------------------

    def owner_begin(self) -> frozenset[Identity]:
        """Call before an owner (a fixture) is set up; pass the result on."""
        return frozenset(self._scan())

    def owner_end(self, token: frozenset[Identity], key: Hashable, label: str) -> None:
        """Charge to *key* what started since :meth:`owner_begin`.

        *key* names one setup of the owner: a fixture set up again (a new
        parameter) gets a new key, so tearing down the old one never
        releases the processes of the new one.
        """
        for ident in self._scan():
            if ident in token or ident in self._owner_of or ident in self._allowed:
                continue
            if self._is_allowed(ident[0]):
                # A helper kept for the life of the program (a resource
                # tracker the fixture's first spawn started) is no one's.
                self._allowed.add(ident)
                continue
            self._owners[key] = label
            self._owner_of[ident] = key

    def owner_released(self, key: Hashable) -> None:
        """The owner is torn down: its processes are checked next time."""
        label = self._owners.pop(key, None)
        if label is not None:
            self._released[key] = label

    # --- the check --------------------------------------------------------------

    def _classify(self, now: dict[Identity, ProcEntry]) -> list[Identity]:
        """New processes not charged to a live owner or allowed, parents first."""
        by_pid = {e.pid: ident for ident, e in now.items()}
        new = []
        for ident, e in now.items():  # parents before children
            if (
                ident in self._known
                or ident in self._owner_of
                or ident in self._allowed
            ):
                continue
            parent = by_pid.get(e.ppid)
            owner = self._owner_of.get(parent) if parent is not None else None
            if owner is not None and (owner in self._owners or owner in self._released):
                # Started by a fixture's process (a server's worker): the
                # fixture's, even if it was torn down in this very test.
                self._owner_of[ident] = owner
            elif self._is_allowed(e.pid):
                self._allowed.add(ident)
            else:
                new.append(ident)
        return new

    def _reap(self, now: dict[Identity, ProcEntry] | None = None) -> None:
        """Reap our exited children that no one will wait for.

        One ``waitid(WNOWAIT)`` when there is none; the garbage-collector
        scan of :meth:`AbandonedReaper.sweep` runs only when a zombie shows
        up that a live object was not already known to own.
        """
        if _platform.waiting_child() is None:
            self._owned_zombies = frozenset()
            return
        if now is None:
            now = self._scan()
        zombies = {e.pid for e in now.values() if e.zombie and e.ppid == self.pid}
        if zombies <= self._owned_zombies:
            return
        # Dropped Popens are subprocess's to reap, statuses and all; other
        # unowned zombies (an orphan that exited here, the subreaper's
        # duty) are ours.
        reaped = self._reaper.sweep()
        self._owned_zombies = frozenset(zombies.difference(reaped))

    def _settle(self, idents: list[Identity]) -> dict[Identity, ProcEntry]:
        """Give *idents* up to ``grace`` to exit and be reaped; what is left."""
        deadline = time.monotonic() + self.grace
        # A released fixture's zombie that the last sweep saw as owned is
        # no longer protected: sweep afresh.
        self._owned_zombies = frozenset()
        while True:
            self._reap()
            now = self._scan()
            left = {i: now[i] for i in idents if i in now}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(_POLL)

    def check(self, label: str = "the block", *, exempt: bool = False) -> list[Leak]:
        """Find what leaked since :meth:`baseline`, and start a new baseline.

        Args:
            label: who is charged with processes no owner claims (``"the
                test"``).
            exempt: those processes are not checked (an allow marker).

        Returns:
            One :class:`Leak` per culprit: the block, and each released
            owner whose processes outlived it.
        """
        now = self._scan()
        new = self._classify(now)
        pending: dict[Hashable, list[Identity]] = {}
        for key in self._released:
            mine = [i for i, k in self._owner_of.items() if k == key]
            for ident in mine:
                # No longer protected from reaping: an orphan that exited
                # while its fixture lived is reaped now, not reported.
                del self._owner_of[ident]
            mine = [i for i in mine if i in now]
            if mine:
                pending[key] = mine
        if exempt:
            self._known.update(new)
            new = []
        leaks: list[Leak] = []
        if new or pending:
            every = [*new, *(i for ids in pending.values() for i in ids)]
            left = self._settle(every)
            if left:
                orphans = self._orphans(left)
                # One read of the tree for every report's rows.
                tree = {e.pid: e for e in self._scan().values()}
                for key, ids in pending.items():
                    mine = [i for i in ids if i in left]
                    if mine:
                        leaks.append(
                            self._leak(self._released[key], mine, left, orphans, tree)
                        )
                mine = [i for i in new if i in left]
                if mine:
                    leaks.insert(0, self._leak(label, mine, left, orphans, tree))
        else:
            self._reap(now)
        self._released.clear()
        # Forget processes that are gone, so that a recycled pid is never
        # protected as a fixture's.
        for ident in [i for i in self._owner_of if i not in now]:
            del self._owner_of[ident]
        self._allowed.intersection_update(now)
        # Reported once: what leaked is in the next baseline.
        self._known.update(now)
        return leaks

    def _orphans(self, left: dict[Identity, ProcEntry]) -> set[int]:
        """Children of this process that no object here owns: adopted."""
        kids = [e.pid for e in left.values() if e.ppid == self.pid and not e.zombie]
        if not kids:
            return set()
        owned = owned_pids() | guard_pids()
        return {pid for pid in kids if pid not in owned}

    def _leak(
        self,
        label: str,
        idents: list[Identity],
        left: dict[Identity, ProcEntry],
        orphans: set[int],
        by_pid: dict[int, ProcEntry],
    ) -> Leak:
        pids = [i[0] for i in idents]
        zombies = [left[i].pid for i in idents if left[i].zombie]
        # The rows: this process, the leaked ones, and the ancestors between.
        show = {self.pid, *pids}
        for pid in pids:
            e = by_pid.get(pid)
            while e is not None and e.ppid != self.pid and e.ppid not in show:
                show.add(e.ppid)
                e = by_pid.get(e.ppid)
        rows = _tree.table(sorted(show))
        extra: dict[int, list[str]] = {pid: ["leaked"] for pid in pids}
        extra[self.pid] = ["this process"]
        lines = [_tree.HEADER]
        for depth, row, marks in _tree.render(
            [self.pid, *pids], rows, orphans=orphans, extra=extra
        ):
            lines.append(_tree.format_line(depth, row, marks))
        running = len(pids) - len(zombies)
        parts = []
        if running:
            parts.append(f"{running} still running {self.grace:g} s after the teardown")
        if zombies:
            parts.append(f"{len(zombies)} exited but never waited for (zombie)")
        head = f"{len(pids)} process(es) started by {label} leaked: {', '.join(parts)}"
        return Leak(head, pids, zombies, "\n".join(lines))

    def kill(self, leaks: Iterable[Leak]) -> list[int]:
        """SIGKILL the running leaked processes and what is below them, and
        reap those of them that are ours and owned by no object.

        Returns:
            The pids that were signalled (not their descendants).
        """
        pids = [pid for leak in leaks for pid in leak.pids if pid not in leak.zombies]
        if not pids:
            return []
        kill_trees("leaked processes", pids, 1.0)
        self._owned_zombies = frozenset()
        self._reap()
        return pids

    def close(self) -> None:
        """Reap what is left to reap, and stop being a subreaper if this
        watch made the process one."""
        self._owned_zombies = frozenset()
        self._reap()
        if self._was_subreaper is False:
            _platform.set_child_subreaper(False)
            self._was_subreaper = None

    def subreaper_off(self) -> bool:
        """Stop adopting orphans for a while (a test exempt from the check,
        whose orphans go where they would without the watch).  Returns
        whether to call :meth:`subreaper_on` after."""
        if self._was_subreaper is None or not _platform.child_subreaper():
            return False
        _platform.set_child_subreaper(False)
        self._suspended = True
        return True

    def subreaper_on(self) -> None:
        """Undo :meth:`subreaper_off`."""
        _platform.set_child_subreaper(True)
        self._suspended = False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


class Leak:
    """Processes one culprit left behind: a test, a block or a fixture."""

    __slots__ = ("headline", "pids", "tree", "zombies")

    def __init__(
        self, headline: str, pids: list[int], zombies: list[int], tree: str
    ) -> None:
        #: ``"2 process(es) started by the test: 2 still running"``.
        self.headline = headline
        #: The leaked pids, parents first.
        self.pids = pids
        #: Those of them that are zombies.
        self.zombies = zombies
        #: The tree, in the ``mpguard tree`` format.
        self.tree = tree

    def __str__(self) -> str:
        return f"{self.headline}\n{self.tree}"

    def __repr__(self) -> str:
        return f"<Leak {self.headline!r} pids={self.pids}>"


def report(leaks: list[Leak], *, killed: bool = False) -> str:
    """The message for *leaks*: one headline and tree each."""
    text = "\n\n".join(f"mpguard: {leak}" for leak in leaks)
    if killed:
        text += "\n(mpguard killed the running ones and what they started)"
    return text


def act(watch: LeakWatch, leaks: list[Leak], mode: str, *, stacklevel: int = 2) -> None:
    """Do what *mode* says about *leaks*: raise, warn, or kill and raise."""
    if not leaks:
        return
    pids = [pid for leak in leaks for pid in leak.pids]
    if mode == "warn":
        warnings.warn(report(leaks), LeakedProcessWarning, stacklevel=stacklevel + 1)
        return
    killed = watch.kill(leaks) if mode == "kill" else []
    raise LeakedProcessError(report(leaks, killed=bool(killed)), pids)


def kill_trees(label: str, roots: list[int], timeout: float) -> None:
    """SIGKILL *roots* and everything below them, and wait up to *timeout*
    for them to go.

    The one ladder every mpguard kill climbs, straight to SIGKILL (the test
    has failed already), descendants snapshot before the first signal.
    """
    escalate(pids_target(label, roots), 0.0, term=False)
    wait_gone(roots, timeout)


@contextmanager
def no_leaked_processes(
    mode: str = "fail",
    *,
    grace: float = 1.0,
    allow: Iterable[str] = (),
    subreaper: bool | None = None,
) -> Iterator[LeakWatch]:
    """Check that a block leaves no process behind: the pytest plugin's
    check, for code without pytest (unittest, a script).

    Processes started in the block that still run *grace* seconds after it,
    and children of this process that exited but were never waited for
    (zombies), are leaks::

        from mpguard.testing import no_leaked_processes

        with no_leaked_processes():
            subprocess.Popen(["sleep", "600"])   # LeakedProcessError

    Args:
        mode: ``"fail"`` raises :class:`LeakedProcessError`, ``"warn"`` warns
            :class:`LeakedProcessWarning`, ``"kill"`` kills the leaked tree,
            then raises.
        grace: seconds new processes get to exit on their own first.
        allow: more command-line patterns that are never leaks.
        subreaper: adopt orphans for the block, so an orphaned grandchild is
            found too; default: where the platform has a subreaper (Linux).

    If the block raises, its exception propagates; leaks are then only
    warned about (and killed in ``"kill"`` mode).
    """
    _check_mode(mode)
    if subreaper is None:
        subreaper = _platform.CAPS.subreaper
    watch = LeakWatch(allow=allow, grace=grace, subreaper=subreaper)
    try:
        try:
            yield watch
        except BaseException:
            leaks = watch.check("the block")
            if leaks:
                killed = watch.kill(leaks) if mode == "kill" else []
                warnings.warn(
                    report(leaks, killed=bool(killed)),
                    LeakedProcessWarning,
                    stacklevel=3,
                )
            raise
        act(watch, watch.check("the block"), mode, stacklevel=3)
    finally:
        watch.close()
