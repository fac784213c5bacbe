"""CPython's multiprocessing internals: contexts, processes, Popens, fds.

Checked on Python 3.9-3.15 (``tests/test_compat.py`` runs on each).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module, no stubs
import atexit
import io
import multiprocessing.context
import multiprocessing.process
import os
import sys
from multiprocessing import util
from multiprocessing.context import ForkServerContext

# typing.TYPE_CHECKING without importing typing: this module is on
# ``import mpguard``'s path, which stays within 5 ms of multiprocessing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = [
    "CHILD_RUNS_ATEXIT",
    "ForkServerContextBase",
    "bootstrap_of",
    "check_available",
    "child_atexit_begin",
    "child_atexit_end",
    "close_fds",
    "default_context_if_set",
    "flush_std_streams",
    "fork_keeps_tracker",
    "guardian_spawn_kwargs",
    "interpreter_flags",
    "may_start",
    "pickle_for_child",
    "popen_fds",
    "process_popen",
    "raw_handler",
    "reap_dropped_popens",
    "register_context",
    "run_process",
    "set_raw_handler",
    "sigmask",
]

# 3.13 popen_fork clears the parent's atexit callbacks in the child and runs
# the child's own at exit (gh-83856).  3.9-3.12 do neither.  A guarded child
# must behave like a plain fork child of the same version.
CHILD_RUNS_ATEXIT = sys.version_info >= (3, 13)


def child_atexit_begin() -> None:
    """In a fork child: what 3.13's popen_fork does before ``_bootstrap``."""
    if CHILD_RUNS_ATEXIT:
        atexit._clear()  # type: ignore[attr-defined,unused-ignore]
        atexit.register(util._exit_function)  # type: ignore[attr-defined,unused-ignore]


def child_atexit_end() -> None:
    """In a fork child: what 3.13's popen_fork does before ``os._exit``."""
    if CHILD_RUNS_ATEXIT:
        atexit._run_exitfuncs()  # type: ignore[attr-defined,unused-ignore]


def register_context(name: str, ctx: object) -> object:
    """Register *ctx* under *name*, idempotently; return the registered one.

    ``multiprocessing.context._concrete_contexts`` is the table that
    ``get_context()`` and ``set_start_method()`` resolve names in (3.9-3.15;
    loky registers its contexts the same way).  ``setdefault`` keeps a
    context that is already there, so importing mpguard twice, or reloading
    it, changes nothing.
    """
    table: dict[str, object] = multiprocessing.context._concrete_contexts  # type: ignore[attr-defined]
    return table.setdefault(name, ctx)


def default_context_if_set() -> object | None:
    """The context ``set_start_method()`` chose, or None if none was chosen.

    ``multiprocessing.get_context()`` would answer too, but it also *fixes*
    the default on first use (gh-109070), after which the program's own
    ``set_start_method()`` raises; ``get_start_method()`` gives only the
    name, which a guarded context shares with its stdlib method.  Reads
    ``context._default_context._actual_context`` (3.9-3.15).
    """
    default: Any = multiprocessing.context._default_context
    return default._actual_context  # type: ignore[no-any-return]


def guardian_spawn_kwargs() -> dict[str, Any]:
    """``subprocess.Popen`` keywords that make the child a group leader.

    ``process_group=0`` (3.11+) calls ``setpgid(0, 0)`` in the child before
    exec, without a preexec_fn, so ``_posixsubprocess`` may still use vfork.
    3.9 and 3.10 need ``preexec_fn``.  ``start_new_session`` would not do:
    workers could not join a group in another session (setpgid EPERM).
    """
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - 3.9/3.10 only


def fork_keeps_tracker(keep: bool) -> None:
    """Say whether the next ``os.fork()`` of this thread is a Process's.

    gh-146313 (3.14.x, 3.13.x): the resource tracker's at-fork handler
    closes the tracker pipe in a raw ``os.fork()`` child, unless
    ``resource_tracker._fork_intent.preserve_fd`` is set, as
    ``popen_fork.Popen._launch`` does around its fork; then the child reuses
    the parent's tracker (gh-80849).  A guarded fork child is a Process and
    must keep it too.  Call with True before the fork and with False right
    after it, in both the parent and the child.  No-op on Pythons without
    the flag.
    """
    # Only an imported resource_tracker has registered that handler, so it
    # is looked up, never imported: the import (with multiprocessing.spawn)
    # costs a fork pool's cold start 1.4 ms, and a program that never
    # imported it has no tracker pipe to keep.  A tracker another thread
    # imports between this call and the fork is kept by mpguard's own
    # at-fork hook in the child (_signals.after_fork_in_child), which then
    # runs before the tracker's.
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    intent = getattr(tracker, "_fork_intent", None)
    if intent is not None:
        intent.preserve_fd = keep


#: ``signal.pthread_sigmask`` without its enum conversion: the C function
#: under it (``_signal.pthread_sigmask``, 3.3+), plain ints in and out.  The
#: wrapper turns every signal of the returned mask into a ``signal.Signals``
#: member: several enum calls per fork, and the pages they write are copied
#: again after each fork (a pool start forks once per worker).  An alias,
#: not a wrapper: one Python frame less on both sides of every fork.
sigmask: Callable[[int, Iterable[int]], set[int]] = _signal.pthread_sigmask


def interpreter_flags() -> list[str]:
    """The interpreter options a spawned child must share with this one
    (``util._args_from_interpreter_flags``: -O, -X options, warnings ...)."""
    return util._args_from_interpreter_flags()  # type: ignore[attr-defined,no-any-return]


def raw_handler(handler: Any) -> Any:
    """*handler* as ``_signal.signal`` takes it: SIG_DFL and SIG_IGN as the
    C module's own int objects (it knows them by identity), not
    ``signal.Handlers`` members; a callable as is."""
    if callable(handler):
        return handler
    return _signal.SIG_IGN if handler == _signal.SIG_IGN else _signal.SIG_DFL


#: ``signal.signal`` without its enum conversions (``_signal.signal``, C),
#: for :func:`raw_handler` values.  A fork child calls it between fork and
#: its target: the wrapper's Python and enum calls write pages that every
#: child then copies (copy-on-write).
set_raw_handler: Callable[[int, Any], Any] = _signal.signal


def flush_std_streams() -> None:
    """Flush stdout and stderr before a fork, as ``popen_fork`` does
    (``util._flush_std_streams``)."""
    util._flush_std_streams()  # type: ignore[attr-defined]


def close_fds(*fds: int) -> None:
    """Close each of *fds* (``util.close_fds``, undocumented)."""
    util.close_fds(*fds)  # type: ignore[attr-defined]


def check_available(ctx: Any) -> None:
    """Raise if *ctx*'s start method cannot run here (``_check_available``:
    what ``multiprocessing.get_context()`` calls before returning one)."""
    ctx._check_available()


class ForkServerContextBase(ForkServerContext):
    """``ForkServerContext`` whose availability check also calls
    :meth:`check_supported` (the stdlib's hook is ``_check_available``)."""

    def _check_available(self) -> None:
        super()._check_available()  # type: ignore[misc,unused-ignore]
        self.check_supported()

    def check_supported(self) -> None:
        """Raise if this Python's forkserver is not supported; subclasses
        override."""


def bootstrap_of(process_obj: Any) -> Callable[[int], int]:
    """``process_obj._bootstrap``, bound: what a fork child runs with its
    parent sentinel (``popen_fork`` calls it so, 3.8+).  Looked up in the
    parent, so the child enters it without a frame of ours."""
    return process_obj._bootstrap  # type: ignore[no-any-return]


def run_process(process_obj: Any, parent_sentinel: int | None) -> int:
    """Run a Process in the child: ``BaseProcess._bootstrap``.

    The stdlib's takes ``parent_sentinel`` (3.8+); billiard's takes no
    argument (pass None).
    """
    if parent_sentinel is None:
        return int(process_obj._bootstrap())
    return int(process_obj._bootstrap(parent_sentinel=parent_sentinel))


def may_start(process_obj: Any) -> bool:
    """True if ``process_obj.start()`` would get as far as its Popen: not
    closed (``_closed``), not started (``_popen``), created by this process
    (``_parent_pid``), and this process is not daemonic (``_config``).
    ``BaseProcess.start`` checks the same, 3.9-3.15."""
    return (
        not getattr(process_obj, "_closed", False)
        and process_obj._popen is None
        and process_obj._parent_pid == os.getpid()
        and not multiprocessing.process.current_process()._config.get("daemon")  # type: ignore[attr-defined]
    )


def process_popen(proc: Any) -> Any:
    """The Popen behind a started ``Process`` (``_popen``), or None."""
    return getattr(proc, "_popen", None)


def popen_fds(popen: Any) -> list[int]:
    """The fds a spawn/forkserver Popen collected for its child (``_fds``,
    filled by ``DupFd`` while the process object is pickled)."""
    fds: list[int] = popen._fds
    return fds


def pickle_for_child(popen: Any, process_obj: Any) -> io.BytesIO:
    """What a spawn or forkserver child reads first: the preparation data,
    then the process object, pickled while *popen* collects the fds the
    child must inherit.

    The stdlib's protocol (popen_spawn_posix / popen_forkserver
    ``_launch``, 3.9-3.15): ``set_spawning_popen`` makes ``DupFd`` append
    to ``popen._fds``; ``get_preparation_data(process._name)``.
    """
    from multiprocessing import reduction, spawn  # noqa: PLC0415 - on use

    prep_data = spawn.get_preparation_data(process_obj._name)
    buf = io.BytesIO()
    multiprocessing.context.set_spawning_popen(popen)  # type: ignore[attr-defined,unused-ignore]
    try:
        reduction.dump(prep_data, buf)
        reduction.dump(process_obj, buf)
    finally:
        multiprocessing.context.set_spawning_popen(None)  # type: ignore[attr-defined,unused-ignore]
    return buf


def reap_dropped_popens() -> None:
    """Let ``subprocess`` reap the ``Popen`` objects their owners dropped.

    A ``Popen`` collected while its child runs goes into
    ``subprocess._active``, and ``subprocess._cleanup()`` polls that list,
    but only when the next ``Popen`` is created: a worker whose last task
    dropped one keeps a zombie until then.  Both names are private
    (3.9-3.15); without them, nothing is done and the zombie is left to the
    owner-aware sweep, which treats a listed ``Popen`` as owned.
    """
    import subprocess  # noqa: PLC0415 - loaded by any program that has one

    cleanup = getattr(subprocess, "_cleanup", None)
    if cleanup is not None:
        cleanup()
