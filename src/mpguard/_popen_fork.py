"""Guarded fork Popen.

Adapted from CPython ``Lib/multiprocessing/popen_fork.py`` (3.9-3.13).
Differences, each for a reason:

* the guarded signals are blocked around ``fork()`` and the child runs
  ``_child.prepare`` before ``_bootstrap`` (group, dispositions, ppid check);
* the parent calls ``setpgid`` for the child too (both-sides idiom);
* on Linux the sentinel is a pidfd: it becomes readable when the child
  exits even if grandchildren still hold inherited pipe ends, and
  signalling through it cannot hit a recycled pid;
* reaping goes through one lock per child, so two threads polling the same
  child (the pool, the reaper, a user's ``join()``) never lose its exit
  status to each other (gh-92881).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing import popen_fork, util
from multiprocessing.connection import wait as mp_wait
from typing import Any

from . import _child, _compat, _platform, _signals
from ._errors import GuardSetupError
from ._guard import Guard, current_guard

__all__ = ["Popen"]


class Popen(popen_fork.Popen):
    """Start a guarded child by fork."""

    method = "fork"

    def __init__(self, process_obj: Any) -> None:
        self._reap_lock = threading.RLock()
        self._pidfd: int | None = None
        self._guard: Guard | None = None
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        guard = current_guard()
        pool_worker = bool(getattr(process_obj, "_mpguard_pool_worker", False))
        plan = guard.child_plan(pool_worker=pool_worker)
        use_pidfd = _platform.HAS_PIDFD
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
                        began = True
                        _compat.child_atexit_begin()
                        code = process_obj._bootstrap(parent_sentinel=child_r)
                finally:
                    if began:
                        _compat.child_atexit_end()
                    os._exit(code)
        finally:
            _signals.guarded_fork(False)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.pid = pid
        self._guard = guard
        os.close(child_r)
        if child_w >= 0:
            os.close(child_w)
        try:
            guard.adopt(pid)
            if use_pidfd:
                self._pidfd = _platform.pidfd_open(pid)
        except OSError as e:
            # Never leave a child running unprotected.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.returncode = -signal.SIGKILL
            os.close(parent_w)
            if parent_r >= 0:
                os.close(parent_r)
            if isinstance(e, GuardSetupError):
                raise
            msg = "could not open a pidfd for the child"
            raise GuardSetupError(msg, pid=pid, errno=e.errno) from e
        if self._pidfd is not None:
            self.sentinel = self._pidfd
            fds: tuple[int, ...] = (parent_w, self._pidfd)
        else:
            self.sentinel = parent_r
            fds = (parent_r, parent_w)
        self.finalizer = util.Finalize(self, _release, (guard, self.sentinel, fds))
        guard.register(self, reap=not pool_worker)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """Return the exit code, reaping the child if it has exited."""
        if self.returncode is None and flag == 0:
            return self.wait()
        if self.returncode is None:
            with self._reap_lock:
                if self.returncode is None:
                    try:
                        pid, sts = os.waitpid(self.pid, os.WNOHANG)
                    except ChildProcessError:
                        # Reaped behind our back (a foreign waitpid(-1) or
                        # SIGCHLD=SIG_IGN): the status is lost.
                        return self.returncode
                    if pid == self.pid:
                        self.returncode = os.waitstatus_to_exitcode(sts)
                        if self._guard is not None:
                            self._guard.reaped(self)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to *timeout* seconds for the child; return its exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # A pidfd is readable exactly on exit; a sentinel pipe may be held
        # open by grandchildren, so without pidfds poll as well.
        tick = None if self._pidfd is not None else 0.05
        while True:
            rc = self.poll()
            if rc is not None:
                return rc
            if deadline is None:
                left = tick
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if tick is not None:
                    left = min(left, tick)
            mp_wait([self.sentinel], left)

    def _send_signal(self, sig: int) -> None:
        with self._reap_lock:
            if self.returncode is not None:
                return
            try:
                if self._pidfd is not None:
                    _platform.pidfd_send_signal(self._pidfd, sig)
                else:
                    # Safe: the pid cannot be recycled before we reap it,
                    # and reaping takes this lock.
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def _release(guard: Guard, sentinel: int, fds: tuple[int, ...]) -> None:
    guard.release_fd(sentinel)
    util.close_fds(*fds)  # type: ignore[attr-defined]
