"""The escalation ladder: SIGTERM, wait up to ``grace``, SIGKILL, reap.

One ladder serves both the pool (its workers and their descendants) and the
guard (its whole group), in the shape of systemd's ``TimeoutStopSec`` and
billiard's ``_trywaitkill``.  SIGKILL is sent from here, outside the
workers, so the deadline holds even for a worker stuck in C code.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from multiprocessing.connection import wait as mp_wait
from typing import TYPE_CHECKING, Any

from . import _platform
from ._errors import EscalationWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import psutil

__all__ = ["Target", "escalate", "kill_tree", "snapshot_descendants"]

log = logging.getLogger("mpguard")

# After SIGKILL a process is gone as soon as the kernel runs it; this only
# bounds waiting for one in uninterruptible sleep (D state).
KILL_WAIT = 0.25
_TICK = 0.005


class Target:
    """What a ladder acts on: how to signal it and how to tell it is gone."""

    def __init__(
        self,
        label: str,
        send: Callable[[int], None],
        remaining: Callable[[], int],
        waitables: Callable[[], list[Any]],
    ) -> None:
        self.label = label
        self.send = send
        self.remaining = remaining
        self.waitables = waitables


def _wait_gone(target: Target, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        # Wait for our own children one at a time, as the stdlib's joins do:
        # each pidfd (or sentinel) wakes us exactly when that child exits,
        # without re-polling every child on each wake-up while the kernel
        # is busy tearing the others down.
        for fd in target.waitables():
            left = deadline - time.monotonic()
            if left <= 0 or not mp_wait([fd], left):
                break
        if not target.remaining():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _TICK))  # descendants: not our children


def escalate(target: Target, grace: float) -> bool:
    """SIGTERM, wait up to *grace*, SIGKILL.  Return True if it escalated."""
    log.debug("SIGTERM to %s", target.label)
    target.send(signal.SIGTERM)
    if _wait_gone(target, grace):
        log.debug("%s gone after SIGTERM", target.label)
        return False
    n = target.remaining()
    log.debug("SIGKILL to %s: %d still alive after %.2fs", target.label, n, grace)
    warnings.warn(
        f"mpguard: {n} process(es) of {target.label} outlived SIGTERM and "
        f"the {grace:g}s grace period; sent SIGKILL",
        EscalationWarning,
        stacklevel=3,
    )
    target.send(signal.SIGKILL)
    _wait_gone(target, KILL_WAIT)
    return True


def snapshot_descendants(
    pids: Iterable[int], *, exclude_pgid: int | None = None
) -> list[psutil.Process]:
    """psutil handles on every live descendant of *pids*, taken now.

    The snapshot is taken *before* any signal: once a worker dies its
    children are reparented and no longer found below it.  ``exclude_pgid``
    drops members of that group (they are signalled with the group).  psutil
    handles remember each process's start time, so signalling one later
    cannot hit a recycled pid.
    """
    roots = list(pids)
    if not roots:
        return []
    table = _platform.process_table()
    pgids = {e.pid: e.pgid for e in table if not e.zombie}
    found = [
        pid
        for pid in _platform.descendants(roots, table)
        if pid in pgids and pgids[pid] != exclude_pgid
    ]
    if not found:
        return []
    import psutil  # noqa: PLC0415 - only when there is a tree to walk

    out = []
    for pid in found:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


def procs_alive(procs: Sequence[psutil.Process]) -> int:
    """How many of *procs* still run (zombies count as gone)."""
    import psutil  # noqa: PLC0415

    n = 0
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                n += 1
        except psutil.Error:
            continue
    return n


def signal_procs(procs: Sequence[psutil.Process], sig: int) -> None:
    """Send *sig* to each of *procs*; the ones already gone are skipped."""
    import psutil  # noqa: PLC0415

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            continue


def kill_tree(popens: Sequence[Any], grace: float, label: str) -> bool:
    """Tear down guarded children *popens* and all their descendants.

    Descendants include the ones that left the group with ``setsid``.
    Returns True if SIGKILL was needed.
    """
    live = [p for p in popens if p.returncode is None]
    if not live:
        return False
    desc = snapshot_descendants(p.pid for p in live)

    def send(sig: int) -> None:
        for p in live:
            p._send_signal(sig)
        signal_procs(desc, sig)

    def remaining() -> int:
        n = sum(1 for p in live if p.poll() is None)
        return n + (procs_alive(desc) if desc else 0)

    def waitables() -> list[Any]:
        return [p.sentinel for p in live if p.returncode is None]

    return escalate(Target(label, send, remaining, waitables), grace)
