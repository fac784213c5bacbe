"""Celery workers that are safe to kill: ``mpguard.celery:TaskPool``.

Every test runs a real ``celery worker`` process fed through a real
redis-server by a real client (this process).  Each protection runs the
same scenario on Celery's own prefork pool as its negative control: there,
the leak, the orphan or the zombie shows.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from _support import LONG, SHORT, describe, survivors, wait_for, wait_gone
from mpguard.testing import zombies

pytest.importorskip("celery")
pytestmark = pytest.mark.linux

from _celery import celery_worker  # noqa: E402 - after the importorskip

guarded_and_control = pytest.mark.parametrize("pool", ["guarded", "stock"])


def _tree(w, tags):
    """Pool children and grandchildren the tasks *tags* reported."""
    reports = [w.wait_report(t) for t in tags]
    workers = [r["worker"] for r in reports]
    grandchildren = [g for r in reports for g in r["grandchildren"]]
    return workers, grandchildren


def _still_serves(w):
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        got = w.send("add", 2, 3).get(timeout=LONG)
    except CeleryTimeout:
        pytest.fail(f"the worker no longer serves; {w.log()}")
    assert got == 5


# --- opting in -------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["guarded", "custom"])
def test_one_line_opts_a_worker_in(tmp_path, redis_url, pool):
    # "guarded": worker_pool in the app's configuration; "custom":
    # CELERY_CUSTOM_WORKER_POOL=mpguard.celery:TaskPool with -P custom.
    with celery_worker(tmp_path, redis_url, pool) as w:
        stats = w.stats()
        assert stats["pool"]["implementation"] == "mpguard.celery:TaskPool"
        assert stats["pool"]["max-concurrency"] == 2
        pid, pgid = w.send("whoami").get(timeout=LONG)
        main_pgid = os.getpgid(w.main_pid)
        assert pid in w.pool_pids()
        # One group for the pool children, led by the guardian, and the
        # worker's main process is not in it.
        assert pgid != main_pgid
        assert psutil.Process(pgid).ppid() == w.main_pid
        assert w.send("add", 1, 2).get(timeout=LONG) == 3


def test_stock_pool_children_share_the_main_process_group(tmp_path, redis_url):
    with celery_worker(tmp_path, redis_url, "stock") as w:
        _, pgid = w.send("whoami").get(timeout=LONG)
        assert pgid == w.main_pid  # the control's children die with nobody


# --- the worker's main process is SIGKILLed ---------------------------------------


@pytest.mark.parametrize(
    ("pool", "blocking"),
    [("guarded", False), ("guarded", True), ("stock", False)],
    ids=["guarded-asynpool", "guarded-blockingpool", "stock"],
)
def test_main_sigkill_takes_pool_children_and_grandchildren(
    tmp_path, redis_url, pool, blocking
):
    with celery_worker(tmp_path, redis_url, pool, blocking=blocking) as w:
        w.send("hold", "a", 60)
        w.send("hold", "b", 60)
        workers, grandchildren = _tree(w, ["a", "b"])
        t0 = time.monotonic()
        w.sc.signal(signal.SIGKILL)
        if pool == "guarded":
            left = wait_gone(workers + grandchildren, 1.0)
            assert not left, describe(left)
            ms = (time.monotonic() - t0) * 1e3
            print(f"celery kill -9: tree gone in {ms:.0f} ms")
        else:
            # Celery's PR_SET_PDEATHSIG takes the pool children; what the
            # tasks started runs on (celery/celery#102).
            assert not wait_gone(workers, 1.0)
            time.sleep(0.2)  # and stays: not a race with the kill
            assert survivors(grandchildren) == grandchildren


# --- warm and cold shutdown ---------------------------------------------------------


@guarded_and_control
def test_warm_shutdown_finishes_tasks_then_leaves_nothing(tmp_path, redis_url, pool):
    with celery_worker(tmp_path, redis_url, pool) as w:
        # Each task leaves a helper running when it returns.
        results = [w.send("hold", t, 1.5, False, True) for t in ("a", "b")]
        workers, grandchildren = _tree(w, ["a", "b"])
        w.sc.signal(signal.SIGTERM)
        # Warm: both tasks run to the end and their results are stored.
        assert [r.get(timeout=LONG) for r in results] == ["a", "b"]
        assert w.sc.wait(LONG) == 0, w.log()
        if pool == "guarded":
            left = wait_gone(workers + grandchildren, SHORT)
            assert not left, describe(left)
        else:
            assert not wait_gone(workers, SHORT)
            assert survivors(grandchildren) == grandchildren


# Celery 5.5+ keeps a second SIGTERM warm; a second Ctrl-C is its cold path.
@pytest.mark.parametrize("how", ["sigquit", "second-sigint"])
@guarded_and_control
def test_cold_shutdown_takes_the_whole_tree(tmp_path, redis_url, pool, how):
    with celery_worker(tmp_path, redis_url, pool) as w:
        # Grandchildren that ignore SIGTERM: only the escalation ends them.
        w.send("hold", "a", 60, True)
        w.send("hold", "b", 60, True)
        workers, grandchildren = _tree(w, ["a", "b"])
        t0 = time.monotonic()
        if how == "sigquit":
            w.sc.signal(signal.SIGQUIT)
        else:
            w.sc.signal(signal.SIGINT)
            time.sleep(0.3)
            w.sc.signal(signal.SIGINT)
        assert w.sc.wait(LONG) is not None, w.log()
        if pool == "guarded":
            # The grace period is 1 s (mpguard's policy).
            left = wait_gone(workers + grandchildren, 1.5)
            assert not left, describe(left)
            print(f"cold shutdown ({how}): gone in {time.monotonic() - t0:.2f} s")
        else:
            assert survivors(grandchildren) == grandchildren


# --- a task's subtree: hard time limit, revoke, a pool child killed ------------


@pytest.mark.parametrize(
    ("pool", "blocking"),
    [("guarded", False), ("guarded", True), ("stock", False)],
    ids=["guarded-asynpool", "guarded-blockingpool", "stock"],
)
def test_hard_time_limit_kills_the_task_subtree(tmp_path, redis_url, pool, blocking):
    from celery.exceptions import TimeLimitExceeded

    with celery_worker(tmp_path, redis_url, pool, blocking=blocking) as w:
        r = w.send("hold", "a", 60, True, time_limit=1)
        _, grandchildren = _tree(w, ["a"])
        with pytest.raises(TimeLimitExceeded):
            r.get(timeout=LONG)
        if pool == "guarded":
            left = wait_gone(grandchildren, SHORT)
            assert not left, describe(left)
        else:
            time.sleep(0.5)
            assert survivors(grandchildren) == grandchildren
        _still_serves(w)


@guarded_and_control
def test_revoke_terminate_kills_the_task_subtree(tmp_path, redis_url, pool):
    with celery_worker(tmp_path, redis_url, pool) as w:
        r = w.send("hold", "a", 60, True)
        _, grandchildren = _tree(w, ["a"])
        w.proj.app.control.revoke(r.id, terminate=True, destination=[w.hostname])
        assert wait_for(lambda: r.state == "REVOKED", LONG), r.state
        if pool == "guarded":
            # SIGTERM to the whole subtree, SIGKILL after the 1 s grace.
            left = wait_gone(grandchildren, 1.0 + SHORT)
            assert not left, describe(left)
        else:
            time.sleep(1.5)
            assert survivors(grandchildren) == grandchildren
        _still_serves(w)


@guarded_and_control
def test_a_killed_pool_child_takes_its_orphans(tmp_path, redis_url, pool):
    from billiard.exceptions import WorkerLostError

    with celery_worker(tmp_path, redis_url, pool) as w:
        r = w.send("hold", "a", 60)
        workers, grandchildren = _tree(w, ["a"])
        psutil.Process(workers[0]).kill()  # what the OOM killer does
        with pytest.raises(WorkerLostError):
            r.get(timeout=LONG)
        if pool == "guarded":
            left = wait_gone(grandchildren, 1.0)
            assert not left, describe(left)
        else:
            time.sleep(0.5)
            assert survivors(grandchildren) == grandchildren
        _still_serves(w)


def test_a_killed_pool_child_spares_other_tasks_background_jobs(tmp_path, redis_url):
    # No bystander: a live task's background job (orphaned by its shell,
    # kept below its pool child) is not taken for the dead child's orphan.
    with celery_worker(tmp_path, redis_url, "guarded") as w:
        w.send("background", "bg", 60)
        _, jobs = _tree(w, ["bg"])
        w.send("hold", "a", 60)
        workers, grandchildren = _tree(w, ["a"])
        psutil.Process(workers[0]).kill()
        assert not wait_gone(grandchildren, 1.0)
        time.sleep(0.5)
        assert survivors(jobs) == jobs, "another task's job was killed"


@pytest.mark.parametrize("grace", ["0.5", "0"], ids=["grace", "control-sigkill"])
def test_parent_death_grace_lets_a_task_clean_up(tmp_path, redis_url, grace):
    env = {"MPGUARD_PARENT_DEATH_GRACE": grace}
    with celery_worker(tmp_path, redis_url, "guarded", env=env) as w:
        w.send("cleans_up", "t")
        workers, _ = _tree(w, ["t"])
        w.sc.signal(signal.SIGKILL)
        left = wait_gone(workers, 1.0)  # the bound holds for every policy
        assert not left, describe(left)
        cleaned = (w.report_dir / "t-cleaned.json").exists()
        assert cleaned == (grace != "0")


# --- zombies ---------------------------------------------------------------------


def _zombies_below(pids):
    """Zombie children of each of *pids*, as ``{parent: [zombie, ...]}``."""
    return {pid: found for pid in pids if (found := zombies(pid))}


#: Enough for the stock pool's pile to be unmistakable (the control wants
#: over 100), few enough to keep the test short: in a Celery pool child
#: each abandoned child costs the guarded sweep a scan of the heap (gc),
#: 10-30 ms on a slow machine.
N_ABANDON = 300


@guarded_and_control
def test_no_zombies_after_300_tasks_that_abandon_a_child(tmp_path, redis_url, pool):
    with celery_worker(tmp_path, redis_url, pool) as w:
        for _ in range(N_ABANDON):
            w.send("abandon", ignore_result=True)

        def done() -> bool:
            total = w.stats()["total"]
            return bool(total.get("celery_proj.abandon", 0) >= N_ABANDON)

        assert wait_for(done, 120), w.stats()["total"]
        pools = [*w.pool_pids(), w.main_pid]
        if pool == "guarded":
            # Reaped between tasks, and within a second once idle.
            assert wait_for(lambda: not _zombies_below(pools), SHORT), (
                f"zombies by parent: {_zombies_below(pools)}"
            )
        else:
            piles = _zombies_below(pools)
            assert sum(map(len, piles.values())) > 100  # celery/celery#6656


def test_reaping_never_steals_a_popen_status(tmp_path, redis_url):
    # One task starts a child it keeps (a Popen in a global) and one it
    # abandons; the pool child sweeps between tasks and while idle; the
    # next task waits for the kept one and must get its real status.
    with celery_worker(tmp_path, redis_url, "guarded", "-c", "1") as w:
        kept = w.send("start_kept", 7).get(timeout=LONG)
        w.sc.remember([kept])
        time.sleep(1.5)  # a sweep while idle: the abandoned zombie goes
        assert list(_zombies_below(w.pool_pids()).values()) == [[kept]]
        assert w.send("wait_kept").get(timeout=LONG) == [7]


# --- Celery's prefork features keep working on the guarded pool -----------------


def _guarded_pgid(w):
    pid, pgid = w.send("whoami").get(timeout=LONG)
    assert pgid != os.getpgid(w.main_pid)
    return pid, pgid


def test_max_tasks_per_child_and_process_signals(tmp_path, redis_url):
    with celery_worker(tmp_path, redis_url, "guarded", "--max-tasks-per-child=1") as w:
        seen = [_guarded_pgid(w) for _ in range(4)]
        pids = {pid for pid, _ in seen}
        assert len(pids) == 4, seen  # a new pool child for every task
        assert len({pgid for _, pgid in seen}) == 1, (seen, w.log())  # one group
        # worker_process_init ran in each; worker_process_shutdown in the
        # ones that were recycled.
        assert wait_for(lambda: pids <= {r["pid"] for r in w.reports("init-")}, SHORT)

        def shut() -> set[int]:
            return pids & {r["pid"] for r in w.reports("shutdown-")}

        assert wait_for(lambda: len(shut()) >= 3, SHORT), shut()
        assert w.send("soft", 5, soft_time_limit=0.5).get(timeout=LONG) == "soft limit"


def test_max_memory_per_child(tmp_path, redis_url):
    # 1 KiB: every pool child is over it after its first task.
    with celery_worker(tmp_path, redis_url, "guarded", "--max-memory-per-child=1") as w:
        pids = {_guarded_pgid(w)[0] for _ in range(3)}
        assert len(pids) == 3


def test_concurrency_grow_and_shrink(tmp_path, redis_url):
    with celery_worker(tmp_path, redis_url, "guarded", "-c", "3") as w:
        assert w.stats()["pool"]["max-concurrency"] == 3
        assert len(w.pool_pids()) == 3
        w.control("pool_grow", 1)
        assert wait_for(lambda: len(w.pool_pids()) == 4, SHORT)
        w.control("pool_shrink", 2)
        assert wait_for(lambda: len(w.pool_pids()) == 2, SHORT)
        _guarded_pgid(w)


def test_autoscale(tmp_path, redis_url):
    with celery_worker(tmp_path, redis_url, "guarded", "--autoscale=3,1") as w:
        assert len(w.pool_pids()) == 1
        results = [w.send("hold", f"a{i}", 3) for i in range(3)]
        assert wait_for(lambda: len(w.pool_pids()) == 3, LONG), w.pool_pids()
        assert [r.get(timeout=LONG) for r in results] == ["a0", "a1", "a2"]
        pgids = {w.wait_report(f"a{i}")["pgid"] for i in range(3)}
        assert len(pgids) == 1
        assert os.getpgid(w.main_pid) not in pgids
