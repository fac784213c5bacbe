"""The shipped test helpers, :mod:`mpguard.testing`, on real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import mpguard.testing
from mpguard.testing import (
    ScenarioError,
    alive,
    descendants,
    describe,
    publish,
    run_scenario,
    snapshot,
    survivors,
    wait_for,
    wait_gone,
    zombies,
)

pytestmark = pytest.mark.linux


@pytest.fixture
def sleeper():
    """Start ``sleep 600`` children; kill and reap them all afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(seconds: str = "600") -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sleep", seconds])
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()
        p.wait(5.0)


# -- wait_for -------------------------------------------------------------


def test_wait_for_returns_the_first_truthy_value_at_once():
    t0 = time.monotonic()
    assert wait_for(lambda: [1], timeout=5.0) == [1]
    assert time.monotonic() - t0 < 1.0


def test_wait_for_timing_out_returns_the_falsy_value():
    calls = []

    def pred():
        calls.append(time.monotonic())
        return 0 if len(calls) < 1000 else 1

    t0 = time.monotonic()
    assert wait_for(pred, timeout=0.1, interval=0.01) == 0
    elapsed = time.monotonic() - t0
    assert 0.1 <= elapsed < 1.0, elapsed
    assert calls[-1] - t0 > 0.1  # called once more after the deadline


def test_wait_for_polls_until_the_condition_holds():
    deadline = time.monotonic() + 0.05
    assert wait_for(lambda: time.monotonic() > deadline, timeout=5.0)


# -- process checks ---------------------------------------------------------


def test_wait_gone_on_a_short_lived_child(sleeper):
    p = sleeper("0.2")
    assert alive(p.pid)
    assert survivors([p.pid]) == [p.pid]
    # Not reaped yet: a zombie counts as gone.
    assert wait_gone([p.pid], 5.0) == []
    assert not alive(p.pid)
    assert p.wait(5.0) == 0


def test_wait_gone_returns_survivors_after_the_deadline(sleeper):
    p = sleeper()
    t0 = time.monotonic()
    assert wait_gone([p.pid], 0.1) == [p.pid]
    assert time.monotonic() - t0 >= 0.1
    assert "sleep 600" in describe([p.pid])


def test_zombies_sees_an_unreaped_child_until_it_is_reaped(sleeper):
    p = sleeper("0")
    assert wait_for(lambda: p.pid in zombies(), 5.0)
    assert p.pid not in descendants()  # zombies are not live descendants
    assert p.wait(5.0) == 0  # reaped
    assert p.pid not in zombies()
    assert describe([p.pid]) == f"{p.pid} gone"


def test_descendants_include_grandchildren(tmp_path):
    # sh starts `sleep` and waits for it: a grandchild of this process.
    sh = subprocess.Popen(["sh", "-c", "sleep 600; exit 0"])
    try:
        assert wait_for(lambda: len(descendants(sh.pid)) == 1, 5.0)
        (gc,) = descendants(sh.pid)
        assert {sh.pid, gc} <= set(descendants())
        assert zombies(sh.pid) == []
    finally:
        for pid in descendants(sh.pid):
            os.kill(pid, signal.SIGKILL)
        sh.kill()
        sh.wait(5.0)


def test_descendants_and_zombies_of_a_missing_pid_are_empty(sleeper):
    p = sleeper("0")
    p.wait(5.0)
    assert descendants(p.pid) == []
    assert zombies(p.pid) == []


def test_snapshot_finds_new_processes_and_waits_for_them(sleeper):
    before = snapshot()
    assert before.new() == []
    p = sleeper()
    assert before.new() == [p.pid]
    assert p.pid not in before.pids
    assert before.leaked(0.05) == [p.pid]
    p.kill()
    assert before.leaked(5.0) == []  # killed, not yet reaped: gone
    p.wait(5.0)


# -- publish ----------------------------------------------------------------


def test_publish_writes_json_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    publish(path, pid=1, workers=[2, 3])
    assert json.loads(path.read_text()) == {"pid": 1, "workers": [2, 3]}
    publish(str(path), path="a key named path")  # overwrite; str or Path
    assert json.loads(path.read_text()) == {"path": "a key named path"}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_publish_of_unserializable_data_changes_nothing(tmp_path):
    path = tmp_path / "report.json"
    publish(path, ok=True)
    with pytest.raises(TypeError):
        publish(path, bad=object())
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_publish_reader_never_sees_half_a_report(tmp_path):
    # Written in place instead, a reader here fails thousands of times.
    path = tmp_path / "report.json"
    big = list(range(10_000))
    stop = threading.Event()
    errors: list[Exception] = []
    seen = [0]

    def read() -> None:
        while not stop.is_set():
            if path.exists():
                try:
                    assert json.loads(path.read_text())["big"] == big
                    seen[0] += 1
                except Exception as e:  # reported below
                    errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(50):
            publish(path, i=i, big=big)
        assert wait_for(lambda: seen[0] > 0, 5.0)
    finally:
        stop.set()
        t.join(5.0)
    assert not errors, errors[:3]


# -- run_scenario -----------------------------------------------------------


_HEAD = """\
import json, os, subprocess, sys, time

REPORT = sys.argv[1]


def publish(**data):
    tmp = REPORT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, REPORT)

"""


def _script(tmp_path: Path, body: str, report: Path) -> list[str]:
    """``python scenario.py REPORT``: *body* after a stdlib-only ``publish()``."""
    path = tmp_path / "scenario.py"
    path.write_text(_HEAD + textwrap.dedent(body))
    return [sys.executable, str(path), str(report)]


def test_run_scenario_kills_a_grandchild_in_another_session(tmp_path):
    report = tmp_path / "report.json"
    cmd = _script(
        tmp_path,
        """
        child = subprocess.Popen(["sleep", "600"])
        escaped = subprocess.Popen(["sleep", "600"], start_new_session=True)
        publish(pid=os.getpid(), child_pid=child.pid, escaped_pid=escaped.pid)
        time.sleep(600)
        """,
        report,
    )
    with run_scenario(cmd, report) as sc:
        r = sc.report()
        pids = [r["pid"], r["child_pid"], r["escaped_pid"]]
        assert r["pid"] == sc.pid
        assert set(pids) <= sc.pids
        assert survivors(pids) == pids
        assert os.getsid(sc.pid) == sc.pid  # its own session
        assert os.getsid(r["child_pid"]) == sc.pid
        assert os.getsid(r["escaped_pid"]) == r["escaped_pid"]  # another one
        assert os.getsid(0) != sc.pid
    # Cleaned up on leaving the block: not merely soon after.
    assert survivors(pids) == [], describe(pids)
    assert sc.proc.returncode == -signal.SIGKILL


def test_run_scenario_kills_an_unreported_orphan_in_its_session(tmp_path):
    # The scenario exits and leaves an orphan it never reported as a pid:
    # it is still in the scenario's session, and that is where it is found.
    report = tmp_path / "report.json"
    cmd = _script(
        tmp_path,
        """
        orphan = subprocess.Popen(["sleep", "600"])
        publish(hidden=orphan.pid)
        os._exit(0)
        """,
        report,
    )
    with run_scenario(cmd, report) as sc:
        r = sc.report()
        assert sc.wait() == 0
        assert r["hidden"] not in sc.pids
        assert alive(r["hidden"])
        assert os.getsid(r["hidden"]) == sc.pid
    assert not alive(r["hidden"])


def test_run_scenario_writes_output_to_files_and_passes_env(tmp_path):
    report = tmp_path / "sub" / "report.json"
    report.parent.mkdir()
    cmd = _script(
        tmp_path,
        """
        print("to stdout", os.environ["MARK"])
        print("to stderr", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        publish(cwd=os.getcwd())
        """,
        report,
    )
    env = dict(os.environ, MARK="m42")
    with run_scenario(cmd, report, env=env) as sc:
        r = sc.report()
        assert sc.wait() == 0
        assert r["cwd"] == str(report.parent)  # default: next to the report
        assert sc.output() == ("to stdout m42\n", "to stderr\n")
        assert sc.stdout_path == report.with_suffix(".out")


def test_run_scenario_without_a_report_fails_with_its_output(tmp_path):
    report = tmp_path / "report.json"
    body = 'print("no database", file=sys.stderr)\nsys.exit(3)\n'
    cmd = _script(tmp_path, body, report)
    with (
        run_scenario(cmd, report) as sc,
        pytest.raises(ScenarioError, match="returncode=3") as e,
    ):
        sc.report(5.0)
    assert "no database" in str(e.value)
    assert isinstance(e.value, AssertionError)


def test_run_scenario_refuses_a_stale_report(tmp_path):
    report = tmp_path / "report.json"
    report.write_text("{}")
    with pytest.raises(FileExistsError), run_scenario(["true"], report):
        pass


# -- the module itself -----------------------------------------------------


def test_import_is_light():
    # Loaded under a bare parent package, mpguard.testing pulls in no other
    # part of mpguard, no pytest and no multiprocessing.
    package = Path(mpguard.testing.__file__).parent.parent
    code = f"""
import sys, types
parent = types.ModuleType("mpguard")
parent.__path__ = [{str(package)!r}]
sys.modules["mpguard"] = parent
import mpguard.testing
mods = sorted(m for m in sys.modules if m.startswith("mpguard"))
assert all(m == "mpguard" or m.startswith("mpguard.testing") for m in mods), mods
assert "pytest" not in sys.modules
assert "multiprocessing" not in sys.modules
print(len(mpguard.testing.__all__))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(mpguard.testing.__all__)


def test_every_public_name_is_documented():
    for name in mpguard.testing.__all__:
        obj = getattr(mpguard.testing, name)
        if callable(obj):
            assert obj.__doc__, name
