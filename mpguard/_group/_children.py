"""The guard's children: one table, one handle class, and the reaper.

:class:`GuardedChild` is what the rest of mpguard needs of a child, whatever
started it (the guarded fork, spawn or forkserver Popens, billiard's Popen,
and later ``mpguard.Popen``).  :class:`Child` implements it for a child
that is ours to reap: pidfd sentinel, one reap lock, signals through the
pidfd.  :class:`ChildTable` is the single record of the live children of a
guard; its reaper thread waits on their sentinels and reaps each one the
moment it exits.

Reaping never uses ``waitpid(-1)`` nor ``SIGCHLD=SIG_IGN``: the common
"reap everything" recipes (``signal.signal(SIGCHLD, SIG_IGN)``, a SIGCHLD
handler looping on ``os.waitpid(-1, WNOHANG)``) also collect the children
of ``subprocess``, whose ``returncode`` then reads 0 whatever the child
did (waitpid(2): ECHILD; CPython's ``Popen._try_wait``).  Each child is
reaped by its own pid, once, under its own lock (gh-92881: two threads
polling one child lose its status to each other).
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from multiprocessing import util

from .. import _compat, _platform
from .._errors import GuardSetupError
from ._ladder import tree_target

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from ._guard import Guard

__all__ = ["Child", "ChildTable", "GuardedChild", "abandon", "release"]


if not TYPE_CHECKING:
    # A protocol for the type checker; at run time a plain class, so that
    # typing is not imported (2 ms of a cold start).
    Protocol = object


class GuardedChild(Protocol):
    """What the guard needs of a child process it tracks.

    ``sentinel`` becomes readable when the child exits (a pidfd on Linux);
    ``poll()`` collects the exit status without blocking and tells the
    guard (:meth:`Guard.reaped`); ``send_signal()`` can never hit a
    recycled pid.
    """

    pid: int
    returncode: int | None
    sentinel: int
    #: A pool's worker: SIGINT is not passed on to it (it ignores SIGINT;
    #: leaving the pool's ``with`` block terminates it).
    pool_worker: bool

    def poll(self, flag: int = ...) -> int | None:
        """Return the exit code, reaping the child if it has exited."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to *timeout* seconds; return the exit code or None."""

    def send_signal(self, sig: int) -> None:
        """Signal the child unless it has been reaped."""

    def signal_nowait(self, sig: int) -> None:
        """Signal the child from a signal handler: no lock, never raises."""


def abandon(pid: int, fds: tuple[int, ...], err: GuardSetupError) -> GuardSetupError:
    """SIGKILL and reap *pid*, close *fds*, and return *err* to raise.

    A child that could not be put under protection is never left running.
    """
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass
    _compat.close_fds(*fds)
    return err


def release(guard: Guard, sentinel: int, fds: tuple[int, ...]) -> None:
    """Finalizer of a :class:`Child`: unwatch its sentinel, close its fds."""
    guard.release_fd(sentinel)
    _compat.close_fds(*fds)


#: The exit code of a child that someone else reaped (``SIGCHLD`` set to
#: ``SIG_IGN``, a ``waitpid(-1)`` loop): its real status is lost.
STATUS_LOST = 255


class Child:
    """A child of this process that the guard reaps: the shared Popen part.

    Mixed into the guarded fork and spawn Popens (and billiard's fork
    Popen).  After the child exists, :meth:`track` opens its pidfd, makes
    it the sentinel and registers the child with the guard; ``poll`` and
    ``wait`` reap through one lock per child, and signals go through the
    pidfd.
    """

    pid: int
    returncode: int | None
    sentinel: int
    pool_worker: bool
    finalizer: Any

    @classmethod
    def adopt(
        cls, guard: Guard, pid: int, fds: tuple[int, ...] = (), *, reap: bool = True
    ) -> Child:
        """A handle for *pid*, a child already in *guard*'s group (started
        by ``guard.spawn`` or forked and adopted), registered and reaped.

        The handle a guard without a pool uses; mixed-in Popens call
        :meth:`track` from their ``_launch``.
        """
        child = cls()
        child.track(guard, pid, fds, reap=reap)
        return child

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Cooperative: a Popen mixing this in passes the process object on
        # to the stdlib's Popen, which launches the child.
        self._init_guarded()
        super().__init__(*args, **kwargs)

    def _init_guarded(self) -> None:
        self.returncode = None
        self.pool_worker = False
        self._reap_lock = threading.RLock()
        self._pidfd: int | None = None
        self._guard: Guard | None = None

    def track(
        self, guard: Guard, pid: int, fds: tuple[int, ...], *, reap: bool
    ) -> None:
        """Adopt the started child *pid*; *fds* are closed with the handle.

        Without pidfds the first of *fds* is the sentinel: the read end of
        a pipe whose write end only the child holds.  *reap*: the guard's
        reaper collects the child as soon as it exits (pool workers are
        reaped by their pool instead).
        """
        self.pid = pid
        self._guard = guard
        if _platform.CAPS.pidfd:
            try:
                self._pidfd = _platform.pidfd_open(pid)
            except ProcessLookupError:
                # Not even a zombie: it exited and someone else reaped it
                # already (SIGCHLD set to SIG_IGN reaps at exit, and a pool
                # worker can finish its one task that fast).
                self._gone_before_tracked(fds)
                return
            except OSError as e:
                self.returncode = -signal.SIGKILL
                msg = "could not open a pidfd for the child"
                raise abandon(
                    pid, fds, GuardSetupError(msg, pid=pid, errno=e.errno)
                ) from e
        if self._pidfd is not None:
            self.sentinel = self._pidfd
            fds = (*fds, self._pidfd)
        else:
            self.sentinel = fds[0]
        self.finalizer = util.Finalize(self, release, (guard, self.sentinel, fds))
        guard.register(self, reap=reap)

    def _gone_before_tracked(self, fds: tuple[int, ...]) -> None:
        """The child is gone and its status lost before it was tracked:
        nothing to register with the guard; the sentinel is a pipe at EOF,
        readable at once, as a dead child's sentinel is."""
        r, w = os.pipe()
        os.close(w)
        self.sentinel = r
        self.returncode = STATUS_LOST
        self.finalizer = util.Finalize(self, _compat.close_fds, (*fds, r))

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
                        # SIGCHLD=SIG_IGN): it has exited, and its status
                        # is lost.  The stdlib's Popen then reports None
                        # forever, which hangs a pool that waits to replace
                        # the worker, and here its pidfd, readable for
                        # good, would spin every waiter.  255 is
                        # multiprocessing's "status unknown" (the
                        # forkserver's, when it cannot report one).
                        self.returncode = STATUS_LOST
                        self._reaped()
                        return self.returncode
                    if pid == self.pid:
                        self.returncode = os.waitstatus_to_exitcode(sts)
                        self._reaped()
        return self.returncode

    def _reaped(self) -> None:
        if self._guard is not None:
            self._guard.reaped(self)

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
            _platform.wait_readable(self.sentinel, left)

    def send_signal(self, sig: int) -> None:
        """Send *sig* to the child unless it has been reaped."""
        with self._reap_lock:
            if self.returncode is not None:
                return
            try:
                if self._pidfd is not None:
                    _platform.pidfd_send_signal(self._pidfd, sig)
                else:
                    self._signal_by_pid(sig)
            except ProcessLookupError:
                pass

    def signal_nowait(self, sig: int) -> None:
        """Send *sig* from a signal handler, through the pidfd only.

        No lock: the interrupted code may hold the reap lock, or wait for a
        lock that a thread holding it waits for in turn (the reaper holds
        it while it calls ``Guard.reaped``).  A pidfd cannot reach a
        recycled pid, reaped or not.  Without pidfds nothing is sent: by
        pid it is safe only under the reap lock.  Never raises.
        """
        fd = self._pidfd
        if fd is None or self.returncode is not None:
            return
        try:
            _platform.pidfd_send_signal(fd, sig)
        except OSError:
            pass  # gone, or closed by a reaper meanwhile

    def _signal_by_pid(self, sig: int) -> None:
        # Safe: the pid cannot be recycled before we reap it, and reaping
        # takes the reap lock, which the caller holds.
        os.kill(self.pid, sig)

    def _send_signal(self, sig: int) -> None:
        # The stdlib Popens' interrupt() (3.14+) calls this name.
        self.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM the child and everything below it (``Process.terminate``).

        The stdlib leaves a terminated process's children running as
        orphans; a guarded child's whole subtree goes, its descendants
        listed before the signal.  ``ProcessPoolExecutor``'s
        ``terminate_workers()`` and ``kill_workers()`` (3.14+) end here too.
        """
        self._signal_tree(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child and everything below it (``Process.kill``)."""
        self._signal_tree(signal.SIGKILL)

    def _signal_tree(self, sig: int) -> None:
        if self.returncode is None:
            tree_target(f"process {self.pid}", [self]).send(sig)


class ChildTable:
    """The live children of one guard, and the thread that reaps them.

    The table maps pid to child and is the only record of them: teardown
    reads it, and the reaper's selector holds, for each watched fd, the
    callback to run when it fires (a child's ``poll``, the guardian's
    death).  Without pidfds a sentinel may stay open while grandchildren
    hold its write end, so every watched fd's callback runs every 50 ms.

    *tick* is called by the reaper before each wait and returns the most
    it may sleep (None: until an fd fires); the guard uses it to release
    an idle guardian.
    """

    def __init__(self, tick: Callable[[], float | None]) -> None:
        self._tick = tick
        # Reentrant: a handle's finalizer (run by the garbage collector at
        # any allocation, the reaper thread included) unwatches under it.
        self._lock = threading.RLock()
        self._members: dict[int, GuardedChild] = {}
        self._sel: selectors.BaseSelector | None = None
        self._waker: _platform.WakePipe | None = None
        self._stopped = False

    # --- the table -------------------------------------------------------

    def add(self, child: GuardedChild, *, reap: bool) -> None:
        """Record *child*; with *reap*, reap it the moment it exits."""
        with self._lock:
            self._members[child.pid] = child
        if reap:
            self.watch(child.sentinel, child.poll)

    def discard(self, child: GuardedChild) -> bool:
        """Forget a reaped *child*; True if the table is now empty."""
        with self._lock:
            self._members.pop(child.pid, None)
            empty = not self._members
        self.unwatch(child.sentinel)
        return empty

    def members(self) -> list[GuardedChild]:
        """The children recorded now."""
        with self._lock:
            return list(self._members.values())

    def snapshot(self) -> list[GuardedChild]:
        """The children recorded now, read without the table's lock (for a
        signal handler: the code it interrupted may hold it).  Copying the
        dict is one step under the GIL."""
        return list(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    # --- the reaper -----------------------------------------------------

    def start(self) -> None:
        """Start the reaper thread (once)."""
        with self._lock:
            if self._sel is None and not self._stopped:
                self._start()

    def _start(self) -> selectors.BaseSelector:
        sel = selectors.DefaultSelector()
        # The thread closes it on its way out, after stop() returned: a
        # late wake() must not write into a recycled descriptor (a new
        # pool's result pipe), which a plain os.pipe() pair would.
        self._waker = _platform.WakePipe()
        sel.register(self._waker.fileno(), selectors.EVENT_READ, None)
        self._sel = sel
        _platform.start_thread_without_signals(
            threading.Thread(target=self._run, name="mpguard-reaper", daemon=True)
        )
        return sel

    def watch(self, fd: int, callback: Callable[[], object]) -> None:
        """Run *callback* in the reaper thread when *fd* becomes readable."""
        with self._lock:
            if self._stopped:
                return
            sel = self._sel or self._start()
            # No wake-up write: epoll reports an fd added while another
            # thread waits, and waking the reaper for nothing made it
            # contend for the GIL on every start().
            try:
                sel.register(fd, selectors.EVENT_READ, callback)
            except KeyError:  # already watched (a reused fd number)
                sel.modify(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd: int) -> None:
        """Stop watching *fd* (before its owner closes it)."""
        with self._lock:
            waker = self._waker
            if self._sel is not None and (waker is None or fd != waker.fileno()):
                try:
                    self._sel.unregister(fd)
                except (KeyError, ValueError):
                    pass

    def wake(self) -> None:
        """Make the reaper re-read its tick now."""
        waker = self._waker
        if waker is not None:
            waker.wake()

    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    def stop(self) -> None:
        """End the reaper thread (it closes its selector on the way out)."""
        with self._lock:
            self._stopped = True
        if self._sel is not None:
            self.wake()

    def _run(self) -> None:
        sel = self._sel
        if sel is None:  # pragma: no cover - started with a selector
            return
        polling = not _platform.CAPS.pidfd
        while not self._stopped:
            timeout = self._tick()  # may stop us (idle release)
            if self.stopped():
                break
            if polling:
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
            try:
                events = sel.select(timeout)
            except (OSError, ValueError):
                break
            if polling:
                with self._lock:
                    ready = [k.data for k in sel.get_map().values() if k.data]
            else:
                ready = [k.data for k, _ in events if k.data]
            for key, _ in events:
                if key.data is None and self._waker is not None:
                    self._waker.drain()
            for callback in ready:
                callback()
        with self._lock:
            sel.close()
            self._sel = None
            if self._waker is not None:
                self._waker.close()
