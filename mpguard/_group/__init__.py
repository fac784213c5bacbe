"""The group layer: the guard, its guardian, its children, the kill ladder.

Below the start methods and the pool, above the platform and compat layers.
Modules:

* ``_guard``: :class:`Guard` and its lifecycle (one state), the process's
  guard (:func:`current_guard`, :func:`acquire`, :func:`holding`), the
  parent's signal handlers, teardown hooks;
* ``_guardian``: the guardian process, seen from the owner;
  ``_guardian_main``: the script the guardian runs (``.pl`` in a perl,
  ``.py`` in a python);
* ``_children``: the :class:`GuardedChild` protocol, the :class:`Child`
  handle, and the one table of live children with its reaper thread;
* ``_ladder``: the one escalation ladder (SIGTERM, grace, SIGKILL, reap);
* ``_orphans``: children nobody waits for, reaped without stealing a
  status; the owner as a child subreaper, killing a dead child's orphans.

Nothing here names a start method, a pool or an integration: they register
hooks (:func:`on_teardown`, :meth:`Guard.on_teardown`,
:meth:`Guard.on_child_exit`, :meth:`Guard.resource`).
"""

from __future__ import annotations

from ._children import Child, ChildTable, GuardedChild, abandon, release
from ._guard import (
    LINGER,
    ChildPlan,
    Guard,
    GuardState,
    acquire,
    current_guard,
    guard_pids,
    holding,
    install_handlers,
    on_teardown,
    shutdown,
)
from ._ladder import Target, escalate, kill_now, kill_tree, pids_target, tree_target

# The Celery integration's: loaded on first use, not on every pool's path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._orphans import AbandonedReaper, Adopter, owned_pids
else:
    from .. import _lazy

    __getattr__ = _lazy.loader(
        __name__,
        dict.fromkeys(("AbandonedReaper", "Adopter", "owned_pids"), "_orphans"),
    )

__all__ = [
    "LINGER",
    "AbandonedReaper",
    "Adopter",
    "Child",
    "ChildPlan",
    "ChildTable",
    "Guard",
    "GuardState",
    "GuardedChild",
    "Target",
    "abandon",
    "acquire",
    "current_guard",
    "escalate",
    "guard_pids",
    "holding",
    "install_handlers",
    "kill_now",
    "kill_tree",
    "on_teardown",
    "owned_pids",
    "pids_target",
    "release",
    "shutdown",
    "tree_target",
]
