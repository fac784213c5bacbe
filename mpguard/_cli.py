"""The ``mpguard`` command.

    mpguard run [--grace S] [--subreaper] -- CMD [ARG...]
                                   run CMD supervised (signals forwarded,
                                   zombies reaped, its tree dies with it)
    mpguard doctor [--json]        what this machine offers the guard
    mpguard tree [PID] [--json]    the process tree, marked

Exit statuses: ``run``: the command's own, 128+N if it died of signal N,
126 if it cannot be executed (or the guard cannot be set up, say
``--subreaper`` where the kernel lacks it), 127 if it is not found; ``doctor``: 0 full
protection, 1 degraded; ``tree``: 0, 1 no such process; every command: 2
bad usage (a bad ``MPGUARD_*`` environment variable included).  Errors are
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from ._errors import MPGuardError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_DEGRADED, EXIT_USAGE = 0, 1, 2
EXIT_NO_PROCESS = 1
#: ``mpguard run``: the command cannot be started (as a shell's 126).
EXIT_CANNOT_RUN = 126

#: What each capability gives the guarantees, and the fallback without it.
MEANING: dict[str, tuple[str, str]] = {
    "fork": (
        "guarded children start and join one process group",
        "none: mpguard refuses to start (UnsupportedPlatformError)",
    ),
    "posix_spawn": (
        "guarded spawn/forkserver children join the group before they exec",
        "guarded-spawn and guarded-forkserver are unavailable",
    ),
    "pidfd": (
        "exact exit wake-ups; signals never hit a recycled pid",
        "exits are polled every 50 ms; parent death is seen through a "
        "pipe and getppid() within 1 s",
    ),
    "seqpacket": (
        "GuardedPool's per-worker channels of atomic messages",
        "datagram sockets with payloads passed as file descriptors",
    ),
    "subreaper": (
        "a killed Celery pool child's orphans are found and killed",
        "they live until the worker stops or dies",
    ),
    "memfd": (
        "large task payloads travel as unnamed memory files",
        "unlinked temporary files",
    ),
    "perl": (
        "the guardian runs in perl: 2 ms of CPU to start, 5 MiB resident",
        "the guardian runs in python -I -S: 15 ms of CPU to start, 8 MiB",
    ),
    "pidfd_group_signal": ("reported only", "not used"),
    "cgroup2": ("reported only", "not used"),
    "cgroup_kill": ("reported only", "not used"),
}

#: Capabilities without which protection is degraded.
REQUIRED = ("fork", "posix_spawn", "pidfd", "seqpacket", "subreaper")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mpguard: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from . import __version__  # noqa: PLC0415 - the package is loaded by now

    p = _Parser(prog="mpguard", description="Process pools that are safe to kill.")
    p.add_argument("--version", action="version", version=f"mpguard {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    d = sub.add_parser("doctor", help="what this machine offers the guard")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    t = sub.add_parser("tree", help="a process tree, with zombies, orphans and groups")
    t.add_argument("pid", nargs="?", type=int, help="root (default: this session)")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    r = sub.add_parser(
        "run",
        help="run a command supervised, like tini",
        usage="mpguard run [-h] [--grace S] [--subreaper] -- CMD [ARG...]",
        description=(
            "Run CMD in the guard's process group: SIGTERM, SIGINT, SIGHUP, "
            "SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to it, "
            "adopted zombies are reaped (as PID 1 or with --subreaper), what "
            "CMD leaves behind is killed after the grace period, and its "
            "tree dies with mpguard run however that ends.  Exit status: "
            "CMD's, 128+N if it died of signal N, 126 not executable (or "
            "no protection could be set up), 127 not found, 2 bad usage."
        ),
    )
    r.add_argument(
        "--grace",
        type=_grace,
        default=1.0,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL for leftovers (default 1)",
    )
    r.add_argument(
        "--subreaper",
        action="store_true",
        help="adopt and reap the command's orphans when not PID 1",
    )
    r.add_argument(
        "command_line", nargs=argparse.REMAINDER, metavar="CMD", help="the command"
    )
    return p


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number of seconds: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not value >= 0:  # also NaN
        msg = f"must be >= 0, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mpguard`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        # The MPGUARD_* settings are read on first use, not at import: a
        # bad one is named here, in one line, before any command runs.
        from ._config import get_policy  # noqa: PLC0415

        get_policy()
    except ValueError as e:
        print(f"mpguard: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run(parser, args)
    try:
        if args.command == "doctor":
            return doctor(as_json=args.json)
        if args.command == "tree":
            return tree(args.pid, as_json=args.json)
    except BrokenPipeError:
        # `mpguard tree | head`: the reader is gone; say nothing more (and
        # keep the interpreter's final flush from raising again).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    _parser().print_help()
    return EXIT_USAGE


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._supervise import run_main  # noqa: PLC0415 - only for this command

    cmd = list(args.command_line)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        parser.error("run: no command given after --")
    try:
        return run_main(cmd, grace=args.grace, subreaper=args.subreaper)
    except MPGuardError as e:  # no subreaper here, no guard
        print(f"mpguard run: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN


# --- doctor -----------------------------------------------------------------------


def doctor(*, as_json: bool) -> int:
    """Print the capabilities record and what it means; 0 if nothing that
    the guarantees need is missing, else 1."""
    from . import START_METHODS, _compat, capabilities  # noqa: PLC0415

    caps = capabilities().as_dict()
    methods = [
        m
        for m in START_METHODS
        if m != "guarded-forkserver" or _compat.FORKSERVER_SUPPORTED
    ]
    missing = [name for name in REQUIRED if not caps.get(name)]
    if as_json:
        out = {"capabilities": caps, "start_methods": methods, "missing": missing}
        print(json.dumps(out, indent=2, default=list))
    else:
        py = ".".join(map(str, caps["python"]))  # type: ignore[call-overload]
        print(f"mpguard on {caps['system']} {caps['kernel']}, Python {py}")
        for name, (gives, fallback) in MEANING.items():
            ok = bool(caps.get(name))
            mark = "yes" if ok else "NO "
            print(f"  {mark} {name:<19} {gives if ok else fallback}")
        print(f"  start methods: {', '.join(methods)}")
        if missing:
            print(f"degraded: {', '.join(missing)} missing")
        else:
            print("full protection")
    return EXIT_DEGRADED if missing else EXIT_OK


# --- tree ---------------------------------------------------------------------------


def tree(pid: int | None, *, as_json: bool) -> int:
    """Print the tree under *pid* (default: the caller's session)."""
    if not os.path.isdir("/proc"):
        print("mpguard: tree needs /proc (Linux)", file=sys.stderr)
        return EXIT_USAGE
    from .testing import _tree  # noqa: PLC0415 - only for this command

    table = _tree.table()
    if pid is not None:
        if pid not in table:
            print(f"mpguard: no process {pid}", file=sys.stderr)
            return EXIT_NO_PROCESS
        roots = [pid]
    else:
        sid = os.getsid(0)
        members = {p for p, r in table.items() if r["sid"] == sid}
        roots = sorted(p for p in members if table[p]["ppid"] not in members)
    rows = _tree.render(roots, table)
    if as_json:
        out = [{**r, "depth": d, "marks": m} for d, r, m in rows]
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(_tree.HEADER)
    for depth, r, m in rows:
        print(_tree.format_line(depth, r, m))
    return EXIT_OK
