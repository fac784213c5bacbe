"""This project's layer over :mod:`mpguard.testing`.

The generic helpers (polling, process checks, the out-of-process scenario
runner) live in ``mpguard.testing``; this module adds what is particular to
mpguard's own suite: where the scenario scripts are, which guarded start
methods they run under, and the environment they get.

The rules: a scenario runs in its own session (``start_new_session=True``)
so a group kill can never reach pytest; it publishes pids through an atomic
JSON file; checks poll against a monotonic deadline; and every pid a test
saw is SIGKILLed at the end, descendants first, whatever the outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mpguard.testing import (
    LONG,
    SHORT,
    Scenario,
    alive,
    describe,
    run_scenario,
    survivors,
    wait_for,
    wait_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "GUARDED_METHODS",
    "LONG",
    "SCENARIOS",
    "SHORT",
    "Scenario",
    "alive",
    "describe",
    "python_in_own_session",
    "scenario",
    "survivors",
    "wait_for",
    "wait_gone",
]

SCENARIOS = Path(__file__).parent / "scenarios"
#: The guarded start methods, as CPython's per-start-method test packages
#: (test_multiprocessing_fork/forkserver/spawn) run one suite per method.
GUARDED_METHODS = ["guarded-fork", "guarded-forkserver", "guarded-spawn"]
#: Report keys that hold pids besides the ``*pid``/``*pids`` ones.
PID_KEYS = ("workers", "grandchildren")


def python_in_own_session(
    code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` in a session of its own (it may make process
    groups), with *env* added to this environment; its output as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


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
    *argv* replaces the command line (``{report}`` in it becomes the report
    path), for a shell pipeline around the scenario.
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
    with run_scenario(
        cmd, report_path, env=full_env, cwd=tmp_path, pid_keys=PID_KEYS
    ) as sc:
        yield sc
