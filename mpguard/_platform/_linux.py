"""Linux: read the process table, or one process's subtree, from ``/proc``."""

from __future__ import annotations

import os

from . import ProcEntry

__all__ = ["children_of", "group_has_others", "process_table", "subtree"]


def _entry(pid: int) -> ProcEntry | None:
    """One ``/proc/<pid>/stat`` read: pid, ppid, pgid, zombie state, start."""
    try:
        # Raw os.open/os.read: no buffered file object per process.
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:  # exited while we listed
        return None
    try:
        data = os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name is in parentheses and may itself contain spaces and
    # parentheses: split after the last ')'.  Field 22, the start time in
    # clock ticks since boot, tells a recycled pid from the process it had.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcEntry(
            pid=pid,
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            zombie=fields[0] in (b"Z", b"X"),
            start=float(fields[19]),
        )
    except (IndexError, ValueError):  # pragma: no cover - torn read
        return None


def process_table() -> list[ProcEntry]:
    """Return pid, ppid, pgid and zombie state of every process.

    One ``/proc/<pid>/stat`` read per process gives all four fields, which is
    several times cheaper than building psutil objects for a tree walk that
    runs on every pool terminate.
    """
    out: list[ProcEntry] = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            entry = _entry(int(name))
            if entry is not None:
                out.append(entry)
    return out


def group_has_others(pgid: int, leader: int) -> bool:
    """Whether a live process other than *leader* is in group *pgid*.

    One ``getpgid(2)`` per process, with no file opened: a tenth of the
    cost of :func:`process_table` (0.05 against 0.5 ms for 115 processes),
    which a guarded program paid at exit to learn that its group is empty.
    A member found is read in full: a zombie does not count.
    """
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == leader:
            continue
        try:
            if os.getpgid(pid) != pgid:
                continue
        except OSError:  # exited while we listed
            continue
        entry = _entry(pid)
        if entry is not None and entry.pgid == pgid and not entry.zombie:
            return True
    return False


def _children_files() -> bool:
    # /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN, which
    # common distribution kernels set, but not every kernel (proc(5)).
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


_HAVE_CHILDREN_FILES = _children_files()


def _children(pid: int) -> list[int]:
    try:
        # A task directory links to itself, its parent and one entry per
        # thread: a single-threaded process (the common pool worker) is
        # read without listing it, 1 system call instead of 4, which a
        # pool's terminate() pays twice per worker while the workers it is
        # about to kill still have the CPUs.
        if os.stat(f"/proc/{pid}/task").st_nlink == 3:
            tids = [str(pid)]
        else:
            tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    # A child belongs to the thread that forked it, so every thread's file
    # is read (proc(5): "children").
    for tid in tids:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY)
        except OSError:
            continue
        data = b""
        try:
            # Whole before split: a pid may straddle two reads.
            while chunk := os.read(fd, 65536):
                data += chunk
        except OSError:
            pass
        finally:
            os.close(fd)
        out.extend(int(p) for p in data.split())
    return out


def children_of(pid: int) -> list[int] | None:
    """*pid*'s children, from its ``children`` files; None without them."""
    if not _HAVE_CHILDREN_FILES:
        return None
    return _children(pid)


def subtree(root: int) -> list[ProcEntry] | None:
    """Every descendant of *root*, zombies included, parents first.

    Reads only *root*'s subtree (the ``children`` files), not all of
    ``/proc``: a few system calls for a small tree.  ``None`` if the kernel
    lacks those files.
    """
    if not _HAVE_CHILDREN_FILES:
        return None
    out: list[ProcEntry] = []
    todo = [root]
    seen = {root}
    while todo:
        for pid in _children(todo.pop()):
            if pid in seen:
                continue
            seen.add(pid)
            entry = _entry(pid)
            if entry is not None:
                out.append(entry)
                todo.append(pid)
    return out
