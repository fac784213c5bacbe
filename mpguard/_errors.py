"""Exceptions and warnings raised by mpguard.

Every error derives from :class:`MPGuardError` and carries the process it is
about (``pid``), its process group (``pgid``), and how it ended (``exitcode``
and ``signal``, decoded by name).  Errors are picklable, because they may cross
a process boundary.
"""

from __future__ import annotations

import signal as _signal

# typing.TYPE_CHECKING without importing typing: this module is on
# ``import mpguard``'s path, which stays within 5 ms of multiprocessing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "EscalationWarning",
    "GuardClosedError",
    "GuardDegradedWarning",
    "GuardSetupError",
    "MPGuardError",
    "PoolTerminatedError",
    "TaskError",
    "TaskTimeoutError",
    "UnsupportedPlatformError",
    "WorkerLostError",
    "signal_name",
]


def signal_name(sig: int | None) -> str | None:
    """Return the name of signal *sig* (``"SIGKILL"``), or ``None``."""
    if sig is None:
        return None
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class MPGuardError(Exception):
    """Base class of every error raised by mpguard.

    Args:
        msg: a short lowercase clause saying what happened.
        pid: the process the error is about.
        pgid: the process group involved.
        exitcode: the exit code, negative for "killed by a signal" as in
            :attr:`multiprocessing.Process.exitcode`.
        signal: the signal involved; derived from a negative *exitcode* when
            not given.
        hint: an optional sentence with a remedy, appended to the message.
    """

    __module__ = "mpguard"

    def __init__(
        self,
        msg: str = "",
        *,
        pid: int | None = None,
        pgid: int | None = None,
        exitcode: int | None = None,
        signal: int | None = None,
        hint: str | None = None,
    ) -> None:
        if signal is None and exitcode is not None and exitcode < 0:
            signal = -exitcode
        self.msg = msg
        self.pid = pid
        self.pgid = pgid
        self.exitcode = exitcode
        self.signal: _signal.Signals | int | None = _as_signal(signal)
        self.hint = hint
        super().__init__(msg)

    def _details(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.pid is not None:
            details["pid"] = self.pid
        if self.pgid is not None:
            details["pgid"] = self.pgid
        if self.signal is not None:
            details["signal"] = signal_name(self.signal)
        elif self.exitcode is not None:
            details["exitcode"] = self.exitcode
        return details

    def __str__(self) -> str:
        details = ", ".join(f"{k}={v}" for k, v in self._details().items())
        text = f"{self.msg} ({details})" if details else self.msg
        if self.hint:
            text = f"{text}; {self.hint}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only constructor defeats BaseException's default
        # pickling, which replays positional ``args`` only.
        return (
            _rebuild,
            (type(self), self.msg, self._state()),
        )

    def _state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "exitcode": self.exitcode,
            "signal": None if self.signal is None else int(self.signal),
            "hint": self.hint,
        }


def _as_signal(sig: int | None) -> _signal.Signals | int | None:
    if sig is None:
        return None
    try:
        return _signal.Signals(sig)
    except ValueError:
        return sig


def _rebuild(cls: type[MPGuardError], msg: str, state: dict[str, Any]) -> MPGuardError:
    return cls(msg, **state)


class GuardSetupError(MPGuardError, OSError):
    """Protection could not be set up (guardian, process group, pidfd ...).

    mpguard never runs a child unprotected after such a failure: the child
    is killed and reaped before this is raised.
    """

    __module__ = "mpguard"

    def __init__(
        self,
        msg: str = "",
        *,
        errno: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(msg, **kwargs)
        self.errno = errno

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["errno"] = self.errno
        return state


class UnsupportedPlatformError(MPGuardError, NotImplementedError):
    """The platform lacks a capability mpguard needs (for example fork)."""

    __module__ = "mpguard"


class GuardClosedError(MPGuardError, RuntimeError):
    """A guarded child was started while the guard was tearing down."""

    __module__ = "mpguard"


class TaskError(MPGuardError):
    """Base class of the errors a pool delivers *as a task's result*.

    A pool sets one of these as the outcome of the one task it concerns,
    the way a task's own exception is delivered: ``map()`` raises it,
    ``imap()`` raises it at that task's position, ``AsyncResult.get()``
    raises it and ``error_callback`` receives it.  The other tasks are not
    affected.

    Args:
        task: a short description of the task, such as ``"square(3)"`` or
            ``"square on 25 items (chunk 2)"``.
        **kwargs: as for :class:`MPGuardError`.
    """

    __module__ = "mpguard"

    def __init__(self, msg: str = "", *, task: str | None = None, **kwargs: Any):
        super().__init__(msg, **kwargs)
        self.task = task

    def _details(self) -> dict[str, Any]:
        details = super()._details()
        if self.task is not None:
            details["task"] = self.task
        return details

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["task"] = self.task
        return state


class WorkerLostError(TaskError):
    """The worker running a task died before returning its result.

    Raised for the task the worker had taken, and only that one: SIGKILL,
    the OOM killer, ``os._exit()``, ``sys.exit()`` or a crash in C code.
    ``exitcode`` and ``signal`` say how the worker ended::

        worker died while running a task (pid=4242, signal=SIGKILL, task=f(3))
    """

    __module__ = "mpguard"


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than its timeout; its worker and the worker's
    descendants were SIGKILLed.

    Args:
        timeout: the limit, in seconds.
        **kwargs: as for :class:`TaskError`.
    """

    __module__ = "mpguard"

    def __init__(self, msg: str = "", *, timeout: float | None = None, **kwargs: Any):
        super().__init__(msg, **kwargs)
        self.timeout = timeout

    def _details(self) -> dict[str, Any]:
        details = super()._details()
        if self.timeout is not None:
            details["timeout"] = f"{self.timeout:g}s"
        return details

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["timeout"] = self.timeout
        return state


class PoolTerminatedError(TaskError):
    """The pool was terminated before this task finished.

    Set on every task still pending when ``terminate()`` runs (including
    leaving a ``with`` block), so that no ``get()`` waits forever.
    """

    __module__ = "mpguard"


class GuardDegradedWarning(RuntimeWarning):
    """Protection is only partly available; the message names what is missing."""

    __module__ = "mpguard"


class EscalationWarning(RuntimeWarning):
    """Processes outlived SIGTERM and the grace period, and were SIGKILLed."""

    __module__ = "mpguard"
