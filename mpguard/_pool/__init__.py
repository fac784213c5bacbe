"""The pool layer: GuardedPool and how it moves tasks.

* ``_pool``: :class:`GuardedPool`, a drop-in ``multiprocessing.Pool``;
* ``_dispatch``: the dispatcher, the I/O loop between the pool's threads
  and its workers' channels;
* ``_schedule``: the scheduling decisions, as plain code (which worker,
  backlog, stealing, lost tasks, give-up policy, timeouts);
* ``_wire``: the message format on a worker's channel;
* ``_worker``: the worker's side, run in the worker process.
"""

from __future__ import annotations

from ._pool import GuardedPool

__all__ = ["GuardedPool"]
