"""Guarded forkserver: the server, and the Popen of its children.

Under the stdlib's forkserver (the default on Linux from Python 3.14) the
workers' parent is the forkserver, not the user's process, and the
forkserver lives while any worker holds its ``alive`` pipe.  After a
SIGKILL of the main process both the workers and the forkserver survive,
and ``PR_SET_PDEATHSIG`` cannot help: it fires when the *parent* dies
(prctl(2)), and their parent, the forkserver, did not.

So each guard runs its own forkserver, started *in the guard's process
group* (``Guard.spawn``).  Every child it forks inherits that group, and
the guardian's group SIGKILL takes the forkserver and all its children
together when the owner dies, however it dies.  The stdlib's own
forkserver (``get_context("forkserver")``) is left alone.

A forkserver child is not our child: the forkserver reaps it and reports
its exit status on a pipe.  A pidfd opened as soon as the pid is known is
the sentinel and carries the signals: it fires exactly when the child
exits, whether or not the forkserver is still there to report it (a
teardown's SIGTERM ends the forkserver at once, while a worker may still
be in its grace period), and a pid recycled after the forkserver reaped
the child can never be signalled.
"""

from __future__ import annotations

import os
import signal
from multiprocessing import forkserver, popen_forkserver, util

from .. import _compat, _platform
from .._errors import GuardSetupError
from .._group import Child, abandon, holding, release
from ._fork import is_pool_worker
from ._spawn import bootstrap_prog

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .._group import Guard

__all__ = ["GuardedForkServer", "Popen", "forkserver_of"]


def forkserver_of(guard: Guard) -> GuardedForkServer:
    """*guard*'s forkserver (started on first use, in the group)."""
    return guard.resource("forkserver", GuardedForkServer)


class GuardedForkServer(forkserver.ForkServer):
    """One guard's forkserver, a member of the guard's process group."""

    def __init__(self, guard: Guard) -> None:
        _compat.require_forkserver()
        super().__init__()
        self._guard = guard
        self._pidfd: int | None = None
        # Killed with the group; reaped here, after the group is gone.
        guard.on_teardown(lambda _: self.stop(0.5), late=True)

    def ensure_running(self) -> None:
        """Start the server unless it runs (the stdlib's, in our group)."""
        # The compat layer fills in the stdlib's %-fields (listener fd,
        # alive fd, preload list, keyword dict) for this Python.
        guard = self._guard
        signals = tuple(int(s) for s in sorted(guard.block))
        command = bootstrap_prog(
            "forkserver_main",
            f"{guard.pgid}, {signals!r}, {_compat.FORKSERVER_MAIN_ARGS}",
        )
        _compat.forkserver_ensure_running(self, command, self._spawn)

    def _spawn(self, exe: Any, args: list[Any], fds: list[int]) -> int:
        del exe  # argv[0] is the executable
        pid = self._guard.spawn(args, fds)
        self._watch(pid)
        return pid

    def _watch(self, pid: int) -> None:
        # Reap the server the moment it exits, even outside a teardown: it
        # is our child, and would otherwise stay a zombie until next use.
        old = self._pidfd
        if old is not None:
            self._guard.release_fd(old)
            os.close(old)
            self._pidfd = None
        if _platform.CAPS.pidfd:
            try:
                self._pidfd = _platform.pidfd_open(pid)
            except OSError as e:
                msg = "could not open a pidfd for the forkserver"
                raise abandon(
                    pid, (), GuardSetupError(msg, pid=pid, errno=e.errno)
                ) from e
            self._guard.watch(self._pidfd, self.poll)

    @property
    def sentinel(self) -> int | None:
        """The server's pidfd: what the guard's reaper waits on."""
        return self._pidfd

    @property
    def pid(self) -> int | None:
        """The server's pid, or None if it is not running."""
        return _compat.forkserver_pid(self)

    def poll(self) -> int | None:
        """Reap the server if it has exited (the reaper calls this)."""
        if not _compat.forkserver_poll(self):
            return None
        if self._pidfd is not None:
            self._guard.release_fd(self._pidfd)
        return 0

    def stop(self, timeout: float = 1.0) -> None:
        """Release the server (teardown): close "alive", reap, SIGKILL."""
        detached = _compat.forkserver_detach(self)
        if detached is None:
            return
        pid, alive = detached
        os.close(alive)
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            self._guard.release_fd(pidfd)
            if not _platform.wait_readable(pidfd, timeout):
                _signal_pidfd(pidfd, signal.SIGKILL)
            os.close(pidfd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _signal_pidfd(fd: int, sig: int) -> None:
    try:
        _platform.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass


class Popen(Child, popen_forkserver.Popen):
    """Start a guarded child through the guard's forkserver.

    The child is the forkserver's, not ours: :meth:`poll` reads the status
    the forkserver reports instead of calling ``waitpid``.
    """

    method = "forkserver"

    def _launch(self, process_obj: Any) -> None:
        with holding() as guard:
            server = forkserver_of(guard)
            pool_worker = is_pool_worker(process_obj)
            buf = _compat.pickle_for_child(self, process_obj)
            self._status, w = server.connect_to_new_process(_compat.popen_fds(self))
            self.sentinel = self._status
            # As the stdlib: a duplicate of the data pipe's write end is the
            # child's sentinel of this (its logical parent) process.
            parent_w = os.dup(w)
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = _compat.read_signed(self._status)
            self._guard = guard
            fds: tuple[int, ...] = (parent_w, self._status)
            if _platform.CAPS.pidfd:
                try:
                    pidfd = _platform.pidfd_open(self.pid)
                except ProcessLookupError:
                    pidfd = None  # already gone: its status is on the way
                # Opened before this check, the pidfd names our child
                # unless the child had already exited (and its pid may be
                # recycled): then its status is readable and the pidfd is
                # not needed.
                if pidfd is not None and _platform.wait_readable(self._status, 0):
                    os.close(pidfd)
                    pidfd = None
                if pidfd is not None:
                    self._pidfd = self.sentinel = pidfd
                    fds = (*fds, pidfd)
            self.finalizer = util.Finalize(self, release, (guard, self.sentinel, fds))
            self.pool_worker = pool_worker
            guard.register(self, reap=not pool_worker)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """Return the exit code the forkserver reported, or None."""
        if self.returncode is None and flag != os.WNOHANG:
            # Block outside the lock, so a signal from another thread is
            # not held up by a join().
            _platform.wait_readable(self.sentinel)
        if self.returncode is None:
            with self._reap_lock:
                if self.returncode is None:
                    if not _platform.wait_readable(self.sentinel, 0):
                        return None
                    # Exited.  The forkserver reports the status right
                    # after it reaps the child; EOF (or nothing within 1 s)
                    # means the forkserver is gone: 255, as the stdlib.
                    rc = 255
                    if _platform.wait_readable(self._status, 1.0):
                        try:
                            rc = _compat.read_signed(self._status)
                        except (OSError, EOFError):
                            pass
                    self.returncode = rc
                    self._reaped()
        return self.returncode

    def _signal_by_pid(self, sig: int) -> None:
        # No pidfd: as the stdlib, by pid, but only while the forkserver
        # has not reported the child's exit.
        if not _platform.wait_readable(self.sentinel, 0):
            os.kill(self.pid, sig)
