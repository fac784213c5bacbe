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

import os
import signal
from multiprocessing import popen_fork
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _compat, _platform, _signals
from .._errors import GuardSetupError
from .._group import Child, abandon, acquire
from . import _child

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ChildPipes", "GuardedPopen", "Popen", "is_pool_worker"]


def is_pool_worker(process_obj: Any) -> bool:
    """True for a GuardedPool worker: SIGINT ignored in the child, and the
    pool (not the guard's reaper) reaps it, as the stdlib Pool expects."""
    return bool(getattr(process_obj, "_mpguard_pool_worker", False))


class ChildPipes(NamedTuple):
    """The pipes a fork or spawn child starts with.

    ``child_r``/``parent_w``: the child reads its data (spawn) or watches
    its parent (fork's parent sentinel) on ``child_r``.  Without pidfds,
    ``sentinel_r``/``sentinel_w`` is the exit sentinel: a pipe whose write
    end only the child holds, so ``sentinel_r`` reads EOF when it exits.
    """

    child_r: int
    parent_w: int
    sentinel_r: int = -1
    sentinel_w: int = -1

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
        """
        pool_worker = is_pool_worker(process_obj)
        # Held without contextlib, and with the fewest calls between forks:
        # every page the parent writes after a fork is copied again (copy-on-
        # write), once per worker of a pool.
        guard = acquire()
        try:
            plan = guard.child_plan(pool_worker=pool_worker)
            pipes = ChildPipes.open()
            old_mask = _compat.sigmask(signal.SIG_BLOCK, guard.block)
            _signals.guarded_fork(True)
            # A Process's fork child reuses the parent's resource tracker;
            # a raw os.fork() child would close its pipe (gh-146313).
            _compat.fork_keeps_tracker(True)
            try:
                pid = os.fork()
                if pid == 0:  # child: ends in os._exit, never returns
                    code = 1
                    began = False
                    try:
                        _compat.fork_keeps_tracker(False)
                        for fd in pipes.parent_ends():
                            os.close(fd)
                        code = _child.prepare(plan, old_mask)
                        if code == 0:
                            began = stdlib_atexit
                            if began:
                                _compat.child_atexit_begin()
                            code = bootstrap(pipes.child_r)
                    finally:
                        if began:
                            _compat.child_atexit_end()
                        os._exit(code)
            finally:
                _compat.fork_keeps_tracker(False)
                _signals.guarded_fork(False)
                _compat.sigmask(signal.SIG_SETMASK, old_mask)
            for fd in pipes.child_ends():
                os.close(fd)
            fds = pipes.parent_ends()
            try:
                guard.adopt(pid)
            except GuardSetupError as e:
                self.pid = pid
                self.returncode = -signal.SIGKILL
                abandon(pid, fds, e)
                raise
            self.pool_worker = pool_worker
            self.track(guard, pid, fds, reap=not pool_worker)
        finally:
            guard.unhold()


class Popen(GuardedPopen, popen_fork.Popen):
    """Start a guarded child by fork."""

    method = "fork"

    def _launch(self, process_obj: Any) -> None:
        self._fork(
            process_obj,
            lambda sentinel: _compat.run_process(process_obj, sentinel),
        )
