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
from typing import TYPE_CHECKING, Any

from . import _child, _compat, _platform, _signals
from ._errors import GuardSetupError
from ._guard import Guard, current_guard

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["GuardedPopen", "Popen", "release"]


class GuardedPopen:
    """What every guarded Popen that starts its own child shares.

    Mixed into the fork and spawn Popens (and billiard's fork Popen): after
    the child exists, :meth:`_track` opens its pidfd, makes it the sentinel
    and registers the child with the guard; ``poll``/``wait`` reap through
    one lock per child, and signals go through the pidfd.
    """

    pid: int
    returncode: int | None
    sentinel: int
    finalizer: Any

    def _init_guarded(self) -> None:
        self._reap_lock = threading.RLock()
        self._pidfd: int | None = None
        self._guard: Guard | None = None

    def _track(
        self, guard: Guard, pid: int, fds: tuple[int, ...], *, pool_worker: bool
    ) -> None:
        """Adopt the started child *pid*; *fds* are closed with the Popen.

        Without pidfds the first of *fds* is the sentinel: the read end of
        a pipe whose write end only the child holds.
        """
        self.pid = pid
        self._guard = guard
        try:
            if _platform.HAS_PIDFD:
                self._pidfd = _platform.pidfd_open(pid)
        except OSError as e:
            # Never leave a child running unprotected.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.returncode = -signal.SIGKILL
            util.close_fds(*fds)  # type: ignore[attr-defined]
            msg = "could not open a pidfd for the child"
            raise GuardSetupError(msg, pid=pid, errno=e.errno) from e
        if self._pidfd is not None:
            self.sentinel = self._pidfd
            fds = (*fds, self._pidfd)
        else:
            self.sentinel = fds[0]
        self.finalizer = util.Finalize(self, release, (guard, self.sentinel, fds))
        guard.register(self, reap=not pool_worker)  # type: ignore[arg-type]

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
        except GuardSetupError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.pid = pid
            self.returncode = -signal.SIGKILL
            util.close_fds(*fds)  # type: ignore[attr-defined]
            raise
        self._track(guard, pid, fds, pool_worker=pool_worker)

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
                            self._guard.reaped(self)  # type: ignore[arg-type]
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


class Popen(GuardedPopen, popen_fork.Popen):
    """Start a guarded child by fork."""

    method = "fork"

    def __init__(self, process_obj: Any) -> None:
        self._init_guarded()
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        self._fork(
            process_obj,
            lambda sentinel: process_obj._bootstrap(parent_sentinel=sentinel),
        )


def release(guard: Guard, sentinel: int, fds: tuple[int, ...]) -> None:
    """Finalizer of a guarded Popen: unwatch its sentinel, close its fds."""
    guard.release_fd(sentinel)
    util.close_fds(*fds)  # type: ignore[attr-defined]
