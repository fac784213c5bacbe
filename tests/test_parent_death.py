"""However the parent ends, no worker and nothing a worker started outlives it.

Each guarded case has a negative control: the same scenario on the stdlib
Pool must leak, or the test would pass without testing anything.  Idle
stdlib workers exit by themselves once the parent is gone: a worker blocked
reading the task queue gets EOF and leaves (Lib/multiprocessing/pool.py,
``worker()``: "worker got EOFError or OSError -- exiting").  So workers here
are always busy, and have grandchildren.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from _support import SHORT, alive, describe, scenario, wait_for, wait_gone

pytestmark = pytest.mark.linux

# Target 100 ms; the requirement is 1 s.  CI machines are noisy, so assert
# the requirement and print the measurement.
PARENT_DEATH_BOUND = 1.0


def _all_pids(r: dict) -> list[int]:
    return r["workers"] + r["grandchildren"]


def _sigkill_and_measure(sc, r: dict) -> tuple[list[int], float]:
    t0 = time.monotonic()
    sc.signal(signal.SIGKILL)
    left = wait_gone(_all_pids(r), PARENT_DEATH_BOUND)
    return left, time.monotonic() - t0


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_whole_tree_dies_when_parent_sigkilled(tmp_path, mode, start_method):
    # Everything the parent started: workers, their children, and under
    # guarded-forkserver the forkserver itself.  With the stdlib all of them
    # survive, the forkserver included: it exits only once every child it
    # forked has closed its end of the "alive" pipe (Lib/multiprocessing/
    # forkserver.py, ``main()``: "EOF because no more client processes left").
    with scenario("busy_pool", tmp_path, mode, method=start_method) as sc:
        r = sc.report()
        if mode == "guarded":
            assert len(set(r["worker_pgids"])) == 1
            assert r["worker_pgids"][0] != r["pgid"], "parent must not be in the group"
            assert set(_all_pids(r)) <= set(r["tree"])
        t0 = time.monotonic()
        sc.signal(signal.SIGKILL)
        left = wait_gone(r["tree"], PARENT_DEATH_BOUND)
        dt = time.monotonic() - t0
        if mode == "guarded":
            assert not left, describe(left)
            n = len(r["tree"])
            print(f"{start_method}: {n} gone {dt * 1000:.0f} ms after SIGKILL")
        else:
            assert set(_all_pids(r)) <= set(left), "control no longer leaks"


@pytest.mark.parametrize(
    ("mode", "busy", "env"),
    [
        ("guarded", "c", None),
        ("guarded", "sleep", None),
        # The guardian in python, as on a machine without perl.
        ("guarded", "c", {"MPGUARD_DISABLE": "perl"}),
        ("stdlib", "c", None),
    ],
    ids=["guarded-c", "guarded-sleep", "guarded-c-python-guardian", "stdlib-c"],
)
def test_workers_and_grandchildren_die_when_parent_sigkilled(tmp_path, mode, busy, env):
    with scenario("busy_pool", tmp_path, mode, "--busy", busy, env=env) as sc:
        r = sc.report()
        left, dt = _sigkill_and_measure(sc, r)
        if mode == "guarded":
            assert not left, describe(left)
            print(f"busy={busy}: all gone {dt * 1000:.0f} ms after SIGKILL")
        else:
            assert set(left) == set(_all_pids(r)), "control no longer leaks"


def test_control_pdeathsig_leaves_grandchildren(tmp_path):
    # The billiard/Celery technique kills workers but not what they started.
    with scenario("busy_pool", tmp_path, "pdeathsig") as sc:
        r = sc.report()
        sc.signal(signal.SIGKILL)
        assert not wait_gone(r["workers"], SHORT)
        left = wait_gone(r["grandchildren"], PARENT_DEATH_BOUND)
        assert set(left) == set(r["grandchildren"]), "control no longer leaks"


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_pool_built_in_exited_thread_survives_thread_then_dies_with_parent(
    tmp_path, mode
):
    with scenario("busy_pool", tmp_path, mode, "--in-thread") as sc:
        r = sc.report()
        if mode == "guarded":
            # The thread that forked the workers has exited: they still run
            # (pdeathsig would have killed them here, see the control below).
            assert set(r["workers"]) == set(r["first_workers"])
            assert wait_gone(r["workers"], 0.3) == r["workers"]
            assert any("non-main thread" in w for w in r["warnings"]), r["warnings"]
        left, _ = _sigkill_and_measure(sc, r)
        if mode == "guarded":
            assert not left, describe(left)
        else:
            assert set(left) == set(_all_pids(r)), "control no longer leaks"


def test_control_pdeathsig_pool_in_exited_thread_loses_its_workers(tmp_path):
    # pdeathsig follows the forking *thread*: "the 'parent' in this case is
    # considered to be the thread that created this process" (prctl(2),
    # PR_SET_PDEATHSIG; golang/go#27505 met the same).  The workers die when
    # the thread ends while the parent lives on, and the pool hangs; mpguard
    # does not use pdeathsig for this reason.
    with scenario("busy_pool", tmp_path, "pdeathsig", "--in-thread") as sc:
        early = sc.report_path.with_name(sc.report_path.name + ".early")
        assert wait_for(early.exists, SHORT)
        r = json.loads(early.read_text())
        sc.remember(r["first_workers"])
        left = wait_gone(r["first_workers"], SHORT)
        assert not left, "control: pdeathsig workers outlived their thread"
        assert alive(sc.pid), "the parent itself must still be running"


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_replacement_workers_die_when_parent_sigkilled(tmp_path, mode, start_method):
    # maxtasksperchild=1: the busy workers were started by the pool's
    # _handle_workers thread, not by the main thread.
    if mode == "stdlib" and start_method != "guarded-fork":
        pytest.skip("the control runs on the stdlib fork only")
    with scenario("busy_pool", tmp_path, mode, "--churn", method=start_method) as sc:
        r = sc.report()
        if mode == "guarded":
            assert not set(r["workers"]) & set(r["first_workers"])
        left, _ = _sigkill_and_measure(sc, r)
        if mode == "guarded":
            assert not left, describe(left)
        else:
            assert set(left) == set(_all_pids(r)), "control no longer leaks"


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
@pytest.mark.parametrize("end", ["exit", "return", "raise"])
def test_nothing_outlives_parent_that_ends_by_itself(tmp_path, end, mode, start_method):
    with scenario("busy_pool", tmp_path, mode, "--end", end, method=start_method) as sc:
        r = sc.report()
        if mode == "guarded":
            left = wait_gone(r["tree"], PARENT_DEATH_BOUND + 1.0)
            assert not left, describe(left)
            assert sc.wait() is not None
        else:
            sc.wait()
            left = wait_gone(r["grandchildren"], 1.0)
            assert set(left) == set(r["grandchildren"]), "control no longer leaks"


def test_sigkill_without_pidfd_fallback(tmp_path):
    # The portable path (lifeline pipe EOF + getppid), forced on Linux.
    env = {"MPGUARD_DISABLE": "pidfd"}
    with scenario("busy_pool", tmp_path, "guarded", env=env) as sc:
        r = sc.report()
        assert any("pidfds are unavailable" in w for w in r["warnings"])
        left, _ = _sigkill_and_measure(sc, r)
        assert not left, describe(left)


@pytest.mark.parametrize("own_semaphore", [False, True], ids=["pool", "control"])
@pytest.mark.parametrize("method", ["guarded-spawn", "guarded-forkserver"])
def test_the_resource_tracker_has_nothing_to_report_after_a_sigkill(
    tmp_path, method, own_semaphore
):
    # A GuardedPool makes no semaphore (its queues are pipes), so after its
    # parent is SIGKILLed the stdlib resource tracker, which spawn and
    # forkserver start, has nothing left to unlink and prints nothing.  It
    # used to warn "There appear to be 6 leaked semaphore objects to clean
    # up at shutdown": the two semaphores of each of the stdlib Pool's three
    # queues.  Control: a semaphore the parent made itself is reported, so
    # this observer sees the warning when there is one to see.
    args = ["--semaphore"] if own_semaphore else []
    with scenario("busy_pool", tmp_path, "guarded", *args, method=method) as sc:
        r = sc.report()
        sc.signal(signal.SIGKILL)
        # The tree holds the resource tracker, which warns before it exits.
        left = wait_gone(r["tree"], SHORT)
        assert not left, describe(left)
        _, err = sc.output()
    assert ("leaked semaphore" in err) == own_semaphore, err
