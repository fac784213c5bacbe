"""The guarded start methods: contexts, Process classes, registration.

This module is the only writer of ``multiprocessing.context``'s table of
contexts (through ``_compat.register_context``).

Three methods, one per stdlib method, each under its own key, and each
reporting the stdlib method's name from ``get_start_method()``:

* ``"guarded-fork"``, also ``"guarded"``: :class:`GuardedForkContext`,
  ``"fork"``;
* ``"guarded-forkserver"``: :class:`GuardedForkServerContext`,
  ``"forkserver"``;
* ``"guarded-spawn"``: :class:`GuardedSpawnContext`, ``"spawn"``.

Naming: each context keeps the ``_name`` of the
stdlib method it builds on.  CPython and Celery compare start-method
*names* with literals: SemLock unlinks its semaphore at once only under
``"fork"`` (and must stay named under spawn/forkserver), ProcessPoolExecutor
refuses ``max_tasks_per_child`` with fork (the gh-90622 deadlock guard), and
Celery's ``process_initializer`` takes its fresh-interpreter path unless the
name is ``"fork"``.  A new name would silently defeat all three.  It also
means a spawned child's ``spawn.prepare()`` applies a stdlib name it can
always resolve; the guarded classes travel by pickle and import mpguard on
their own.
"""

from __future__ import annotations

from multiprocessing.context import (
    BaseContext,
    ForkContext,
    ForkProcess,
    ForkServerProcess,
    SpawnContext,
    SpawnProcess,
)

from .. import _compat
from . import _child

# typing.TYPE_CHECKING without importing typing: this module is on
# ``import mpguard``'s path, which stays within 5 ms of multiprocessing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from .._pool import GuardedPool

__all__ = [
    "START_METHOD",
    "START_METHODS",
    "GuardedContext",
    "GuardedForkContext",
    "GuardedForkServerContext",
    "GuardedForkServerProcess",
    "GuardedProcess",
    "GuardedSpawnContext",
    "GuardedSpawnProcess",
    "get_context",
    "register",
    "set_pool_class",
]

#: The short key: an alias of ``"guarded-fork"``.
START_METHOD = "guarded"
#: Every guarded start method, one per stdlib method.
START_METHODS = ("guarded-fork", "guarded-forkserver", "guarded-spawn")


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
        # Imported on first use, as the stdlib does: ``import mpguard``
        # stays light.
        from ._fork import Popen  # noqa: PLC0415

        return Popen(process_obj)


class _FreshChild:
    """Signal dispositions of a spawn or forkserver child.

    Exec resets Python handlers, but the child then re-imports the parent's
    main module (``spawn.prepare()``), and a forkserver preloads it and
    forks its children from it: a SIGTERM handler installed at import time
    in the main module would run in every child, the spawn-side form of
    terminate recursion trap (a handler that terminates every child, run
    in each child).  The process object is unpickled right after
    that import and before the target runs, so its ``__setstate__`` resets
    the guarded signals, as the fork child does between fork and target.
    """

    __dict__: dict[str, Any]

    def __getstate__(self) -> dict[str, Any]:
        # The group layer loads with the first child, not with the import.
        from .._group import current_guard  # noqa: PLC0415

        state = self.__dict__.copy()
        state["_mpguard_signals"] = tuple(sorted(current_guard().block))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        signals = state.pop("_mpguard_signals", ())
        self.__dict__.update(state)
        pool_worker = bool(getattr(self, "_mpguard_pool_worker", False))
        _child.reset_signals(signals, pool_worker=pool_worker)


class GuardedSpawnProcess(_FreshChild, SpawnProcess):
    """A :class:`multiprocessing.Process` started by a guarded spawn.

    The child is a fresh interpreter, started as a member of the guard's
    process group; otherwise as :class:`GuardedProcess`.
    """

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - stdlib name
        from ._spawn import Popen  # noqa: PLC0415 - on first use

        return Popen(process_obj)


class GuardedForkServerProcess(_FreshChild, ForkServerProcess):
    """A :class:`multiprocessing.Process` forked by the guard's forkserver.

    The guard's forkserver is itself a member of the guard's process group,
    so it and every child it forks die with the group; otherwise as
    :class:`GuardedProcess`.
    """

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - stdlib name
        from ._forkserver import Popen  # noqa: PLC0415 - on first use

        return Popen(process_obj)


class GuardedContext(BaseContext):
    """Base of the guarded contexts: ``get_context("guarded-...")``.

    Everything the matching stdlib context offers works (Process, Pool,
    Queue, Lock, Event, Manager, ...), and ``concurrent.futures.
    ProcessPoolExecutor(mp_context=ctx)`` runs its workers guarded.
    ``get_start_method()`` returns the stdlib method's name on purpose (see
    the module docstring).  ``isinstance(ctx, GuardedContext)`` tells any
    guarded context.
    """

    #: The key this context is registered under.
    key = "guarded"

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
        if _pool_class is None:  # pragma: no cover - mpguard/__init__ sets it
            msg = "mpguard's pool is not loaded (import mpguard)"
            raise RuntimeError(msg)
        return _pool_class(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self,
            grace=grace,
            task_timeout=task_timeout,
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<mpguard.{name} {self.key!r} ({self.get_start_method()})>"


class GuardedForkContext(GuardedContext, ForkContext):
    """``get_context("guarded-fork")``, also ``get_context("guarded")``."""

    _name = "fork"
    key = "guarded-fork"
    Process = GuardedProcess  # type: ignore[assignment,unused-ignore]


class GuardedForkServerContext(GuardedContext, _compat.ForkServerContextBase):
    """``get_context("guarded-forkserver")``.  Python 3.9-3.15."""

    _name = "forkserver"
    key = "guarded-forkserver"
    Process = GuardedForkServerProcess  # type: ignore[assignment,unused-ignore]

    def check_supported(self) -> None:
        """Raise UnsupportedPlatformError on a Python whose forkserver
        protocol mpguard does not follow yet."""
        _compat.require_forkserver()


class GuardedSpawnContext(GuardedContext, SpawnContext):
    """``get_context("guarded-spawn")``."""

    _name = "spawn"
    key = "guarded-spawn"
    Process = GuardedSpawnProcess  # type: ignore[assignment,unused-ignore]


_CONTEXTS: dict[str, GuardedContext] = {
    "guarded-fork": GuardedForkContext(),
    "guarded-forkserver": GuardedForkServerContext(),
    "guarded-spawn": GuardedSpawnContext(),
}
_KEYS = {START_METHOD: "guarded-fork", **{k: k for k in _CONTEXTS}}


def register() -> GuardedForkContext:
    """Register every guarded start method (idempotent).

    Returns the ``"guarded"`` (fork) context.
    """
    for key, target in _KEYS.items():
        ctx = _compat.register_context(key, _CONTEXTS[target])
        if not isinstance(ctx, type(_CONTEXTS[target])):
            msg = f"another context is registered as {key!r}: {ctx!r}"
            raise RuntimeError(msg)
    return _CONTEXTS["guarded-fork"]  # type: ignore[return-value]


def get_context(method: str = START_METHOD) -> GuardedContext:
    """The guarded context *method* (``"guarded"``, ``"guarded-fork"``,
    ``"guarded-forkserver"`` or ``"guarded-spawn"``), same as
    ``multiprocessing.get_context(method)``.

    Raises:
        ValueError: *method* is not a guarded start method.
    """
    register()
    key = _KEYS.get(method)
    if key is None:
        msg = (
            f"not a guarded start method: {method!r} (expected one of "
            f"{', '.join(repr(k) for k in _KEYS)})"
        )
        raise ValueError(msg)
    ctx = _CONTEXTS[key]
    _compat.check_available(ctx)
    return ctx


_pool_class: Callable[..., GuardedPool] | None = None


def set_pool_class(cls: Callable[..., GuardedPool]) -> None:
    """What ``GuardedContext.Pool()`` builds: the pool layer registers
    GuardedPool here (this layer sits below it and never imports it)."""
    global _pool_class
    _pool_class = cls
