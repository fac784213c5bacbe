"""The guard: one process group without the owner, and its lifecycle.

One :class:`Guard` at a time exists per process that starts guarded
children.  It owns a guardian (``_guardian``), whose pid is the process
group every guarded child joins; a table of those children with the thread
that reaps them (``_children``); and the teardown, which climbs the one
escalation ladder (``_ladder``) over the whole group.

Lifecycle, one state::

    OPEN --(guardian died)--> BROKEN --+
      |                                +--(shutdown)--> CLOSING --> CLOSED
      +-----------(shutdown / idle)----+

* OPEN: new children may join.  BROKEN: the guardian is gone, so children
  started so far no longer die with the owner; the next start gets a new
  guard.  CLOSING/CLOSED: a teardown runs or ran; no child may start.
* **Idle release**: a guard that no one holds (no open pool, no start in
  progress) and whose children are all reaped closes itself after
  :data:`LINGER` seconds, so a program that is done with its pools has no
  child process left; the next start makes a new guard.

The seam later features build on (a guard without a pool)::

    with holding() as guard:                  # started if need be, held
        pid = guard.spawn(argv, pass_fds)     # posix_spawn, in the group
        # or fork: plan = guard.child_plan(pool_worker=False); in the
        # child _start._child.prepare(plan, mask), then exec or the target;
        # in the parent guard.adopt(pid)
        child = Child.adopt(guard, pid)       # registered, reaped on exit
    # The hold ends with the block; the child keeps the guard alive until
    # it is reaped, and LINGER seconds later the guardian goes.

Integrations register teardown hooks (:func:`on_teardown` for the whole
process, :meth:`Guard.on_teardown` for one guard): the core names none of
them.
"""

from __future__ import annotations

import collections
import enum
import os
import signal
import threading
import time
import warnings
import weakref
from contextlib import contextmanager
from multiprocessing import util

from .. import _compat, _platform, _signals
from .._config import (
    GuardPolicy,
    child_dispositions,
    get_policy,
    log,
    on_policy_change,
)
from .._errors import (
    GuardClosedError,
    GuardDegradedWarning,
    GuardSetupError,
    signal_name,
)
from ._children import ChildTable
from ._guardian import Guardian
from ._ladder import Target, escalate, tree_target

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, NamedTuple, TypeVar

    from ._children import GuardedChild

__all__ = [
    "LINGER",
    "ChildPlan",
    "Guard",
    "GuardState",
    "acquire",
    "current_guard",
    "holding",
    "install_handlers",
    "on_teardown",
    "shutdown",
]


#: Seconds an idle guard waits before it releases its guardian: long enough
#: that back-to-back pools share one guardian, short enough that a program
#: done with its pools has no child left within a second.
LINGER = 0.5
# Blocked around every guarded start whatever the policy: a child must never
# run an inherited handler before it has reset it (signal(7): a fork child
# inherits its parent's dispositions and mask).
_ALWAYS_BLOCKED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

if TYPE_CHECKING:
    T = TypeVar("T")

    class ChildPlan(NamedTuple):
        """Everything a forked child needs, computed in the parent before
        fork (the child runs ``mpguard._start._child.prepare`` with it)."""

        pgid: int
        parent_pid: int
        lifeline_fd: int
        pool_worker: bool
        #: ``(signal, handler)`` to install (``_config.child_dispositions``,
        #: in the form ``_compat.set_raw_handler`` takes).
        dispositions: tuple[tuple[int, Any], ...]

else:
    # The tuple typing.NamedTuple would build, without importing typing.
    ChildPlan = collections.namedtuple(
        "ChildPlan", "pgid parent_pid lifeline_fd pool_worker dispositions"
    )
    ChildPlan.__doc__ = """Everything a forked child needs, computed in the
    parent before fork (the child runs ``mpguard._start._child.prepare``
    with it)."""


class GuardState(enum.Enum):
    """Where a guard is in its life (see the module docstring)."""

    OPEN = "open"
    BROKEN = "broken"
    CLOSING = "closing"
    CLOSED = "closed"


# Process-wide teardown hooks, run at the start of every teardown (before
# any signal): integrations stop their own respawning here.
_HOOKS: list[Callable[[], None]] = []


def on_teardown(hook: Callable[[], None]) -> None:
    """Run *hook()* at the start of every guard's teardown, before the
    group is signalled.

    For integrations whose pools respawn workers on their own (billiard's
    Supervisor threads): a respawn during the teardown would fail with
    GuardClosedError.  A hook may run inside a signal handler: it must take
    no lock the interrupted main thread may hold.
    """
    if hook not in _HOOKS:
        _HOOKS.append(hook)


class Guard:
    """The protection state of one owner process.  Use :func:`acquire`,
    :func:`holding` or :func:`current_guard`; never build one directly."""

    def __init__(self, policy: GuardPolicy) -> None:
        _platform.check_supported()
        self.owner_pid = os.getpid()
        self.policy = policy
        self.block = frozenset(policy.signals) | _ALWAYS_BLOCKED
        self.lock = threading.RLock()
        self.state = GuardState.OPEN
        self._holds = 0
        self._idle_since: float | None = None
        self._plans: dict[bool, ChildPlan] = {}
        self._resources: dict[str, Any] = {}
        self._hooks: list[tuple[Any, Callable[[Any], None], bool]] = []
        self._exit_hooks: list[Callable[[GuardedChild], None]] = []
        self.reason: str | None = None
        self._teardown: Target | None = None
        if _platform.CAPS.system == "darwin":
            warnings.warn(
                "mpguard: fork() on macOS is unsafe once threads or system "
                "frameworks are in use (bpo-33725); prefer running on Linux",
                GuardDegradedWarning,
                stacklevel=4,
            )
        if not _platform.CAPS.pidfd:
            warnings.warn(
                "mpguard: pidfds are unavailable (they need Linux >= 5.3; "
                "MPGUARD_DISABLE may turn them off): exited children are "
                "reaped by polling every 50 ms, and parent death is noticed "
                "through the guardian's lifeline pipe and getppid() (up to 1 s)",
                GuardDegradedWarning,
                stacklevel=4,
            )
        self.guardian = Guardian(self.owner_pid, self.block, policy.parent_death_grace)
        self.pgid = self.guardian.pgid
        self.lifeline_w = self.guardian.lifeline_w
        self.children = ChildTable(self._tick)
        # Started now, not with the first plain Process: the guardian's
        # death must be noticed in pool-only programs too.
        self.children.start()
        if self.guardian.pidfd is not None:
            self.children.watch(self.guardian.pidfd, self._guardian_exited)
        # exitpriority < 0: run after multiprocessing's own exit function
        # has terminated daemonic children and joined the others, so the
        # stdlib semantics of non-daemonic Processes are kept.
        self._finalizer = util.Finalize(
            None, self.shutdown, kwargs={"reason": "exit"}, exitpriority=-100
        )
        log.debug(
            "guard up: owner=%d guardian=%d pgid=%d pidfd=%s",
            self.owner_pid,
            self.pgid,
            self.pgid,
            _platform.CAPS.pidfd,
        )

    # --- holding -------------------------------------------------------

    def usable(self) -> bool:
        """True if new children may be started under this guard."""
        return self.owner_pid == os.getpid() and self.state is GuardState.OPEN

    def hold(self) -> bool:
        """Keep the guard from idle release; False if it is not usable."""
        with self.lock:
            if not self.usable():
                return False
            self._holds += 1
            self._idle_since = None
            return True

    def unhold(self) -> None:
        """Drop one :meth:`hold`."""
        with self.lock:
            self._holds -= 1
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        # Lock held.  Wakes the reaper only on the transition to idle.
        if (
            self._holds <= 0
            and not len(self.children)
            and self._idle_since is None
            and self.state is GuardState.OPEN
        ):
            self._idle_since = time.monotonic()
            self.children.wake()

    def _tick(self) -> float | None:
        """The reaper's clock: release the guard once idle for LINGER."""
        with self.lock:
            since = self._idle_since
            if since is None:
                return None
            left = since + LINGER - time.monotonic()
            if left > 0:
                return left
            if self._holds > 0 or len(self.children) or not self.usable():
                self._idle_since = None
                return None
        self.shutdown(reason="idle")
        return None

    # --- starting children --------------------------------------------

    def check_open(self) -> None:
        """Raise GuardClosedError once a teardown has begun."""
        if self.state in (GuardState.CLOSING, GuardState.CLOSED):
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
                pool_worker=pool_worker,
                # As _signal.signal takes them: the child only walks them.
                dispositions=tuple(
                    (sig, _compat.raw_handler(handler))
                    for sig, handler in child_dispositions(
                        self.block, pool_worker=pool_worker
                    )
                ),
            )
        return plan

    def spawn(self, argv: Sequence[str], pass_fds: Sequence[int] = ()) -> int:
        """Start *argv* by ``posix_spawn`` as a member of the group.

        The guarded signals start at their default action and the mask
        empty; only *pass_fds* (and 0, 1, 2) are inherited.  The caller
        registers the pid (:meth:`Child.track`).
        """
        self.check_open()
        return _platform.spawn_in_group(argv[0], argv, pass_fds, self.pgid, self.block)

    def adopt(self, pid: int) -> None:
        """Parent side of ``setpgid``: put forked child *pid* in the group.

        Parent and child both call it (the job-control shell idiom,
        setpgid(2)), so whichever runs first wins and a group kill right
        after ``start()`` cannot miss the child.
        """
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

    def register(self, child: GuardedChild, *, reap: bool) -> None:
        """Track a started child; *reap* it as soon as it exits."""
        with self.lock:
            self._idle_since = None
            self.children.add(child, reap=reap)
        log.debug("started pid=%d in pgid=%d", child.pid, self.pgid)

    def watch(self, fd: int, callback: Callable[[], object]) -> None:
        """Have the reaper run *callback* once *fd* becomes readable."""
        self.children.watch(fd, callback)

    def reaped(self, child: GuardedChild) -> None:
        """Called by a child handle once it has collected its exit status."""
        with self.lock:
            if self.children.discard(child):
                self._maybe_idle()
            hooks = list(self._exit_hooks)
        log.debug("reaped pid=%d exitcode=%s", child.pid, child.returncode)
        for hook in hooks:
            try:
                hook(child)
            except Exception:
                log.warning("child exit hook %r failed", hook, exc_info=True)

    def on_child_exit(self, hook: Callable[[GuardedChild], None]) -> None:
        """Run *hook(child)* each time a guarded child has been reaped.

        Called in the thread that reaped it (the guard's reaper, or a pool
        polling its worker): keep it short.
        """
        with self.lock:
            self._exit_hooks.append(hook)

    def remove_child_exit(self, hook: Callable[[GuardedChild], None]) -> None:
        """Undo :meth:`on_child_exit`."""
        with self.lock:
            if hook in self._exit_hooks:
                self._exit_hooks.remove(hook)

    def release_fd(self, fd: int) -> None:
        """Stop watching *fd* before its owner closes it."""
        self.children.unwatch(fd)

    def resource(self, key: str, factory: Callable[[Guard], T]) -> T:
        """This guard's *key* resource, made by *factory(guard)* on first
        use (the guard's forkserver)."""
        self.check_open()
        with self.lock:
            res = self._resources.get(key)
            if res is None:
                res = self._resources[key] = factory(self)
            return res  # type: ignore[no-any-return,unused-ignore]

    def known_pids(self) -> set[int]:
        """Every process this guard started: the guardian, its helpers (a
        forkserver) and the registered children."""
        with self.lock:
            pids = {self.pgid}
            pids.update(c.pid for c in self.children.members())
            for res in self._resources.values():
                pid = getattr(res, "pid", None)
                if isinstance(pid, int):
                    pids.add(pid)
        return pids

    def on_teardown(
        self,
        hook: Callable[[Any], None],
        owner: object = None,
        *,
        late: bool = False,
    ) -> None:
        """Run *hook(owner)* in this guard's teardown.

        *owner* is held weakly (a pool): the hook is skipped once it is
        gone.  Early hooks run before the group is signalled (stop
        respawning); *late* ones after it is gone (reap helpers).
        """
        ref = None if owner is None else weakref.ref(owner)
        with self.lock:
            self._hooks.append((ref, hook, late))

    def _run_hooks(self, *, late: bool) -> None:
        if not late and self.reason != "idle":  # idle: nothing respawns
            for hook in list(_HOOKS):
                hook()
        for ref, fn, is_late in list(self._hooks):
            if is_late != late:
                continue
            if ref is None:
                fn(None)
            else:
                owner = ref()
                if owner is not None:
                    fn(owner)

    # --- teardown ------------------------------------------------------

    def kill_now(self) -> None:
        """SIGKILL the group and its escapees without a grace period."""
        target = self._teardown or self._target(self.children.members())
        escalate(target, 0.0, term=False)

    def _target(self, live: list[GuardedChild]) -> Target:
        if self.guardian.held() and self.state is not GuardState.BROKEN:
            return tree_target(f"process group {self.pgid}", live, pgid=self.pgid)
        return tree_target(f"guarded children (pgid={self.pgid})", live)

    def interrupt(self, sig: int) -> None:
        """Pass *sig* (SIGINT) on to the children that are not pool
        workers, as a terminal passes it to its whole foreground group,
        which the children have left.

        Pool workers ignore SIGINT (leaving the pool's ``with`` block
        terminates them), so they are not sent it, nor is a forkserver, nor
        a worker still starting (an interpreter that would print a
        KeyboardInterrupt traceback before it could ignore it).  Runs in
        the parent's signal handler: each child is signalled through its
        pidfd without a lock (:meth:`Child.signal_nowait`), so it cannot
        deadlock, cannot reach a recycled pid, and never raises.  Processes
        the children started are not signalled: they end with the group's
        teardown when the program exits.
        """
        if self.owner_pid != os.getpid() or self.state in (
            GuardState.CLOSING,  # torn down already: nothing to interrupt
            GuardState.CLOSED,
        ):
            return
        for child in self.children.snapshot():
            if not child.pool_worker:
                child.signal_nowait(sig)

    def _others_in_group(self) -> bool:
        """True if a process other than the guardian is in the group."""
        if not self.guardian.held() or self.state is GuardState.BROKEN:
            return False
        return _platform.group_has_others(self.pgid, self.pgid)

    def shutdown(self, grace: float | None = None, *, reason: str = "api") -> None:
        """Tear the group down: SIGTERM, grace, SIGKILL, reap.  Final."""
        if self.owner_pid != os.getpid():
            return
        with self.lock:
            if self.state in (GuardState.CLOSING, GuardState.CLOSED):
                return
            if reason == "idle" and (self._holds > 0 or len(self.children)):
                return
            if reason == "idle" and self._others_in_group():
                # A process the children left in the group (a Popen'd
                # shell's background job) keeps the guard: releasing it
                # would leave that process without a guardian.
                return
            self.state = GuardState.CLOSING
            self.reason = reason
            live = self.children.members()
        grace = self.policy.grace if grace is None else grace
        self._run_hooks(late=False)
        log.debug("teardown (%s) of pgid=%d, grace=%.2fs", reason, self.pgid, grace)
        # The group is signalled when it has members other than the
        # guardian, tracked children or not: subprocesses (mpguard.Popen)
        # and what children left behind in it are not in the table.
        if live or self._others_in_group():
            self._teardown = self._target(live)
            escalate(self._teardown, grace)
            for child in live:
                child.wait(0.5)
        self._run_hooks(late=True)
        if self.guardian.pidfd is not None:
            self.children.unwatch(self.guardian.pidfd)
        self.guardian.release()
        self.guardian.close_pidfd()
        with self.lock:
            self.state = GuardState.CLOSED
        self._finalizer.cancel()
        self.children.stop()

    def _mark_broken(self, why: str) -> None:
        with self.lock:
            if self.state is not GuardState.OPEN:
                return
            self.state = GuardState.BROKEN
        warnings.warn(
            f"mpguard: guardian pid={self.pgid} is gone ({why}); children "
            "started so far are no longer SIGKILLed if the parent dies; new "
            "children get a new guardian",
            GuardDegradedWarning,
            stacklevel=2,
        )

    def _guardian_exited(self) -> None:
        """Reaper callback: the guardian's pidfd fired."""
        fd = self.guardian.pidfd
        if fd is not None:
            self.children.unwatch(fd)
        if self.state in (GuardState.CLOSING, GuardState.CLOSED):
            return
        # Broken first, reaped second: once the leader is reaped its pgid
        # may be recycled, and nothing may killpg it any more.
        self._mark_broken("it exited")
        rc = self.guardian.mark_lost()
        log.debug("guardian %d reaped, exit code %s", self.pgid, rc)

    def apply_policy(self, policy: GuardPolicy) -> None:
        """Use *policy* for children started from now on."""
        with self.lock:
            self.policy = policy
            self.block = frozenset(policy.signals) | _ALWAYS_BLOCKED
            self._plans = {}


# --- the process's guard ------------------------------------------------------

_guard: Guard | None = None
_guard_lock = threading.Lock()
_handlers_tried = False


def current_guard() -> Guard:
    """The guard of this process, started on first use (not held).

    Raises:
        GuardClosedError: the guard is tearing down (not for idle release:
            a new guard is started then).
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
                and g.state is GuardState.CLOSING
                and g.reason != "idle"  # an idle release is invisible
                and g.owner_pid == os.getpid()
            ):
                msg = "the guard is tearing down; no new child may start"
                raise GuardClosedError(msg, pgid=g.pgid)
            if g is None or not g.usable():
                _register_fork_hook()
                g = _guard = Guard(get_policy())
    _ensure_handlers()
    return g


def guard_pids() -> set[int]:
    """:meth:`Guard.known_pids` of this process's guard; empty if none runs.

    Never starts a guard: for code that only needs to leave the guard's
    own processes alone (a leak check, a reaper).
    """
    g = _guard
    if g is None or g.owner_pid != os.getpid():
        return set()
    return g.known_pids()


def acquire() -> Guard:
    """The process's guard, held (see :meth:`Guard.hold`); pair with
    :meth:`Guard.unhold`.  Retries if the guard was released meanwhile."""
    while True:
        g = current_guard()
        if g.hold():
            return g


@contextmanager
def holding() -> Iterator[Guard]:
    """``with holding() as guard:`` the guard, held for the block."""
    g = acquire()
    try:
        yield g
    finally:
        g.unhold()


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
    global _handlers_tried
    g = _guard
    if g is not None and g.owner_pid == os.getpid():
        g.shutdown(grace, reason="api")
    if _signals.uninstall():
        _handlers_tried = False


# --- signal handlers: the process's, not one guard's --------------------------


def _ensure_handlers() -> None:
    """Install the parent's handlers once, from the main thread."""
    global _handlers_tried
    if _signals.installed() or (
        _handlers_tried and threading.current_thread() is not threading.main_thread()
    ):
        return
    if not get_policy().parent_handlers:
        return  # the program handles its own signals (Celery)
    _handlers_tried = True
    _signals.install(get_policy().signals, os.getpid(), _on_signal)


def _on_signal(signum: int, repeated: bool) -> None:
    g = _guard
    if g is None or g.owner_pid != os.getpid():
        return
    if signum == signal.SIGINT:
        g.interrupt(signum)
        return
    if repeated:
        log.debug("second %s: SIGKILL now", signal_name(signum))
        g.kill_now()
    else:
        g.shutdown(reason=signal_name(signum) or str(signum))


def _policy_changed(policy: GuardPolicy) -> None:
    # Re-install the handlers for the new signal set, and let a live guard
    # block the new set around its starts.
    global _handlers_tried
    g = _guard
    if g is not None and g.usable():
        g.apply_policy(policy)
    if _signals.uninstall():  # they were installed: install the new set
        _handlers_tried = False
        _ensure_handlers()


on_policy_change(_policy_changed)

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
    # A fork child owns nothing of its parent's guard nor its handlers; it
    # builds its own if it starts guarded children itself.
    global _guard, _guard_lock, _handlers_tried
    _guard = None
    _guard_lock = threading.Lock()
    _handlers_tried = False
