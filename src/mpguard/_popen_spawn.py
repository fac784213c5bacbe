"""Guarded spawn Popen.

Adapted from CPython ``Lib/multiprocessing/popen_spawn_posix.py`` (the same
in 3.9-3.13).  Differences, each for a reason:

* the child is started by ``posix_spawn`` *in the guard's process group*
  (``_platform.spawn_in_group``): it is never, even during interpreter
  start-up, a member of the parent's group, and it dies with the guard's
  group when the parent dies.  ``util.spawnv_passfds`` cannot choose the
  group (``pgid_to_set`` exists only from 3.11, in a private API);
* the command line runs ``mpguard._bootstrap.spawn_main``, which imports
  mpguard before anything is unpickled (the "cannot find context" trap of
  platform-facts §1.2) and then hands over to the stdlib's ``spawn_main``;
* as with the guarded fork: the sentinel is a pidfd, reaping takes one lock
  per child (gh-92881), and plain Processes are reaped as soon as they
  exit.

A spawned child inherits no Python signal handler (exec resets them), so
seed 003's recursion trap cannot happen; the guarded signals also start at
their default action, even if the parent ignores them.
"""

from __future__ import annotations

import io
import os
import sys
from multiprocessing import popen_spawn_posix, reduction, resource_tracker, spawn
from multiprocessing.context import set_spawning_popen
from typing import Any

from . import _compat, _platform
from ._errors import UnsupportedPlatformError
from ._guard import current_guard
from ._popen_fork import GuardedPopen

__all__ = ["Popen", "bootstrap_prog", "command_line", "pickle_for_child"]

# Appended to the child's sys.path (last, so it shadows nothing), in case
# mpguard was put on the parent's path at run time: the bootstrap must be
# importable before the stdlib restores the parent's sys.path.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap_prog(entry: str, args: str) -> str:
    """The ``python -c`` program that calls ``mpguard._bootstrap.<entry>``
    with *args* (spawn children and the guard's forkserver)."""
    return (
        f"import sys; sys.path.append({_ROOT!r}); "
        f"from mpguard._bootstrap import {entry}; {entry}({args})"
    )


def command_line(tracker_fd: int, pipe_handle: int, pgid: int) -> list[Any]:
    """argv of a guarded spawn child (the stdlib's, with our entry point)."""
    if getattr(sys, "frozen", False):
        msg = "guarded spawn cannot start children of a frozen executable"
        raise UnsupportedPlatformError(msg)
    prog = bootstrap_prog("spawn_main", f"{pipe_handle}, {tracker_fd}, {pgid}")
    exe = spawn.get_executable()
    return [exe, *_compat.interpreter_flags(), "-c", prog, "--multiprocessing-fork"]


def pickle_for_child(popen: Any, process_obj: Any) -> io.BytesIO:
    """What a spawn or forkserver child reads first: the preparation data,
    then the process object, pickled while *popen* collects the fds the
    child must inherit (the stdlib's ``set_spawning_popen`` protocol)."""
    prep_data = spawn.get_preparation_data(process_obj._name)
    buf = io.BytesIO()
    set_spawning_popen(popen)
    try:
        reduction.dump(prep_data, buf)
        reduction.dump(process_obj, buf)
    finally:
        set_spawning_popen(None)
    return buf


class Popen(GuardedPopen, popen_spawn_posix.Popen):
    """Start a guarded child by spawn (a fresh interpreter)."""

    method = "spawn"
    _fds: list[int]  # the stdlib's: fds the child inherits (untyped there)

    def __init__(self, process_obj: Any) -> None:
        self._init_guarded()
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        guard = current_guard()
        guard.check_open()
        pool_worker = bool(getattr(process_obj, "_mpguard_pool_worker", False))
        tracker_fd: int = resource_tracker.getfd()  # type: ignore[assignment]
        self._fds.append(tracker_fd)
        fp = pickle_for_child(self, process_obj)
        child_r, parent_w = os.pipe()
        parent_r = child_w = -1
        if not _platform.HAS_PIDFD:
            # Sentinel without pidfds: a pipe whose write end only the
            # child holds.
            parent_r, child_w = os.pipe()
        fds = (parent_w,) if parent_r < 0 else (parent_r, parent_w)
        try:
            pass_fds = [*self._fds, child_r]
            if child_w >= 0:
                pass_fds.append(child_w)
            argv = command_line(tracker_fd, child_r, guard.pgid)
            pid = _platform.spawn_in_group(
                argv[0],
                argv,
                pass_fds,
                guard.pgid,
                guard.block,
            )
        except BaseException:
            os.close(parent_w)
            if parent_r >= 0:
                os.close(parent_r)
            raise
        finally:
            os.close(child_r)
            if child_w >= 0:
                os.close(child_w)
        self._track(guard, pid, fds, pool_worker=pool_worker)
        with open(parent_w, "wb", closefd=False) as f:
            f.write(fp.getbuffer())
