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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "GuardPolicy",
    "configure",
    "disabled_capabilities",
    "get_policy",
    "on_policy_change",
]

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


@dataclass(frozen=True)
class GuardPolicy:
    """What the process-wide guard does.

    Attributes:
        grace: seconds between SIGTERM and SIGKILL when a group or a pool is
            torn down.
        signals: signals handled in the parent.  SIGINT raises
            KeyboardInterrupt as usual; every other one tears the group down
            and then ends the parent with the same signal.  Children start
            with these at their default action either way.
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
