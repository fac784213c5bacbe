"""First code run by a fresh interpreter that mpguard starts.

A guarded spawn child and a guarded forkserver are started by
``posix_spawn`` as members of the guard's process group (see
``mpguard._platform.spawn_in_group``), with a command line that runs one of the
functions below instead of the stdlib's own entry points.

Importing this module imports the ``mpguard`` package first, and so
registers the guarded start methods before anything is unpickled.  The
stdlib child applies the parent's start method in ``spawn.prepare()``
*before* it unpickles the process object; without this import a program
whose default is a guarded method would fail in every child with
``ValueError: cannot find context for 'guarded-spawn'`` (the same trap
loky works around: its children must import loky before
``spawn.prepare()`` resolves the parent's start method).

Both functions check that the process really is in the guard's group: a
child outside it would not die with the parent.  The check cannot fail
after a successful ``posix_spawn``; it is there so that a wrong command
line can never start an unprotected child.
"""

from __future__ import annotations

import os

from .. import _compat
from ._child import EXIT_SETUP_FAILED, reset_signals

# typing.TYPE_CHECKING without importing typing: a spawn or forkserver
# worker loads this module, and typing costs it 2 ms at start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["forkserver_main", "spawn_main"]


def _check_group(pgid: int) -> None:
    if os.getpgrp() != pgid:
        os._exit(EXIT_SETUP_FAILED)


def spawn_main(pipe_handle: int, tracker_fd: int, pgid: int) -> None:
    """Entry point of a guarded spawn child."""
    _check_group(pgid)
    from multiprocessing import spawn  # noqa: PLC0415 - after the check

    spawn.spawn_main(pipe_handle=pipe_handle, tracker_fd=tracker_fd)


def forkserver_main(
    pgid: int,
    signals: tuple[int, ...],
    listener_fd: int,
    alive_r: int,
    preload: list[str],
    **kwds: Any,
) -> None:
    """Entry point of a guarded forkserver.

    Every child it forks inherits its process group, so the whole tree is
    in the guard's group: the guardian's SIGKILL on the owner's death takes
    the forkserver and every worker, which ``PR_SET_PDEATHSIG`` cannot do
    under forkserver (the workers' parent is the forkserver, which outlives
    the owner while any worker holds its ``alive`` pipe; prctl(2): the
    signal follows the parent, not the program).
    """
    _check_group(pgid)
    from multiprocessing import forkserver  # noqa: PLC0415 - after the check

    # The server preloads your main module (3.14+ really does: earlier
    # versions looked for it under a key the parent never sent), so a
    # SIGTERM handler installed at import would run in the server on a
    # teardown's group SIGTERM: the terminate recursion trap, one level up.
    # Reset the guarded *signals* once the preload is done, as every
    # guarded child does before its target.
    _compat.after_forkserver_preload(lambda: reset_signals(signals, pool_worker=True))
    forkserver.main(listener_fd, alive_r, preload, **kwds)
