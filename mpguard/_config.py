"""The guard policy: grace period and the signals mpguard handles.

Environment variables are parsed here and nowhere else:

``MPGUARD_GRACE``
    default grace period in seconds (float, ``>= 0``).
``MPGUARD_PARENT_DEATH_GRACE``
    default :attr:`GuardPolicy.parent_death_grace` (float, 0 to 0.9).
``MPGUARD_DISABLE``
    comma-separated capabilities to treat as missing, for testing the
    fallbacks on Linux (``pidfd``).
"""

from __future__ import annotations

import math
import os
import signal
import sys

# typing.TYPE_CHECKING without importing typing (its import cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    _T = TypeVar("_T")

__all__ = [
    "GuardPolicy",
    "child_dispositions",
    "configure",
    "disabled_capabilities",
    "get_policy",
    "on_policy_change",
    "record",
    "replace",
]


def child_dispositions(
    signals: Iterable[int], *, pool_worker: bool
) -> tuple[tuple[int, Any], ...]:
    """``(signal, handler)``: what a guarded child does with each of the
    guarded *signals*.

    SIGTERM, SIGHUP, ...: the default action, which ends the child even in
    C code; never the parent's handler (an inherited handler that
    terminates "every child" is the terminate recursion trap).  SIGINT:
    ignored by pool workers (Ctrl-C is the parent's business, and no
    worker prints a KeyboardInterrupt traceback), Python's
    KeyboardInterrupt otherwise.
    """
    out = []
    for sig in sorted(signals):
        if sig == signal.SIGINT:
            handler = signal.SIG_IGN if pool_worker else signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        out.append((int(sig), handler))
    return tuple(out)


def _record(cls: Any) -> Any:
    """``@dataclass(frozen=True)`` for mpguard's records (:class:`GuardPolicy`,
    ``Capabilities``), without importing dataclasses: with the inspect
    module it pulls in, that cost every pool 3 ms to start.

    Fields are the class's annotations, in order, with the class attributes
    as defaults.  The instance is frozen and has ``__eq__``, ``__hash__``,
    ``__repr__``, ``__match_args__`` and pickling by field; :func:`replace`
    (and ``copy.replace`` on 3.13+) copies one with changes.  The type
    checker sees a frozen dataclass.
    """
    # Under `from __future__ import annotations`: strings, on 3.9-3.15.
    names = tuple(cls.__annotations__)
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        if len(args) > len(names):
            msg = f"{cls.__name__}() takes at most {len(names)} arguments"
            raise TypeError(msg)
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                what = "unexpected" if name not in names else "duplicate"
                msg = f"{cls.__name__}() got an {what} argument {name!r}"
                raise TypeError(msg)
            values[name] = value
        for name in names:
            if name not in values:
                if name not in defaults:
                    msg = f"{cls.__name__}() missing argument {name!r}"
                    raise TypeError(msg)
                values[name] = defaults[name]
            object.__setattr__(self, name, values[name])

    def __setattr__(self: Any, name: str, value: object) -> None:  # noqa: N807
        msg = f"cannot assign to field {name!r}"  # dataclasses' wording
        raise AttributeError(msg)

    def __delattr__(self: Any, name: str) -> None:  # noqa: N807
        msg = f"cannot delete field {name!r}"
        raise AttributeError(msg)

    def key(self: Any) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in names)

    def __eq__(self: Any, other: object) -> bool:  # noqa: N807
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(key(self) == key(other))

    def __repr__(self: Any) -> str:  # noqa: N807
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__qualname__}({shown})"

    def __reduce__(self: Any) -> tuple[Any, ...]:  # noqa: N807
        return (type(self), key(self))

    cls.__init__ = __init__
    cls.__setattr__ = __setattr__
    cls.__delattr__ = __delattr__
    cls.__eq__ = __eq__
    cls.__hash__ = lambda self: hash(key(self))
    cls.__repr__ = __repr__
    cls.__reduce__ = __reduce__
    setattr(cls, "__match_args__", names)  # noqa: B010 - mypy refuses the assignment
    # copy.replace() (3.13+), as on a dataclass.
    cls.__replace__ = lambda self, **changes: replace(self, **changes)
    cls._mpguard_fields = names
    return cls


if TYPE_CHECKING:

    @dataclass_transform(frozen_default=True)
    def record(cls: type[_T]) -> type[_T]:
        """A frozen dataclass, as far as the type checker knows."""

else:
    record = _record


def replace(obj: _T, **changes: object) -> _T:
    """A copy of the :func:`record` *obj* with *changes*
    (``dataclasses.replace``)."""
    values = {n: getattr(obj, n) for n in obj._mpguard_fields}  # type: ignore[attr-defined]
    values.update(changes)
    return type(obj)(**values)


class _Log:
    """The ``"mpguard"`` logger, without importing :mod:`logging` for it.

    Importing logging costs a program about 2 ms, and every pool, script
    and worker would pay it for records nobody reads: while logging is not
    imported, no handler or level can have been configured, and the
    logger's NullHandler (the logging HOWTO's advice for a library) would
    drop every record anyway.  Once the program imports logging, each call
    goes to the real logger.
    """

    __slots__ = ("_logger",)

    def __init__(self) -> None:
        self._logger: Any = None

    def _real(self) -> Any:
        logger = self._logger
        if logger is None and "logging" in sys.modules:
            import logging  # noqa: PLC0415 - already imported by the program

            logger = logging.getLogger("mpguard")
            if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
                logger.addHandler(logging.NullHandler())
            self._logger = logger
        return logger

    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        """``logging.Logger.debug`` once logging is imported."""
        logger = self._real()
        if logger is not None:
            # The caller's line in the record, not this one.
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            logger.debug(msg, *args, **kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        """``logging.Logger.warning`` once logging is imported."""
        logger = self._real()
        if logger is not None:
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            logger.warning(msg, *args, **kwargs)


#: mpguard's logger, for every module.
log = _Log()

DEFAULT_GRACE = 1.0
#: The longest parent-death grace: the group must be gone within 1 s of
#: the parent's death whatever the policy (the guardian needs the rest).
MAX_PARENT_DEATH_GRACE = 0.9
DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
)
# Signals whose default action ends the process, so that "tear the group
# down, then die of the same signal" is the faithful replacement.  SIGKILL
# and SIGSTOP cannot be caught; SIGCHLD and friends do not end a process.
ALLOWED_SIGNALS = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)


@record
class GuardPolicy:
    """What the process-wide guard does.

    Attributes:
        grace: seconds between SIGTERM and SIGKILL when a group or a pool is
            torn down.
        signals: signals handled in the parent.  SIGINT is passed on to
            the guarded children that are not pool workers (a terminal's
            Ctrl-C would not reach them: they left its foreground group),
            then raises KeyboardInterrupt as usual; every other one tears
            the group down and then ends the parent with the same signal.
            Children start with these at their default action either way.
        parent_handlers: install mpguard's handlers for *signals* in the
            parent.  False leaves the parent's signals to the application
            (Celery's warm and cold shutdown): the guardian still covers
            the parent's death, and children still start with *signals* at
            their default action, so an inherited handler never recurses.
        parent_death_grace: when the parent dies, seconds between the
            guardian's SIGTERM to the group and its SIGKILL.  0 (default):
            SIGKILL at once.  At most 0.9, so that the group is gone within
            1 s whatever the policy; a child that handles SIGTERM can clean
            up in that time.
    """

    grace: float = DEFAULT_GRACE
    signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS
    parent_handlers: bool = True
    parent_death_grace: float = 0.0


def validate_seconds(value: object, name: str, *, allow_zero: bool) -> float:
    """Return *value*, a duration named *name*, as a float.

    Raises TypeError for a non-number (``bool`` included) and ValueError
    for NaN, infinity, a negative value, or zero unless *allow_zero*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds (got {value!r})"
        raise TypeError(msg)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        rule = "a finite number >= 0" if allow_zero else "positive and finite"
        msg = f"{name} must be {rule} (got {value!r})"
        raise ValueError(msg)
    return seconds


def validate_grace(grace: object) -> float:
    """Return *grace* as a float, or raise ValueError/TypeError."""
    return validate_seconds(grace, "grace", allow_zero=True)


def validate_parent_death_grace(value: object) -> float:
    """Return *value* as a parent-death grace, or raise ValueError/TypeError."""
    seconds = validate_seconds(value, "parent_death_grace", allow_zero=True)
    if seconds > MAX_PARENT_DEATH_GRACE:
        msg = (
            f"parent_death_grace must be at most {MAX_PARENT_DEATH_GRACE} s, so "
            f"that the group is gone within 1 s of the parent's death (got {value!r})"
        )
        raise ValueError(msg)
    return seconds


def _validate_signals(sigs: Iterable[int]) -> tuple[signal.Signals, ...]:
    out: list[signal.Signals] = []
    for sig in sigs:
        try:
            s = signal.Signals(sig)
        except ValueError:
            msg = f"not a signal number (got {sig!r})"
            raise ValueError(msg) from None
        if s not in ALLOWED_SIGNALS:
            names = ", ".join(sorted(x.name for x in ALLOWED_SIGNALS))
            msg = f"mpguard cannot handle {s.name} (allowed: {names})"
            raise ValueError(msg)
        if s not in out:
            out.append(s)
    return tuple(out)


def _policy_from_env() -> GuardPolicy:
    policy = GuardPolicy()
    raw = os.environ.get("MPGUARD_GRACE")
    if raw is not None:
        try:
            policy = replace(policy, grace=validate_grace(float(raw)))
        except ValueError:
            msg = f"MPGUARD_GRACE must be a number of seconds >= 0 (got {raw!r})"
            raise ValueError(msg) from None
    raw = os.environ.get("MPGUARD_PARENT_DEATH_GRACE")
    if raw is not None:
        try:
            seconds = validate_parent_death_grace(float(raw))
        except ValueError:
            msg = (
                "MPGUARD_PARENT_DEATH_GRACE must be a number of seconds from 0 "
                f"to {MAX_PARENT_DEATH_GRACE} (got {raw!r})"
            )
            raise ValueError(msg) from None
        policy = replace(policy, parent_death_grace=seconds)
    return policy


_policy = _policy_from_env()


def get_policy() -> GuardPolicy:
    """Return the policy in force."""
    return _policy


def configure(
    *,
    grace: float | None = None,
    signals: Iterable[int] | None = None,
    parent_handlers: bool | None = None,
    parent_death_grace: float | None = None,
) -> GuardPolicy:
    """Change the process-wide guard policy.

    Call it before the first guarded child starts.  Handlers that are
    already installed are re-installed for the new signal set.

    Args:
        grace: seconds between SIGTERM and SIGKILL (default 1.0, or
            ``MPGUARD_GRACE``).
        signals: the signals to handle in the parent (default SIGTERM,
            SIGINT, SIGHUP).  An empty tuple installs no handler; parent
            death is still covered by the guardian.
        parent_handlers: False leaves the parent's signals to the program
            (see :class:`GuardPolicy`); handlers already installed are
            removed.
        parent_death_grace: seconds from SIGTERM to SIGKILL when the parent
            dies (default 0: SIGKILL at once; at most 0.9).  Applies to
            guards started from now on.

    Returns:
        The new policy.

    Raises:
        ValueError: an unknown or uncatchable signal, a negative grace, or
            a parent-death grace above 0.9 s.
        TypeError: a grace is not a number, or *parent_handlers* not a bool.
    """
    global _policy
    new = _policy
    if grace is not None:
        new = replace(new, grace=validate_grace(grace))
    if signals is not None:
        new = replace(new, signals=_validate_signals(signals))
    if parent_handlers is not None:
        flag: object = parent_handlers  # checked at run time: callers are untyped
        if not isinstance(flag, bool):
            msg = f"parent_handlers must be True or False (got {flag!r})"
            raise TypeError(msg)
        new = replace(new, parent_handlers=parent_handlers)
    if parent_death_grace is not None:
        new = replace(
            new, parent_death_grace=validate_parent_death_grace(parent_death_grace)
        )
    _policy = new
    for listener in list(_listeners):
        listener(new)
    return new


_listeners: list[Callable[[GuardPolicy], None]] = []


def on_policy_change(listener: Callable[[GuardPolicy], None]) -> None:
    """Call *listener(policy)* after every :func:`configure`.

    The guard registers here to re-install its handlers: this module sits
    below the guard and never imports it.
    """
    _listeners.append(listener)


def disabled_capabilities() -> frozenset[str]:
    """Capabilities forced off through ``MPGUARD_DISABLE`` (for tests)."""
    raw = os.environ.get("MPGUARD_DISABLE", "")
    return frozenset(x.strip() for x in raw.split(",") if x.strip())
