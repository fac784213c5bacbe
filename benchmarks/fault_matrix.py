"""The fault matrix: every pool, every fault, one command.

    pip install -e ".[bench]"
    python benchmarks/fault_matrix.py [--quick] [--pools a,b] [--scenarios x,y]
                                      [--json PATH] [--markdown PATH]

Each run starts ``benchmarks/_fault_app.py POOL SCENARIO REPORT`` as a fresh
application in a session of its own (a ``with`` block, ``map``, two
workers, the pool's defaults), waits until its workers are busy, applies
one fault from outside, and watches what follows.  The observer scans
``/proc`` every 20 ms for every process of the app's session and every
descendant of a process it knows (so a grandchild that called ``setsid``
is still seen), each identified by (pid, start time) so that a recycled
pid is never confused with the process that had it.  It records when each
process died, which ones were zombies and for how long, how the parent
exited, what ``map`` did (returned, raised, or hung), the tracebacks on
stderr, and whether a bystander was signalled.  Then it SIGKILLs and reaps
everything the run left: no run sees the previous one's processes, and the
script ends with no process of its own left.

The runner makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``,
Linux): a process orphaned by the fault is reparented to the runner rather
than to init, so the runner still sees it, can tell its death, and reaps
it.  Linux only (``/proc``, the subreaper).

Pools: ``multiprocessing.Pool`` under fork, spawn and forkserver;
``concurrent.futures.ProcessPoolExecutor``; billiard; loky; pebble; mpire;
``mpguard.GuardedPool`` under guarded, guarded-forkserver and
guarded-spawn; ``ProcessPoolExecutor`` on the guarded context.  A peer
that is not installed is reported as such.  Scenarios and their goals are
the table ``SCENARIOS`` below; each cell is ✅ or ❌ against its goal, with
the measured figure beside it.  docs/fault-matrix.md has a full run and
what each scenario means for a user.

Every run is bounded: the app must be busy within READY_TIMEOUT, a fault's
aftermath is watched for WATCH seconds (HANG for a ``map`` that may hang),
and the cleanup is bounded too.  The full matrix takes about 5 minutes on
2 cores.

``--quick`` runs the stdlib fork Pool and the guarded pools through
parent-sigkill and worker-sigkill (about 20 s; no peer needed).  Because a check that
cannot fail proves nothing, it checks its own observer too: the stdlib
control must show its known faults (orphans after a parent SIGKILL, a
``map`` that hangs after a worker SIGKILL), or the run fails.

Exit status: 0 when every mpguard cell is ✅ (and every control that ran
shows its fault); 1 when an mpguard cell is ❌, a control does not show
its fault (the observer is broken), or a run left a process the cleanup
could not kill; 2 for a usage error, a platform without ``/proc``, or a
runner that cannot become a subreaper.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

# The app's per-task limit in task-timeout, from the app itself, so that
# the goal the runner judges by cannot drift from the limit the app sets
# (this script's folder is first on sys.path).
from _fault_app import TASK_TIMEOUT

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "_fault_app.py")

#: Seconds between two looks at /proc.
POLL = 0.02
#: The app must have its workers busy within this (spawn is slow on 2 cores).
READY_TIMEOUT = 10.0
#: How long a fault's aftermath is watched for leftovers.
WATCH = 2.5
#: A ``map`` that has neither returned nor raised this long after a worker
#: fault is reported as hung.
HANG = 12.0
#: Cleanup: how long to keep killing and reaping a run's leftovers.
CLEANUP = 5.0

# --- pools and scenarios, as data -------------------------------------------

#: name -> (description, module it needs or None, is it mpguard's)
POOLS: dict[str, tuple[str, str | None, bool]] = {
    "mp-fork": ("`multiprocessing.Pool`, fork", None, False),
    "mp-spawn": ("`multiprocessing.Pool`, spawn", None, False),
    "mp-forkserver": ("`multiprocessing.Pool`, forkserver", None, False),
    "ppe": ("`ProcessPoolExecutor`", None, False),
    "billiard": ("billiard `Pool`", "billiard", False),
    "loky": ("loky `get_reusable_executor`", "loky", False),
    "pebble": ("pebble `ProcessPool`", "pebble", False),
    "mpire": ("mpire `WorkerPool`", "mpire", False),
    "guarded": ("**`GuardedPool`, guarded**", None, True),
    "guarded-forkserver": ("**`GuardedPool`, guarded-forkserver**", None, True),
    "guarded-spawn": ("**`GuardedPool`, guarded-spawn**", None, True),
    "guarded-ppe": ("**`ProcessPoolExecutor`, guarded context**", None, True),
}

#: The pools each scenario does not apply to: the pool has no such feature.
#: (churn: loky has no max-tasks-per-child; task-timeout: no per-task
#: timeout in the stdlib pools, ProcessPoolExecutor or loky.)
NOT_APPLICABLE: dict[str, set[str]] = {
    "churn": {"loky"},
    "task-timeout": {"mp-fork", "mp-spawn", "mp-forkserver", "ppe", "loky"}
    | {"guarded-ppe"},
}


@dataclass(frozen=True)
class Scenario:
    """One fault: what is done, and the goal a cell is judged against."""

    name: str
    fault: str
    goal: str
    meaning: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "parent-sigterm",
            "`kill -TERM` to the parent while both workers are busy",
            "the parent exits; nothing of the tree alive 1 s after the "
            "signal; no stray traceback",
            "`docker stop`, systemd, Kubernetes and `kill PID` all send "
            "SIGTERM to the main process only.",
        ),
        Scenario(
            "parent-sigint",
            "`kill -INT` to the parent only",
            "the parent exits; nothing of the tree alive 1 s after the "
            "signal; no stray traceback",
            "a supervisor or a script interrupting the program by its pid.",
        ),
        Scenario(
            "ctrl-c",
            "SIGINT to the app's whole process group, as a terminal does",
            "the parent exits; nothing of the tree alive 1 s after the "
            "signal; no stray traceback (one per worker is noise a user "
            "sees on every Ctrl-C)",
            "Ctrl-C in a terminal.",
        ),
        Scenario(
            "parent-sighup",
            "`kill -HUP` to the parent",
            "the parent exits; nothing of the tree alive 1 s after the "
            "signal; no stray traceback",
            "the terminal or SSH session closes.",
        ),
        Scenario(
            "parent-sigkill",
            "`kill -KILL` to the parent",
            "nothing of the tree alive 1 s after the kill; no stray traceback",
            "the OOM killer, `kill -9`, a container runtime's timeout, a "
            "crash in C code: the parent runs no cleanup at all.",
        ),
        Scenario(
            "worker-sigkill",
            "one busy worker is SIGKILLed mid-task",
            "`map` raises (not hangs) within 1 s of the kill; the dead "
            "worker's grandchild gone within 1 s of the `with` block; "
            "nothing left 1 s after the app exits; no stray traceback",
            "the OOM killer picks a worker (it picks the largest process).",
        ),
        Scenario(
            "worker-exit",
            "a task calls `os._exit(3)` mid-task",
            "as worker-sigkill, timed from the `_exit`",
            "a C extension or a library calls `exit()`, or a task "
            "calls `sys.exit()` in the wrong place.",
        ),
        Scenario(
            "churn",
            "`maxtasksperchild=1` (or the pool's equivalent), 40 quick tasks",
            "`map` returns; no zombie seen for more than 0.5 s; none at the "
            "end; no stray traceback",
            "workers recycled to contain leaks: each retired worker must be "
            "reaped, or zombies pile up in `ps`.",
        ),
        Scenario(
            "pipeline",
            "`python app.py | tee`-like bystander; SIGTERM to the app, whose "
            "peers' handler runs the blog recipe "
            "`os.killpg(os.getpgid(0), SIGTERM)`",
            "neither the bystander nor the shell is signalled; nothing of "
            "the app's tree alive 1 s after the signal; no stray traceback",
            "a program whose output is piped (`| tee log`, `| gzip`) and "
            "that ends its workers by signalling its process group, which "
            "in a pipeline is the shell's.",
        ),
        Scenario(
            "task-timeout",
            f"a task runs past a {TASK_TIMEOUT} s per-task timeout",
            f"`map` raises within {TASK_TIMEOUT} + 1 s of the task's start; "
            "the task's grandchild gone within 1 s of the error, while the "
            "pool is still open; nothing left 1 s after the app exits; no "
            "stray traceback",
            "a task stuck on the network or in C code must be killed, with "
            "what it started, not merely abandoned.",
        ),
    ]
}

QUICK_POOLS = [
    "mp-fork",
    "guarded",
    "guarded-forkserver",
    "guarded-spawn",
    "guarded-ppe",
]
QUICK_SCENARIOS = ["parent-sigkill", "worker-sigkill"]

#: Cells of the stdlib control that must be ❌: if one is ✅, the observer
#: is blind to the very fault it exists to see.
CONTROLS = {
    ("mp-fork", "parent-sigkill"): (
        "left (",
        "workers and grandchildren outlive the parent",
    ),
    ("mp-fork", "worker-sigkill"): (
        "hang",
        "map hangs after a worker is SIGKILLed",
    ),
}

# The bystander of the pipeline scenario: copies stdin to a file, as tee
# does, and records every SIGTERM, SIGINT or SIGHUP it receives (a real tee
# would die of it, and the output with it).
BYSTANDER = """\
import json, os, signal, sys, time
def emit(**d):
    d.update(pid=os.getpid(), t=time.monotonic())
    fd = os.open(os.environ["FAULT_REPORT"], os.O_WRONLY | os.O_APPEND)
    os.write(fd, (json.dumps(d) + "\\n").encode())
    os.close(fd)
def on(signum, frame):
    emit(ev="bystander-signal", sig=signal.Signals(signum).name)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on)
emit(ev="bystander")
with open(sys.argv[1], "wb") as out:
    for line in sys.stdin.buffer:
        out.write(line)
"""

# --- the observer ---------------------------------------------------------------


def set_subreaper() -> None:
    """Adopt orphans of our descendants, so that they stay visible."""
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def default_signals() -> None:
    """In the app's child, before exec: the dispositions a terminal gives.

    An ignored signal stays ignored across exec, and a runner started in
    the background of a non-interactive shell (``cmd &`` in CI) has SIGINT
    ignored: the app would never see a KeyboardInterrupt.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


#: Command-line fragments of the helper processes pools start.
ROLE_HINTS = [
    (b"forkserver", "forkserver"),
    (b"resource_tracker", "resource tracker"),
    (b"_guardian", "guardian"),
    (b"spawn_main", "worker"),  # a spawn worker yet to run a task
    (b"popen_loky", "worker"),
]


@dataclass
class Stat:
    """The fields of /proc/PID/stat the observer needs."""

    state: str
    ppid: int
    pgid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, the identity


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return Stat(
        fields[0].decode(),
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        int(fields[19]),
    )


def scan() -> dict[int, Stat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


@dataclass
class Proc:
    """A process of the run, known by (pid, start time)."""

    pid: int
    start: int
    role: str
    seen: float  # first seen alive (monotonic)
    died: float | None = None  # first look at which it was dead or a zombie
    zombie_first: float | None = None  # a zombie its parent had not reaped
    zombie_last: float | None = None
    status: int | None = None  # wait status, if we reaped it
    announced: bool = False  # the role is the app's word, not a guess

    def alive_at(self, t: float) -> bool:
        return self.seen <= t and (self.died is None or self.died > t)


def describe_status(status: int | None) -> str:
    if status is None:
        return "not reaped by the runner"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


@dataclass
class Run:
    """One application run: start it, watch it, hurt it, clean up after it."""

    pool: str
    scenario: str
    workdir: str
    procs: dict[tuple[int, int], Proc] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    t_start: float = 0.0

    def __post_init__(self) -> None:
        self.report = os.path.join(self.workdir, "report.jsonl")
        self.errfile = os.path.join(self.workdir, "stderr.txt")
        self.teefile = os.path.join(self.workdir, "tee.txt")
        self._offset = 0
        self.me = os.getpid()
        self.popen: subprocess.Popen[bytes] | None = None
        #: Announced (pid, role, time) not yet matched to a tracked process.
        self.pending: list[tuple[int, str, float]] = []

    # -- starting ---------------------------------------------------------------

    def start(self) -> None:
        env = dict(os.environ, FAULT_REPORT=self.report, FAULT_SCENARIO=self.scenario)
        env.pop("PYTHONWARNINGS", None)
        open(self.report, "wb").close()
        app = [sys.executable, APP, self.pool, self.scenario, self.report]
        if self.scenario == "pipeline":
            tee = [sys.executable, "-c", BYSTANDER, self.teefile]
            cmd = ["sh", "-c", f"{shlex.join(app)} | {shlex.join(tee)}"]
            out = subprocess.DEVNULL
        else:
            cmd, out = app, subprocess.DEVNULL
        with open(self.errfile, "wb") as err:
            self.t_start = time.monotonic()
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
                preexec_fn=default_signals,
            )
        self.sid = self.popen.pid
        role = "shell" if self.scenario == "pipeline" else "parent"
        st = read_stat(self.popen.pid)
        if st is not None:
            self._track(self.popen.pid, st, role, self.t_start)

    # -- looking ------------------------------------------------------------------

    def _track(self, pid: int, st: Stat, role: str, now: float) -> Proc:
        key = (pid, st.start)
        p = self.procs.get(key)
        if p is None:
            p = self.procs[key] = Proc(pid, st.start, role, now)
        return p

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.died is None]

    def by_pid(self, pid: int) -> Proc | None:
        found = [p for p in self.procs.values() if p.pid == pid]
        return max(found, key=lambda p: p.seen) if found else None

    def _read_events(self) -> list[dict[str, Any]]:
        with open(self.report, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.events.extend(new)
        return new

    def poll(self) -> float:
        """One look: events, /proc, reaping.  Returns the time of the look."""
        new = self._read_events()
        now = time.monotonic()
        table = scan()
        # Roles the app announces (its pid in a pipeline, workers,
        # grandchildren) are given to processes /proc shows in the run: a
        # pid is never adopted (or killed) on the app's word alone.
        for ev in new:
            kind, t = ev["ev"], ev["t"]
            if kind == "start":
                self.pending.append((ev["pid"], "parent", t))
            elif kind == "task":
                self.pending.append((ev["pid"], "worker", t))
                if ev.get("grandchild"):
                    self.pending.append((ev["grandchild"], "grandchild", t))
            elif kind == "bystander":
                self.pending.append((ev["pid"], "bystander", t))
        known = {p.pid for p in self.live()}
        # Members: the session, children of known members (a child that
        # left the session with setsid), and orphans adopted by us.  Parents
        # are met before their children in most scans; repeat for the rest.
        for _ in range(3):
            grew = False
            for pid, st in table.items():
                if pid in known or pid == self.me:
                    continue
                if st.sid == self.sid or st.ppid in known or st.ppid == self.me:
                    self._track(pid, st, "other", now)
                    known.add(pid)
                    grew = True
            if not grew:
                break
        for p in self.procs.values():
            st = table.get(p.pid)
            same = st is not None and st.start == p.start
            if p.died is None and (st is None or not same or st.state == "Z"):
                p.died = now
            if st is not None and same and st.state == "Z" and st.ppid != self.me:
                # A zombie the app has not reaped (ours are reaped below).
                if p.zombie_first is None:
                    p.zombie_first = now
                p.zombie_last = now
        for p in self.procs.values():
            if not p.announced and p.died is None:
                p.role = self.guess_role(p)
        self.reap(now)
        still = []
        for pid, role, t in self.pending:
            # The process that had this pid when the app announced it.
            p = self.at(pid, t)
            if p is None:
                still.append((pid, role, t))
            elif not p.announced:
                p.role, p.announced = role, True
        self.pending = still
        return now

    def guess_role(self, p: Proc) -> str:
        """What an unannounced process is, from its command line.

        Read at every look, not once: a child caught between fork and exec
        still shows its parent's command line.
        """
        if p.role in ("parent", "shell"):
            return p.role
        try:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            return p.role
        st = read_stat(p.pid)
        if st is None or st.start != p.start:
            return p.role
        mother = self.at(st.ppid, time.monotonic())
        if mother is not None and mother.role == "forkserver":
            return "worker"  # forked by the forkserver, yet to run a task
        for needle, role in ROLE_HINTS:
            if needle in cmd:
                return role
        app = self.parent()
        if app is not None and st.ppid == app.pid:
            return "worker"  # a fork of the app: a worker yet to run a task
        return "other"

    def at(self, pid: int, t: float) -> Proc | None:
        """The process known as *pid* that was alive at time *t*."""
        for p in sorted(self.procs.values(), key=lambda p: p.seen):
            if p.pid == pid and (p.died is None or p.died >= t):
                return p
        return None

    def reap(self, now: float) -> None:
        """Reap our zombie children: the app, the shell, adopted orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            p = self.by_pid(pid)
            if p is not None:
                p.status = status
                if p.died is None:
                    p.died = now
            if self.popen is not None and pid == self.popen.pid:
                # Popen never saw it: tell it, or it warns at exit.
                self.popen.returncode = (
                    -os.WTERMSIG(status)
                    if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status)
                )

    def wait(self, until: Any, timeout: float) -> bool:
        """Look every POLL seconds until ``until()`` is true or *timeout*."""
        deadline = time.monotonic() + timeout
        while True:
            t0 = self.poll()
            if until():
                return True
            if t0 >= deadline:
                return False
            time.sleep(max(0.0, POLL - (time.monotonic() - t0)))

    # -- what the events say ------------------------------------------------------

    def event(self, kind: str, **match: Any) -> dict[str, Any] | None:
        for ev in self.events:
            if ev["ev"] == kind and all(ev.get(k) == v for k, v in match.items()):
                return ev
        return None

    def tasks(self) -> list[dict[str, Any]]:
        return [ev for ev in self.events if ev["ev"] == "task"]

    def role(self, role: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.role == role]

    def parent(self) -> Proc | None:
        ps = self.role("parent")
        return ps[0] if ps else None

    def tree(self) -> list[Proc]:
        """The app and everything it started (not the shell, not tee)."""
        return [p for p in self.procs.values() if p.role not in ("shell", "bystander")]

    def tree_dead(self) -> bool:
        return self.parent() is not None and not any(
            p.died is None for p in self.tree()
        )

    # -- cleanup --------------------------------------------------------------------

    def kill(self, p: Proc, sig: int) -> bool:
        """Signal *p* if it is still the process we know (not a new one).

        Through a pidfd opened *before* the identity check: the pidfd names
        one process for good, so a pid recycled between the check and the
        signal cannot be hit (a plain ``kill`` after the check could).
        """
        try:
            fd = os.pidfd_open(p.pid)
        except OSError:
            return False  # gone
        try:
            st = read_stat(p.pid)
            if st is None or st.start != p.start:
                return False
            signal.pidfd_send_signal(fd, sig)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def cleanup(self) -> list[str]:
        """SIGKILL and reap everything of the run; return what would not die."""
        deadline = time.monotonic() + CLEANUP
        while True:
            now = self.poll()
            left = [p for p in self.live()]
            for p in left:
                self.kill(p, signal.SIGKILL)
            try:
                if not left and os.waitpid(-1, os.WNOHANG) == (0, 0):
                    left = ["a child not yet reaped"]  # type: ignore[list-item]
            except ChildProcessError:
                pass
            if not left:
                return []
            if now > deadline:
                return [f"{p}" for p in left]
            time.sleep(POLL)


# --- the scenarios, run and judged ----------------------------------------------


@dataclass
class Cell:
    """A verdict: ✅/❌ against the goal, the figure, every measurement."""

    pool: str
    scenario: str
    ok: bool | None  # None: not applicable or not installed
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def stray_tracebacks(run: Run) -> int:
    with open(run.errfile, "rb") as f:
        err = f.read()
    # One report per uncaught exception: a chained one ("During handling of
    # the above exception...") prints several headers in one report.
    total = err.count(b"Traceback (most recent call last)")
    total -= err.count(b"During handling of the above exception")
    total -= err.count(b"The above exception was the direct cause")
    parent = run.parent()
    own = sum(
        1
        for ev in run.events
        if ev["ev"] == "traceback" and parent is not None and ev["pid"] == parent.pid
    )
    return max(0, total - own)


def left_at(procs: list[Proc], t: float) -> list[Proc]:
    """*procs* alive at *t*, and those first seen after *t* that were still
    alive when the watch ended: a process that appeared late and stayed
    must not escape the verdict."""
    return [p for p in procs if p.alive_at(t) or (p.died is None and p.seen > t)]


def gone_after(procs: list[Proc], t0: float) -> float | None:
    """Seconds from *t0* until the last of *procs* died (None: one lives)."""
    if any(p.died is None for p in procs):
        return None
    return max((p.died for p in procs if p.died is not None), default=t0) - t0


def measure(run: Run, t_fault: float | None) -> dict[str, Any]:
    """Everything observed, for the JSON file."""
    parent = run.parent()
    out: dict[str, Any] = {
        "ready_after_s": None if t_fault is None else t_fault - run.t_start,
        "parent_status": describe_status(parent.status) if parent else None,
        "parent_died_after_s": (
            None
            if parent is None or parent.died is None or t_fault is None
            else parent.died - t_fault
        ),
        "map": run.event("map"),
        "stray_tracebacks": stray_tracebacks(run),
        "bystander_signals": [
            ev["sig"] for ev in run.events if ev["ev"] == "bystander-signal"
        ],
        "never_seen": [f"{role} {pid}" for pid, role, _ in run.pending],
        "events": run.events,
    }
    if parent is not None and parent.died is not None:
        orphans = [p for p in run.tree() if p is not parent and p.alive_at(parent.died)]
        out["orphans"] = [
            {
                "pid": p.pid,
                "role": p.role,
                "lived_s": None if p.died is None else p.died - parent.died,
            }
            for p in orphans
        ]
    out["zombies"] = [
        {"pid": p.pid, "role": p.role, "seen_s": p.zombie_last - p.zombie_first}
        for p in run.procs.values()
        if p.zombie_first is not None and p.zombie_last is not None
    ]
    out["processes"] = [
        {
            "pid": p.pid,
            "role": p.role,
            "seen_s": p.seen - run.t_start,
            "died_s": None if p.died is None else p.died - run.t_start,
            "status": None if p.status is None else describe_status(p.status),
        }
        for p in sorted(run.procs.values(), key=lambda p: p.seen)
    ]
    return out


def verdict(failures: list[str], figure: str, label: str) -> tuple[bool, str]:
    """The cell: ✅ and the figure, or ❌, what failed, and the figure."""
    if failures:
        shown = "" if figure == "—" else f" ({label}{figure})"
        return False, "❌ " + "; ".join(failures) + shown
    return True, "✅ " + figure


PLURALS = {"grandchild": "grandchildren"}

#: How the roles are listed in a cell.
ROLES = [
    "parent",
    "worker",
    "grandchild",
    "forkserver",
    "resource tracker",
    "guardian",
    "other",
    "shell",
    "bystander",
]


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


def count_roles(procs: list[Proc]) -> str:
    """Who is left, by role: "2 workers, 2 grandchildren"."""
    counts: dict[str, int] = {}
    for p in procs:
        counts[p.role] = counts.get(p.role, 0) + 1
    return ", ".join(
        f"{n} {PLURALS.get(r, r + 's') if n > 1 else r}"
        for r, n in sorted(counts.items(), key=lambda x: role_rank(x[0]))
    )


def tree_failures(run: Run, t0: float, within: float = 1.0) -> tuple[list[str], str]:
    """Is the app's tree gone within *within* s of *t0*? Failures, figure.

    The figure is the seconds from *t0* until the last process of the tree
    died.  A process still alive when the watch ended shows as "> WATCH".
    """
    tree = run.tree()
    failures = []
    left = left_at(tree, t0 + within)
    gone = gone_after(tree, t0)
    parent = run.parent()
    if parent is not None and parent in left:
        failures.append("parent lives on")
        left.remove(parent)
    if left:
        lives = f"> {WATCH:g} s" if gone is None else f"until {gone:.1f} s"
        failures.append(f"{count_roles(left)} left ({lives})")
    return failures, fmt(gone)


def run_parent_fault(
    run: Run, sig: int, group: bool
) -> tuple[float | None, list[str], str]:
    parent = run.parent()
    assert parent is not None
    t = time.monotonic()
    if group:
        st = read_stat(parent.pid)
        if st is not None and st.start == parent.start:
            os.killpg(st.pgid, sig)
    else:
        run.kill(parent, sig)
    run.wait(run.tree_dead, WATCH)
    failures, figure = tree_failures(run, t)
    return t, failures, figure


def wait_ready(run: Run, scenario: str) -> bool:
    def ready() -> bool:
        tasks = run.tasks()
        if scenario == "churn":
            return run.event("start") is not None
        if scenario in ("worker-sigkill", "worker-exit", "task-timeout"):
            victim = run.event("task", i=0)
            return (
                victim is not None
                and run.by_pid(victim["pid"]) is not None
                and run.by_pid(victim["grandchild"]) is not None
            )
        kids = [ev["grandchild"] for ev in tasks if ev.get("grandchild")]
        ok = len(kids) >= 2 and all(run.by_pid(k) is not None for k in kids)
        if scenario == "pipeline":
            ok = ok and run.event("bystander") is not None and run.parent() is not None
        return ok

    return run.wait(ready, READY_TIMEOUT)


def app_gone(run: Run) -> bool:
    p = run.parent()
    return p is not None and p.died is not None


def run_worker_fault(run: Run, scenario: str) -> tuple[float | None, list[str], str]:
    """worker-sigkill, worker-exit and task-timeout: map must raise, soon."""
    victim_ev = run.event("task", i=0)
    assert victim_ev is not None
    victim = run.by_pid(victim_ev["pid"])
    grandchild = run.by_pid(victim_ev["grandchild"])
    if scenario == "worker-sigkill":
        t0 = time.monotonic()
        if victim is not None:
            run.kill(victim, signal.SIGKILL)
        limit, bound = 1.0, HANG
    elif scenario == "worker-exit":
        run.wait(lambda: run.event("exit") is not None, 3.0)
        ev = run.event("exit")
        t0 = ev["t"] if ev else time.monotonic()
        limit, bound = 1.0, HANG
    else:
        t0 = victim_ev["t"]
        limit, bound = TASK_TIMEOUT + 1.0, HANG + TASK_TIMEOUT
    failures: list[str] = []
    run.wait(
        lambda: run.event("map") is not None, max(0.0, t0 + bound - time.monotonic())
    )
    mev = run.event("map")
    figure = "—"
    if mev is None:
        failures.append(f"hang (no result in {bound:g} s)")
    elif mev["outcome"] == "returned":
        failures.append("map returned: the lost task went unreported")
    else:
        delay = mev["t"] - t0
        figure = f"{delay:.2f} s"
        if delay > limit:
            failures.append(f"raised later than {limit:g} s")
    if mev is not None:
        run.wait(lambda: app_gone(run), 4.0)
        timeout_missed = False
        if scenario == "task-timeout" and grandchild is not None:
            # Killed by the timeout itself, while the pool is still open.
            wexit = run.event("with-exit")
            g_died = grandchild.died
            if (
                g_died is None
                or g_died > mev["t"] + 1.0
                or (wexit is not None and g_died > wexit["t"])
            ):
                timeout_missed = True
                failures.append("grandchild not killed with the task")
        parent = run.parent()
        if parent is None or parent.died is None:
            failures.append("app did not exit")
        else:
            run.wait(run.tree_dead, WATCH)
            wexit = run.event("with-exit")
            late = parent.died + 1.0
            if grandchild is not None and wexit and scenario != "task-timeout":
                late = min(late, wexit["t"] + 1.0)
            if grandchild is not None and grandchild.alive_at(late):
                if timeout_missed:
                    failures[-1] = "the task's grandchild survives the app"
                else:
                    failures.append("the dead worker's grandchild survives")
            rest = [
                p for p in left_at(run.tree(), parent.died + 1.0) if p is not grandchild
            ]
            if rest:
                failures.append(f"{count_roles(rest)} left 1 s after exit")
    elif grandchild is not None and grandchild.died is None:
        failures.append("grandchild alive")
    return t0, failures, figure


def run_churn(run: Run) -> tuple[float | None, list[str], str]:
    t0 = time.monotonic()
    failures: list[str] = []
    run.wait(lambda: run.event("map") is not None, 20.0)
    mev = run.event("map")
    if mev is None:
        failures.append("hang (no result in 20 s)")
    elif mev["outcome"] != "returned":
        failures.append(f"map raised {mev['exc'].split(':')[0]}")
    run.wait(lambda: run.event("with-exit") is not None or app_gone(run), 5.0)
    end = run.event("with-exit")
    zombies = [p for p in run.procs.values() if p.zombie_first is not None]
    long = [p for p in zombies if (p.zombie_last or 0) - (p.zombie_first or 0) > 0.5]
    # "At the end": zombies of the app while it idles after map, just
    # before it leaves the with-block.
    t_end = end["t"] - 0.05 if end else time.monotonic()
    at_end = [
        p
        for p in zombies
        if (p.zombie_first or 0) <= t_end <= (p.zombie_last or 0) + POLL
    ]
    if long:
        failures.append(f"{len(long)} zombies lasted > 0.5 s")
    if at_end:
        failures.append(f"{len(at_end)} zombies at the end")
    run.wait(lambda: app_gone(run), 5.0)
    longest = max(
        ((p.zombie_last or 0) - (p.zombie_first or 0) for p in zombies), default=0
    )
    # A zombie seen at one look only lived up to one POLL: count that.
    n = len(zombies)
    figure = f"{n} zombie{'s' if n != 1 else ''}" + (
        f", ≤ {longest + POLL:.2f} s" if zombies else ""
    )
    return t0, failures, figure


def run_pipeline(run: Run) -> tuple[float | None, list[str], str]:
    parent = run.parent()
    assert parent is not None
    t0 = time.monotonic()
    run.kill(parent, signal.SIGTERM)
    run.wait(run.tree_dead, WATCH)
    # tee exits at EOF, once the last writer (the app's tree) is gone; the
    # shell exits after it.  Both are watched briefly for what they got.
    shell = run.role("shell")
    run.wait(lambda: all(p.died is not None for p in shell), 1.0)
    failures, figure = tree_failures(run, t0)
    hit = sorted({ev["sig"] for ev in run.events if ev["ev"] == "bystander-signal"})
    if hit:
        failures.insert(0, f"tee got {'/'.join(hit)}")
    for p in shell:
        if p.status is not None and os.WIFSIGNALED(p.status):
            sig = signal.Signals(os.WTERMSIG(p.status)).name
            failures.insert(0, f"shell killed by {sig}")
    return t0, failures, figure


#: What the figure of a ❌ cell is, by scenario ("gone in": the tree's end).
FIGURE_LABEL = {
    "worker-sigkill": "raised in ",
    "worker-exit": "raised in ",
    "task-timeout": "raised in ",
    "churn": "",
}

PARENT_FAULTS = {
    "parent-sigterm": (signal.SIGTERM, False),
    "parent-sigint": (signal.SIGINT, False),
    "ctrl-c": (signal.SIGINT, True),
    "parent-sighup": (signal.SIGHUP, False),
    "parent-sigkill": (signal.SIGKILL, False),
}


def run_cell(pool: str, scenario: str) -> Cell:
    """Run *pool* through *scenario* once, judge it, and clean up."""
    if pool in NOT_APPLICABLE.get(scenario, set()):
        return Cell(pool, scenario, None, "n/a")
    module = POOLS[pool][1]
    if module is not None and importlib.util.find_spec(module) is None:
        return Cell(pool, scenario, None, "not installed")
    t_begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as workdir:
        run = Run(pool, scenario, workdir)
        t_fault: float | None = None
        try:
            run.start()
            if not wait_ready(run, scenario):
                failures, figure = [f"not ready in {READY_TIMEOUT:g} s"], "—"
            elif scenario in PARENT_FAULTS:
                sig, group = PARENT_FAULTS[scenario]
                t_fault, failures, figure = run_parent_fault(run, sig, group)
            elif scenario == "churn":
                t_fault, failures, figure = run_churn(run)
            elif scenario == "pipeline":
                t_fault, failures, figure = run_pipeline(run)
            else:
                t_fault, failures, figure = run_worker_fault(run, scenario)
            data = measure(run, t_fault)
            if data["stray_tracebacks"]:
                n = data["stray_tracebacks"]
                failures.append(f"{n} stray traceback{'s' if n > 1 else ''}")
        except Exception as e:
            # A bug of the runner (or a peer doing something unforeseen):
            # one ❌ cell with the error, and the matrix goes on.
            failures, figure = [f"runner error: {type(e).__name__}: {e}"], "—"
            data = {"runner_error": traceback.format_exc()}
        finally:
            leftovers = run.cleanup()
        label = FIGURE_LABEL.get(scenario, "gone in ")
        ok, text = verdict(failures, figure, label)
        if leftovers:
            data["cleanup_failed"] = leftovers
        with open(run.errfile, errors="replace") as f:
            data["stderr_tail"] = f.read()[-2000:]
    data["elapsed_s"] = time.monotonic() - t_begin
    return Cell(pool, scenario, ok, text, data)


# --- output -----------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("mpguard", "billiard", "loky", "pebble", "mpire", "psutil"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def markdown(
    cells: list[Cell], pools: list[str], scenarios: list[str], meta: dict[str, Any]
) -> str:
    by = {(c.pool, c.scenario): c for c in cells}
    lines = [
        f"{meta['date']}, {meta['cpus']} cores, Linux {meta['kernel']}, "
        f"Python {meta['python']}; {meta['versions_text']}; "
        f"`{meta['command']}` ({meta['elapsed_s']:.0f} s)",
        "",
        "| pool | " + " | ".join(scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for pool in pools:
        row = [by[(pool, s)].text for s in scenarios]
        lines.append(f"| {POOLS[pool][0]} | " + " | ".join(row) + " |")
    lines += ["", "Goals:", ""]
    lines += [f"* **{s}**: {SCENARIOS[s].goal}." for s in scenarios]
    return "\n".join(lines) + "\n"


def parse_list(value: str | None, known: dict[str, Any], what: str) -> list[str] | None:
    if value is None:
        return None
    names = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in names if x not in known]
    if bad or not names:
        raise UsageError(
            f"unknown {what} {', '.join(bad) or repr(value)}; "
            f"choose from {', '.join(known)}"
        )
    return names


class UsageError(Exception):
    """A usage error: one line on stderr, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Every pool through every fault; a Markdown table and JSON.",
        epilog="Exit status: 0 all mpguard cells pass; 1 an mpguard cell fails, "
        "a control shows no fault or a run left a process; 2 usage error, no "
        "/proc or no subreaper.",
    )
    ap.add_argument("--quick", action="store_true", help="the CI subset (about 20 s)")
    ap.add_argument("--pools", help=f"comma-separated, from: {', '.join(POOLS)}")
    ap.add_argument(
        "--scenarios", help=f"comma-separated, from: {', '.join(SCENARIOS)}"
    )
    ap.add_argument("--json", metavar="PATH", help="write every measurement here")
    ap.add_argument("--markdown", metavar="PATH", help="write the table here")
    a = ap.parse_args(argv)
    try:
        pools = parse_list(a.pools, POOLS, "pool") or (
            QUICK_POOLS if a.quick else list(POOLS)
        )
        scenarios = parse_list(a.scenarios, SCENARIOS, "scenario") or (
            QUICK_SCENARIOS if a.quick else list(SCENARIOS)
        )
        if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"):
            raise UsageError("the fault matrix needs Linux (/proc and a subreaper)")
    except UsageError as e:
        print(f"fault_matrix.py: {e}", file=sys.stderr)
        return 2
    try:
        set_subreaper()
    except OSError as e:
        print(f"fault_matrix.py: cannot become a child subreaper: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    cells = []
    for scenario in scenarios:
        for pool in pools:
            cell = run_cell(pool, scenario)
            cells.append(cell)
            took = cell.data.get("elapsed_s")
            print(
                f"{scenario:15} {pool:19} {cell.text}"
                + (f"   [{took:.1f} s]" if took is not None else ""),
                file=sys.stderr,
                flush=True,
            )
    vs = versions()
    cmd = "python benchmarks/fault_matrix.py" + (" --quick" if a.quick else "")
    if a.pools:
        cmd += f" --pools {a.pools}"
    if a.scenarios:
        cmd += f" --scenarios {a.scenarios}"
    meta = {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": vs,
        "versions_text": ", ".join(f"{k} {v}" for k, v in vs.items() if k != "psutil"),
        "command": cmd,
        "elapsed_s": time.monotonic() - t0,
    }
    table = markdown(cells, pools, scenarios, meta)
    print(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "scenarios": {k: vars(v) for k, v in SCENARIOS.items()},
                    "cells": [vars(c) for c in cells],
                },
                f,
                indent=1,
            )
    status = 0
    failed = [c for c in cells if POOLS[c.pool][2] and c.ok is False]
    for c in failed:
        print(f"FAIL: {c.pool} / {c.scenario}: {c.text}", file=sys.stderr)
        status = 1
    for c in cells:
        control = CONTROLS.get((c.pool, c.scenario))
        # Not just any ❌: a control that failed for another reason (not
        # ready, a runner error, a traceback) proves nothing about the
        # observer.
        if control is not None and (c.ok is not False or control[0] not in c.text):
            print(
                f"OBSERVER BROKEN: the control {c.pool} / {c.scenario} shows "
                f"{c.text!r}, but {control[1]}: the matrix cannot see that fault",
                file=sys.stderr,
            )
            status = 1
    for c in cells:
        # The promise is that no run leaves a process behind: a run that
        # did is a broken matrix, whoever's pool it ran.
        if c.data.get("cleanup_failed"):
            print(
                f"CLEANUP FAILED: {c.pool} / {c.scenario} left "
                f"{c.data['cleanup_failed']}",
                file=sys.stderr,
            )
            status = 1
    print(f"fault matrix: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
