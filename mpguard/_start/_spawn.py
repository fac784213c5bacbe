"""Guarded spawn Popen.

Adapted from CPython ``Lib/multiprocessing/popen_spawn_posix.py`` (the same
in 3.9-3.15).  Differences, each for a reason:

* the child is started by ``posix_spawn`` *in the guard's process group*
  (``_platform.spawn_in_group``): it is never, even during interpreter
  start-up, a member of the parent's group, and it dies with the guard's
  group when the parent dies.  ``util.spawnv_passfds`` cannot choose the
  group (``pgid_to_set`` exists only from 3.11, in a private API);
* the command line runs ``mpguard._start._bootstrap.spawn_main``, which
  imports mpguard before anything is unpickled (otherwise the child fails
  with "cannot find context for 'guarded-spawn'": ``spawn.prepare()``
  applies the parent's start method by name) and then hands over to the
  stdlib's ``spawn_main``;
* as with the guarded fork: the sentinel is a pidfd, reaping takes one lock
  per child (gh-92881), and plain Processes are reaped as soon as they
  exit.

A spawned child inherits no Python signal handler (exec resets them), so
the terminate recursion trap cannot happen this way (see ``_context`` for
the way it still can); the guarded signals also start at
their default action, even if the parent ignores them.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import popen_spawn_posix, resource_tracker, spawn

from .. import _compat
from .._errors import UnsupportedPlatformError
from .._group import Child, holding
from ._fork import ChildPipes, is_pool_worker

# typing.TYPE_CHECKING without importing typing: a spawn pool's parent
# loads this module, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Popen", "bootstrap_prog", "command_line"]

# Appended to the child's sys.path (last, so it shadows nothing), in case
# mpguard was put on the parent's path at run time: the bootstrap must be
# importable before the stdlib restores the parent's sys.path.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bootstrap_prog(entry: str, args: str) -> str:
    """The ``python -c`` program that calls ``mpguard._start._bootstrap.<entry>``
    with *args* (spawn children and the guard's forkserver)."""
    return (
        f"import sys; sys.path.append({_ROOT!r}); "
        f"from mpguard._start._bootstrap import {entry}; {entry}({args})"
    )


def command_line(tracker_fd: int, pipe_handle: int, pgid: int) -> list[Any]:
    """argv of a guarded spawn child (the stdlib's, with our entry point)."""
    if getattr(sys, "frozen", False):
        msg = "guarded spawn cannot start children of a frozen executable"
        raise UnsupportedPlatformError(msg)
    prog = bootstrap_prog("spawn_main", f"{pipe_handle}, {tracker_fd}, {pgid}")
    exe = spawn.get_executable()
    return [exe, *_compat.interpreter_flags(), "-c", prog, "--multiprocessing-fork"]


class Popen(Child, popen_spawn_posix.Popen):
    """Start a guarded child by spawn (a fresh interpreter)."""

    method = "spawn"

    def _launch(self, process_obj: Any) -> None:
        with holding() as guard:
            pool_worker = is_pool_worker(process_obj)
            child_fds = _compat.popen_fds(self)
            tracker_fd: int = resource_tracker.getfd()  # type: ignore[assignment]
            child_fds.append(tracker_fd)
            fp = _compat.pickle_for_child(self, process_obj)
            pipes = ChildPipes.open()
            fds = pipes.parent_ends()
            try:
                argv = command_line(tracker_fd, pipes.child_r, guard.pgid)
                pid = guard.spawn(argv, [*child_fds, *pipes.child_ends()])
            except BaseException:
                _compat.close_fds(*fds)
                raise
            finally:
                _compat.close_fds(*pipes.child_ends())
            self.pool_worker = pool_worker
            self.track(guard, pid, fds, reap=not pool_worker)
        with open(pipes.parent_w, "wb", closefd=False) as f:
            f.write(fp.getbuffer())
