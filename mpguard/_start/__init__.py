"""The start-method layer: contexts, Popens, and the child's first steps.

Modules, in the order a guarded child is born:

* ``_context``: the guarded contexts and Process classes, and their
  registration in multiprocessing's table of start methods;
* ``_fork``, ``_spawn``, ``_forkserver``: one Popen per method, each on
  :class:`mpguard._group.Child` (pidfd sentinel, one reap lock);
* ``_child``: what a forked child runs between fork and its target (no
  locks, no logging, no exceptions; ends in ``os._exit``);
* ``_bootstrap``: the first code of a spawned child or forkserver.
"""

from __future__ import annotations

from ._context import (
    START_METHOD,
    START_METHODS,
    GuardedContext,
    GuardedForkContext,
    GuardedForkServerContext,
    GuardedForkServerProcess,
    GuardedProcess,
    GuardedSpawnContext,
    GuardedSpawnProcess,
    get_context,
    register,
    set_pool_class,
)

# typing.TYPE_CHECKING without importing typing: on ``import mpguard``'s path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def fork_ahead(processes: Sequence[Any]) -> None:
    """Fork the children of guarded fork *processes* together; each
    ``start()`` then records its own (:func:`._fork.fork_ahead`)."""
    # Loaded with the first pool, not with ``import mpguard``.
    from ._fork import fork_ahead as run  # noqa: PLC0415

    run(processes)


def discard_forked(processes: Sequence[Any]) -> None:
    """Kill and reap what :func:`fork_ahead` forked for *processes* that
    no ``start()`` recorded."""
    from ._fork import discard_forked as run  # noqa: PLC0415

    run(processes)


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
    "discard_forked",
    "fork_ahead",
    "get_context",
    "register",
    "set_pool_class",
]
