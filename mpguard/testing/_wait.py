"""Polling against a monotonic deadline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: The default patience of every check, in seconds (psutil's tests use the
#: same 5 s ``GLOBAL_TIMEOUT``).
SHORT = 5.0
#: The patience for a whole scenario to get somewhere (CPython's test suite
#: calls it ``LONG_TIMEOUT``).
LONG = 30.0


def wait_for(
    pred: Callable[[], T], timeout: float = SHORT, interval: float = 0.005
) -> T:
    """Call *pred* until it returns something truthy or *timeout* seconds pass.

    Returns the last value *pred* returned: truthy if the condition was met,
    falsy if the deadline passed first.  *pred* is always called at least
    once, and its last call starts after the deadline, so a condition that
    became true during the last sleep is not missed.  The deadline is on
    :func:`time.monotonic`, so a change of the wall clock cannot stretch or
    cut it.

    Example::

        assert wait_for(lambda: not alive(pid), timeout=2.0)
    """
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() > deadline
        value = pred()
        if value or late:
            return value
        time.sleep(interval)
