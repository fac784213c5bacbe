"""billiard's internals (billiard 4.x, Celery's multiprocessing fork).

Touched: ``billiard.context._concrete_contexts``, ``Supervisor._state``,
``Pool._state``, ``billiard.pool.TERMINATE``, ``threading._active``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["register_billiard_context", "stop_billiard_respawn"]


def register_billiard_context(name: str, ctx: object) -> object:
    """:func:`register_context` for billiard's table of contexts.

    ``billiard.context._concrete_contexts`` plays the same part in billiard
    (4.x) as in CPython: ``get_context``, ``set_start_method`` and the
    child's ``_force_start_method`` resolve names in it.
    """
    import billiard.context  # noqa: PLC0415 - optional dependency

    table: dict[str, object] = billiard.context._concrete_contexts
    return table.setdefault(name, ctx)


def stop_billiard_respawn() -> None:
    """:func:`stop_pool_respawn` for every billiard Pool of this process.

    billiard pools are not registered with the guard (Celery builds them
    itself), so they are found through their ``Supervisor`` threads, whose
    ``pool`` attribute is the pool.  Without this a Supervisor that sees
    the teardown's dead workers starts replacements, gets GuardClosedError
    and ends the whole process with ``os._exit(1)`` (billiard's
    ``PoolThread.run``).  billiard 4.x: ``Supervisor._state``,
    ``Pool._state``, ``TERMINATE``.  Pools without a Supervisor (Celery's
    AsynPool) respawn from the event loop of the main thread, which the
    teardown occupies.

    Takes no lock: it may run in a signal handler, in a main thread that
    was interrupted holding ``threading``'s own lock, so the thread table
    (``threading._active``, 3.9-3.15) is copied without
    ``threading.enumerate()``.
    """
    pool_mod = sys.modules.get("billiard.pool")
    if pool_mod is None:
        return
    threads: list[Any] = []
    for _ in range(10):
        try:
            threads = list(threading._active.values())  # type: ignore[attr-defined]
            break
        except RuntimeError:  # changed size while copied: try again
            continue
    for thread in threads:
        if isinstance(thread, pool_mod.Supervisor):
            thread._state = pool_mod.TERMINATE
            pool = getattr(thread, "pool", None)
            if pool is not None:
                pool._state = pool_mod.TERMINATE
