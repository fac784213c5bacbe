"""GuardedPool: a drop-in ``multiprocessing.Pool`` on the guarded context."""

from __future__ import annotations

import functools
import multiprocessing.pool
import multiprocessing.process
import os
import threading
import time
from multiprocessing import util

from .. import _compat
from .._config import get_policy, validate_grace, validate_seconds
from .._errors import PoolTerminatedError
from .._group import Guard, acquire, kill_tree
from .._start import (
    GuardedContext,
    discard_forked,
    fork_ahead,
    register,
    set_pool_class,
)
from ._process import WORKERS, PoolWorkerBase

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

    from ._dispatch import Dispatcher

__all__ = ["GuardedPool"]


def _validate_timeout(timeout: object, name: str) -> float | None:
    if timeout is None:
        return None
    return validate_seconds(timeout, name, allow_zero=False)


class GuardedPool(_compat.PoolBase):
    """``multiprocessing.Pool`` whose workers are guarded, and that never hangs.

    Same signature and behaviour as :class:`multiprocessing.pool.Pool`, plus
    keyword-only options.  Workers join the guard's process group (never the
    parent's), ignore SIGINT (Ctrl-C reaches the parent only, and no worker
    prints a traceback), and are SIGKILLed with everything they started if
    the parent dies in any way.

    If a worker dies while running a task (SIGKILL, the OOM killer,
    ``os._exit``, a crash in C code), that task alone fails with
    :class:`mpguard.WorkerLostError`, delivered like the task's own
    exception; the other tasks run on, and the pool replaces the worker.
    A worker's death cannot block the others: each worker has its own
    channel, so there is no shared lock to leave taken.

    Args:
        processes: number of workers (default ``os.cpu_count()``).
        initializer: called as ``initializer(*initargs)`` in each worker.
        initargs: arguments for *initializer*.
        maxtasksperchild: tasks a worker runs before it is replaced.
        context: a guarded context: ``multiprocessing.get_context(m)`` for
            ``m`` in ``"guarded"``, ``"guarded-fork"``,
            ``"guarded-forkserver"``, ``"guarded-spawn"``.  Default: the
            program's start method if ``set_start_method()`` chose a
            guarded one, else ``"guarded"``.
        grace: seconds between SIGTERM and SIGKILL in :meth:`terminate`
            (default: the policy's, 1.0).
        task_timeout: seconds a task may run; one that runs longer has its
            worker SIGKILLed with everything the worker started, and fails
            with :class:`mpguard.TaskTimeoutError`.  A task is what the pool
            sends a worker: with ``map``, a chunk (pass ``chunksize=1`` for
            a limit per item).  Default None: no limit, and no cost.

    Raises:
        TypeError: *context* is not a guarded context, or a timeout is not
            a number.
        ValueError: bad *processes*, *maxtasksperchild*, *grace* or
            *task_timeout*.
        mpguard.GuardSetupError: protection could not be set up.

    Availability: Linux (full); other POSIX systems without pidfds (polled
    reaping).  Not Windows.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        grace: float | None = None,
        task_timeout: float | None = None,
    ) -> None:
        # As the stdlib does first: Pool.__del__ needs these even when
        # __init__ raises below.
        self._mpguard_early_init()
        if context is None:
            # The program's default if it chose a guarded one
            # (set_start_method("guarded-spawn")), else guarded fork.
            chosen = _compat.default_context_if_set()
            context = chosen if isinstance(chosen, GuardedContext) else register()
        if not isinstance(context, GuardedContext):
            msg = (
                "GuardedPool needs a guarded context, such as "
                "multiprocessing.get_context('guarded-spawn') "
                f"(got {context!r})"
            )
            raise TypeError(msg)
        self._grace = get_policy().grace if grace is None else validate_grace(grace)
        self._task_timeout = _validate_timeout(task_timeout, "task_timeout")
        self._size_hint = processes
        # Set the guard up (handlers, guardian) in the calling thread before
        # the first worker forks, so a pool built in the main thread gets
        # handlers even if it is the first guarded thing in the program.
        # The pool holds the guard until it is joined or terminated: an
        # idle guard releases its guardian.
        guard = acquire()
        self._hold = _Hold(guard)
        try:
            super().__init__(
                processes, initializer, initargs, maxtasksperchild, context
            )
        except BaseException:
            # After an Exception the stdlib's __init__ has terminated the
            # workers it started; a KeyboardInterrupt is no Exception, and
            # they would run on, in no pool (its worker handler, if started,
            # replacing them).
            _compat.stop_pool_respawn(self)
            _kill_workers(self._mpguard_workers(), self._grace)
            dispatcher = getattr(self, "_dispatcher", None)
            if dispatcher is not None:
                dispatcher.stop()
                dispatcher.close()
            self._hold.release()
            raise
        # Nothing handed to the pool's threads or finalizers may refer to
        # the pool itself, or it would never be collected (the stdlib's rule).
        _compat.replace_pool_terminator(
            self,
            _kill_workers,
            self._grace,
            self._dispatcher.stop,
            functools.partial(_finish, self._dispatcher, self._hold),
        )
        # Channels of workers that exit after close()/join() or with a pool
        # that is just dropped are released with the pool.
        util.Finalize(
            self,
            functools.partial(_finish, self._dispatcher, self._hold, None),
            exitpriority=14,
        )
        # A teardown stops the pool's respawning before the group is killed.
        guard.on_teardown(_compat.stop_pool_respawn, self)

    def _mpguard_channels(
        self, method: str, ctrl: Any
    ) -> tuple[Callable[[Any], None], Callable[[], Any], Callable[..., Any]]:
        # *ctrl* is the pipe on which close() and terminate() post their
        # sentinels (the stdlib's outqueue; no worker touches it).
        # The dispatcher and the worker side load with the first pool, not
        # with ``import mpguard`` (they bring ctypes, selectors, ...).
        from ._dispatch import Dispatcher  # noqa: PLC0415

        self._dispatcher = Dispatcher(
            ctrl,
            task_timeout=self._task_timeout,
            processes=self._size_hint or os.cpu_count() or 1,
            inherits=method == "fork",
        )
        # The stdlib calls self.Process(ctx, target=..., args=...) for each
        # worker; the factory gives it this pool's dispatcher.
        factory = _WorkerFactory(self._dispatcher, WORKERS[method])
        self._mpguard_fork_ahead = method == "fork"
        return self._dispatcher.put, self._dispatcher.get, factory

    def _mpguard_start_workers(self, workers: list[Any], pool: list[Any]) -> None:
        # Fork workers are forked back to back, then recorded: the parent's
        # bookkeeping after each fork would otherwise be paid again in
        # copy-on-write faults, once per worker (fork_ahead's docstring).
        if not (self._mpguard_fork_ahead and len(workers) > 1):
            super()._mpguard_start_workers(workers, pool)
            return
        try:
            fork_ahead(workers)
            super()._mpguard_start_workers(workers, pool)
        finally:
            # Only if a start() failed: its and the later workers' children.
            discard_forked(workers)

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> multiprocessing.pool.AsyncResult[Any]:
        """Like :meth:`multiprocessing.pool.Pool.apply_async`, plus *timeout*.

        Args:
            timeout: seconds this task may run (overrides the pool's
                ``task_timeout``).  When exceeded, the worker and everything
                it started are SIGKILLed and the result fails with
                :class:`mpguard.TaskTimeoutError`.  This is not the
                ``timeout`` of ``AsyncResult.get()``, which only stops
                waiting.
        """
        limit = _validate_timeout(timeout, "timeout")
        if limit is None:
            return super().apply_async(func, args, kwds, callback, error_callback)
        return _compat.submit_apply(
            self,
            func,
            args,
            kwds,
            callback,
            error_callback,
            lambda job: self._dispatcher.set_timeout(job, limit),
        )

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        timeout: float | None = None,
    ) -> Any:
        """Like :meth:`multiprocessing.pool.Pool.apply`, plus *timeout* (see
        :meth:`apply_async`)."""
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    @property
    def grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL in :meth:`terminate`."""
        return self._grace

    @property
    def task_timeout(self) -> float | None:
        """The default per-task timeout in seconds, or None."""
        return self._task_timeout

    def terminate(self) -> None:
        """Stop the workers now: SIGTERM, then SIGKILL after ``grace``.

        Kills each worker and everything it started, including descendants
        that left the group with ``setsid``; reaps the workers; returns
        within ``grace`` + 0.5 s even if a worker ignores SIGTERM.  Every
        task still pending fails with :class:`mpguard.PoolTerminatedError`,
        so no ``get()`` waits forever.
        """
        super().terminate()

    def join(self) -> None:
        """Wait for the workers to exit after :meth:`close` or :meth:`terminate`.

        After ``terminate()`` every wait is bounded: the workers are already
        reaped and the pool's threads are given at most 0.5 s.
        """
        if not self._mpguard_terminated():
            super().join()
            self._dispatcher.close()
            self._hold.release()
            return
        deadline = time.monotonic() + 0.5
        for thread in self._mpguard_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        for p in self._mpguard_workers():
            p.join(max(0.0, deadline - time.monotonic()))


class _Hold:
    """The pool's hold on the guard, released once (join, terminate, or
    the pool's finalizer, whichever comes first)."""

    def __init__(self, guard: Guard) -> None:
        self._guard: Guard | None = guard
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            guard, self._guard = self._guard, None
        if guard is not None:
            guard.unhold()


def _finish(dispatcher: Dispatcher, hold: _Hold, cache: dict[Any, Any] | None) -> None:
    dispatcher.close()
    if cache is not None:
        _compat.fail_pending(
            cache,
            lambda: PoolTerminatedError("pool terminated before the task finished"),
        )
    hold.release()


class _WorkerFactory:
    """The pool's ``Process`` hook: a worker wired to its own channel."""

    def __init__(self, dispatcher: Dispatcher, cls: type[PoolWorkerBase]) -> None:
        self._dispatcher = dispatcher
        self._cls = cls

    def __call__(self, ctx: Any, *, target: Any, args: Sequence[Any]) -> PoolWorkerBase:
        # args are the stdlib worker's: (inqueue, outqueue, initializer,
        # initargs, maxtasks, wrap_exception); the queues are replaced by
        # the worker's own channel.
        from . import _worker  # noqa: PLC0415 - with the first pool

        _, _, initializer, initargs, maxtasks, wrap_exception = args
        channel = self._dispatcher.channel()
        if channel.slot_fd is None:  # fork: the worker inherits everything
            inherited: Any = channel
            slot: Any = channel.slot
        else:  # spawn/forkserver: only what is pickled reaches the worker
            inherited, slot = None, _worker.SlotRef(channel.slot_fd)
        return self._cls(
            self._dispatcher,
            channel,
            maxtasks,
            target=_worker.worker_main,
            args=(
                channel.child,
                inherited,
                slot,
                initializer,
                initargs,
                maxtasks,
                wrap_exception,
            ),
        )


def _kill_workers(workers: Sequence[Any], grace: float) -> None:
    popens = [p for p in map(_compat.process_popen, workers) if p is not None]
    kill_tree(popens, grace, f"{len(popens)} pool worker(s)")


set_pool_class(GuardedPool)
