"""Run scenario scripts in their own session and check processes with psutil.

Rules (house style §6.5): a scenario runs with ``start_new_session=True`` so a
group kill can never reach pytest; it publishes pids through an atomic JSON
file; checks poll against a monotonic deadline; and every pid a test saw is
SIGKILLed at the end, descendants first, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

SCENARIOS = Path(__file__).parent / "scenarios"
#: The guarded start methods, as CPython's per-start-method test packages
#: (test_multiprocessing_fork/forkserver/spawn) run one suite per method.
GUARDED_METHODS = ["guarded-fork", "guarded-forkserver", "guarded-spawn"]
SHORT = 5.0
LONG = 30.0


def wait_for(
    pred: Callable[[], Any], timeout: float = SHORT, interval: float = 0.005
) -> Any:
    """Poll *pred* until it returns something truthy or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True if *pid* runs; a zombie counts as gone (PID 1 reaps slowly)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def survivors(pids: Iterable[int]) -> list[int]:
    return [p for p in pids if alive(p)]


def wait_gone(pids: Iterable[int], timeout: float = SHORT) -> list[int]:
    """Wait until every pid is gone; return the survivors."""
    pids = list(pids)
    wait_for(lambda: not survivors(pids), timeout)
    return survivors(pids)


def describe(pids: Iterable[int]) -> str:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.status()} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            out.append(f"{pid} gone")
    return "; ".join(out)


class Scenario:
    """A running scenario script."""

    def __init__(self, proc: subprocess.Popen[bytes], report_path: Path) -> None:
        self.proc = proc
        self.report_path = report_path
        self.pids: set[int] = {proc.pid}
        # Output goes to files, not pipes: a hung scenario can still be
        # read, and a full pipe can never block one.
        self.stdout_path = report_path.with_suffix(".out")
        self.stderr_path = report_path.with_suffix(".err")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def report(self, timeout: float = LONG) -> dict[str, Any]:
        """Wait for the scenario's JSON report and remember its pids."""
        ok = wait_for(
            lambda: self.report_path.exists() or self.proc.poll() is not None,
            timeout,
            0.01,
        )
        if not self.report_path.exists():
            out, err = self.output()
            raise AssertionError(
                f"no report (ok={ok}, rc={self.proc.returncode})\n{out}\n{err}"
            )
        data: dict[str, Any] = json.loads(self.report_path.read_text())
        self._remember(data)
        return data

    def _remember(self, data: Any) -> None:
        if isinstance(data, dict):
            for k, v in data.items():
                if k.endswith(("pid", "pids")) or k in ("workers", "grandchildren"):
                    self._remember_pids(v)
                self._remember(v)
        elif isinstance(data, list):
            for v in data:
                self._remember(v)

    def _remember_pids(self, v: Any) -> None:
        if isinstance(v, int) and v > 1:
            self.pids.add(v)
        elif isinstance(v, list):
            for x in v:
                self._remember_pids(x)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = SHORT) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> tuple[str, str]:
        """What the scenario printed so far: (stdout, stderr)."""
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def cleanup(self) -> None:
        """SIGKILL everything this scenario made, descendants first."""
        known = set(self.pids)
        for pid in list(known):
            try:
                known.update(
                    c.pid for c in psutil.Process(pid).children(recursive=True)
                )
            except psutil.Error:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the scenario's session
        except (ProcessLookupError, PermissionError):
            pass
        for pid in sorted(known, reverse=True):
            if pid == os.getpid() or pid <= 1:
                continue
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(SHORT)
        except subprocess.TimeoutExpired:
            pass
        wait_gone(known, SHORT)


@contextmanager
def scenario(
    name: str,
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
    method: str | None = None,
) -> Iterator[Scenario]:
    """Start ``scenarios/<name>.py REPORT *args`` in its own session.

    *method* is the guarded start method the scenario uses (the
    ``start_method`` fixture); its controls use the stdlib method under it.
    """
    report_path = tmp_path / f"{name}-{time.monotonic_ns()}.json"
    if argv is not None:  # a shell command line around the scenario
        cmd = [x.replace("{report}", str(report_path)) for x in argv]
    else:
        cmd = [sys.executable, str(SCENARIOS / f"{name}.py"), str(report_path), *args]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(SCENARIOS)
    full_env.pop("MPGUARD_DISABLE", None)
    full_env.pop("MPGUARD_TEST_METHOD", None)
    if method is not None:
        full_env["MPGUARD_TEST_METHOD"] = method
    if env:
        full_env.update(env)
    with (
        open(report_path.with_suffix(".out"), "wb") as out,
        open(report_path.with_suffix(".err"), "wb") as err,
    ):
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=full_env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    sc = Scenario(proc, report_path)
    try:
        yield sc
    finally:
        sc.cleanup()
