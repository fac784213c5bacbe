"""The ``mpguard`` command: ``doctor`` and ``tree``.

Each runs as a user would, ``python -m mpguard ...`` in a fresh process:
exit statuses, one-line errors and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.linux


def _mpguard(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mpguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_doctor_reports_full_protection_here():
    out = _mpguard("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "full protection" in out.stdout
    assert "pidfd" in out.stdout


def test_doctor_names_a_missing_capability_and_exits_1():
    # MPGUARD_DISABLE is how the fallbacks are exercised on Linux.
    out = _mpguard("doctor", env={**os.environ, "MPGUARD_DISABLE": "pidfd"})
    assert out.returncode == 1
    assert "degraded: pidfd" in out.stdout
    assert "polled every 50 ms" in out.stdout  # the fallback, named


def test_doctor_json():
    out = _mpguard("doctor", "--json")
    data = json.loads(out.stdout)
    assert data["capabilities"]["fork"] is True
    assert "guarded-fork" in data["start_methods"]
    assert data["missing"] == []


def test_tree_marks_zombies_orphans_and_the_guard(tmp_path):
    # A guarded child, and a zombie child of this process.
    import mpguard

    zombie = subprocess.Popen(["true"])
    ctx = mpguard.get_context("guarded")
    import time

    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{zombie.pid}/stat") as f:
                if f.read().split(")")[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        out = _mpguard("tree", str(os.getpid()), "--json")
        assert out.returncode == 0, out.stderr
        rows = {r["pid"]: r for r in json.loads(out.stdout)}
        assert "zombie" in rows[zombie.pid]["marks"]
        guardian = os.getpgid(p.pid)
        assert "guardian" in rows[guardian]["marks"]
        # Shown as its script and owner (a python one without its -c
        # bootstrap).
        cmd = rows[guardian]["cmd"]
        from mpguard import _platform

        if _platform.PERL:
            assert f"_guardian_main.pl {os.getpid()} " in cmd, cmd
        else:
            assert f"_guardian_main.py {os.getpid()} " in cmd, cmd
            assert " -I -S " in cmd, cmd
        assert " -c " not in cmd, cmd
        assert f"guarded(pgid={guardian})" in rows[p.pid]["marks"]
        assert rows[os.getpid()]["depth"] == 0
        text = _mpguard("tree", str(os.getpid())).stdout
        assert "[zombie" in text
    finally:
        p.kill()
        p.join()
        zombie.wait()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["tree", "999999999"], 1, "no process 999999999"),
        (["tree", "x"], 2, "invalid int value"),
        (["bogus"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_a_documented_status(args, status, message):
    out = _mpguard(*args)
    assert out.returncode == status
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_version():
    import mpguard

    out = _mpguard("--version")
    assert out.stdout.strip() == f"mpguard {mpguard.__version__}"


# The leak check's subreaper would adopt the orphan: off for this test.
@pytest.mark.mpguard_allow_leaks
def test_tree_marks_an_orphan(kill_at_end):
    import psutil

    import mpguard

    pid = mpguard.spawn_detached(["sleep", "600"])
    kill_at_end.append(pid)
    if psutil.Process(pid).ppid() != 1:
        pytest.skip("orphans go to a subreaper here, not to PID 1")
    out = _mpguard("tree", str(pid), "--json")
    (row,) = json.loads(out.stdout)
    assert "orphan" in row["marks"]
