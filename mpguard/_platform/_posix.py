"""Portable POSIX fallbacks (macOS, BSD), built on psutil."""

from __future__ import annotations

import os

from . import ProcEntry

__all__ = ["children_of", "group_has_others", "process_table", "subtree"]


def process_table() -> list[ProcEntry]:
    """Return pid, ppid, pgid and zombie state of every process (psutil)."""
    import psutil  # noqa: PLC0415 - keep ``import mpguard`` light

    out: list[ProcEntry] = []
    for proc in psutil.process_iter(["ppid", "status", "create_time"]):
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            continue
        out.append(
            ProcEntry(
                pid=proc.pid,
                ppid=proc.info["ppid"] or 0,
                pgid=pgid,
                zombie=proc.info["status"] == psutil.STATUS_ZOMBIE,
                start=proc.info["create_time"] or 0.0,
            )
        )
    return out


def group_has_others(pgid: int, leader: int) -> bool:
    """Whether a live process other than *leader* is in group *pgid*."""
    return any(
        e.pgid == pgid and e.pid != leader and not e.zombie for e in process_table()
    )


def children_of(pid: int) -> list[int] | None:
    """No cheap read of one process's children here: None.

    *pid* is unused: the signature is the Linux one.
    """
    del pid
    return None


def subtree(root: int) -> list[ProcEntry] | None:
    """No cheap subtree read here: ``None`` (the caller scans the table).

    *root* is unused: the signature is the Linux one.
    """
    del root
    return None
