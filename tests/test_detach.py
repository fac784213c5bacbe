"""``mpguard.spawn_detached``: a child meant to outlive its parent.

Detached programs leave the test's session on purpose, so every test kills
what it started (the ``kill_at_end`` fixture) and polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import mpguard
from _support import LONG, SHORT, scenario, wait_for, wait_gone

pytestmark = pytest.mark.linux


def _stdio(pid: int) -> list[str]:
    return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)]


# Not adopted by the leak check's subreaper: as a user runs it.
@pytest.mark.mpguard_allow_leaks
def test_outside_the_session_and_the_group_with_stdio_on_devnull(kill_at_end):
    pid = mpguard.spawn_detached(["sleep", "600"])
    kill_at_end.append(pid)
    # A session of its own, led by the middle process that exited: the
    # program is no session leader, so it never gets a controlling
    # terminal back (the point of the classic double fork).
    assert os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) != pid
    assert os.getpgid(pid) != os.getpgrp()
    assert _stdio(pid) == ["/dev/null"] * 3
    # Not our child: once it exits, no zombie is ours (nor the middle's,
    # which is reaped already).
    assert pid not in [p.pid for p in psutil.Process().children(recursive=True)]


# Not adopted by the leak check's subreaper: as a user runs it.
@pytest.mark.mpguard_allow_leaks
def test_no_zombie_is_left_with_the_parent(kill_at_end):
    pid = mpguard.spawn_detached(["sh", "-c", "exit 0"])
    kill_at_end.append(pid)
    time.sleep(0.2)
    zombies = [
        p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE
    ]
    assert zombies == []


def test_stdio_can_be_given(tmp_path, kill_at_end):
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        pid = mpguard.spawn_detached(["sh", "-c", "echo hello"], stdout=f, cwd=tmp_path)
    kill_at_end.append(pid)
    assert wait_for(lambda: out.read_bytes() == b"hello\n", SHORT)


def test_it_survives_the_parents_death(tmp_path, kill_at_end):
    # The scenario's parent starts guarded Popens and is SIGKILLed: they
    # die; what it detached lives on.
    with scenario("popen", tmp_path, "guarded", "detach") as sc:
        r = sc.report(LONG)
        kill_at_end.append(r["detached"])
        sc.signal(signal.SIGKILL)
        assert not wait_gone(r["workers"] + r["grandchildren"], 1.0)
        assert psutil.Process(r["detached"]).status() != psutil.STATUS_ZOMBIE


# --- the pidfile --------------------------------------------------------------------


def test_the_pidfile_holds_the_pid(tmp_path, kill_at_end):
    pidfile = tmp_path / "d.pid"
    pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    kill_at_end.append(pid)
    assert pidfile.read_text() == f"{pid}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["d.pid"]  # no temporary left


def test_a_live_pidfile_refuses_a_second_start(tmp_path, kill_at_end):
    pidfile = tmp_path / "d.pid"
    pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    kill_at_end.append(pid)
    before = set(psutil.pids())
    with pytest.raises(FileExistsError, match=f"running process {pid}"):
        mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    assert pidfile.read_text() == f"{pid}\n"
    started = [p for p in set(psutil.pids()) - before if _is_sleep(p)]
    assert started == []  # refused before anything started


def _is_sleep(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "sleep"
    except psutil.Error:
        return False


def test_a_stale_pidfile_of_a_dead_process_is_replaced(tmp_path, kill_at_end):
    pidfile = tmp_path / "d.pid"
    gone = psutil.Popen(["true"])
    gone.wait()
    pidfile.write_text(f"{gone.pid}\n")
    pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    kill_at_end.append(pid)
    assert pidfile.read_text() == f"{pid}\n"


def test_a_stale_pidfile_whose_pid_was_reused_is_replaced(tmp_path, kill_at_end):
    # The pid now belongs to a process started after the file was written.
    pidfile = tmp_path / "d.pid"
    other = psutil.Popen(["sleep", "600"])
    try:
        pidfile.write_text(f"{other.pid}\n")
        old = time.time() - 3600
        os.utime(pidfile, (old, old))
        pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
        kill_at_end.append(pid)
        assert pidfile.read_text() == f"{pid}\n"
        assert other.is_running()  # the bystander is never signalled
    finally:
        other.kill()
        other.wait()


def test_garbage_in_a_pidfile_is_stale(tmp_path, kill_at_end):
    pidfile = tmp_path / "d.pid"
    pidfile.write_text("not a pid\n")
    pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    kill_at_end.append(pid)
    assert pidfile.read_text() == f"{pid}\n"


def test_a_pidfile_that_cannot_be_written_leaves_nothing_running(tmp_path):
    before = set(psutil.pids())
    with pytest.raises(FileNotFoundError):
        mpguard.spawn_detached(["sleep", "600"], pidfile=tmp_path / "no" / "d.pid")
    started = [p for p in set(psutil.pids()) - before if _is_sleep(p)]
    assert not wait_gone(started, SHORT)


# --- bad input ----------------------------------------------------------------------


def test_a_missing_program_raises():
    with pytest.raises(FileNotFoundError) as e:
        mpguard.spawn_detached(["/no/such/program"])
    assert e.value.filename == "/no/such/program"


def test_no_program_is_a_value_error():
    with pytest.raises(ValueError, match="needs a program"):
        mpguard.spawn_detached([])


# --- daemonizing the current process: python-daemon ---------------------------------


def test_a_guarded_pool_works_inside_a_daemon_context(tmp_path):
    pytest.importorskip("daemon")
    with scenario("daemonized", tmp_path) as sc:
        r = sc.report(LONG)
        sc.remember([r["pid"]])
        assert r["squares"] == [x * x for x in range(8)]
        assert r["sid"] == os.getsid(r["pid"]) != os.getsid(0)
        assert r["pgid"] not in r["worker_pgids"]
        # The daemon is SIGKILLed: its workers go with it.
        psutil.Process(r["pid"]).kill()
        assert not wait_gone(r["workers"], 1.0)
