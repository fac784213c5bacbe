"""Guarded fork Popen.

Adapted from CPython ``Lib/multiprocessing/popen_fork.py`` (3.9-3.15).
Differences, each for a reason:

* the guarded signals are blocked around ``fork()`` and the child runs
  ``_child.prepare`` before the process's bootstrap (group, dispositions,
  ppid check);
* the parent calls ``setpgid`` for the child too (both-sides idiom);
* on Linux the sentinel is a pidfd: it becomes readable when the child
  exits even if grandchildren still hold inherited pipe ends, and
  signalling through it cannot hit a recycled pid;
* reaping goes through one lock per child, so two threads polling the same
  child (the pool, the reaper, a user's ``join()``) never lose its exit
  status to each other (gh-92881).  That part, shared with every guarded
  Popen, is :class:`mpguard._group.Child`.
"""

from __future__ import annotations

import collections
import os
import signal
from multiprocessing import popen_fork

from .. import _compat, _platform, _signals
from .._errors import GuardSetupError
from .._group import Child, abandon, acquire
from . import _child

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NamedTuple, NoReturn

    from .._group import ChildPlan, Guard

__all__ = [
    "ChildPipes",
    "Forked",
    "GuardedPopen",
    "Popen",
    "discard_forked",
    "fork_ahead",
    "is_pool_worker",
]


# Read once here, in the parent: ``_compat`` loads names on first read, and
# a name first read in a fork child would be imported again in every child.
_compat.child_atexit_begin, _compat.child_atexit_end, _compat.set_raw_handler  # noqa: B018


def is_pool_worker(process_obj: Any) -> bool:
    """True for a GuardedPool worker: SIGINT ignored in the child, and the
    pool (not the guard's reaper) reaps it, as the stdlib Pool expects."""
    return bool(getattr(process_obj, "_mpguard_pool_worker", False))


if TYPE_CHECKING:

    class _PipeFields(NamedTuple):
        child_r: int
        parent_w: int
        sentinel_r: int = -1
        sentinel_w: int = -1

    class Forked(NamedTuple):
        """A child forked ahead by :func:`fork_ahead`, not yet recorded by
        its Popen; *error* is set if it could not be put in the guard's
        group."""

        pid: int
        pipes: ChildPipes
        error: GuardSetupError | None
        guard: Guard

else:
    # The tuples typing.NamedTuple would build, without importing typing
    # (2 ms of a cold start).
    _PipeFields = collections.namedtuple(
        "_PipeFields", "child_r parent_w sentinel_r sentinel_w", defaults=(-1, -1)
    )
    Forked = collections.namedtuple("Forked", "pid pipes error guard")
    Forked.__doc__ = """A child forked ahead by :func:`fork_ahead`, not yet
    recorded by its Popen; *error* is set if it could not be put in the
    guard's group."""


class ChildPipes(_PipeFields):
    """The pipes a fork or spawn child starts with.

    ``child_r``/``parent_w``: the child reads its data (spawn) or watches
    its parent (fork's parent sentinel) on ``child_r``.  Without pidfds,
    ``sentinel_r``/``sentinel_w`` is the exit sentinel: a pipe whose write
    end only the child holds, so ``sentinel_r`` reads EOF when it exits.
    """

    __slots__ = ()

    @classmethod
    def open(cls) -> ChildPipes:
        """New pipes; the sentinel pipe only where there are no pidfds."""
        child_r, parent_w = os.pipe()
        if _platform.CAPS.pidfd:
            return cls(child_r, parent_w)
        sentinel_r, sentinel_w = os.pipe()
        return cls(child_r, parent_w, sentinel_r, sentinel_w)

    def child_ends(self) -> tuple[int, ...]:
        """What the child keeps (the parent closes them once it started)."""
        if self.sentinel_w < 0:
            return (self.child_r,)
        return (self.child_r, self.sentinel_w)

    def parent_ends(self) -> tuple[int, ...]:
        """What the parent keeps, the sentinel first (``Child.track``)."""
        if self.sentinel_r < 0:
            return (self.parent_w,)
        return (self.sentinel_r, self.parent_w)


#: Where :func:`fork_ahead` leaves a child for its Process's ``start()``.
FORKED_ATTR = "_mpguard_forked"

#: Blocked in the forking thread across a guarded fork: every signal.
_FORK_BLOCK = _platform.ALL_SIGNALS


def _run_child(
    plan: ChildPlan,
    mask: set[int],
    child_r: int,
    close: Sequence[int],
    bootstrap: Callable[[int], int],
    stdlib_atexit: bool,
) -> NoReturn:
    """The fork child's whole life: set up, run *bootstrap*, ``os._exit``.

    *close*: the parent's fds that are not this child's (its own parent
    ends, and the pipes of the children forked beside it).
    """
    code = 1
    began = False
    try:
        _compat.fork_keeps_tracker(False)
        for fd in close:
            os.close(fd)
        code = _child.prepare(plan, mask)
        if code == 0:
            began = stdlib_atexit
            if began:
                _compat.child_atexit_begin()
            code = bootstrap(child_r)
    finally:
        try:
            if began:
                _compat.child_atexit_end()
        finally:
            os._exit(code)


class GuardedPopen(Child):
    """A :class:`~mpguard._group.Child` that can start itself by the
    guarded fork (the fork Popen, and billiard's)."""

    def _fork(
        self,
        process_obj: Any,
        bootstrap: Callable[[int], int],
        *,
        stdlib_atexit: bool = True,
    ) -> None:
        """The guarded fork; the child runs ``bootstrap(parent_sentinel)``.

        *stdlib_atexit*: treat atexit as this Python's ``popen_fork`` does
        (billiard's Popen does not, and neither does its guarded variant).
        If :func:`fork_ahead` already forked *process_obj*'s child, only
        record it.
        """
        pool_worker = is_pool_worker(process_obj)
        # Held without contextlib, and with the fewest calls between forks:
        # every page the parent writes after a fork is copied again (copy-on-
        # write), once per worker of a pool.
        guard = acquire()
        try:
            forked: Forked | None = getattr(process_obj, FORKED_ATTR, None)
            if forked is not None:
                delattr(process_obj, FORKED_ATTR)
                error = forked.error
                if error is None and forked.guard is not guard:
                    # Torn down and replaced in between: the child is in
                    # the old group, which this guard does not watch.
                    msg = "the guard was replaced between fork and start()"
                    error = GuardSetupError(msg, pid=forked.pid)
                self._record(guard, pool_worker, forked.pid, forked.pipes, error)
                return
            plan = guard.child_plan(pool_worker=pool_worker)
            pipes = ChildPipes.open()
            # Every signal blocked in this thread across the fork: the child
            # starts with none deliverable, so no handler (the parent's or a
            # user's) runs in it before its setup; _child.prepare then
            # restores old_mask.  mpguard's own handlers, which the main
            # thread may run whatever this thread blocks, are deferred while
            # guarded_fork() is on, until the child is in the group and
            # recorded (else a pid could be lost between fork and record).
            old_mask = _compat.sigmask(signal.SIG_BLOCK, _FORK_BLOCK)
            _signals.guarded_fork(True)
            try:
                # A Process's fork child reuses the parent's resource
                # tracker; a raw os.fork() child would close its pipe
                # (gh-146313).
                _compat.fork_keeps_tracker(True)
                try:
                    pid = os.fork()
                except OSError:  # EAGAIN, ENOMEM: no child, no fd left
                    _compat.close_fds(*pipes.child_ends(), *pipes.parent_ends())
                    raise
                finally:
                    _compat.fork_keeps_tracker(False)
                if pid == 0:  # child: ends in os._exit, never returns
                    _run_child(
                        plan,
                        old_mask,
                        pipes.child_r,
                        pipes.parent_ends(),
                        bootstrap,
                        stdlib_atexit,
                    )
                _compat.close_fds(*pipes.child_ends())
                self._record(guard, pool_worker, pid, pipes, _adopt(guard, pid))
            finally:
                _signals.guarded_fork(False)  # runs what it deferred
                _compat.sigmask(signal.SIG_SETMASK, old_mask)
        finally:
            guard.unhold()

    def _record(
        self,
        guard: Guard,
        pool_worker: bool,
        pid: int,
        pipes: ChildPipes,
        error: GuardSetupError | None,
    ) -> None:
        """Make the forked child *pid* this Popen's: its pidfd, the guard's
        table; or, if it could not be put in the group (*error*), kill it."""
        fds = pipes.parent_ends()
        if error is not None:
            self.pid = pid
            self.returncode = -signal.SIGKILL
            raise abandon(pid, fds, error)
        self.pool_worker = pool_worker
        self.track(guard, pid, fds, reap=not pool_worker)


def _adopt(guard: Guard, pid: int) -> GuardSetupError | None:
    try:
        guard.adopt(pid)
    except GuardSetupError as e:
        return e
    return None


def fork_ahead(processes: Sequence[Any]) -> None:
    """Fork the children of the guarded fork *processes* back to back.

    Each Process's ``start()`` then only records its child (the Popen, the
    pidfd, the guard's table).  Why: after a fork, every page the parent
    writes is copied (copy-on-write) or at least faulted again, and the
    bookkeeping of one ``start()`` writes a few hundred pages.  Forked one
    by one, a pool pays that once per worker; forked ahead, once per pool.

    Each child is the same as one ``start()`` forks: signals blocked across
    the fork, its own setup (:mod:`._child`) before its target, put in the
    guard's group from both sides and recorded on its Process before a
    signal is handled (mpguard's handlers wait for the whole batch).  Every
    child closes the pipes of the others, as it would have found them
    closed.  Best effort: if ``fork()`` fails, the Processes not forked yet
    fork in their own ``start()``, which then raises.  A caller that does
    not start every Process it passed calls :func:`discard_forked`.
    """
    if not processes or not all(map(_compat.may_start, processes)):
        # Each start() raises its own error, before any fork.
        return
    guard = acquire()
    try:
        plans = [guard.child_plan(pool_worker=is_pool_worker(p)) for p in processes]
        pipes = _open_pipes(len(processes))
        if pipes is None:  # out of fds: each start() meets the error itself
            return
        # Flushed once here, or each child would write out the parent's
        # buffered output again (popen_fork flushes before each fork too).
        _compat.flush_std_streams()
        every_fd = [fd for pp in pipes for fd in (*pp.child_ends(), *pp.parent_ends())]
        # Everything a child needs is built before the first fork: the child
        # only indexes these lists (it must not raise), and the parent
        # writes nothing new between forks.
        closes = [[fd for fd in every_fd if fd not in pp.child_ends()] for pp in pipes]
        boots = [_compat.bootstrap_of(p) for p in processes]
        pids: list[int] = []
        old_mask = _compat.sigmask(signal.SIG_BLOCK, _FORK_BLOCK)
        _signals.guarded_fork(True)  # mpguard's handlers wait (see _fork)
        try:
            _compat.fork_keeps_tracker(True)
            try:
                # The loop between forks does as little as it can: that is
                # the point (see above).
                for i in range(len(processes)):
                    try:
                        pid = os.fork()
                    except OSError:
                        break
                    if pid == 0:  # child: ends in os._exit, never returns
                        r = pipes[i].child_r
                        _run_child(plans[i], old_mask, r, closes[i], boots[i], True)
                    pids.append(pid)
            finally:
                _compat.fork_keeps_tracker(False)
                # Whatever happened, every forked child is put in the group
                # from this side and goes to its Process (and so to a
                # start() or to discard_forked), and no fd is left open;
                # all before a deferred signal is handled.
                for i, pp in enumerate(pipes):
                    _compat.close_fds(*pp.child_ends())
                    if i < len(pids):
                        error = _adopt(guard, pids[i])
                        forked = Forked(pids[i], pp, error, guard)
                        setattr(processes[i], FORKED_ATTR, forked)
                    else:
                        _compat.close_fds(*pp.parent_ends())
        finally:
            _signals.guarded_fork(False)  # runs what it deferred
            _compat.sigmask(signal.SIG_SETMASK, old_mask)
    finally:
        guard.unhold()


def _open_pipes(n: int) -> list[ChildPipes] | None:
    """*n* children's pipes, or None (and nothing left open) on OSError."""
    pipes: list[ChildPipes] = []
    try:
        for _ in range(n):
            pipes.append(ChildPipes.open())
    except OSError:
        for pp in pipes:
            _compat.close_fds(*pp.child_ends(), *pp.parent_ends())
        return None
    return pipes


def discard_forked(processes: Sequence[Any]) -> None:
    """Kill and reap the children :func:`fork_ahead` left that no
    ``start()`` recorded (the caller failed before starting them all)."""
    for proc in processes:
        forked: Forked | None = getattr(proc, FORKED_ATTR, None)
        if forked is not None:
            delattr(proc, FORKED_ATTR)
            abandon(
                forked.pid,
                forked.pipes.parent_ends(),
                GuardSetupError("the pool did not start this worker", pid=forked.pid),
            )


class Popen(GuardedPopen, popen_fork.Popen):
    """Start a guarded child by fork."""

    method = "fork"

    def _launch(self, process_obj: Any) -> None:
        self._fork(process_obj, _compat.bootstrap_of(process_obj))
