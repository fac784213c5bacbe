"""Parent-side signal handlers, installed before the first guarded fork.

Discussion
----------
A widely copied recipe installs, before starting the children, a handler
that terminates every child::

    def term(signum, frame):
        for p in multiprocessing.active_children():
            p.terminate()
        sys.exit(1)

    signal.signal(signal.SIGTERM, term)

A forked child inherits the handler (signal(7): dispositions survive fork),
so each child's SIGTERM makes it terminate its own view of the children:
the "terminate recursion trap" (10 children, 125 handler runs).  The
recipe's other fix, ``os.killpg(os.getpgid(os.getpid()), SIGKILL)``, kills
the caller's own group, which includes ``tee`` in ``python app.py | tee``
(a shell puts a pipeline in one process group, credentials(7)).

mpguard's handler is safe to inherit and to re-enter:

* **owner check**: in any process but the one that installed it (a child
  forked outside mpguard, or a guarded child before its reset) it never
  runs the parent's teardown nor the chained user handler: SIGTERM/SIGHUP
  take the default action, SIGINT raises KeyboardInterrupt;
* **one run per signal**: a second terminating signal during teardown
  skips the grace period and SIGKILLs the group at once (billiard's
  ``_shutdown_cleanup`` pattern);
* **no bystanders**: teardown signals only the guard's group, which never
  contains the parent;
* **Ctrl-C reaches the children**: a terminal sends SIGINT to its
  foreground group, which guarded children have left; before raising
  KeyboardInterrupt the handler passes it on to each guarded child that is
  not a pool worker (through its pidfd, taking no lock), so a plain
  guarded ``Process`` (and a ``ProcessPoolExecutor`` worker) is
  interrupted as it would be without mpguard.  Pool workers ignore SIGINT
  and are not sent it: leaving the ``with`` block terminates them;
* **chaining**: the handler that was there before is called after the
  teardown; if it returns, the parent dies of the same signal (the shell
  sees 128+N), if it raises (``sys.exit(0)``) that decides.  SIG_IGN is
  respected (``nohup`` sets SIGHUP to SIG_IGN): such a signal is not
  handled at all.  A handler installed from C cannot be chained, so the
  signal is left alone with a GuardDegradedWarning.

Python runs handlers in the main thread only, so handlers can be installed
only from it.  A guard first used from another thread warns and relies on
the guardian alone (parent death is still covered; a SIGTERM then kills the
parent at once and the guardian SIGKILLs the group).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings

from . import _compat
from ._config import log
from ._errors import GuardDegradedWarning, signal_name

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, Union

    _Disposition = Union[Callable[[int, Any], Any], int, None]

__all__ = [
    "GuardHandler",
    "after_fork_in_child",
    "after_fork_in_parent",
    "before_fork",
    "guarded_fork",
    "install",
    "installed",
    "uninstall",
]


class GuardHandler:
    """The callable mpguard installs for one signal.

    Args:
        sig: the signal.
        previous: the disposition it replaces, chained after teardown.
        owner_pid: the only process allowed to run the teardown.
        on_signal: called with the signal number and whether it is a
            repeated signal: the teardown, or for SIGINT the forwarding to
            the children, before KeyboardInterrupt is raised.
    """

    def __init__(
        self,
        sig: signal.Signals,
        previous: _Disposition,
        owner_pid: int,
        on_signal: Callable[[int, bool], None],
    ) -> None:
        self.sig = sig
        self.previous = previous
        self.owner_pid = owner_pid
        self.on_signal = on_signal
        self.running = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.owner_pid:
            # Inherited into a child: never the parent's teardown (the
            # recursion trap above).
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            _die_by(signum)
            return
        if _guarded:
            # A thread is between a guarded fork and recording the child:
            # the teardown (or a KeyboardInterrupt raised here) would miss
            # a child not yet in the group or lose its pid.  Handled again
            # when the last guarded fork ends (guarded_fork(False)).
            _pending.append(signum)
            return
        if signum == signal.SIGINT:
            # The guard passes it on to its children first: the terminal
            # would have sent it to them too, had they stayed in its
            # foreground group.
            self.on_signal(signum, False)
            self._chain(signum, frame)
            return
        repeated = self.running
        self.running = True
        self.on_signal(signum, repeated)
        if repeated:
            _die_by(signum)
            return
        self._chain(signum, frame)
        # The chained handler returned: it did not decide otherwise.
        _die_by(signum)

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt


def _die_by(signum: int) -> None:
    """End this process with *signum*'s default action (exit 128+N)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - best effort while dying
            pass
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    # Delivery to a thread that has the signal unblocked ends the whole
    # process; give it a moment, then make sure.
    time.sleep(1.0)
    os._exit(128 + signum)


# --- every other fork ------------------------------------------------------
#
# A child forked by anything but mpguard (a stdlib fork Pool in the same
# program, os.fork()) would inherit our *Python-level* handlers.  A signal
# that lands between fork() and CPython's after-fork reset of the signal
# module trips the C flag that ``_PySignal_AfterFork`` then clears: the
# signal is lost, where SIG_DFL would have killed the child.  Seen here: a
# stdlib Pool's terminate() hung on a worker that lost its SIGTERM.  So
# while handlers are installed, every fork blocks the handled signals, and
# the child restores the dispositions it would have had without mpguard
# before unblocking them.  Guarded forks do the same themselves, with their
# own policy, and are skipped.

_installed: dict[signal.Signals, GuardHandler] = {}
# Per thread, keyed by thread ident, rather than a threading.local: the
# parent's after-fork hook runs on every fork in the program, and reading a
# threading.local attribute there cost each fork about 45 µs (measured; a
# plain dict's truth test costs nothing).  A fork child keeps its parent
# thread's ident (pthread_self() is the same in the child).
_guarded: set[int] = set()  # threads inside a guarded fork
_masks: dict[int, set[int]] = {}  # masks before_fork saved, by thread


_pending: list[int] = []  # signals GuardHandler deferred (guarded forks)


def guarded_fork(active: bool) -> None:
    """Mark the calling thread as inside a guarded fork: the at-fork hooks
    skip it, and mpguard's handlers wait until it ends.

    Ending the last one sends the deferred signals to this process again:
    Python runs handlers in the main thread, which may not be this one.
    """
    if active:
        _guarded.add(threading.get_ident())
        return
    _guarded.discard(threading.get_ident())
    while _pending and not _guarded:
        try:
            sig = _pending.pop(0)
        except IndexError:  # another thread took it
            break
        os.kill(os.getpid(), sig)


def before_fork() -> None:
    """at-fork hook: block the handled signals around a non-guarded fork."""
    if _installed:
        tid = threading.get_ident()
        if tid not in _guarded:
            _masks[tid] = _compat.sigmask(signal.SIG_BLOCK, _installed)


def after_fork_in_parent() -> None:
    """at-fork hook: restore the mask in the parent."""
    if _masks:
        mask = _masks.pop(threading.get_ident(), None)
        if mask is not None:
            _compat.sigmask(signal.SIG_SETMASK, mask)


def after_fork_in_child() -> None:
    """at-fork hook: pre-mpguard dispositions, then unblock (child)."""
    tid = threading.get_ident()
    mask = _masks.pop(tid, None) if _masks else None
    if tid in _guarded:
        # A guarded fork's child keeps its parent's resource tracker
        # (_compat.fork_keeps_tracker).  Said again here: a tracker module
        # imported after this hook was registered has its at-fork handler
        # run after this one, and the parent, which looks the module up
        # before forking, may not have seen it yet.
        _compat.fork_keeps_tracker(True)
    # Other threads' entries are of forks that are not this child's, and the
    # deferred signals were the parent's.
    _masks.clear()
    _guarded.clear()
    _pending.clear()
    if mask is not None:
        try:
            # Through the C functions under ``signal``: the wrappers' enum
            # conversions write pages this child then copies (copy-on-
            # write), and every plain os.fork() of a guarded program paid
            # for them: about 40 page faults and 0.1 ms a fork here.
            for sig, h in _installed.items():
                _compat.set_raw_handler(sig, _compat.raw_handler(h.previous))
        finally:
            _compat.sigmask(signal.SIG_SETMASK, mask)
    # Whatever kind of child this is, it owns none of the parent's handlers.
    _installed.clear()


def install(
    sigs: tuple[signal.Signals, ...],
    owner_pid: int,
    on_signal: Callable[[int, bool], None],
) -> dict[signal.Signals, GuardHandler]:
    """Install handlers for *sigs*; return those actually installed.

    Warns (GuardDegradedWarning) instead of installing when called from a
    non-main thread, or when a handler installed from C is in place.
    """
    if not sigs:
        return {}
    if threading.current_thread() is not threading.main_thread():
        names = ", ".join(s.name for s in sigs)
        warnings.warn(
            f"mpguard: signal handlers for {names} not installed: the guard "
            "was set up from a non-main thread, and Python installs handlers "
            "only in the main thread; parent death is still covered by the "
            "guardian, but a SIGTERM will not give workers a grace period. "
            "Call mpguard.install_handlers() from the main thread first.",
            GuardDegradedWarning,
            stacklevel=4,
        )
        return {}
    installed: dict[signal.Signals, GuardHandler] = {}
    for sig in sigs:
        previous = signal.getsignal(sig)
        if isinstance(previous, GuardHandler):
            previous = previous.previous  # re-install: keep the user's one
        if previous == signal.SIG_IGN:
            log.debug("not handling %s: it is ignored (SIG_IGN)", sig.name)
            continue
        if previous is None:
            warnings.warn(
                f"mpguard: not handling {sig.name}: its handler was "
                "installed from C and could not be chained",
                GuardDegradedWarning,
                stacklevel=4,
            )
            continue
        handler = GuardHandler(sig, previous, owner_pid, on_signal)
        signal.signal(sig, handler)
        installed[sig] = handler
        _installed[sig] = handler
        log.debug("installed handler for %s", signal_name(sig))
    return installed


def installed() -> bool:
    """True while handlers mpguard installed are in place in this process.

    Asked on every guarded start: a truth test, not a copy of the table.
    """
    return bool(_installed)


def uninstall() -> bool:
    """Restore the dispositions replaced by :func:`install` (main thread).

    Returns True if handlers were installed.
    """
    if not _installed or threading.current_thread() is not threading.main_thread():
        return False
    for sig, handler in list(_installed.items()):
        # Only restore what is still ours: a handler the user installed
        # after us stays.
        previous = handler.previous
        if signal.getsignal(sig) is handler:
            signal.signal(sig, previous)
        del _installed[sig]
    return True
