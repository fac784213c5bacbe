"""The escalation ladder: SIGTERM, wait up to ``grace``, SIGKILL, reap.

The one ladder every kill in mpguard climbs, in the shape of systemd's
``TimeoutStopSec`` and billiard's ``_trywaitkill``:

* pool ``terminate()``: the workers and their descendants (:func:`kill_tree`);
* signal teardown and exit: the guard's whole group (a :class:`Target` built
  by :func:`tree_target` with the group's id);
* task timeouts and a second SIGTERM: straight to SIGKILL, no wait
  (:func:`kill_now`).

Descendants are snapshot *before* the first signal: once a child dies its
own children are reparented and no longer found below it.  SIGKILL is sent
from here, outside the children, so the deadline holds even for a child
stuck in C code.
"""

from __future__ import annotations

import signal
import time
import warnings

from .. import _platform
from .._config import log
from .._errors import EscalationWarning

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    import psutil

    from ._children import GuardedChild

__all__ = [
    "Target",
    "escalate",
    "kill_now",
    "kill_tree",
    "pids_target",
    "procs_alive",
    "signal_procs",
    "snapshot_descendants",
    "tree_target",
]


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
            if left <= 0 or not _platform.wait_readable(fd, left):
                break
        if not target.remaining():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _TICK))  # descendants: not our children


def escalate(target: Target, grace: float, *, term: bool = True) -> bool:
    """SIGTERM, wait up to *grace*, SIGKILL, wait.  True if SIGKILL was sent.

    With *term* false the ladder starts at SIGKILL and does not wait: the
    caller reaps (a task timeout, a second terminating signal).
    """
    if not term:
        log.debug("SIGKILL to %s", target.label)
        target.send(signal.SIGKILL)
        return True
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
    if not roots or not _any_descendant(roots):
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


def _any_descendant(roots: list[int]) -> bool:
    """Whether any of *roots* has a child: the common pool worker has none,
    and reading its ``children`` files (Linux) is a few system calls where a
    scan of the whole process table reads every process (2 ms for 100).

    The kernel's children file may skip a child while a sibling exits
    (proc(5)), so "none" must be read twice; anything found, or no such
    files, means the full scan, which never misses a process that exists.
    """
    for _ in range(2):
        for root in roots:
            if _platform.children_of(root) != []:
                return True
    return False


def procs_alive(procs: Sequence[psutil.Process]) -> int:
    """How many of *procs* still run (zombies count as gone)."""
    if not procs:  # no psutil import (7 ms) for a tree with no descendants
        return 0
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
    if not procs:  # no psutil import (7 ms) for a tree with no descendants
        return
    import psutil  # noqa: PLC0415

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            continue


def tree_target(
    label: str, children: Sequence[GuardedChild], *, pgid: int | None = None
) -> Target:
    """A ladder target: *children*, everything below them, and group *pgid*.

    With *pgid* the group is signalled as a whole (its leader, the
    guardian, ignores SIGTERM and goes only with the final SIGKILL), and
    the snapshot keeps just the descendants that left the group
    (``setsid``); without it each child is signalled through its pidfd.
    Either way a descendant that called ``setsid`` is still found.
    """
    live = [c for c in children if c.returncode is None]
    desc = snapshot_descendants((c.pid for c in live), exclude_pgid=pgid)

    def send(sig: int) -> None:
        if pgid is not None:
            _platform.killpg(pgid, sig)
        else:
            for c in live:
                c.send_signal(sig)
        signal_procs(desc, sig)

    def remaining() -> int:
        n = sum(1 for c in live if c.poll() is None)
        if n or pgid is None:
            return n + (procs_alive(desc) if desc else 0)
        # Cheap checks first; read /proc in full only for a count.
        if not _platform.group_has_others(pgid, pgid):
            return procs_alive(desc) if desc else 0
        table = _platform.process_table()
        members = [pid for pid in _platform.group_members(pgid, table) if pid != pgid]
        return len(members) + (procs_alive(desc) if desc else 0)

    def waitables() -> list[Any]:
        return [c.sentinel for c in live if c.returncode is None]

    return Target(label, send, remaining, waitables)


def kill_tree(children: Sequence[GuardedChild], grace: float, label: str) -> bool:
    """Tear down *children* and all their descendants with the ladder.

    Descendants include the ones that left the group with ``setsid``.
    Returns True if SIGKILL was needed.
    """
    if not any(c.returncode is None for c in children):
        return False
    return escalate(tree_target(label, children), grace)


def kill_now(children: Sequence[GuardedChild]) -> None:
    """SIGKILL *children* and their descendants at once, without waiting.

    For a task that overran its timeout: the pool reaps the worker.
    """
    if any(c.returncode is None for c in children):
        escalate(tree_target("overrunning task", children), 0.0, term=False)


def pids_target(label: str, pids: Iterable[int]) -> Target:
    """A ladder target: processes *pids* and everything below them.

    For processes that are not guarded children (a task's leftovers, a dead
    worker's orphans): all of them are snapshot now as psutil handles, so a
    later signal cannot hit a recycled pid.
    """
    roots = list(pids)
    table = _platform.process_table()
    live = {e.pid for e in table if not e.zombie}
    wanted = [
        pid for pid in [*roots, *_platform.descendants(roots, table)] if pid in live
    ]
    procs: list[psutil.Process] = []
    if wanted:
        import psutil  # noqa: PLC0415 - only when there is something to kill

        for pid in wanted:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                continue
    return Target(
        label,
        lambda sig: signal_procs(procs, sig),
        lambda: procs_alive(procs) if procs else 0,
        list,
    )
