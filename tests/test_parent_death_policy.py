"""The parent-death policy: SIGKILL at once, or SIGTERM, a grace, SIGKILL.

With ``parent_death_grace`` a child that handles SIGTERM gets to clean up
when the parent is SIGKILLed (the default, 0, gives it no chance: the
negative control); either way everything is gone within 1 s.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from _support import describe, scenario, wait_gone

pytestmark = pytest.mark.linux


def _kill_parent(sc):
    r = sc.report()
    t0 = time.monotonic()
    sc.signal(signal.SIGKILL)
    tree = [r["child_pid"], r["grandchild_pid"]]
    left = wait_gone(tree, 1.0)
    assert not left, describe(left)
    return r, time.monotonic() - t0


#: The guardian's two interpreters (the grace is the guardian's own loop).
GUARDIANS = pytest.mark.parametrize(
    "env",
    [None, {"MPGUARD_DISABLE": "perl"}],
    ids=["default-guardian", "python-guardian"],
)


@GUARDIANS
@pytest.mark.parametrize("grace", ["0.5", "0"], ids=["grace", "control-sigkill"])
def test_a_child_cleans_up_when_the_parent_is_killed(tmp_path, grace, env):
    with scenario("parent_death", tmp_path, grace, "cleans", env=env) as sc:
        _kill_parent(sc)
        cleaned = os.path.exists(str(sc.report_path) + ".cleaned")
        if grace == "0":
            assert not cleaned  # SIGKILL at once: no chance to clean up
        else:
            assert cleaned


@GUARDIANS
def test_the_one_second_bound_holds_for_the_longest_grace(tmp_path, env):
    # A child that ignores SIGTERM is SIGKILLed when the grace runs out.
    with scenario("parent_death", tmp_path, "0.9", "stubborn", env=env) as sc:
        _, took = _kill_parent(sc)
        assert took >= 0.85  # it really waited for the grace
        print(f"stubborn child gone {took:.2f} s after the parent's death")


def test_without_a_grace_the_tree_goes_at_once(tmp_path):
    with scenario("parent_death", tmp_path, "0", "stubborn") as sc:
        _, took = _kill_parent(sc)
        assert took < 0.5, took
