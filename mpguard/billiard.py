"""Guarded start method for billiard, Celery's fork of multiprocessing.

``import mpguard.billiard`` registers ``"guarded"`` (and its alias
``"guarded-fork"``) with billiard, so that::

    import billiard
    import mpguard.billiard

    ctx = billiard.get_context("guarded")
    pool = ctx.Pool(4)                       # a billiard Pool, guarded
    billiard.set_start_method("guarded", force=True)  # every billiard pool

``import mpguard`` does the same by itself when billiard is already
imported.  Install with the extra: ``pip install "mpguard[billiard]"``.

The workers of such a pool get every guarantee of the guarded fork: the
parent's handlers are not inherited (billiard then installs its own), one
process group without the parent, SIGKILL of the group with everything the
workers started when the parent dies in any way, reaping without stealing
exit statuses.  A task whose worker dies fails with billiard's own
``billiard.exceptions.WorkerLostError``, raised by billiard's pool, and
the pool's ``terminate()`` returns even if a worker was killed while it
held the task queue's lock (billiard's own waits forever).
Like ``"guarded"``, the context reports the name ``"fork"``: Celery's
``process_initializer`` compares the start method's name with ``"fork"``
and takes its fresh-interpreter path otherwise.
"""

from __future__ import annotations

import random
import sys
from typing import Any

try:
    import billiard.context
    import billiard.popen_fork
except ImportError as e:  # pragma: no cover - exercised without billiard
    msg = f"mpguard.billiard needs billiard: pip install 'mpguard[billiard]' ({e})"
    raise ImportError(msg) from e

from . import _compat, _group
from ._start._fork import GuardedPopen

__all__ = [
    "GuardedBilliardContext",
    "GuardedBilliardPool",
    "GuardedBilliardProcess",
    "get_context",
    "register",
]


class _Popen(GuardedPopen, billiard.popen_fork.Popen):  # type: ignore[misc]
    """billiard's fork Popen, started by the guarded fork."""

    method = "fork"

    def _launch(self, process_obj: Any) -> None:
        self._fork(process_obj, _bootstrap(process_obj), stdlib_atexit=False)

    def terminate(self) -> None:
        """SIGTERM through the pidfd (billiard sends it by pid)."""
        self.send_signal(billiard.popen_fork.TERM_SIGNAL)

    def close(self) -> None:
        """Release the sentinel and pidfd (billiard's ``Process.close``)."""
        self.finalizer()


def _bootstrap(process_obj: Any) -> Any:
    def run(_parent_sentinel: int) -> int:
        # As billiard's own Popen: a fork child reseeds random.
        if "random" in sys.modules:
            random.seed()
        return _compat.run_process(process_obj, None)

    return run


class GuardedBilliardProcess(billiard.context.ForkProcess):  # type: ignore[misc]
    """A ``billiard.Process`` started by the guarded fork."""

    _start_method = "fork"

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - billiard's name
        return _Popen(process_obj)


def _stragglers(workers: list[Any]) -> None:
    """``terminate()``'s backstop: the workers that outlive billiard's
    SIGTERM by the grace period are SIGKILLed with their subtrees."""
    import time  # noqa: PLC0415

    from ._config import get_policy  # noqa: PLC0415

    deadline = time.monotonic() + get_policy().grace
    popens = [p for p in map(_compat.billiard_popen, workers) if p is not None]
    while time.monotonic() < deadline:
        if all(p.returncode is not None or p.poll() is not None for p in popens):
            return
        time.sleep(0.02)
    _group.kill_now([p for p in popens if p.returncode is None])


#: billiard's ``Pool``, whose ``terminate()`` returns even after a worker
#: was killed while it held one of the pool's queue locks (billiard's own
#: hangs), within the grace period and 1.5 s per such lock.
GuardedBilliardPool: type = _compat.billiard_pool_class(_stragglers)


class GuardedBilliardContext(billiard.context.ForkContext):  # type: ignore[misc]
    """``billiard.get_context("guarded")``."""

    _name = "fork"
    Process = GuardedBilliardProcess

    def Pool(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - billiard's name
        """billiard's ``Pool`` on this context (:data:`GuardedBilliardPool`).

        Same arguments as ``billiard.context.BaseContext.Pool``.
        """
        kwargs["context"] = self
        return GuardedBilliardPool(*args, **kwargs)

    def __repr__(self) -> str:
        return "<mpguard.billiard.GuardedBilliardContext 'guarded' (fork)>"


_CONTEXT = GuardedBilliardContext()


def register() -> GuardedBilliardContext:
    """Register "guarded" and "guarded-fork" with billiard (idempotent)."""
    for key in ("guarded", "guarded-fork"):
        ctx = _compat.register_billiard_context(key, _CONTEXT)
        if not isinstance(ctx, GuardedBilliardContext):
            msg = f"another billiard context is registered as {key!r}: {ctx!r}"
            raise RuntimeError(msg)
    return _CONTEXT


def get_context() -> GuardedBilliardContext:
    """The guarded billiard context, same as ``billiard.get_context("guarded")``."""
    return register()


register()
# billiard's Supervisor threads respawn workers on their own: stop them
# before a teardown kills the group.
_group.on_teardown(_compat.stop_billiard_respawn)
