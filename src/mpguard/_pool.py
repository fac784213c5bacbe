"""GuardedPool: a drop-in ``multiprocessing.Pool`` on the guarded context."""

from __future__ import annotations

import multiprocessing.pool
import time
from typing import TYPE_CHECKING, Any

from . import _compat
from ._config import get_policy, validate_grace
from ._context import GuardedContext, GuardedProcess, register
from ._guard import current_guard
from ._kill import kill_tree

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["GuardedPool"]


class GuardedPool(multiprocessing.pool.Pool):
    """``multiprocessing.Pool`` whose workers are guarded.

    Same signature and behaviour as :class:`multiprocessing.pool.Pool`, plus
    keyword-only options.  Workers join the guard's process group (never the
    parent's), ignore SIGINT (Ctrl-C reaches the parent only, and no worker
    prints a traceback), and are SIGKILLed with everything they started if
    the parent dies in any way.

    Args:
        processes: number of workers (default ``os.cpu_count()``).
        initializer: called as ``initializer(*initargs)`` in each worker.
        initargs: arguments for *initializer*.
        maxtasksperchild: tasks a worker runs before it is replaced.
        context: a guarded context (default
            ``multiprocessing.get_context("guarded")``).
        grace: seconds between SIGTERM and SIGKILL in :meth:`terminate`
            (default: the policy's, 1.0).

    Raises:
        TypeError: *context* is not a guarded context.
        ValueError: bad *processes*, *maxtasksperchild* or *grace*.
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
    ) -> None:
        # As the stdlib does first: Pool.__del__ needs these even when
        # __init__ raises below.
        self._pool: list[Any] = []
        self._state = multiprocessing.pool.INIT
        if context is None:
            context = register()
        if not isinstance(context, GuardedContext):
            msg = (
                "GuardedPool needs a guarded context, such as "
                "multiprocessing.get_context('guarded') "
                f"(got {context!r})"
            )
            raise TypeError(msg)
        self._grace = get_policy().grace if grace is None else validate_grace(grace)
        # Set the guard up (handlers, guardian) in the calling thread before
        # the first worker forks, so a pool built in the main thread gets
        # handlers even if it is the first guarded thing in the program.
        guard = current_guard()
        super().__init__(processes, initializer, initargs, maxtasksperchild, context)
        _compat.replace_pool_terminator(self, _kill_workers, self._grace)
        guard.add_pool(self)

    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> GuardedProcess:  # type: ignore[override]  # noqa: N802
        """Create a worker process (the stdlib Pool's hook)."""
        proc: GuardedProcess = ctx.Process(*args, **kwds)
        proc._mpguard_pool_worker = True  # type: ignore[attr-defined]
        return proc

    @property
    def grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL in :meth:`terminate`."""
        return self._grace

    def terminate(self) -> None:
        """Stop the workers now: SIGTERM, then SIGKILL after ``grace``.

        Kills each worker and everything it started, including descendants
        that left the group with ``setsid``; reaps the workers; returns
        within ``grace`` + 0.5 s even if a worker ignores SIGTERM.
        """
        super().terminate()

    def join(self) -> None:
        """Wait for the workers to exit after :meth:`close` or :meth:`terminate`.

        After ``terminate()`` every wait is bounded: the workers are already
        reaped and the pool's threads are given at most 0.5 s.
        """
        if self._state != multiprocessing.pool.TERMINATE:
            super().join()
            return
        deadline = time.monotonic() + 0.5
        threads = (
            self._worker_handler,  # type: ignore[attr-defined]
            self._task_handler,  # type: ignore[attr-defined]
            self._result_handler,  # type: ignore[attr-defined]
        )
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for p in self._pool:
            p.join(max(0.0, deadline - time.monotonic()))


def _kill_workers(workers: Sequence[Any], grace: float) -> None:
    popens = [w._popen for w in workers if getattr(w, "_popen", None) is not None]
    kill_tree(popens, grace, f"{len(popens)} pool worker(s)")
