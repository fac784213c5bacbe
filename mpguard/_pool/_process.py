"""The worker processes of a GuardedPool, one class per start method.

Apart from :mod:`._pool` because a spawn or forkserver worker unpickles its
process object, and so imports the module that defines its class: this one
needs only the start-method layer, not the guard, the dispatcher or
``typing``, which would cost every such worker milliseconds at start.
"""

from __future__ import annotations

import multiprocessing.process

from .._start import GuardedForkServerProcess, GuardedProcess, GuardedSpawnProcess

# typing.TYPE_CHECKING without importing typing (see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._dispatch import Channel, Dispatcher

__all__ = ["WORKERS", "PoolWorkerBase"]


class PoolWorkerBase(multiprocessing.process.BaseProcess):
    """A GuardedPool worker, fed by the pool's dispatcher.

    Mixed into one class per guarded start method (below).
    """

    # Read by the guarded Popens (mpguard._start._fork.is_pool_worker).
    _mpguard_pool_worker = True

    def __init__(
        self,
        dispatcher: Dispatcher,
        channel: Channel,
        budget: int | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The stdlib renames "...Process-N" to "...PoolWorker-N".
        self.name = self.name.replace(type(self).__name__, "GuardedProcess")
        self._dispatcher = dispatcher
        self._channel = channel
        self._budget = budget

    def start(self) -> None:
        """Queue the worker's first tasks, then start it."""
        w = self._mpguard_worker = self._dispatcher.prepare(self._channel, self._budget)
        try:
            super().start()
        except BaseException:
            self._dispatcher.abort(w)
            raise
        self._dispatcher.started(w, self)

    def join(self, timeout: float | None = None) -> None:
        """Join, and tell the dispatcher once the worker has exited.

        The stdlib's worker-handler thread joins each worker as soon as its
        sentinel fires: that is where a lost task is noticed.
        """
        super().join(timeout)
        w = getattr(self, "_mpguard_worker", None)
        if w is not None and self.exitcode is not None:
            self._dispatcher.died(w)

    def __getstate__(self) -> dict[str, Any]:
        # Spawn and forkserver pickle the Process object for the child; the
        # dispatcher (locks, threads, sockets) stays in the parent.  The
        # child gets what it needs through ``args``.
        parent = getattr(super(), "__getstate__", None)
        state = dict(parent()) if parent is not None else self.__dict__.copy()
        for name in ("_dispatcher", "_channel", "_mpguard_worker"):
            state.pop(name, None)
        return state


class _PoolWorker(PoolWorkerBase, GuardedProcess):
    """A fork worker."""


class _SpawnPoolWorker(PoolWorkerBase, GuardedSpawnProcess):
    """A spawn worker."""


class _ForkServerPoolWorker(PoolWorkerBase, GuardedForkServerProcess):
    """A forkserver worker."""


WORKERS: dict[str, type[PoolWorkerBase]] = {
    "fork": _PoolWorker,
    "spawn": _SpawnPoolWorker,
    "forkserver": _ForkServerPoolWorker,
}
