"""billiard (Celery's multiprocessing) on billiard's "guarded" context.

``import mpguard.billiard`` registers it; a billiard Pool built on it gets
the guarded fork's guarantees.  Each protection has its control: the same
scenario on billiard's own "fork" context.  Lost tasks and reaping are
billiard's own features: those tests check that the guarded Popen keeps
them working.  (billiard's ``maxtasksperchild`` churn is not used: on its
own "fork" context it hangs now and then on 3.13 and fails recycled
workers' jobs on 3.9 with billiard 4.2, so it could not be told apart from
a guarded-side failure.)
"""

from __future__ import annotations

import signal
import time

import pytest

from _support import LONG, SHORT, describe, scenario, wait_gone

pytest.importorskip("billiard")
pytestmark = pytest.mark.linux


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_tree_dies_when_parent_sigkilled(tmp_path, mode):
    # mode "stdlib": billiard's own "fork" context, the control.
    with scenario("busy_pool", tmp_path, mode, method="billiard") as sc:
        r = sc.report()
        if mode == "guarded":
            assert len(set(r["worker_pgids"])) == 1
            assert r["worker_pgids"][0] != r["pgid"], "parent must not be in the group"
            t0 = time.monotonic()
            sc.signal(signal.SIGKILL)
            left = wait_gone(r["tree"], 1.0)
            assert not left, describe(left)
            dt = time.monotonic() - t0
            print(f"billiard: {len(r['tree'])} gone {dt * 1000:.0f} ms")
        else:
            assert r["worker_pgids"] == [r["pgid"]] * len(r["workers"])
            sc.signal(signal.SIGKILL)
            left = wait_gone(r["workers"] + r["grandchildren"], 1.0)
            assert set(left) == set(r["workers"] + r["grandchildren"])


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_parent_sigterm_tears_group_down(tmp_path, mode):
    with scenario("busy_pool", tmp_path, mode, method="billiard") as sc:
        r = sc.report()
        sc.signal(signal.SIGTERM)
        if mode == "guarded":
            assert sc.wait(SHORT) == -signal.SIGTERM, sc.output()
            assert not wait_gone(r["tree"], SHORT)
        else:  # billiard's own fork context orphans the workers
            assert sc.wait(SHORT) == -signal.SIGTERM
            left = wait_gone(r["workers"] + r["grandchildren"], 1.0)
            assert set(left) == set(r["workers"] + r["grandchildren"])


def test_lost_task_fails_with_billiards_worker_lost_error(tmp_path):
    with scenario(
        "billiard_pool", tmp_path, "guarded", "lost", method="billiard"
    ) as sc:
        r = sc.report(LONG)
        assert r["error"]["type"] == "WorkerLostError", r
        assert "SIGKILL" in r["error"]["str"]
        assert r["seconds"] < 5.0  # lost_worker_timeout=0.5 plus billiard's ticks
        assert r["after_pgids"] != [r["pgid"]]  # replacements guarded too
        assert r["zombies"] == []


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_terminate_returns_after_a_worker_died_holding_the_queue_lock(tmp_path, mode):
    # An idle billiard worker waits for work holding the task queue's read
    # lock; SIGKILLed then, it leaves the lock taken, and billiard's
    # terminate() waits for it forever (billiard's form of gh-96062).
    hung = []
    for _ in range(3):  # the control hangs whenever the holder was killed
        with scenario(
            "billiard_pool", tmp_path, mode, "terminate", method="billiard"
        ) as sc:
            r = sc.report(LONG)
            hung.append(r["hung"])
            if mode == "guarded":
                assert not r["hung"], r
                # Two dead-held locks at 1.5 s each, the 1 s grace, and a margin.
                assert r["seconds"] < 6.0, r
        if mode == "stdlib" and any(hung):
            break
    if mode == "stdlib":
        assert any(hung), "billiard's own terminate() did not hang this time"


@pytest.mark.parametrize("how", ["wlock-kill", "death-race"])
@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_a_worker_that_dies_holding_the_result_lock_does_not_stop_the_pool(
    tmp_path, mode, how
):
    # billiard's threaded Pool: every worker sends its ACKs and results
    # through one queue under one write lock.  A worker that dies holding
    # it (SIGKILLed mid-message; or SIGTERMed by billiard itself as soon as
    # its DEATH message is read, before it released the lock) leaves the
    # next worker's ACK waiting forever: the pool stops serving.
    with scenario("billiard_pool", tmp_path, mode, how, method="billiard") as sc:
        r = sc.report(LONG)
    if mode == "guarded":
        assert r["served"], r
        # A dead holder is found within the supervisor's tick (0.8 s) and
        # 1.5 s of waiting for the lock.
        assert r["seconds"] < 5.0, r
    else:
        assert not r["served"], "billiard's own pool served this time"
