"""Celery workers that are safe to kill: Celery's prefork pool, guarded.

One line opts a worker in, in the app's configuration::

    app.conf.worker_pool = "mpguard.celery:TaskPool"

or on the command line (Celery's ``-P`` takes only its own pool names)::

    CELERY_CUSTOM_WORKER_POOL=mpguard.celery:TaskPool celery -A proj worker -P custom

Install with the extra: ``pip install "mpguard[celery]"``.

The pool *is* Celery's prefork pool (``AsynPool``, or billiard's threaded
``Pool`` without an event loop), started on billiard's ``"guarded"``
context, so every prefork feature works as before: concurrency, autoscale,
``worker_max_tasks_per_child``, ``worker_max_memory_per_child``, soft and
hard time limits, ``worker_process_init``/``worker_process_shutdown``, and
remote control (``pool_grow``, ``pool_shrink``, ``revoke(terminate=True)``).
What changes:

* **The worker's main process is SIGKILLed or OOM-killed**: the pool
  children *and everything the tasks started* die with it, within
  milliseconds.  Celery's own ``PR_SET_PDEATHSIG`` takes only the pool
  children; a task's ``subprocess`` ran on (celery/celery#102, #3084).
* **Warm shutdown** (SIGTERM) is Celery's: running tasks finish and their
  results are stored.  Then whatever the tasks left running is stopped
  (SIGTERM, grace, SIGKILL), so no grandchild outlives the worker.
* **Cold shutdown** (SIGQUIT, or Ctrl-C twice; since Celery 5.5 a second
  SIGTERM stays warm): the whole tree is gone within the grace period.
* **A hard time limit, or** ``revoke(terminate=True)``, ends the task's
  whole subtree, not just the pool child (billiard PR #204 needed the task
  to call ``os.setpgrp()`` by hand).  Celery reports it as usual.
* **A pool child killed from outside** (SIGKILL, the OOM killer): Celery's
  ``WorkerLostError`` as usual, and the dead child's orphans are killed:
  the worker's main process is a child subreaper while the pool runs, so
  they come back to it instead of vanishing under init.  Each pool child
  is a subreaper too, so what its tasks left running stays below it while
  it lives, and dies with it when it exits (recycled, shrunk, killed).
* **No zombies**: a child a task started and never waited for is reaped
  between tasks, unless a ``Popen``/``Process`` object still owns it
  (celery/celery#6656); orphans that reach the main process are reaped.

Celery owns the worker's signals: mpguard installs no handler in the main
process (``parent_handlers=False``); the guardian covers its death.  Set
:func:`mpguard.configure`'s ``parent_death_grace`` to let tasks clean up
(SIGTERM, then SIGKILL) when the main process is killed.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from typing import Any

try:
    import billiard.pool
    from celery.concurrency import asynpool, prefork
except ImportError as e:  # pragma: no cover - exercised without celery
    msg = f"mpguard.celery needs Celery: pip install 'mpguard[celery]' ({e})"
    raise ImportError(msg) from e

from . import _compat, _config, _platform
from . import billiard as _guarded_billiard
from ._config import log
from ._errors import GuardDegradedWarning, MPGuardError
from ._group import AbandonedReaper, Adopter, Guard, acquire, escalate, kill_tree
from ._group._ladder import pids_target

__all__ = ["AsynPool", "BlockingPool", "TaskPool"]


#: SIGTERM-to-SIGKILL wait of a hard time limit, as billiard's own.
HARD_LIMIT_GRACE = 0.1

# Per pool child, set up in the child by the first wait for a job (the
# reaper keeps per-process state); unused in the main process.
_reaper: AbandonedReaper | None = None
_reaper_pid = 0
_idle = False


def _setup_child() -> None:
    """First wait for a job in a new pool child (after Celery's initializer).

    * The child becomes a child subreaper: what a task leaves behind when
      its own parent dies (``sh -c "job &"``) stays below the pool child
      instead of going to the main process, so the main process's adopted
      orphans are exactly those of pool children that died, and what a
      pool child started dies with it.
    * With a parent-death grace, Celery's ``PR_SET_PDEATHSIG(SIGKILL)``
      (set by its initializer) is cleared: it would kill the pool child
      before the guardian's SIGTERM lets the task clean up.  The guardian
      covers the main process's death either way.
    """
    global _reaper, _reaper_pid
    _reaper, _reaper_pid = AbandonedReaper(), os.getpid()
    if _platform.CAPS.subreaper:
        try:
            _platform.set_child_subreaper(True)
        except MPGuardError:
            log.debug("pool child %d: no subreaper", os.getpid(), exc_info=True)
    if _config.get_policy().parent_death_grace > 0:
        import billiard.util  # noqa: PLC0415 - loaded with billiard.pool

        try:
            billiard.util.set_pdeathsig(0)
        except OSError:  # not Linux
            pass


def _waiting(idle: bool) -> None:
    """In a pool child, around each wait for a job: reap abandoned children.

    Before the wait it costs one ``waitid(WNOWAIT)`` when there is nothing
    to reap.  The wait itself may block until the next job (Celery's
    AsynPool reads a whole payload), so a SIGCHLD handler reaps while the
    child is idle, and only then: it is installed for the wait and removed
    after it, so no task code runs with it (a SIGCHLD handler interrupts
    system calls, which C code that does not retry them would see), and no
    ``Popen`` is halfway through being made when a status is collected.
    """
    global _idle
    if _reaper_pid != os.getpid():
        _setup_child()
    _idle = idle
    if idle:
        _reap()
        if signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL:
            signal.signal(signal.SIGCHLD, _on_sigchld)
            # A child that exited between the sweep and the handler.
            _reap()
    elif signal.getsignal(signal.SIGCHLD) is _on_sigchld:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _on_sigchld(signum: int, frame: object) -> None:
    # Runs in the main thread between bytecodes; the blocked read of the
    # next job is retried afterwards (PEP 475).  A process forked by a
    # task inherits this handler but not the reaper: the pid check.
    if _idle and _reaper_pid == os.getpid():
        _reap()


def _reap() -> None:
    if _reaper is None:
        return
    try:
        _reaper.check()
    except Exception:  # never break the work loop
        log.debug("reaping abandoned children failed", exc_info=True)


def _kill_worker_tree(worker: Any) -> None:
    """A hard time limit: the worker and everything it started."""
    popen = _compat.billiard_popen(worker)
    if popen is None:
        return
    kill_tree([popen], HARD_LIMIT_GRACE, f"pool child {popen.pid} (hard time limit)")


class _Guarded:
    """What the guarded pools add to Celery's and billiard's."""

    TimeoutHandler = _compat.guarded_timeout_handler(_kill_worker_tree)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("context") not in (None, _guarded_billiard.get_context()):
            msg = "mpguard.celery pools run on the guarded context only"
            raise TypeError(msg)
        kwargs["context"] = _guarded_billiard.get_context()
        super().__init__(*args, **kwargs)

    def terminate_job(self, pid: int, sig: int | None = None) -> None:
        """``revoke(terminate=True)``: end the task's whole subtree.

        billiard signals the pool child alone, and what the task started
        runs on.  For a terminating signal (SIGTERM, Celery's default) the
        child and its descendants, found before the signal, all get it, and
        whatever still runs after the grace is SIGKILLed, from a thread so
        that the event loop is not held up.  Other signals (a task that
        handles SIGUSR1, say) go to the pool child alone, as in billiard.
        """
        import billiard.common  # noqa: PLC0415 - loaded with billiard.pool

        sig = sig or billiard.common.TERM_SIGNAL
        proc = _compat.billiard_worker_by_pid(self, pid)
        if proc is None or sig not in _TERMINATING:
            super().terminate_job(pid, sig)  # type: ignore[misc]
            return
        target = pids_target(f"pool child {pid} (terminated job)", [pid])
        target.send(sig)
        _compat.mark_job_terminated(proc)
        if sig != signal.SIGKILL:
            grace = _config.get_policy().grace
            threading.Thread(
                target=escalate,
                args=(target, grace),
                name="mpguard-revoke",
                daemon=True,
            ).start()


#: Signals whose default action ends a process: a revoke with one of these
#: means "stop this task", so it ends the task's subtree.
_TERMINATING = frozenset(
    {signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}
)


class AsynPool(_Guarded, asynpool.AsynPool):  # type: ignore[misc]
    """Celery's ``AsynPool`` on billiard's guarded context."""

    Worker = _compat.billiard_worker_hooked(asynpool.Worker, _waiting)


class BlockingPool(_Guarded, _guarded_billiard.GuardedBilliardPool):  # type: ignore[misc]
    """billiard's threaded ``Pool`` (Celery without an event loop), guarded."""

    Worker = _compat.billiard_worker_hooked(billiard.pool.Worker, _waiting)


class TaskPool(prefork.TaskPool):  # type: ignore[misc]
    """Celery's prefork pool, guarded (``worker_pool = "mpguard.celery:TaskPool"``).

    Same options and behaviour as ``celery.concurrency.prefork.TaskPool``;
    see the module docstring for what the guard adds.
    """

    Pool = AsynPool
    BlockingPool = BlockingPool

    _guard: Guard | None = None
    _adopter: Adopter | None = None

    def on_start(self) -> None:
        """Set up the guard (no parent handlers: Celery owns the signals),
        adopt orphans, then start Celery's prefork pool."""
        # Celery's warm shutdown needs SIGTERM; mpguard's handler would
        # tear the group down first and kill the running tasks.
        _config.configure(parent_handlers=False)
        guard = self._guard = acquire()
        if _platform.CAPS.subreaper:
            try:
                self._adopter = Adopter(guard)
            except MPGuardError as e:
                _warn_no_adopter(str(e))
            else:
                guard.on_child_exit(self._adopter.child_exited)
        else:
            _warn_no_adopter("PR_SET_CHILD_SUBREAPER is unavailable (Linux >= 3.4)")
        super().on_start()

    def on_stop(self) -> None:
        """Warm shutdown: Celery lets the running tasks finish; then what
        they left running is stopped with the ladder."""
        super().on_stop()
        self._finish()

    def on_terminate(self) -> None:
        """Cold shutdown: Celery terminates the pool; then everything the
        tasks started goes too."""
        super().on_terminate()
        self._finish()

    def _finish(self) -> None:
        guard, self._guard = self._guard, None
        adopter, self._adopter = self._adopter, None
        if guard is None:
            return
        try:
            # Pool children that outlived the pool's own terminate first.
            live = [c for c in guard.children.members() if c.returncode is None]
            if live:
                kill_tree(live, _config.get_policy().grace, "pool children")
            # The adopter's strays include the group's members; without a
            # subreaper, what stayed in the group is all that shows.
            strays = adopter.strays() if adopter is not None else _group_strays(guard)
            if strays:
                escalate(
                    pids_target("processes the tasks left running", strays),
                    _config.get_policy().grace,
                )
        finally:
            if adopter is not None:
                guard.remove_child_exit(adopter.child_exited)
                adopter.close()
            guard.unhold()


def _group_strays(guard: Guard) -> list[int]:
    table = _platform.process_table()
    ours = {c.pid for c in guard.children.members()}
    return [
        pid
        for pid in _platform.group_members(guard.pgid, table)
        if pid != guard.pgid and pid not in ours
    ]


def _warn_no_adopter(why: str) -> None:
    warnings.warn(
        f"mpguard.celery: the orphans of a pool child killed from outside "
        f"cannot be found ({why}); they die with the group when the worker "
        "stops or dies",
        GuardDegradedWarning,
        stacklevel=3,
    )
