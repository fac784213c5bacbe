"""Code that runs in a guarded child between fork and the target.

Discussion
----------
The parent blocks the guarded signals (SIGTERM, SIGINT, SIGHUP by default)
in the forking thread, so the child starts with them blocked and cannot die
half set up, nor run an inherited handler.  Here, in this order:

1. ``setpgid(0, pgid)``: join the guard's group.  The parent makes the same
   call for the child (the job-control-shell idiom, setpgid(2)),
   so whichever runs first wins and a group kill right after ``start()``
   cannot miss the child.
2. Close the guardian's lifeline: the guardian must see EOF when the
   *parent* dies, not when the last child does.
3. Reset the dispositions the parent installed.  A child never runs the
   parent's teardown or the user's parent handler: an inherited handler
   that terminates "every child" is the "terminate recursion trap" (each
   child terminating its siblings, 125 handler runs for 10 children;
   signal(7): dispositions survive fork).  SIGTERM/SIGHUP get the
   default action, which ends the child even inside C code; pool workers
   ignore SIGINT, so a Ctrl-C prints no worker tracebacks.
4. Check ``getppid()`` against the pid recorded before fork: if the parent
   died before we joined the group, the guardian may already have killed
   the group and nobody would kill us (the race prctl(2) documents for
   ``PR_SET_PDEATHSIG``, the same here).
5. Restore the signal mask: a SIGTERM that arrived meanwhile is delivered
   now, to the default action.

Rules: no locks, no logging, no exceptions.  ``prepare`` returns an exit
status and the caller ends in ``os._exit``.
"""

from __future__ import annotations

import os
import signal

from .. import _compat

# typing.TYPE_CHECKING without importing typing: this module is on
# ``import mpguard``'s path, which stays within 5 ms of multiprocessing's.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from .._group import ChildPlan

__all__ = [
    "EXIT_PARENT_GONE",
    "EXIT_SETUP_FAILED",
    "prepare",
    "reset_signals",
]

#: The child could not join the guard's group; it never ran the target.
EXIT_SETUP_FAILED = 250
#: The parent died between fork and the child's setup; target not run.
EXIT_PARENT_GONE = 251


def reset_signals(signals: tuple[int, ...], *, pool_worker: bool) -> None:
    """Give a guarded child its own dispositions for the guarded *signals*.

    What each signal gets: :func:`mpguard._config.child_dispositions`.
    """
    # Imported here: this module is on ``import mpguard``'s path, which
    # does not read the policy.
    from .._config import child_dispositions  # noqa: PLC0415

    for sig, handler in child_dispositions(signals, pool_worker=pool_worker):
        _compat.set_raw_handler(sig, _compat.raw_handler(handler))


def prepare(plan: ChildPlan, mask: set[int]) -> int:
    """Set up a freshly forked guarded child; return 0 or an exit status."""
    try:
        try:
            os.setpgid(0, plan.pgid)
        except OSError:
            return EXIT_SETUP_FAILED
        try:
            os.close(plan.lifeline_fd)
        except OSError:
            pass
        # The pairs were computed in the parent, and set through the C
        # function: every Python call here writes pages the child copies.
        set_handler = _compat.set_raw_handler
        for sig, handler in plan.dispositions:
            set_handler(sig, handler)
        if os.getppid() != plan.parent_pid:
            return EXIT_PARENT_GONE
        _compat.sigmask(signal.SIG_SETMASK, mask)
    except BaseException:  # noqa: BLE001 - nothing may escape into the child
        return EXIT_SETUP_FAILED
    return 0
