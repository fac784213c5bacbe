"""Guarded fork Popen.

Adapted from CPython ``Lib/multiprocessing/popen_fork.py`` (3.9-3.13).
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
from typing import TYPE_CHECKING, Any

from .. import _compat, _platform, _signals
from .._errors import GuardSetupError
from .._group import Child, abandon, holding
from . import _child

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["GuardedPopen", "Popen", "is_pool_worker"]


def is_pool_worker(process_obj: Any) -> bool:
    """True for a GuardedPool worker: SIGINT ignored in the child, and the
    pool (not the guard's reaper) reaps it, as the stdlib Pool expects."""
    return bool(getattr(process_obj, "_mpguard_pool_worker", False))


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
        with holding() as guard:
            plan = guard.child_plan(pool_worker=pool_worker)
            use_pidfd = _platform.CAPS.pidfd
            child_r, parent_w = os.pipe()
            parent_r = child_w = -1
            if not use_pidfd:
                parent_r, child_w = os.pipe()
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, guard.block)
            _signals.guarded_fork(True)
            try:
                pid = os.fork()
                if pid == 0:  # child: ends in os._exit, never returns
                    code = 1
                    began = False
                    try:
                        os.close(parent_w)
                        if parent_r >= 0:
                            os.close(parent_r)
                        code = _child.prepare(plan, old_mask)
                        if code == 0:
                            began = stdlib_atexit
                            if began:
                                _compat.child_atexit_begin()
                            code = bootstrap(child_r)
                    finally:
                        if began:
                            _compat.child_atexit_end()
                        os._exit(code)
            finally:
                _signals.guarded_fork(False)
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(child_r)
            if child_w >= 0:
                os.close(child_w)
            fds = (parent_w,) if parent_r < 0 else (parent_r, parent_w)
            try:
                guard.adopt(pid)
            except GuardSetupError as e:
                self.pid = pid
                self.returncode = -signal.SIGKILL
                abandon(pid, fds, e)
                raise
            self._track(guard, pid, fds, reap=not pool_worker)


class Popen(GuardedPopen, popen_fork.Popen):
    """Start a guarded child by fork."""

    method = "fork"

    def _launch(self, process_obj: Any) -> None:
        self._fork(
            process_obj,
            lambda sentinel: _compat.run_process(process_obj, sentinel),
        )
