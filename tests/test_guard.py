"""The guard as a component: without a pool, idle release, capabilities,
hooks and the one escalation ladder.

Scenarios that make process groups or are killed run out of process
(``tests/scenarios``); the ladder and the schedule are plain code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import pytest

import mpguard
from _support import python_in_own_session, scenario, survivors, wait_for, wait_gone
from mpguard import _platform
from mpguard._group import Target, escalate

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux"
)


def _python(code: str, env: dict[str, str] | None = None) -> str:
    out = python_in_own_session(code, env)
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- a guard without a pool -------------------------------------------------


@pytest.mark.parametrize("mode", ["guarded", "control"])
def test_a_guard_without_a_pool_takes_its_children_with_the_parent(tmp_path, mode):
    with scenario("bare_guard", tmp_path, mode) as sc:
        r = sc.report()
        pids = r["pids"]
        assert len(pids) == 2
        if mode == "guarded":
            # spawn and fork+exec both put the child in the guard's group,
            # never in the parent's.
            assert r["member_pgids"] == [r["guard_pgid"]] * 2
            assert r["guard_pgid"] != r["pgid"]
            # Reaped by the guard's reaper, not by a wait() of ours.
            assert r["quick_returncode"] == 0
            assert not r["quick_zombie"]
        sc.signal(signal.SIGKILL)
        left = wait_gone(pids, 1.0)
        if mode == "guarded":
            assert not left, "guarded children outlived the parent's SIGKILL"
        else:
            # Negative control: plain subprocess children run on.
            assert sorted(left) == sorted(pids)


# --- idle release -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["guarded", "stdlib"])
def test_no_child_is_left_once_no_pool_is_open(tmp_path, mode):
    with scenario("idle_release", tmp_path, mode) as sc:
        r = sc.report()
        assert r["map"] == [1, 2, 3]
        # Within 1 s of join() the program has no child process left (the
        # stdlib fork Pool's behaviour, which the guarded pool matches).
        assert r["released_after"] is not None
        assert r["released_after"] < 1.0, r
        assert r["released_again_after"] is not None
        assert r["released_again_after"] < 1.0, r
        if mode == "guarded":
            # Right after join() the guardian is still there (the linger),
            # and two pools back to back share it.
            assert r["children_after_join"], r
            assert r["back_to_back_same_group"]
            assert r["new_group_after_release"]


# --- a plain fork of a guarded program -------------------------------------------


def test_a_plain_fork_child_gets_the_programs_own_handlers_back():
    # os.fork() in a program whose guard handles SIGTERM, SIGINT and
    # SIGHUP: the child (not guarded) runs the program's own handlers, not
    # mpguard's, and has no signal left blocked.
    out = _python(
        "import os, signal\n"
        "import mpguard\n"
        "def mine(signum, frame):\n"
        "    pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "mpguard.install_handlers()\n"
        "assert signal.getsignal(signal.SIGTERM) is not mine\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = (\n"
        "        signal.getsignal(signal.SIGTERM) is mine\n"
        "        and signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "        and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL\n"
        "        and not signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "    )\n"
        "    os.write(w, b'ok' if ok else b'no')\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(os.read(r, 2).decode())\n"
        "print(signal.getsignal(signal.SIGTERM) is not mine)\n"
    )
    assert out.split() == ["ok", "True"]


# --- the guardian's start -------------------------------------------------------


def _imported(argv, status):
    """The modules *argv* (a ``python`` command line, which must exit with
    *status*) imports, by -X importtime."""
    argv = [argv[0], "-X", "importtime", *argv[1:]]
    out = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    assert out.returncode == status, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return {
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}  # the header line's last column


def test_the_guardian_imports_only_select_and_its_own_module_beyond_a_bare_start():
    # Every module the guardian's interpreter loads is CPU taken from the
    # owner's first workers: `os` alone (stat, posixpath, _collections_abc)
    # is 3 ms of it.  And it is loaded as a module (its cached bytecode),
    # not compiled as a script at every start.  Run outside a group of its
    # own, the guardian exits (status 2) right after its start.
    from mpguard._group._guardian import command

    bare = _imported([sys.executable, "-I", "-S", "-c", "pass"], 0)
    guardian = _imported(command(os.getpid(), 0, 0.0), 2)
    assert "encodings" in bare  # the parse sees what a start imports
    assert guardian - bare == {"select", "_guardian_main"}


# --- capabilities ---------------------------------------------------------------


def test_capabilities_are_probed_once_and_can_be_disabled():
    caps = mpguard.capabilities()
    assert caps is mpguard.capabilities()
    assert caps.python == tuple(sys.version_info[:3])
    assert caps.fork
    assert caps.posix_spawn
    assert caps.memfd
    assert caps.seqpacket
    assert caps.kernel == os.uname().release
    assert caps.kernel_version[:2] >= (3, 0)
    d = caps.as_dict()
    assert set(d) >= {"pidfd", "pidfd_group_signal", "subreaper", "cgroup_kill"}
    out = _python(
        "import mpguard; c = mpguard.capabilities(); "
        "print(c.pidfd, c.pidfd_group_signal, c.seqpacket)",
        env={"MPGUARD_DISABLE": "pidfd,seqpacket"},
    )
    assert out.split() == ["False", "False", "False"]


def test_the_guard_reads_pidfd_support_from_the_record():
    # With pidfds disabled, the guard warns and still reaps (by polling).
    out = _python(
        "import warnings, time, multiprocessing as mp, mpguard\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    p = mp.get_context('guarded').Process(target=time.sleep, args=(0,))\n"
        "    p.start(); p.join()\n"
        "warned = any('pidfds are unavailable' in str(x.message) for x in w)\n"
        "print(p.exitcode, warned)\n",
        env={"MPGUARD_DISABLE": "pidfd"},
    )
    assert out.split() == ["0", "True"]


# --- teardown hooks and the lifecycle --------------------------------------------


def test_teardown_hooks_run_and_the_guard_closes():
    out = _python(
        "import gc, time, multiprocessing as mp, mpguard\n"
        "from mpguard import _group\n"
        "calls = []\n"
        "_group.on_teardown(lambda: calls.append('process'))\n"
        "g = _group.acquire()\n"
        "class Owner: pass\n"
        "o, gone = Owner(), Owner()\n"
        "g.on_teardown(lambda x: calls.append('owner'), o)\n"
        "g.on_teardown(lambda x: calls.append('gone'), gone)\n"
        "g.on_teardown(lambda x: calls.append('late'), late=True)\n"
        "del gone; gc.collect()\n"
        "p = mp.get_context('guarded').Process(target=time.sleep, args=(60,))\n"
        "p.start()\n"
        "print(g.state.name)\n"
        "mpguard.shutdown()\n"
        "print(g.state.name, p.exitcode, ','.join(calls))\n"
    )
    assert out.split() == ["OPEN", "CLOSED", "-15", "process,owner,late"]


# --- the escalation ladder --------------------------------------------------------


class FakeTarget:
    """A target whose processes die after a given signal."""

    def __init__(self, dies_on: int | None) -> None:
        self.sent: list[int] = []
        self.dies_on = dies_on

    def target(self) -> Target:
        return Target("fake", self.sent.append, self.remaining, lambda: [])

    def remaining(self) -> int:
        return 0 if self.dies_on in self.sent else 2


def test_ladder_stops_at_sigterm_when_that_suffices():
    t = FakeTarget(dies_on=signal.SIGTERM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert escalate(t.target(), 0.05) is False
    assert t.sent == [signal.SIGTERM]


def test_ladder_escalates_to_sigkill_after_the_grace_and_warns():
    t = FakeTarget(dies_on=signal.SIGKILL)
    with pytest.warns(mpguard.EscalationWarning, match="2 process"):
        assert escalate(t.target(), 0.05) is True
    assert t.sent == [signal.SIGTERM, signal.SIGKILL]


def test_ladder_can_start_at_sigkill():
    t = FakeTarget(dies_on=None)
    assert escalate(t.target(), 5.0, term=False) is True
    assert t.sent == [signal.SIGKILL]


def test_survivors_helper_sees_a_live_process():
    # The helpers the kill tests rely on must be able to fail.
    p = subprocess.Popen(["sleep", "5"])
    try:
        assert survivors([p.pid]) == [p.pid]
    finally:
        p.kill()
        p.wait()
    assert survivors([p.pid]) == []


def test_a_group_has_others_only_while_a_live_member_besides_its_leader_is_in_it():
    # What the guard asks at exit and before an idle release: answered with
    # one getpgid() per process, so it must not miss a member, and must
    # not count a zombie.  The group is a child's own, never ours.
    leader = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: os.setpgid(0, 0))
    pgid = leader.pid
    member = None
    try:
        assert not _platform.group_has_others(pgid, pgid)
        assert _platform.group_has_others(pgid, 0)  # the leader is a member
        member = subprocess.Popen(
            ["sleep", "60"], preexec_fn=lambda: os.setpgid(0, pgid)
        )
        assert _platform.group_has_others(pgid, pgid)
        member.kill()
        # Unreaped, it is a zombie that is still in the group.
        assert wait_for(lambda: not _platform.group_has_others(pgid, pgid))
        assert os.getpgid(member.pid) == pgid  # unreaped: still a member
    finally:
        for p in (member, leader):
            if p is not None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("in_thread", [False, True])
def test_children_of_finds_a_child_whichever_thread_forked_it(in_thread):
    # A child is listed under the thread that forked it; a single-threaded
    # process is read without listing its threads, so both paths are tried.
    if _platform.children_of(os.getpid()) is None:
        pytest.skip("the kernel has no /proc/<pid>/task/<tid>/children files")
    code = (
        "import subprocess, sys, threading\n"
        "started, done = [], threading.Event()\n"
        "def start():\n"
        "    started.append(subprocess.Popen(['sleep', '60']))\n"
        "    print(started[0].pid, flush=True)\n"
        "    done.wait()  # a forking thread stays alive\n"
        f"if {in_thread}:\n"
        "    threading.Thread(target=start, daemon=True).start()\n"
        "else:\n"
        "    done.set()\n"
        "    start()\n"
        "sys.stdin.read()  # until the test closes it\n"
        "started[0].kill()\n"
        "started[0].wait()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdin is not None
    assert parent.stdout is not None
    child = None
    try:
        child = int(parent.stdout.readline())
        assert _platform.children_of(parent.pid) == [child]
    finally:
        parent.stdin.close()  # it kills and reaps its child, then exits
        try:
            parent.wait(10)
        except subprocess.TimeoutExpired:
            if child is not None:  # not reaped: still the parent's child
                os.kill(child, signal.SIGKILL)
        finally:
            parent.kill()
            parent.wait()
            parent.stdout.close()
