"""Per-task timeouts kill the worker and its whole tree; the pool goes on.

Negative control: the stdlib's ``get(timeout=...)`` only stops waiting; the
worker and what it started run on (pebble#129: a timeout must really kill).
"""

from __future__ import annotations

import pytest

import mpguard
from _support import LONG, SHORT, alive, scenario, wait_gone

pytestmark = pytest.mark.linux


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    with scenario("timeouts", tmp_path_factory.mktemp("to"), "guarded") as sc:
        r = sc.report(LONG)
        assert sc.wait(LONG) == 0, sc.output()
        # Checked while the scenario's cleanup cannot have done it yet.
        r["left"] = wait_gone([r["worker_pid"], r["grandchild_pid"]], SHORT)
    return r


@pytest.mark.parametrize("case", ["spin", "c"])
def test_apply_async_timeout_kills_the_task(guarded, case):
    e = guarded[case]
    assert e["type"] == "TaskTimeoutError"
    assert e["is_timeout"]  # also a builtin TimeoutError
    assert e["timeout"] == 0.5
    assert "timeout=0.5s" in e["str"]
    assert 0.5 <= e["after"] < 1.0, e  # killed promptly, even in C code


def test_timeout_kills_what_the_task_started(guarded):
    assert guarded["spin"]["pid"] == guarded["worker_pid"]
    assert guarded["left"] == []  # worker and its `sleep 600` are both gone


def test_pool_task_timeout_fails_only_the_slow_task(guarded):
    e = guarded["map"]
    assert e["type"] == "TaskTimeoutError"
    assert "task=maybe_slow(3)" in e["str"]
    assert sorted(guarded["imap_unordered"]) == [0, 1, 2, 4]  # same pool
    assert guarded["after"] == [1, 2]
    assert guarded["untimed_ok"]


def test_control_stdlib_get_timeout_leaves_the_task_running(tmp_path):
    with scenario("timeouts", tmp_path, "stdlib") as sc:
        r = sc.report(LONG)
        assert r["error"]["type"] == "TimeoutError"
        assert alive(r["worker_pid"])
        assert alive(r["grandchild_pid"])


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_timeouts_are_value_errors(bad):
    with pytest.raises(ValueError, match="task_timeout must be positive"):
        mpguard.GuardedPool(1, task_timeout=bad)


@pytest.mark.parametrize("bad", ["1", True, [1]])
def test_non_numeric_timeouts_are_type_errors(bad):
    with pytest.raises(TypeError, match="task_timeout must be a number"):
        mpguard.GuardedPool(1, task_timeout=bad)


def test_apply_async_timeout_is_validated(guarded):
    assert guarded["bad_timeout"].startswith("ValueError: timeout must be positive")
    assert guarded["apply_with_timeout"] == 3
    assert guarded["ctx_pool_timeout"] == 0.25  # get_context("guarded").Pool
