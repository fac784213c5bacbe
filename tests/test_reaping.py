"""No zombies, and no stolen exit statuses (seeds 000, 001, 002)."""

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


def test_unjoined_process_is_reaped_within_100ms(tmp_path, start_method):
    with scenario("zombie", tmp_path, "guarded", method=start_method) as sc:
        r = sc.report()
        assert wait_for(lambda: _state(r["child_pid"]) == "reaped", SHORT)
        reaped_at = time.monotonic()
        with open(r["exit_path"]) as f:
            exited_at = float(f.read())
        # Upper bound: we observe the reap at most one poll interval late.
        assert reaped_at - exited_at < 0.1 + 0.05, reaped_at - exited_at
        assert alive(r["pid"])
        # Nothing the parent started directly is a zombie (the guardian and,
        # under guarded-forkserver, the forkserver included).
        kids = psutil.Process(r["pid"]).children()
        assert not [c.pid for c in kids if _state(c.pid) == psutil.STATUS_ZOMBIE]


def test_control_unjoined_stdlib_process_stays_zombie(tmp_path, start_method):
    if start_method == "guarded-forkserver":
        pytest.skip("the stdlib forkserver reaps its own children")
    with scenario("zombie", tmp_path, "stdlib", method=start_method) as sc:
        r = sc.report()
        assert wait_for(lambda: _state(r["child_pid"]) == psutil.STATUS_ZOMBIE, SHORT)
        # Still a zombie well past the guarded bound.
        assert not wait_for(lambda: _state(r["child_pid"]) != psutil.STATUS_ZOMBIE, 0.5)


def test_exit_statuses_stay_exact(tmp_path):
    with scenario("statuses", tmp_path, "guarded") as sc:
        r = sc.report()
        assert r["returncodes"] == [3] * 20
        assert r["exitcodes"] == [7] * 20
        assert r["bg_exitcodes"] == [5] * 5
        assert r["check_raised"]


@pytest.mark.parametrize("mode", ["sig_ign", "waitpid_all"])
def test_control_seed_reapers_steal_statuses(tmp_path, mode):
    with scenario("statuses", tmp_path, mode) as sc:
        r = sc.report()
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


def test_control_seed_sig_ign_hangs_a_churning_pool(tmp_path):
    # The seed's zombie fix makes every retired worker's exitcode None
    # forever, so the stdlib Pool never replaces it and map() hangs.
    with scenario("churn", tmp_path, "sig_ign") as sc:
        r = sc.report()
        assert r["hung"]
