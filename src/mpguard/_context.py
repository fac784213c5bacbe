"""The "guarded" start method: context and Process classes, registration.

This module is the only writer of ``multiprocessing.context``'s table of
contexts (through ``_compat.register_context``).

Naming (platform-facts §1.2-1.3): the context is registered under the key
``"guarded"`` but keeps ``_name = "fork"``.  CPython and Celery compare
start-method *names* with ``"fork"``: SemLock unlinks its semaphore at once
(no resource tracker, no leaked named semaphores), ProcessPoolExecutor
refuses ``max_tasks_per_child`` with fork (the gh-90622 deadlock guard), and
Celery's ``process_initializer`` skips its fresh-interpreter path.  A
``_name`` of ``"guarded"`` would silently defeat all three.  So
``get_context("guarded").get_start_method() == "fork"``: guarded is fork,
plus protection.
"""

from __future__ import annotations

from multiprocessing.context import ForkContext, ForkProcess
from typing import TYPE_CHECKING, Any

from . import _compat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._pool import GuardedPool

__all__ = [
    "START_METHOD",
    "GuardedContext",
    "GuardedProcess",
    "get_context",
    "register",
]

#: The key under which mpguard registers its context.
START_METHOD = "guarded"


class GuardedProcess(ForkProcess):
    """A :class:`multiprocessing.Process` started by a guarded fork.

    Same constructor and API as ``multiprocessing.Process``.  The child joins
    the guard's process group, starts with default SIGTERM/SIGHUP handling,
    is reaped as soon as it exits even if never joined, and is SIGKILLed
    with everything it started if the parent dies.

    Inside the child, ``multiprocessing.get_start_method()`` is ``"fork"``,
    so processes the child starts with the default context stay in the
    group and die with it.
    """

    _start_method = "fork"

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - stdlib name
        from ._popen_fork import Popen  # noqa: PLC0415 - stdlib pattern

        return Popen(process_obj)


class GuardedContext(ForkContext):
    """Fork context whose processes are guarded.  ``get_context("guarded")``.

    Everything a fork context offers works (Process, Pool, Queue, Lock,
    Event, Manager, ...), and ``concurrent.futures.ProcessPoolExecutor(
    mp_context=ctx)`` runs its workers guarded.  ``get_start_method()``
    returns ``"fork"`` on purpose (see the module docstring).
    """

    _name = "fork"
    Process = GuardedProcess  # type: ignore[assignment,unused-ignore]

    def Pool(  # type: ignore[override,unused-ignore]  # noqa: N802 - stdlib name
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        grace: float | None = None,
        task_timeout: float | None = None,
    ) -> GuardedPool:
        """Return a :class:`mpguard.GuardedPool` (same arguments as Pool,
        plus its keyword-only *grace* and *task_timeout*)."""
        from ._pool import GuardedPool  # noqa: PLC0415 - import cycle

        return GuardedPool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self,
            grace=grace,
            task_timeout=task_timeout,
        )

    def __repr__(self) -> str:
        return f"<mpguard.GuardedContext {START_METHOD!r} (fork)>"


_CONTEXT = GuardedContext()


def register() -> GuardedContext:
    """Register the "guarded" start method (idempotent); return its context."""
    ctx = _compat.register_context(START_METHOD, _CONTEXT)
    if not isinstance(ctx, GuardedContext):
        msg = f"another context is registered as {START_METHOD!r}: {ctx!r}"
        raise RuntimeError(msg)
    return ctx


def get_context() -> GuardedContext:
    """The guarded context, same as ``multiprocessing.get_context("guarded")``."""
    return register()
