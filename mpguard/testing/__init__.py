"""Test helpers for code that starts, signals and kills processes.

mpguard's own test suite is built on these, and they are public so that a
project using mpguard can test its own process handling the same way::

    import signal, sys
    from mpguard.testing import describe, run_scenario, wait_gone

    def test_workers_die_with_the_parent(tmp_path):
        report = tmp_path / "report.json"
        cmd = [sys.executable, "scenarios/busy_pool.py", str(report)]
        with run_scenario(cmd, report, pid_keys=("workers",)) as sc:
            r = sc.report()                     # {"workers": [...], ...}
            sc.signal(signal.SIGKILL)
            left = wait_gone(r["workers"], timeout=1.0)
            assert not left, describe(left)

The rules these helpers keep, and that tests built on them should keep:

* anything that kills a parent or signals a group runs *out of process*, in
  its own session (:func:`run_scenario`), so a group signal can never reach
  the test runner;
* pids come back through a file written atomically (:func:`publish`), never
  by parsing output;
* every check polls against a monotonic deadline (:func:`wait_for`,
  :func:`wait_gone`) instead of sleeping for a fixed time;
* a zombie counts as gone (:func:`alive`): an orphan's zombie lingers until
  PID 1 reaps it; :func:`zombies` checks reaping separately;
* every process a test made is SIGKILLed at the end, descendants first
  (:meth:`Scenario.cleanup`), and a leak check (:func:`snapshot`) catches
  what a test forgot.

Leaked processes (the engine of the pytest plugin, for code without pytest
too)::

    from mpguard.testing import ProcessGuard, no_leaked_processes

    with no_leaked_processes():          # LeakedProcessError on a leak
        run_the_code()

    with ProcessGuard() as guard:        # what it starts dies at the end
        guard.Popen(["sleep", "600"])    # ... and the block fails

Never imports pytest (``mpguard.pytest_plugin`` is the pytest side).  POSIX
only (Linux and macOS); orphans are found on Linux.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._procs import ProcessSnapshot as ProcessSnapshot
from ._procs import alive as alive
from ._procs import descendants as descendants
from ._procs import describe as describe
from ._procs import snapshot as snapshot
from ._procs import survivors as survivors
from ._procs import wait_gone as wait_gone
from ._procs import zombies as zombies
from ._publish import publish as publish
from ._scenario import Scenario as Scenario
from ._scenario import ScenarioError as ScenarioError
from ._scenario import run_scenario as run_scenario
from ._wait import LONG as LONG
from ._wait import SHORT as SHORT
from ._wait import wait_for as wait_for

if TYPE_CHECKING:
    from ._leaks import DEFAULT_ALLOW as DEFAULT_ALLOW
    from ._leaks import Leak as Leak
    from ._leaks import LeakedProcessError as LeakedProcessError
    from ._leaks import LeakedProcessWarning as LeakedProcessWarning
    from ._leaks import LeakWatch as LeakWatch
    from ._leaks import no_leaked_processes as no_leaked_processes
    from ._process_guard import ProcessGuard as ProcessGuard

# The leak check uses the rest of mpguard; it is loaded on first use, so
# that a scenario script can import the helpers above (say, as the stdlib
# control of a test) without loading any of mpguard or multiprocessing.
_LAZY = {
    "DEFAULT_ALLOW": "_leaks",
    "Leak": "_leaks",
    "LeakWatch": "_leaks",
    "LeakedProcessError": "_leaks",
    "LeakedProcessWarning": "_leaks",
    "no_leaked_processes": "_leaks",
    "ProcessGuard": "_process_guard",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415 - only for the lazy names

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    # Polling
    "SHORT",
    "LONG",
    "wait_for",
    # Processes
    "alive",
    "survivors",
    "wait_gone",
    "describe",
    "descendants",
    "zombies",
    "ProcessSnapshot",
    "snapshot",
    # Scenarios
    "publish",
    "Scenario",
    "ScenarioError",
    "run_scenario",
    # Leaked processes
    "DEFAULT_ALLOW",
    "Leak",
    "LeakWatch",
    "LeakedProcessError",
    "LeakedProcessWarning",
    "ProcessGuard",
    "no_leaked_processes",
]
