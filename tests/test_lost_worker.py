"""A worker dies mid-task: that task alone fails, fast, and the pool goes on.

Negative control: the stdlib Pool's map never returns (gh-66587).
"""

from __future__ import annotations

import signal

import pytest

from _support import GUARDED_METHODS, LONG, scenario

pytestmark = pytest.mark.linux

N, VICTIM = 8, 5
SQUARES = [i * i for i in range(N)]
OTHERS = [i for i in range(N) if i != VICTIM]


@pytest.fixture(scope="module", params=GUARDED_METHODS)
def runs(tmp_path_factory, request):
    # One scenario run per start method; every test below reads its part.
    tmp = tmp_path_factory.mktemp("lw")
    with scenario("lost_worker", tmp, "guarded", method=request.param) as sc:
        r = sc.report(LONG)
        assert sc.wait(LONG) == 0, sc.output()
    return r


def _run(r, api, how="sigkill"):
    return next(x for x in r["runs"] if x["api"] == api and x["how"] == how)


def _check_error(err, how="sigkill"):
    assert err["type"] == "WorkerLostError"
    assert err["pid"] > 1
    # The task is named, with its arguments: map chunks of one item too.
    assert err["task"].startswith(("work(", "star("))
    assert ", 5, " in err["task"]
    assert f"task={err['task']}" in err["str"]
    if how == "sigkill":
        assert err["signal"] == signal.SIGKILL
        assert "signal=SIGKILL" in err["str"]
    elif how == "segv":
        assert err["signal"] == signal.SIGSEGV
    else:
        assert err["exitcode"] == 3
        assert err["signal"] is None
        assert "exitcode=3" in err["str"]


@pytest.mark.parametrize("api", ["map", "starmap"])
def test_map_raises_the_lost_task_and_runs_the_rest(runs, api):
    r = _run(runs, api)
    _check_error(r["error"])
    assert r["done"] == OTHERS  # every other task ran to the end


def test_imap_yields_results_before_the_lost_task_then_raises(runs):
    r = _run(runs, "imap")
    assert r["result"] == SQUARES[:VICTIM]
    _check_error(r["error"])


def test_imap_unordered_fails_one_item_and_yields_the_others(runs):
    r = _run(runs, "imap_unordered")
    assert r["result"] == sorted(SQUARES[i] for i in OTHERS)
    assert len(r["errors"]) == 1
    _check_error(r["errors"][0])


@pytest.mark.parametrize("how", ["sigkill", "exit", "segv"])
def test_apply_async_callbacks_fire_and_error_is_fast(runs, how):
    r = _run(runs, "apply_async", how)
    assert r["callbacks"] == sorted(SQUARES[i] for i in OTHERS)
    assert len(r["error_callbacks"]) == 1
    _check_error(r["error_callbacks"][0], how)
    assert r["errors"] == r["error_callbacks"]
    assert r["delay"] < 0.5, r["delay"]  # from the kill to error_callback
    assert r["done"] == OTHERS


def test_pool_stays_usable_and_reaps(runs):
    assert runs["after"] == [abs(i) for i in range(-5, 5)]
    assert runs["zombies"] == []


def test_control_stdlib_map_hangs_when_a_worker_dies(tmp_path, start_method):
    with scenario("lost_worker", tmp_path, "stdlib", method=start_method) as sc:
        r = sc.report(LONG)
        assert r["hung"], r  # map_async().get(timeout=3) timed out
        assert VICTIM not in r["done"]


class _Gone:
    """A worker process as the dispatcher sees it after it was SIGKILLed."""

    pid = 4242
    exitcode = -signal.SIGKILL


def _wake_pending(d) -> bool:
    import select

    return bool(select.select([d._waker.fileno()], [], [], 0)[0])


@pytest.mark.parametrize("pop_meanwhile", [False, True])
def test_a_lost_task_always_wakes_the_result_loop(pop_meanwhile):
    # The interleaving behind a rare hang: the worker handler reports a
    # death while the result loop pops an older result.  Deciding to wake
    # the loop by comparing the results' length before and after missed
    # the new one, and the loop slept on it: the lost task's get() hung.
    # Replayed here deterministically: the "loop" pops inside died().
    import multiprocessing

    from mpguard._pool import _wire
    from mpguard._pool._dispatch import Dispatcher
    from mpguard._pool._schedule import Task

    ctrl, _keep = multiprocessing.Pipe(duplex=False)
    d = Dispatcher(ctrl, task_timeout=None, processes=1)
    try:
        w = d.prepare(d.channel(), None)
        d.started(w, _Gone())
        t = Task(1, ("job", 0, abs, (1,), {}), b"", None)
        w.outstanding[t.seq] = t
        w.stamp[0] = _wire.mark(t.seq)  # it had started the task
        d._results.append("an older result")
        if pop_meanwhile:
            forget = d._forget

            def forget_while_loop_pops(*args, **kwargs):
                d._results.popleft()  # the result loop, on its thread
                return forget(*args, **kwargs)

            d._forget = forget_while_loop_pops
        d.died(w)
        assert [r[0] for r in d._results if r != "an older result"] == ["job"]
        assert _wake_pending(d)
    finally:
        d.close()
        ctrl.close()
        _keep.close()
