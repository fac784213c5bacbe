"""No zombies, and no stolen exit statuses.

The negative controls are the two fixes for zombies that blog posts keep
recommending: ``signal(SIGCHLD, SIG_IGN)``, after which ``waitpid()`` fails
with ECHILD (waitpid(2), NOTES) and ``subprocess`` reports returncode 0
(Lib/subprocess.py, ``Popen._try_wait``); and a SIGCHLD handler looping over
``os.waitpid(-1, WNOHANG)``, which reaps other code's children and takes
their statuses (python/cpython#92881).
"""

from __future__ import annotations

import time

import psutil
import pytest

from _support import SHORT, alive, scenario, wait_for

pytestmark = pytest.mark.linux


def _state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "reaped"


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_unjoined_process_is_reaped_within_100ms(tmp_path, mode, start_method):
    if mode == "stdlib" and start_method == "guarded-forkserver":
        pytest.skip("the stdlib forkserver reaps its own children")
    with scenario("zombie", tmp_path, mode, method=start_method) as sc:
        r = sc.report()
        if mode == "guarded":
            assert wait_for(lambda: _state(r["child_pid"]) == "reaped", SHORT)
            reaped_at = time.monotonic()
            with open(r["exit_path"]) as f:
                exited_at = float(f.read())
            # Upper bound: we observe the reap at most one poll interval late.
            assert reaped_at - exited_at < 0.1 + 0.05, reaped_at - exited_at
            assert alive(r["pid"])
            # Nothing the parent started directly is a zombie (the guardian
            # and, under guarded-forkserver, the forkserver included).
            kids = psutil.Process(r["pid"]).children()
            assert not [c.pid for c in kids if _state(c.pid) == psutil.STATUS_ZOMBIE]
        else:
            zombie = psutil.STATUS_ZOMBIE
            assert wait_for(lambda: _state(r["child_pid"]) == zombie, SHORT)
            # Still a zombie well past the guarded bound.
            assert not wait_for(lambda: _state(r["child_pid"]) != zombie, 0.5)


@pytest.mark.parametrize("mode", ["guarded", "sig_ign", "waitpid_all"])
def test_exit_statuses_stay_exact(tmp_path, mode):
    with scenario("statuses", tmp_path, mode) as sc:
        r = sc.report()
        if mode == "guarded":
            assert r["returncodes"] == [3] * 20
            assert r["exitcodes"] == [7] * 20
            assert r["bg_exitcodes"] == [5] * 5
            assert r["check_raised"]
        else:  # the controls: both common reapers steal statuses
            if mode == "sig_ign":
                # subprocess turns the lost status into 0; check=True passes.
                assert r["returncodes"] == [0] * 20
                assert not r["check_raised"]
            assert r["exitcodes"] != [7] * 20 or r["returncodes"] != [3] * 20


def test_churn_leaves_no_zombies(tmp_path, start_method):
    with scenario("churn", tmp_path, "guarded", method=start_method) as sc:
        r = sc.report()
        assert not r["hung"]
        assert len(r["workers"]) > 10
        assert r["zombies_after_100ms"] == []


def test_a_churning_pool_survives_sigchld_ignored(tmp_path):
    # SIG_IGN reaps every worker behind the pool's back: each retired
    # worker's status is lost (exit code 255, multiprocessing's "unknown"),
    # the pool replaces it, and no waiter spins on its pidfd.
    with scenario("churn", tmp_path, "guarded_sig_ign") as sc:
        r = sc.report()
        assert not r["hung"]
        assert len(r["workers"]) > 10
        assert r["zombies_after_100ms"] == []
        assert r["cpu"] < 0.5 * r["wall"], r


def test_control_sigchld_ignored_hangs_a_churning_pool(tmp_path):
    # The SIG_IGN fix for zombies makes every retired worker's exitcode None
    # forever (Popen.poll() swallows ECHILD: Lib/multiprocessing/
    # popen_fork.py), so the stdlib Pool never replaces it and map() hangs.
    with scenario("churn", tmp_path, "sig_ign") as sc:
        r = sc.report()
        assert r["hung"]
