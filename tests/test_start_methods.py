"""A guarded method as the program's global start method.

A spawn child applies the parent's start method in ``spawn.prepare()``
(Lib/multiprocessing/spawn.py: ``set_start_method(data["start_method"],
force=True)``) before it unpickles anything, so a name only mpguard
registers must be resolvable there even when the program imports mpguard
only under ``if __name__ == "__main__"``.  Each program runs as a real
``python`` command, in its own session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _support import LONG, SCENARIOS

pytestmark = pytest.mark.linux

METHODS = ["guarded-spawn", "guarded-forkserver"]


def _run(
    tmp_path, argv: list[str], method: str
) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    env = dict(os.environ, METHOD=method, REPORT=str(report))
    env["PYTHONPATH"] = str(SCENARIOS)
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=LONG,
        start_new_session=True,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, data


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "how",
    ["script", "main-guard", "dash-m"],
)
def test_guarded_method_as_global_default(tmp_path, method, how):
    argv = {
        "script": [str(SCENARIOS / "defaults" / "script.py")],
        "main-guard": [str(SCENARIOS / "defaults" / "guarded_main.py")],
        "dash-m": ["-m", "defaults"],
    }[how]
    proc, r = _run(tmp_path, argv, method)
    assert proc.returncode == 0, proc.stderr
    assert "cannot find context" not in proc.stderr
    assert r["start_method"] == method.split("-", 1)[1]  # the stdlib name
    assert r["guarded_method"] == method
    groups = {g for _, g in r["stdlib_pool"] + r["guarded_pool"]}
    groups.add(r["process"][1])
    # Every child, through every API, is in one group without the parent.
    assert len(groups) == 1
    assert r["pgid"] not in groups
    assert r["exitcode"] == 0


def test_control_naive_custom_method_cannot_be_found_in_the_child(tmp_path):
    proc, _ = _run(tmp_path, [str(SCENARIOS / "defaults" / "naive.py")], "")
    assert (tmp_path / "report.json").read_text() == "1"
    assert "cannot find context for 'naive-spawn'" in proc.stderr
