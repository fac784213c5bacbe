"""The process-wide guard: guardian, group, registry, reaper and teardown.

One :class:`Guard` exists per process that starts guarded children.  It is
created before the first guarded fork and:

* installs the parent's signal handlers (``_signals``);
* starts the guardian (``_guardian``), whose pid is the process group that
  every guarded child joins: the parent is never a member;
* registers each guarded child, reaps plain Processes the moment they exit
  (``_Reaper``: pidfds, never ``waitpid(-1)`` nor ``SIGCHLD=SIG_IGN``), and
  tears the group down on SIGTERM/SIGHUP and at interpreter exit.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import warnings
import weakref
from multiprocessing import util
from multiprocessing.connection import wait as mp_wait
from typing import TYPE_CHECKING, Any

from . import _compat, _platform, _signals
from ._child import ChildPlan
from ._config import GuardPolicy, get_policy
from ._errors import (
    GuardClosedError,
    GuardDegradedWarning,
    GuardSetupError,
    signal_name,
)
from ._kill import (
    Target,
    escalate,
    kill_tree,
    procs_alive,
    signal_procs,
    snapshot_descendants,
)

if TYPE_CHECKING:
    import multiprocessing.pool

    from ._popen_fork import Popen
    from ._popen_forkserver import GuardedForkServer

__all__ = ["Guard", "current_guard", "install_handlers", "shutdown"]

log = logging.getLogger("mpguard")

GUARDIAN_PATH = os.path.join(os.path.dirname(__file__), "_guardian.py")
# Blocked around every guarded fork whatever the policy: a child must never
# run an inherited handler before it has reset it (platform-facts §2.9).
_ALWAYS_BLOCKED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class Guard:
    """Protection state of one owner process.  Use :func:`current_guard`."""

    def __init__(self, policy: GuardPolicy) -> None:
        _platform.check_supported()
        self.owner_pid = os.getpid()
        self.policy = policy
        self.lock = threading.RLock()
        self.children: dict[int, Popen] = {}
        self.pools: weakref.WeakSet[multiprocessing.pool.Pool] = weakref.WeakSet()
        self.closing = False
        self.closed = False
        self.broken = False
        self.handlers: dict[signal.Signals, _signals.GuardHandler] = {}
        self._handlers_tried = False
        self._escapees: list[Any] = []
        self._plans: dict[bool, ChildPlan] = {}
        self._forkserver: GuardedForkServer | None = None
        self.block = frozenset(policy.signals) | _ALWAYS_BLOCKED
        if _platform.MACOS:
            warnings.warn(
                "mpguard: fork() on macOS is unsafe once threads or system "
                "frameworks are in use (bpo-33725); prefer running on Linux",
                GuardDegradedWarning,
                stacklevel=4,
            )
        if not _platform.HAS_PIDFD:
            warnings.warn(
                "mpguard: pidfds are unavailable (they need Linux >= 5.3; "
                "MPGUARD_DISABLE may turn them off): exited children are "
                "reaped by polling every 50 ms, and parent death is noticed "
                "through the guardian's lifeline pipe and getppid() (up to 1 s)",
                GuardDegradedWarning,
                stacklevel=4,
            )
        self.ensure_handlers()
        self._start_guardian()
        self._reaper = _Reaper(self)
        # Started now, not with the first plain Process: the guardian's
        # death must be noticed in pool-only programs too.
        self._reaper.start()
        # exitpriority < 0: run after multiprocessing's own exit function
        # has terminated daemonic children and joined the others, so the
        # stdlib semantics of non-daemonic Processes are kept.
        self._finalizer = util.Finalize(
            None, self.shutdown, kwargs={"reason": "exit"}, exitpriority=-100
        )

    # --- setup ---------------------------------------------------------

    def ensure_handlers(self) -> None:
        """Install the signal handlers once, from the main thread."""
        if self.handlers or (
            self._handlers_tried
            and threading.current_thread() is not threading.main_thread()
        ):
            return
        self._handlers_tried = True
        self.handlers = _signals.install(
            self.policy.signals, self.owner_pid, self._on_signal
        )

    def reinstall_handlers(self, policy: GuardPolicy) -> None:
        """Apply a new policy's signal set."""
        _signals.uninstall(self.handlers)
        self.policy = policy
        self.block = frozenset(policy.signals) | _ALWAYS_BLOCKED
        self._plans = {}
        self.handlers = {}
        self._handlers_tried = False
        self.ensure_handlers()

    def _start_guardian(self) -> None:
        if not sys.executable:
            msg = "cannot start the guardian: sys.executable is empty"
            raise GuardSetupError(msg, hint="mpguard needs a Python executable")
        lifeline_r, self.lifeline_w = os.pipe()  # both ends close-on-exec
        old = signal.pthread_sigmask(signal.SIG_BLOCK, self.block)
        try:
            # The mask survives exec: the guardian starts with the guarded
            # signals blocked and ignores them before unblocking.
            self.guardian = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    GUARDIAN_PATH,
                    str(self.owner_pid),
                    str(lifeline_r),
                ],
                pass_fds=(lifeline_r,),
                stdin=subprocess.DEVNULL,
                # Never hold the parent's stdout: `app | tee` would wait on us.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **_compat.guardian_spawn_kwargs(),
            )
        except OSError as e:
            os.close(self.lifeline_w)
            msg = "could not start the guardian process"
            raise GuardSetupError(msg, errno=e.errno) from e
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            os.close(lifeline_r)
        self.pgid = self.guardian.pid
        try:
            ok = os.getpgid(self.pgid) == self.pgid
        except OSError:
            ok = False
        if not ok:
            self.guardian.kill()
            self.guardian.wait()
            msg = "the guardian did not become a process group leader"
            raise GuardSetupError(msg, pid=self.pgid, pgid=self.pgid)
        self.guardian_pidfd: int | None = None
        if _platform.HAS_PIDFD:
            self.guardian_pidfd = _platform.pidfd_open(self.pgid)
        log.debug(
            "guard up: owner=%d guardian=%d pgid=%d pidfd=%s",
            self.owner_pid,
            self.pgid,
            self.pgid,
            _platform.HAS_PIDFD,
        )

    def usable(self) -> bool:
        """True if new children may be started under this guard."""
        return self.owner_pid == os.getpid() and not self.closed and not self.broken

    def check_open(self) -> None:
        """Raise GuardClosedError once a teardown has begun."""
        if self.closing:
            msg = "the guard is tearing down; no new child may start"
            raise GuardClosedError(msg, pgid=self.pgid)

    def child_plan(self, *, pool_worker: bool) -> ChildPlan:
        """What a child forked now must do before running its target."""
        self.check_open()
        # Built once per policy, not once per fork (pools fork a lot).
        plan = self._plans.get(pool_worker)
        if plan is None:
            plan = self._plans[pool_worker] = ChildPlan(
                pgid=self.pgid,
                parent_pid=self.owner_pid,
                lifeline_fd=self.lifeline_w,
                signals=tuple(sorted(self.block)),
                pool_worker=pool_worker,
            )
        return plan

    def forkserver(self) -> GuardedForkServer:
        """This guard's forkserver (started on first use, in the group)."""
        self.check_open()
        with self.lock:
            if self._forkserver is None:
                from ._popen_forkserver import GuardedForkServer  # noqa: PLC0415

                self._forkserver = GuardedForkServer(self)
            return self._forkserver

    def adopt(self, pid: int) -> None:
        """Parent side of ``setpgid``: put child *pid* in the group now."""
        try:
            os.setpgid(pid, self.pgid)
        except (ProcessLookupError, PermissionError):
            # ESRCH: the child already exited; EACCES: it already did it.
            pass
        except OSError as e:
            # EPERM: the group is gone (the guardian died).  The child
            # fails the same call and exits with EXIT_SETUP_FAILED.
            self._mark_broken(f"setpgid failed: {e}")
            msg = "could not put the child in the guard's process group"
            raise GuardSetupError(msg, pid=pid, pgid=self.pgid, errno=e.errno) from e

    def register(self, popen: Popen, *, reap: bool) -> None:
        """Track a started child; *reap* it as soon as it exits."""
        with self.lock:
            self.children[popen.pid] = popen
        if reap:
            self._reaper.watch(popen)
        log.debug("started pid=%d in pgid=%d", popen.pid, self.pgid)

    def watch(self, proc: Any) -> None:
        """Have the reaper call ``proc.poll()`` once ``proc.sentinel`` fires."""
        self._reaper.watch(proc)

    def reaped(self, popen: Popen) -> None:
        """Called by a Popen once it has collected its exit status."""
        with self.lock:
            self.children.pop(popen.pid, None)
        self._reaper.unwatch(popen.sentinel)
        log.debug("reaped pid=%d exitcode=%s", popen.pid, popen.returncode)

    def release_fd(self, fd: int) -> None:
        """Stop watching *fd* before its owner closes it."""
        self._reaper.unwatch(fd)

    def add_pool(self, pool: multiprocessing.pool.Pool) -> None:
        """Remember *pool*, to stop its respawning on teardown."""
        with self.lock:
            self.pools.add(pool)

    # --- teardown ------------------------------------------------------

    def _on_signal(self, signum: int, repeated: bool) -> None:
        if repeated:
            log.debug("second %s: SIGKILL now", signal_name(signum))
            self.kill_now()
        else:
            self.shutdown(reason=signal_name(signum) or str(signum))

    def kill_now(self) -> None:
        """SIGKILL the group and its escapees without a grace period."""
        if self._guardian_held():
            _platform.killpg(self.pgid, signal.SIGKILL)
        with self.lock:
            live = list(self.children.values())
        for p in live:
            p._send_signal(signal.SIGKILL)
        signal_procs(self._escapees, signal.SIGKILL)

    def _guardian_held(self) -> bool:
        # The pgid is ours to signal only while its leader is unreaped.
        return self.guardian.returncode is None and not self.broken

    def shutdown(self, grace: float | None = None, *, reason: str = "api") -> None:
        """Tear the group down: SIGTERM, grace, SIGKILL, reap.  Final."""
        if self.owner_pid != os.getpid():
            return
        with self.lock:
            if self.closing or self.closed:
                return
            self.closing = True
            live = list(self.children.values())
            pools = list(self.pools)
        grace = self.policy.grace if grace is None else grace
        for pool in pools:
            _compat.stop_pool_respawn(pool)
        _compat.stop_billiard_respawn()
        log.debug("teardown (%s) of pgid=%d, grace=%.2fs", reason, self.pgid, grace)
        if self._guardian_held():
            self._escapees = snapshot_descendants(
                (p.pid for p in live), exclude_pgid=self.pgid
            )
            escalate(self._group_target(live), grace)
        else:
            kill_tree(live, grace, f"guarded children (pgid={self.pgid})")
        for p in live:
            p.wait(0.5)
        if self._forkserver is not None:
            # Killed with the group; reap it (it is our child).
            self._forkserver.stop(0.5)
        self._release_guardian()
        with self.lock:
            self.closed = True
        self._finalizer.cancel()
        self._reaper.stop()
        if reason == "api":
            _signals.uninstall(self.handlers)

    def _group_target(self, live: list[Popen]) -> Target:
        pgid = self.pgid
        escapees = self._escapees

        def send(sig: int) -> None:
            # The guardian ignores SIGTERM, so the group id stays reserved
            # until the end; SIGKILL takes it too, which is fine at the end.
            _platform.killpg(pgid, sig)
            signal_procs(escapees, sig)

        def remaining() -> int:
            n = sum(1 for p in live if p.poll() is None)
            if n:
                return n  # cheap check first; scan /proc only when needed
            table = _platform.process_table()
            members = [
                pid for pid in _platform.group_members(pgid, table) if pid != pgid
            ]
            return len(members) + (procs_alive(escapees) if escapees else 0)

        def waitables() -> list[Any]:
            return [p.sentinel for p in live if p.returncode is None]

        return Target(f"process group {pgid}", send, remaining, waitables)

    def _release_guardian(self) -> None:
        try:
            os.close(self.lifeline_w)
        except OSError:
            pass
        if self.guardian.returncode is None:
            self.guardian.kill()
        if self.guardian_pidfd is not None:
            # Exact wake-up; Popen.wait(timeout) polls with growing sleeps.
            mp_wait([self.guardian_pidfd], 1.0)
        try:
            self.guardian.wait(1.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - D state
            log.debug("guardian %d did not exit", self.pgid)
        if self.guardian_pidfd is not None:
            self._reaper.forget_fd(self.guardian_pidfd)
            os.close(self.guardian_pidfd)
            self.guardian_pidfd = None
        log.debug("guardian %d released", self.pgid)

    def _mark_broken(self, why: str) -> None:
        with self.lock:
            if self.broken or self.closing:
                return
            self.broken = True
        warnings.warn(
            f"mpguard: guardian pid={self.pgid} is gone ({why}); children "
            "started so far are no longer SIGKILLed if the parent dies; new "
            "children get a new guardian",
            GuardDegradedWarning,
            stacklevel=2,
        )

    def guardian_exited(self) -> None:
        """Reaper callback: the guardian died while we still needed it."""
        if self.closing or self.closed:
            return
        # Broken first, reaped second: once the leader is reaped its pgid
        # may be recycled, and nothing may killpg it any more.
        self._mark_broken("it exited")
        rc = self.guardian.poll()
        log.debug("guardian %d reaped, exit code %s", self.pgid, rc)


class _Reaper:
    """Reap plain guarded Processes the moment they exit.

    A thread waits on their pidfds (or, without pidfds, their sentinels with
    a 50 ms poll) and calls ``Popen.poll()``, which reaps that one pid.  It
    never calls ``waitpid(-1)`` and never touches SIGCHLD, so
    ``subprocess`` and other libraries keep their exit statuses (seeds
    000/001/002 use SIG_IGN or ``waitpid(-1)``, which steal them).  Pool
    workers are reaped by the pool itself and are not watched here.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        # Reentrant: a Popen finalizer (run by the garbage collector at any
        # allocation, this thread included) calls unwatch() under the lock.
        self.lock = threading.RLock()
        self.sel: selectors.BaseSelector | None = None
        self.watched: dict[int, Popen] = {}
        self.wake_r = self.wake_w = -1
        self.stopped = False

    def _start(self) -> selectors.BaseSelector:
        sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        sel.register(self.wake_r, selectors.EVENT_READ)
        if self.guard.guardian_pidfd is not None:
            sel.register(self.guard.guardian_pidfd, selectors.EVENT_READ)
        self.sel = sel
        threading.Thread(target=self._run, name="mpguard-reaper", daemon=True).start()
        return sel

    def start(self) -> None:
        """Start the thread (it watches the guardian's pidfd from now on)."""
        with self.lock:
            if self.sel is None and not self.stopped:
                self._start()

    def watch(self, popen: Popen) -> None:
        with self.lock:
            if self.stopped:
                return
            sel = self.sel or self._start()
            # Both under the lock: the reaper maps a ready fd through
            # ``watched``.  No wake-up write: epoll reports an fd added
            # while another thread waits, and waking the reaper for
            # nothing made it contend for the GIL on every start().
            self.watched[popen.sentinel] = popen
            sel.register(popen.sentinel, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        with self.lock:
            if self.watched.pop(fd, None) is not None and self.sel is not None:
                self.sel.unregister(fd)

    def forget_fd(self, fd: int) -> None:
        """Unregister a non-child fd (the guardian's pidfd) before closing it."""
        with self.lock:
            if self.sel is not None:
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        if self.sel is not None:
            self._wake()

    def _run(self) -> None:
        sel = self.sel
        assert sel is not None
        # Without pidfds a sentinel may stay open while grandchildren hold
        # its write end, so every watched child is polled every 50 ms.
        timeout = None if _platform.HAS_PIDFD else 0.05
        guardian_fd = self.guard.guardian_pidfd
        while not self.stopped:
            try:
                events = sel.select(timeout)
            except (OSError, ValueError):
                break
            with self.lock:
                watched = self.watched.copy()
            ready = [k.fd for k, _ in events]
            for fd in ready:
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except OSError:
                        pass
                elif fd == guardian_fd:
                    self.forget_fd(fd)
                    self.guard.guardian_exited()
            for fd in watched if timeout else ready:
                popen = watched.get(fd)
                if popen is not None:
                    popen.poll()
        with self.lock:
            sel.close()
            self.sel = None
            self.watched.clear()
            util.close_fds(self.wake_r, self.wake_w)  # type: ignore[attr-defined]


_guard: Guard | None = None
_guard_lock = threading.Lock()


def current_guard() -> Guard:
    """The guard of this process, created on first use.

    Raises:
        GuardClosedError: the guard is tearing down.
        GuardSetupError: the guardian could not be started.
        UnsupportedPlatformError: no fork or process groups here.
    """
    global _guard
    g = _guard
    if g is None or not g.usable():
        with _guard_lock:
            g = _guard
            if (
                g is not None
                and g.closing
                and not g.closed
                and g.owner_pid == os.getpid()
            ):
                msg = "the guard is tearing down; no new child may start"
                raise GuardClosedError(msg, pgid=g.pgid)
            if g is None or not g.usable():
                _register_fork_hook()
                g = _guard = Guard(get_policy())
    g.ensure_handlers()
    return g


def install_handlers() -> None:
    """Set up the guard now, from the main thread.

    Programs that start their first guarded child from a worker thread call
    this once at start-up, so that the signal handlers can be installed
    (Python allows that only in the main thread).
    """
    current_guard()


def shutdown(grace: float | None = None) -> None:
    """Tear down this process's guard now (SIGTERM, grace, SIGKILL, reap).

    Every guarded child and everything they started in the group ends, and
    the handlers are restored.  A later guarded start sets up a new guard.
    """
    g = _guard
    if g is not None and g.owner_pid == os.getpid():
        g.shutdown(grace, reason="api")


def policy_changed() -> None:
    """Re-install the handlers of a live guard for the new policy."""
    g = _guard
    if g is not None and g.usable():
        g.reinstall_handlers(get_policy())


_hook_registered = False


def _register_fork_hook() -> None:
    # Registered with the first guard, not at import: ``import mpguard`` has
    # no side effect but the registration of "guarded".  Fork children
    # inherit both the hooks and this flag.
    global _hook_registered
    if not _hook_registered:
        _hook_registered = True
        os.register_at_fork(
            before=_signals.before_fork,
            after_in_parent=_signals.after_fork_in_parent,
            after_in_child=_after_fork_in_child,
        )


def _after_fork_in_child() -> None:
    _signals.after_fork_in_child()
    # A fork child owns nothing of its parent's guard; it builds its own if
    # it starts guarded children itself.
    global _guard, _guard_lock
    _guard = None
    _guard_lock = threading.Lock()
