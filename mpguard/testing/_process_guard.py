"""A guard for one test: what it starts through it dies when it ends."""

from __future__ import annotations

import multiprocessing.process
from typing import TYPE_CHECKING, Any, TypeVar

from .._pool import GuardedPool
from .._subprocess import Popen
from . import _tree
from ._leaks import LeakedProcessError, kill_trees
from ._procs import alive, descendants, wait_gone

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["ProcessGuard"]

T = TypeVar("T")


class ProcessGuard:
    """Processes started for one test (or one block), killed when it ends.

    Everything is started the guarded way (in mpguard's group, dying with
    this process however it dies); on :meth:`close` whatever still runs is
    killed with its descendants, and the guard raises
    :class:`~mpguard.testing.LeakedProcessError` if it had to kill
    anything, so a test that forgets to stop what it started fails::

        with ProcessGuard() as guard:
            proc = guard.Popen(["sleep", "1"])
            pool = guard.Pool(2)
            ...
            proc.wait()
            pool.close()
            pool.join()

    The pytest plugin gives one per test as the ``process_guard`` fixture.

    Args:
        grace: how long :meth:`close` waits for the killed processes to go.

    Raises:
        ValueError: *grace* is negative.
    """

    def __init__(self, *, grace: float = 1.0) -> None:
        if not grace >= 0:  # also NaN
            msg = f"grace must be >= 0 seconds, not {grace!r}"
            raise ValueError(msg)
        self.grace = grace
        self._tracked: list[Any] = []
        self._killed_tree = ""
        #: True once :meth:`close` ran.
        self.closed = False

    # --- starting -------------------------------------------------------------

    def Popen(self, args: Any, *rest: Any, **kwargs: Any) -> Popen:  # noqa: N802 - the stdlib's name
        """:class:`mpguard.Popen`, killed with its tree if it runs at the end."""
        return self.track(Popen(args, *rest, **kwargs))

    def Pool(self, *args: Any, **kwargs: Any) -> GuardedPool:  # noqa: N802 - the stdlib's name
        """:class:`mpguard.GuardedPool`, terminated if not closed and joined."""
        return self.track(GuardedPool(*args, **kwargs))

    def Process(self, *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:  # noqa: N802
        """A process of the ``"guarded"`` context (not started), killed with
        its tree if still running at the end."""
        from .. import get_context  # noqa: PLC0415 - loaded on first use

        ctx: Any = get_context("guarded")
        proc: multiprocessing.process.BaseProcess = ctx.Process(*args, **kwargs)
        return self.track(proc)

    def track(self, obj: T) -> T:
        """Also kill *obj* at the end: an :class:`mpguard.Popen`, a
        ``multiprocessing`` process, a :class:`mpguard.GuardedPool`, or a
        pid.  Returns *obj*."""
        if self.closed:
            msg = "the ProcessGuard is closed"
            raise ValueError(msg)
        if not isinstance(
            obj, (int, Popen, GuardedPool, multiprocessing.process.BaseProcess)
        ):
            msg = (
                "track() takes an mpguard.Popen, a multiprocessing process, "
                f"a GuardedPool or a pid, not {type(obj).__name__}"
            )
            raise TypeError(msg)
        self._tracked.append(obj)
        return obj

    # --- the end --------------------------------------------------------------

    @staticmethod
    def _live_pids(obj: Any) -> list[int]:
        if isinstance(obj, int):
            return [obj] if alive(obj) else []
        if isinstance(obj, multiprocessing.process.BaseProcess):
            return [obj.pid] if obj.pid is not None and obj.is_alive() else []
        if isinstance(obj, GuardedPool):
            return [w.pid for w in obj._mpguard_workers() if w.pid and alive(w.pid)]
        if isinstance(obj, Popen) and obj.poll() is None:
            return [obj.pid]
        return []

    @staticmethod
    def _finish(obj: Any, timeout: float) -> None:
        """Let *obj* collect its killed processes (statuses, threads)."""
        if isinstance(obj, int):
            return
        if isinstance(obj, multiprocessing.process.BaseProcess):
            if obj.pid is not None:
                obj.join(timeout)
        elif isinstance(obj, GuardedPool):
            obj.terminate()
            obj.join()
        elif isinstance(obj, Popen):
            try:
                obj.wait(timeout)
            except Exception:  # noqa: BLE001 - a TimeoutExpired is reported below
                pass

    def close(self) -> list[int]:
        """Kill what still runs, with its descendants; the pids killed.

        Does not raise for a leak (:meth:`__exit__` and the fixture do).
        """
        if self.closed:
            return []
        self.closed = True
        roots: list[int] = []
        for obj in self._tracked:
            roots.extend(self._live_pids(obj))
        self._killed_tree = ""
        if roots:
            below = [pid for root in roots for pid in descendants(root)]
            rows = _tree.table(sorted({*roots, *below}))
            lines = [_tree.HEADER]
            lines += [_tree.format_line(*r) for r in _tree.render(roots, rows)]
            self._killed_tree = "\n".join(lines)
            kill_trees("the test's processes", roots, self.grace)
            wait_gone(below, self.grace)
        for obj in self._tracked:
            self._finish(obj, self.grace)
        killed = roots
        self._tracked.clear()
        return killed

    def __enter__(self) -> ProcessGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        killed = self.close()
        if killed and exc is None:
            raise LeakedProcessError(self.message(killed), killed)

    def message(self, killed: Sequence[int]) -> str:
        """Why the guard failed: what it had to kill, as a tree."""
        return (
            f"mpguard: the process guard had to kill {len(killed)} process(es) "
            f"still running at the end:\n{self._killed_tree}"
        )
