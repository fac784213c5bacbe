"""GuardedPool never hangs where the stdlib Pool does.

Each scenario runs the blocking call in a thread with a watchdog; the
stdlib controls must report the hang, the guarded runs must not.
"""

from __future__ import annotations

import pytest

from _support import LONG, scenario

pytestmark = pytest.mark.linux

GRACE = 1.0  # the default policy's


def _run(tmp_path, mode, case, method=None):
    with scenario("hangs", tmp_path, mode, case, method=method) as sc:
        return sc.report(LONG)


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_idle_workers_killed_at_once_do_not_poison_the_pool(
    tmp_path, mode, start_method
):
    r = _run(tmp_path, mode, "poisoned", start_method)
    if mode == "guarded":
        assert not r["map"]["hung"], r
        # Idle workers had started nothing: their tasks go elsewhere, none
        # fails.  An error here may only be a WorkerLostError naming a
        # killed worker, never a hang or another error.  (A load-dependent
        # error once seen here was the stdlib's ZeroDivisionError from
        # map() called while no worker was alive yet; _compat.map_chunksize
        # fixes it, and guarded-spawn's slow respawn made it show 1 run in
        # 3.)
        if "value" not in r["map"]:
            assert r["map"]["error"] == "WorkerLostError", r
            assert any(f"pid={pid}," in r["map"]["str"] for pid in r["victims"]), r
        else:
            assert r["map"]["value"] == [abs(i) for i in range(-5, 5)]
        assert not r["terminate"]["hung"]
        assert r["terminate"]["elapsed"] < GRACE + 0.5
    else:
        assert r["map"]["hung"], r  # gh-96062
        assert r["terminate"]["hung"], r  # gh-78178


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_terminate_with_result_thread_stuck_in_a_callback(tmp_path, mode):
    r = _run(tmp_path, mode, "callback")
    if mode == "guarded":
        assert not r["terminate"]["hung"]
        assert r["terminate"]["elapsed"] < GRACE + 0.5
    else:  # the stdlib's terminate() waits for the stuck callback
        assert r["terminate"]["hung"]


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_leaving_with_block_when_workers_ignore_sigterm(tmp_path, mode):
    r = _run(tmp_path, mode, "ignore_term")
    if mode == "guarded":
        assert not r["exit_with"]["hung"]
        assert r["exit_with"]["elapsed"] < 0.3 + 0.5  # grace=0.3 + 0.5 s
        # The pending map does not wait forever either.
        assert r["get_after"]["error"] == "PoolTerminatedError"
    else:  # the stdlib's `with` block hangs, and so does the pending map
        assert r["exit_with"]["hung"]
        assert r["get_after"]["hung"]


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_failing_initializer_fails_tasks_instead_of_hanging(
    tmp_path, mode, start_method
):
    r = _run(tmp_path, mode, "initializer", start_method)
    if mode == "guarded":
        assert not r["get"]["hung"]
        assert r["get"]["error"] == "WorkerLostError"
        assert r["get"]["hint"] == "check the pool's initializer"
        assert "exitcode=1" in r["get"]["str"]
    else:  # the stdlib respawns the failing workers forever
        assert r["get"]["hung"]
