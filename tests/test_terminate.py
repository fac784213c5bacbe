"""GuardedPool.terminate(): escalation, bounded time, whole tree."""

from __future__ import annotations

import json

import pytest

from _support import SHORT, describe, scenario, wait_for, wait_gone

pytestmark = pytest.mark.linux


def _terminate_report(sc, timeout=SHORT):
    path = sc.report_path.with_name(sc.report_path.name + ".terminate")
    if not wait_for(path.exists, timeout):
        return None
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("mode", "setsid"),
    [("guarded", False), ("guarded", True), ("stdlib", False)],
    ids=["guarded-in-group", "guarded-setsid", "stdlib-in-group"],
)
def test_terminate_kills_workers_and_everything_they_started(
    tmp_path, mode, setsid, start_method
):
    if setsid and start_method != "guarded-fork":
        pytest.skip("setsid escapees do not depend on the start method")
    if mode == "stdlib" and start_method != "guarded-fork":
        pytest.skip("the control runs on the stdlib fork only")
    args = ["--end", "terminate"]
    if mode == "guarded":
        args += ["--workers", "3"]
    if setsid:
        args.append("--setsid")
    with scenario("busy_pool", tmp_path, mode, *args, method=start_method) as sc:
        r = sc.report()
        t = _terminate_report(sc)
        assert t is not None
        if mode == "guarded":
            # Gone by the time terminate() returned, not merely soon after.
            left = wait_gone(r["workers"] + r["grandchildren"], 0.05)
            assert not left, describe(left)
            print(f"terminate took {t['seconds'] * 1000:.0f} ms")
        else:  # the stdlib's terminate() leaves the grandchildren
            assert not wait_gone(r["workers"], SHORT)
            left = wait_gone(r["grandchildren"], 0.5)
            assert set(left) == set(r["grandchildren"]), "control no longer leaks"


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_terminate_is_bounded_when_workers_ignore_sigterm(tmp_path, mode):
    grace = 0.3
    args = ["--end", "terminate", "--ignore-term"]
    if mode == "guarded":
        args += ["--grace", str(grace)]
    with scenario("busy_pool", tmp_path, mode, *args) as sc:
        r = sc.report()
        if mode == "guarded":
            t = _terminate_report(sc)
            assert t is not None
            assert grace <= t["seconds"] < grace + 0.5, t
            assert not wait_gone(r["workers"] + r["grandchildren"], 0.05)
            _, err = sc.output()
            assert "EscalationWarning" in err
        else:
            # The stdlib's terminate() hangs.  Bounded: we assert the hang,
            # we do not wait it out.
            assert _terminate_report(sc, timeout=2.0) is None
