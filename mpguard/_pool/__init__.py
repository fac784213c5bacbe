"""The pool layer: GuardedPool and how it moves tasks.

* ``_pool``: :class:`GuardedPool`, a drop-in ``multiprocessing.Pool``;
* ``_process``: the worker process classes (what a spawn worker unpickles);
* ``_dispatch``: the dispatcher, the I/O loop between the pool's threads
  and its workers' channels;
* ``_schedule``: the scheduling decisions, as plain code (which worker,
  backlog, stealing, lost tasks, give-up policy, timeouts);
* ``_wire``: the message format on a worker's channel;
* ``_worker``: the worker's side, run in the worker process.
"""

from __future__ import annotations

from .. import _lazy

# GuardedPool loads on first use (PEP 562): a spawn or forkserver worker
# imports this package for its own modules (``_process``, ``_worker``), and
# must not pay for the pool, the guard and the dispatcher it never uses.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._pool import GuardedPool

__all__ = ["GuardedPool"]

if not TYPE_CHECKING:
    __getattr__ = _lazy.loader(__name__, {"GuardedPool": "_pool"})
