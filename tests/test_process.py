"""Process and executor APIs on guarded contexts.

* ``Process.terminate()``/``kill()`` take the child's whole subtree (the
  stdlib leaves its children running as orphans);
* ``ProcessPoolExecutor.kill_workers()`` (3.14+) takes what the workers
  started;
* ``Process.interrupt()`` (3.14+) sends SIGINT;
* a task a spawn or forkserver worker cannot unpickle fails with its own
  error and a hint, and the pool goes on (the stdlib pool hangs).
"""

from __future__ import annotations

import sys

import pytest

from _support import scenario

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux"
)

MODES = ["guarded", "stdlib"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["terminate", "kill"])
def test_terminate_and_kill_take_the_subtree(tmp_path, start_method, case, mode):
    with scenario("process_api", tmp_path, case, mode, method=start_method) as sc:
        r = sc.report()
        assert r["exitcode"] == (-15 if case == "terminate" else -9)
        if mode == "guarded":
            assert r["grandchild_gone"], "the grandchild outlived kill/terminate"
        else:
            # Negative control: the stdlib orphans the grandchild.
            assert not r["grandchild_gone"]


@pytest.mark.skipif(sys.version_info < (3, 14), reason="kill_workers is 3.14+")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["executor_kill", "executor_terminate"])
def test_executor_kill_workers_takes_what_they_started(
    tmp_path, start_method, case, mode
):
    with scenario("process_api", tmp_path, case, mode, method=start_method) as sc:
        r = sc.report()
        assert len(r["grandchild_pids"]) == 2
        if mode == "guarded":
            assert r["grandchildren_gone"]
        else:
            assert not r["grandchildren_gone"]


@pytest.mark.skipif(sys.version_info < (3, 14), reason="interrupt() is 3.14+")
def test_interrupt_sends_sigint(tmp_path, start_method):
    with scenario(
        "process_api", tmp_path, "interrupt", "guarded", method=start_method
    ) as sc:
        # KeyboardInterrupt in the child: exit code 1, as under the stdlib.
        assert sc.report()["exitcode"] == 1


@pytest.mark.parametrize("method", ["guarded-spawn", "guarded-forkserver"])
@pytest.mark.parametrize("mode", MODES)
def test_unpicklable_task_fails_with_its_own_error(tmp_path, method, mode):
    with scenario("process_api", tmp_path, "unpicklable", mode, method=method) as sc:
        r = sc.report(60)
        e = r["error"]
        if mode == "stdlib":
            # Negative control: the stdlib worker dies on the task and the
            # pool waits forever (get() times out).
            assert e["type"] == "TimeoutError", e
            return
        assert e["type"] == "ModuleNotFoundError", e
        assert "only_in_parent" in e["str"]
        hint = " ".join(e["notes"] + e["args"])
        assert "could not unpickle this task" in hint
        assert e["after"] < 5.0
        assert r["after_map"] == [1, 2, 3]
