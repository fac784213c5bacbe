"""Run a program out of process, in its own session, and clean up after it.

Anything that kills a parent, changes signal dispositions or signals a
process group runs in a *scenario*: a separate program started with
``start_new_session=True`` (``setsid(2)``), so that no group signal it sends
or receives can reach the test runner.  The scenario publishes what the test
needs (pids, results) as one JSON object with :func:`publish`, and the test
waits for that file with a deadline.  Whatever happens, every process the
scenario made is SIGKILLed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ._procs import wait_gone
from ._wait import LONG, SHORT, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from ._publish import StrPath

__all__ = ["Scenario", "ScenarioError", "run_scenario"]


class ScenarioError(AssertionError):
    """A scenario did not publish its report in time.

    A subclass of :class:`AssertionError`, so a test framework reports it
    as a failed check rather than as an error in the test itself.  The
    message holds the scenario's exit status and everything it printed.
    """


class Scenario:
    """A running scenario: its process, its report and what it printed.

    Made by :func:`run_scenario`, which also cleans it up; use it inside
    that ``with`` block only.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        report_path: Path,
        *,
        pid_keys: Iterable[str] = (),
    ) -> None:
        #: The scenario's top process (the leader of its session).
        self.proc = proc
        #: Where the scenario publishes its JSON report.
        self.report_path = report_path
        #: Where its standard output and error go.  Files, not pipes: a hung
        #: scenario can still be read, and a full pipe never blocks one.
        self.stdout_path = report_path.with_suffix(".out")
        self.stderr_path = report_path.with_suffix(".err")
        #: Every pid known to belong to the scenario: its own, and each one
        #: :meth:`report` found or :meth:`remember` was given.  All are
        #: SIGKILLed by :meth:`cleanup`.
        self.pids: set[int] = set()
        self._pid_keys = frozenset(pid_keys)
        # Handles taken when a pid was learnt: psutil refuses to signal a
        # handle whose pid has since been reused by another process.
        self._handles: dict[int, psutil.Process] = {}
        self._gone: set[int] = set()
        self.remember([proc.pid])

    @property
    def pid(self) -> int:
        """The pid of the scenario's top process (also its session id)."""
        return self.proc.pid

    def report(self, timeout: float = LONG) -> dict[str, Any]:
        """Wait for the scenario's JSON report, remember its pids, return it.

        Every value under a key that ends in ``pid`` or ``pids`` (or is one of
        the *pid_keys* given to :func:`run_scenario`), at any depth, is a pid
        to clean up: an int, or a list of them.

        Raises:
            ScenarioError: no report after *timeout* seconds, or the scenario
                exited without writing one.
        """
        wait_for(
            lambda: self.report_path.exists() or self.proc.poll() is not None,
            timeout,
            0.01,
        )
        if not self.report_path.exists():
            out, err = self.output()
            rc = self.proc.returncode
            what = (
                f"no report after {timeout} s (still running)"
                if rc is None
                else f"exited without a report (returncode={rc})"
            )
            msg = (
                f"scenario {self.proc.args!r} {what}: {self.report_path}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
            )
            raise ScenarioError(msg)
        data: dict[str, Any] = json.loads(self.report_path.read_text())
        self._remember_in(data)
        return data

    def remember(self, pids: Iterable[int]) -> None:
        """Add *pids* to the processes :meth:`cleanup` will kill.

        Call it as soon as the pids are known: a handle is taken on each
        one now, so that a pid reused later by an unrelated process is
        never signalled.
        """
        for pid in pids:
            if pid <= 1 or pid in self._handles:
                continue
            self.pids.add(pid)
            try:
                self._handles[pid] = psutil.Process(pid)
            except psutil.Error:
                self._gone.add(pid)  # already gone: nothing to kill

    def _remember_in(self, data: Any) -> None:
        if isinstance(data, dict):
            for k, v in data.items():
                if str(k).endswith(("pid", "pids")) or k in self._pid_keys:
                    self.remember(_ints(v))
                self._remember_in(v)
        elif isinstance(data, list):
            for v in data:
                self._remember_in(v)

    def signal(self, sig: int) -> None:
        """Send *sig* to the scenario's top process (not to its group)."""
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = SHORT) -> int | None:
        """Wait for the top process to exit; its return code, or None.

        The return code is ``-N`` if signal N ended it.  None means it was
        still running after *timeout* seconds.
        """
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> tuple[str, str]:
        """What the scenario printed so far: ``(stdout, stderr)``."""
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def cleanup(self, timeout: float = SHORT) -> list[int]:
        """SIGKILL everything this scenario made; return what survived.

        Kills, deepest descendants first, every remembered process and
        every descendant of one, then every process still in the
        scenario's session, then reaps the top process and waits up to
        *timeout* seconds for all of them to be gone.  Processes that
        appear meanwhile (a pool replacing its workers) are killed in a
        further round.  Never signals this process or its ancestors, and
        never a pid that was reused by a process the scenario did not make.
        """
        deadline = time.monotonic() + timeout
        protected = _protected()
        killed: dict[int, psutil.Process] = {}
        while True:
            targets = [p for p in self._targets() if p.pid not in protected]
            fresh = [p for p in targets if p.pid not in killed]
            for p in targets:
                try:
                    p.kill()
                except psutil.Error:
                    pass
                killed.setdefault(p.pid, p)
            if self.proc.returncode is None:
                # Not reaped yet, so its pid cannot have been reused as the
                # id of another group: this group is the scenario's.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            left = wait_gone(killed, max(0.0, deadline - time.monotonic()))
            if not fresh or time.monotonic() > deadline:
                return left

    def _targets(self) -> list[psutil.Process]:
        """Processes to kill, descendants before their ancestors."""
        roots: list[psutil.Process] = []
        for pid in sorted(self.pids):
            if pid in self._handles:
                roots.append(self._handles[pid])
            elif pid not in self._gone:  # added to .pids by hand
                try:
                    roots.append(psutil.Process(pid))
                except psutil.Error:
                    pass
        roots.extend(_session(self.proc.pid))
        # One pass over the process table for the whole walk: a scenario
        # that leaves a thousand zombies in its session (the control of a
        # zombie test) would otherwise cost a full scan per process.
        below: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            below.setdefault(proc.info["ppid"], []).append(proc.pid)
        ordered: dict[int, psutil.Process] = {}
        for root in roots:
            found: list[int] = []
            todo = [root.pid]
            while todo:
                for kid in below.get(todo.pop(), ()):
                    if kid not in found:
                        found.append(kid)
                        todo.append(kid)
            for pid in reversed(found):
                if pid in ordered:
                    continue
                try:
                    ordered[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
        for root in roots:
            ordered.setdefault(root.pid, root)
        return list(ordered.values())


def _ints(v: Any) -> list[int]:
    """The ints in *v*: an int, or lists of them at any depth."""
    if isinstance(v, bool):
        return []
    if isinstance(v, int):
        return [v]
    if isinstance(v, list):
        return [x for item in v for x in _ints(item)]
    return []


def _protected() -> set[int]:
    """This process and its ancestors: never ours to kill."""
    me = psutil.Process()
    return {0, 1, me.pid} | {p.pid for p in me.parents()}


def _session(sid: int) -> list[psutil.Process]:
    """The processes in session *sid* (Linux and macOS: ``getsid(2)``).

    A session id is the pid of its leader, and the kernel does not give
    that pid to a new process while any process is still in the session,
    so every process found here belongs to the scenario.
    """
    out = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                out.append(psutil.Process(pid))
        except (OSError, psutil.Error):
            pass
    return out


@contextlib.contextmanager
def run_scenario(
    cmd: Sequence[str],
    report_path: StrPath,
    *,
    env: Mapping[str, str] | None = None,
    cwd: StrPath | None = None,
    pid_keys: Iterable[str] = (),
) -> Iterator[Scenario]:
    """Start *cmd* in a new session; yield a :class:`Scenario`; kill it all.

    *cmd* is an argument list, run without a shell.  It is expected to
    publish a JSON report at *report_path* (see :func:`publish`), which
    :meth:`Scenario.report` waits for.  Its standard output and error go
    to files next to the report (``.out`` and ``.err`` in place of the
    report's suffix).  *env* is the whole environment of the scenario
    (default: this process's); *cwd* its working directory (default: the
    report's directory, so that a module next to the test is not imported
    in place of the installed one).  *pid_keys* names report keys whose
    values are pids besides those ending in ``pid``/``pids``.

    On leaving the block, however it is left, :meth:`Scenario.cleanup`
    SIGKILLs every process the scenario made.

    Raises:
        FileExistsError: *report_path* exists already: the report could not
            be told from a stale one.

    Example::

        with run_scenario([sys.executable, "scenario.py", str(report)], report) as sc:
            r = sc.report()
            sc.signal(signal.SIGKILL)
            assert not wait_gone(r["worker_pids"])
    """
    path = Path(report_path)
    if path.exists():
        msg = f"{path} exists: a scenario needs a fresh report path"
        raise FileExistsError(msg)
    with (
        open(path.with_suffix(".out"), "wb") as out,
        open(path.with_suffix(".err"), "wb") as err,
    ):
        proc = subprocess.Popen(
            list(cmd),
            cwd=path.parent if cwd is None else cwd,
            env=None if env is None else dict(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    sc = Scenario(proc, path, pid_keys=pid_keys)
    try:
        yield sc
    finally:
        sc.cleanup()
