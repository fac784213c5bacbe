"""A process tree as ``mpguard tree`` prints it, marked for what matters.

One row per process: pid, ppid, process group, session, state and command
line, indented below its parent, with marks::

        PID    PPID    PGID     SID S  COMMAND
       4242    4200    4242    4200 S  python app.py  [group-leader]
       4250    4242    4249    4200 S    sleep 600  [guarded(pgid=4249)]
       4251    4242    4242    4200 Z    [true]  [zombie]

Marks: ``zombie`` (exited, not reaped), ``orphan`` (reparented after its
parent died), ``group-leader``, ``guardian`` (an mpguard guardian) and
``guarded(pgid=N)`` (in a guardian's group).  Reads ``/proc`` (Linux).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

__all__ = ["HEADER", "format_line", "guardians", "marks", "read_row", "render", "table"]

HEADER = f"{'PID':>7} {'PPID':>7} {'PGID':>7} {'SID':>7} S  COMMAND"

#: How a guardian shows in its command line: ``perl -f .../_guardian_main.pl``
#: or ``python -I -S .../_guardian_main.py``.
GUARDIAN_MARK = "/_guardian_main.p"
_PYTHON_GUARDIAN = b"/_guardian_main.py"

Row = dict[str, Any]


def read_row(pid: int) -> Row | None:
    """pid, ppid, pgid, sid, state and command line of *pid*; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    name = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
    fields = stat[stat.rfind(b")") + 2 :].split()
    args = raw.rstrip(b"\0").split(b"\0")
    if len(args) > 5 and args[-4].endswith(_PYTHON_GUARDIAN) and b"-c" in args[:-4]:
        # A python guardian (``_guardian.command``: its script, owner,
        # lifeline and grace last): its -c bootstrap says nothing a reader needs, and
        # would push the script and the owner's pid out of a cut line.
        i = args.index(b"-c")
        del args[i : i + 2]
    # A zombie has no command line left: show its name, as ps does.
    cmd = b" ".join(args).decode(errors="replace").strip() or f"[{name}]"
    return {
        "pid": pid,
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "sid": int(fields[3]),
        "state": fields[0].decode(),
        "cmd": cmd,
    }


def table(pids: Iterable[int] | None = None) -> dict[int, Row]:
    """Rows of *pids* (default: every process), by pid."""
    if pids is None:
        pids = (int(n) for n in os.listdir("/proc") if n.isdigit())
    out = {}
    for pid in pids:
        row = read_row(pid)
        if row is not None:
            out[pid] = row
    return out


def guardians(rows: Mapping[int, Row]) -> set[int]:
    """The mpguard guardians among *rows*."""
    return {p for p, r in rows.items() if GUARDIAN_MARK in r["cmd"]}


def marks(
    row: Row, guardian_pids: Collection[int], orphans: Collection[int] | None = None
) -> list[str]:
    """The marks of *row*.  *orphans*: the pids to mark ``orphan``; by
    default, those reparented to PID 1."""
    out = []
    if row["state"] in ("Z", "X"):
        out.append("zombie")
    if (orphans is None and row["ppid"] == 1 and row["pid"] != 1) or (
        orphans is not None and row["pid"] in orphans
    ):
        out.append("orphan")
    if row["pid"] == row["pgid"]:
        out.append("group-leader")
    if row["pid"] in guardian_pids:
        out.append("guardian")
    elif row["pgid"] in guardian_pids:
        out.append(f"guarded(pgid={row['pgid']})")
    return out


def render(
    roots: Iterable[int],
    rows: Mapping[int, Row],
    *,
    orphans: Collection[int] | None = None,
    extra: Mapping[int, list[str]] | None = None,
) -> list[tuple[int, Row, list[str]]]:
    """Walk *rows* from *roots*, parents before children: (depth, row,
    marks) for each.  *extra*: more marks by pid."""
    below: dict[int, list[int]] = {}
    for r in rows.values():
        below.setdefault(r["ppid"], []).append(r["pid"])
    guards = guardians(rows)
    out: list[tuple[int, Row, list[str]]] = []
    seen: set[int] = set()

    def walk(pid: int, depth: int) -> None:
        seen.add(pid)
        row = rows[pid]
        m = marks(row, guards, orphans) + list((extra or {}).get(pid, ()))
        out.append((depth, row, m))
        for kid in sorted(below.get(pid, ())):
            if kid not in seen:
                walk(kid, depth + 1)

    for root in roots:
        if root in rows and root not in seen:
            walk(root, 0)
    return out


def format_line(depth: int, row: Row, row_marks: list[str], width: int = 100) -> str:
    """One line of the tree (see :data:`HEADER`)."""
    tail = f"  [{', '.join(row_marks)}]" if row_marks else ""
    return (
        f"{row['pid']:>7} {row['ppid']:>7} {row['pgid']:>7} {row['sid']:>7} "
        f"{row['state']}  {'  ' * depth}{row['cmd'][:width]}{tail}"
    )
