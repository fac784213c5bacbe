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
