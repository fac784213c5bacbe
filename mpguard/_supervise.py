"""``mpguard run -- CMD``: a process supervisor, like tini, in a pip install.

Discussion
----------
In a container the program is PID 1, and PID 1 has two jobs most programs
do not do: it reaps every orphan the kernel reparents to it (or zombies
pile up), and it gets no default signal actions (a SIGTERM it does not
handle is ignored, so ``docker stop`` waits its 10 s and SIGKILLs).  tini
and dumb-init exist for that.  ``mpguard run`` does the same, and takes the
command's whole tree down with it however it ends:

* the command runs in the guard's process group (joined before exec, by
  ``posix_spawn``), so the guardian kills it and everything it started that
  stayed in the group even if ``mpguard run`` is SIGKILLed;
* SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are
  forwarded to that group (the guardian, its leader, ignores them);
* every zombie it adopts is reaped, as PID 1 or with ``--subreaper``
  (``PR_SET_CHILD_SUBREAPER``), without taking the guardian's status from
  the guard;
* once the command exits, what it left in the group gets SIGTERM, and
  SIGKILL after the grace period;
* it exits with the command's status, 128+N if the command died of signal
  N, as a shell reports it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import time
from typing import TYPE_CHECKING

from . import _config, _platform
from ._errors import MPGuardError
from ._group import acquire

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["FORWARDED", "CommandError", "supervise"]

#: Signals forwarded to the command's group: those whose default action
#: ends a process (the ones a guard may handle), and SIGWINCH for a
#: terminal's size.
FORWARDED = (*sorted(_config.ALLOWED_SIGNALS), signal.SIGWINCH)

#: Reset to their default action in the command: Python ignores SIGPIPE
#: and SIGXFSZ, and an ignored signal survives exec (``subprocess`` resets
#: the same two, ``restore_signals=True``).
_RESET = (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ)


class CommandError(MPGuardError):
    """The command could not be started; ``exitcode`` is the shell's
    (127: not found, 126: found but not executable)."""


def supervise(argv: Sequence[str], *, grace: float, subreaper: bool) -> int:
    """Run *argv* under the guard until it exits; its exit status.

    Raises:
        CommandError: the command cannot be executed.
        ValueError: *grace* is negative or *argv* empty.
        MPGuardError: ``--subreaper`` is not available here.
    """
    if not argv:
        msg = "no command given after --"
        raise ValueError(msg)
    if grace < 0:
        msg = f"the grace period must be >= 0, not {grace:g}"
        raise ValueError(msg)
    exe = _resolve(argv[0])
    if subreaper:
        _platform.set_child_subreaper(True)
    # Signals are forwarded, not a teardown of the group.
    _config.configure(parent_handlers=False)
    guard = acquire()
    pending: list[int] = []
    child = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        if child:
            try:
                os.killpg(guard.pgid, signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        child = _spawn(exe, argv, guard.pgid)
    except BaseException:
        guard.unhold()
        raise
    for signum in pending:  # arrived before the command existed
        os.killpg(guard.pgid, signum)
    code = _reap_until(child, guard.pgid)
    guard.unhold()
    guard.shutdown(grace)  # the command's leftovers: SIGTERM, grace, SIGKILL
    _reap_all(guard.pgid)
    return code


def _resolve(cmd: str) -> str:
    """The program *cmd* names, or CommandError with the shell's status."""
    path = cmd if "/" in cmd else shutil.which(cmd)
    if path is None:
        msg = f"{cmd}: command not found"
        raise CommandError(msg, exitcode=127)
    if not os.path.exists(path):
        msg = f"{cmd}: No such file or directory"
        raise CommandError(msg, exitcode=127)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        msg = f"{cmd}: Permission denied"
        raise CommandError(msg, exitcode=126)
    return path


def _spawn(exe: str, argv: Sequence[str], pgid: int) -> int:
    try:
        return _platform.spawn_in_group(exe, list(argv), (), pgid, _RESET)
    except MPGuardError as e:
        cause = e.__cause__
        if isinstance(cause, OSError) and cause.errno is not None:
            code = 127 if cause.errno == errno.ENOENT else 126
            msg = f"{argv[0]}: {os.strerror(cause.errno)}"
            raise CommandError(msg, exitcode=code) from e
        raise


def _reap_until(child: int, guardian: int) -> int:
    """Reap adopted zombies until *child* exits; its shell-style status.

    The guardian is never reaped here: the guard watches and reaps it.
    """
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # pragma: no cover - the guardian is a child
            time.sleep(0.05)
            continue
        if info is None or info.si_pid == guardian:  # pragma: no cover
            time.sleep(0.05)
            continue
        _, status = os.waitpid(info.si_pid, 0)
        if info.si_pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _reap_all(guardian: int) -> None:
    """Reap what is left to reap now, the guardian's status aside."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == guardian:
            return
        os.waitpid(info.si_pid, 0)


def run_main(argv: Sequence[str], *, grace: float, subreaper: bool) -> int:
    """:func:`supervise` for the command line: errors are one line."""
    try:
        return supervise(argv, grace=grace, subreaper=subreaper)
    except CommandError as e:
        print(f"mpguard run: {e.args[0]}", file=sys.stderr)
        return e.exitcode if e.exitcode is not None else 126
