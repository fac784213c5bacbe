"""The "guarded" start method: registration and stdlib compatibility."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from _support import python_in_own_session, scenario


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    with scenario("api", tmp) as sc:
        r = sc.report()
        assert sc.wait() == 0, sc.output()
        return r


def test_import_does_nothing_else(api):
    assert api["threads_after_import"] == api["threads_before"]
    assert api["sigterm_untouched_by_import"]


def test_registration_is_idempotent(api):
    assert api["register_idempotent"]


def test_start_method_name_is_fork(api):
    # Registered as "guarded" but named "fork", so that the stdlib's name
    # checks (SemLock, ProcessPoolExecutor) and Celery's stay right.
    assert api["start_method_name"] == "fork"
    assert api["child"]["start_method"] == "fork"
    assert not api["resource_tracker_started"]
    assert api["misnamed_starts_tracker"], "control: a non-fork name should"
    if sys.version_info >= (3, 11):
        assert api["ppe_rejects_max_tasks"]


def test_listed_in_all_start_methods_only_from_314(api):
    assert api["listed_in_all_start_methods"] == (sys.version_info >= (3, 14))


def test_everything_a_fork_context_offers_works(api):
    assert api["child_exitcode"] == 0
    assert api["event"] is True
    assert api["manager"] == {"k": 1}
    assert api["pool_map"] == [0, 1, 4, 9, 16]
    assert api["pool_is_guarded"]
    assert api["ppe_map"] == [0, 1, 4, 9, 16]


def test_children_join_one_group_without_the_parent(api):
    pgids = {api["child"]["pgid"]} | {w["pgid"] for w in api["worker_info"]}
    assert len(pgids) == 1
    assert api["pgid"] not in pgids


def test_handlers_installed_before_fork_and_reset_in_children(api):
    assert api["sigterm_handler_type"] == "GuardHandler"
    assert api["sigterm_chains_user_handler"]
    assert api["sighup_left_ignored"]  # nohup's SIG_IGN is respected
    assert api["child"]["sigterm"] == repr(signal.SIG_DFL)
    assert "default_int_handler" in api["child"]["sigint"]
    for w in api["worker_info"]:
        assert w["sigterm"] == repr(signal.SIG_DFL)
        assert w["sigint"] == repr(signal.SIG_IGN)


def test_plain_fork_children_see_pre_mpguard_dispositions(api):
    # Not mpguard's Python-level handler: a signal arriving between fork()
    # and CPython's after-fork reset would be lost with it (a stdlib Pool's
    # terminate() hung that way in the benchmark).
    assert "user_term" in api["plain_child"]["sigterm"]
    assert "GuardHandler" not in api["plain_child"]["sigint"]


def test_unclosed_pool_warns(api):
    assert "ResourceWarning" in api["unclosed_warning"]


def test_fork_with_threads_warning_is_not_hidden(api):
    expected = ["DeprecationWarning"] if sys.version_info >= (3, 12) else []
    assert api["fork_with_threads_warning"] == expected


@pytest.mark.parametrize("method", ["guarded-spawn", "guarded-forkserver"])
def test_spawn_and_forkserver_do_not_fork_a_threaded_parent(api, method):
    # The documented way out of the 3.12+ warning: no fork of this process.
    assert api[f"{method}_with_threads_warning"] == []


def test_shutdown_restores_handlers_and_a_new_guard_follows(api):
    assert api["sigterm_restored_after_shutdown"]
    assert api["new_guard_differs"]


def test_debug_log_for_each_kill_and_reap_step(api):
    log = "\n".join(api["log"])
    for needle in ("guard up", "started pid=", "SIGTERM to", "reaped pid=", "teardown"):
        assert needle in log, needle


def test_set_start_method_guarded_makes_plain_process_guarded(api):
    assert api["default_popen_module"] == "mpguard._start._fork"
    assert api["default_child"]["pgid"] != api["pgid"]
    assert api["default_child"]["sigterm"] == repr(signal.SIG_DFL)


def test_configure_chooses_the_handled_signals(api):
    assert "default_int_handler" in api["sigint_after_configure"]
    assert api["sigterm_after_configure"] == "GuardHandler"


def _python_script(tmp_path, code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* as a script file (children can import its main module)."""
    script = tmp_path / "main_script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter, in its own session."""
    return python_in_own_session(code)


def test_setup_failure_is_raised_not_swallowed():
    # No Python executable to run the guardian: a typed error, no child.
    code = (
        "import sys, mpguard\n"
        "sys.executable = ''\n"
        "try:\n"
        "    mpguard.GuardedPool(1)\n"
        "except mpguard.GuardSetupError as e:\n"
        "    print('raised:', e)\n"
    )
    out = _python(code)
    assert "raised: cannot start the guardian" in out.stdout, out.stderr


def test_guardian_death_is_warned_and_a_new_guardian_follows():
    code = (
        "import os, signal, time, multiprocessing as mp, mpguard\n"
        "ctx = mp.get_context('guarded')\n"
        "p = ctx.Process(target=time.sleep, args=(60,)); p.start()\n"
        "g1 = os.getpgid(p.pid)\n"
        "os.kill(g1, signal.SIGKILL)\n"
        "from mpguard._group import _guard, GuardState\n"
        "deadline = time.monotonic() + 5\n"
        "while _guard._guard.state is not GuardState.BROKEN"
        " and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "q = ctx.Process(target=time.sleep, args=(60,)); q.start()\n"
        "print('new guardian:', os.getpgid(q.pid) != g1)\n"
        "p.kill(); q.kill(); p.join(); q.join()\n"
    )
    out = _python(code)
    assert "new guardian: True" in out.stdout, out.stderr
    assert "GuardDegradedWarning" in out.stderr
    assert "guardian pid=" in out.stderr


def test_get_context_works_in_a_fresh_interpreter():
    code = (
        "import multiprocessing as mp, mpguard;"
        "print(mp.get_context('guarded').get_start_method())"
    )
    out = _python(code)
    assert out.stdout.strip() == "fork", out.stderr


def test_every_guarded_method_resolves_and_keeps_the_stdlib_name():
    code = (
        "import multiprocessing as mp, mpguard\n"
        "for key in ('guarded', *mpguard.START_METHODS):\n"
        "    ctx = mp.get_context(key)\n"
        "    assert isinstance(ctx, mpguard.GuardedContext), ctx\n"
        "    assert mpguard.get_context(key) is ctx\n"
        "    print(key, ctx.get_start_method(), type(ctx).__name__)\n"
        "assert mp.get_context('guarded') is mp.get_context('guarded-fork')\n"
        "try:\n"
        "    mpguard.get_context('spawn')\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
        "try:\n"
        "    mpguard.GuardedPool(1, context=mp.get_context('spawn'))\n"
        "except TypeError as e:\n"
        "    print('TypeError:', e)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == [
        "guarded fork GuardedForkContext",
        "guarded-fork fork GuardedForkContext",
        "guarded-forkserver forkserver GuardedForkServerContext",
        "guarded-spawn spawn GuardedSpawnContext",
    ]
    assert lines[4].startswith("ValueError: not a guarded start method: 'spawn'")
    assert lines[5].startswith("TypeError: GuardedPool needs a guarded context")


@pytest.mark.parametrize("method", ["guarded-spawn", "guarded-forkserver"])
def test_named_semaphores_and_executor_work_under_spawn_and_forkserver(method):
    # Named "spawn"/"forkserver", so SemLock is named and tracked as the
    # stdlib needs, and ProcessPoolExecutor runs its workers guarded.
    code = (
        "import os, concurrent.futures as cf, multiprocessing as mp, mpguard\n"
        "def child(lock, q):\n"
        "    with lock:\n"
        "        q.put(os.getpgrp())\n"
        "if __name__ == '__main__':\n"
        f"    ctx = mp.get_context({method!r})\n"
        "    lock, q = ctx.Lock(), ctx.Queue()\n"
        "    p = ctx.Process(target=child, args=(lock, q)); p.start()\n"
        "    g = q.get(timeout=30); p.join()\n"
        "    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:\n"
        "        groups = set(ex.map(os.getpgid, [0] * 4))\n"
        "    print(g != os.getpgrp(), groups == {g}, p.exitcode)\n"
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "prog.py"
        script.write_text(code)
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
        )
    assert out.stdout.split() == ["True", "True", "0"], out.stderr


def test_guarded_forkserver_is_refused_where_untested():
    # The forkserver protocol changes between Pythons; where untested the
    # method fails with a typed error naming what to use instead.
    code = (
        "import multiprocessing as mp, mpguard\n"
        "from mpguard._compat import _forkserver\n"
        "_forkserver.FORKSERVER_SUPPORTED = False\n"
        "try:\n"
        "    mp.get_context('guarded-forkserver')\n"
        "except mpguard.UnsupportedPlatformError as e:\n"
        "    print('refused:', e)\n"
    )
    out = _python(code)
    assert "refused: guarded-forkserver is tested on Python 3.9-3.15" in out.stdout, (
        out.stderr
    )


@pytest.mark.parametrize(
    "mode", ["guarded-fork", "guarded-fork-late-tracker", "fork", "raw-fork"]
)
def test_fork_child_reuses_the_parents_resource_tracker(mode):
    # A Process's fork child uses its parent's resource tracker (gh-80849).
    # From 3.14 (gh-146313) an at-fork handler closes the tracker pipe in
    # every fork child that multiprocessing did not mark as a Process's:
    # the guarded fork must mark its own.  Control: a raw os.fork() child
    # loses the pipe wherever the handler exists.
    # late-tracker: the parent looks the tracker module up before its fork
    # and does not import it; here it misses a tracker imported after the
    # guard's at-fork hook (as by another thread right before the fork),
    # and the child's hook must mark the fork itself.
    code = (
        "import os, multiprocessing as mp, mpguard\n"
        f"mode = {mode!r}\n"
        "if mode == 'guarded-fork-late-tracker':\n"
        "    mpguard.install_handlers()  # the guard's at-fork hook first\n"
        "    import mpguard._compat as C\n"
        "    real, parent = C.fork_keeps_tracker, os.getpid()\n"
        "    def late(keep):\n"
        "        if not (keep and os.getpid() == parent):\n"
        "            real(keep)\n"
        "    C.fork_keeps_tracker = late\n"
        "    mode = 'guarded-fork'\n"
        "from multiprocessing import resource_tracker as rt\n"
        "rt.ensure_running()\n"
        "fd = rt._resource_tracker._fd\n"
        "def child(q):\n"
        "    q.put(rt._resource_tracker._fd)\n"
        "if mode == 'raw-fork':\n"
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.write(w, repr(rt._resource_tracker._fd).encode())\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    got = eval(os.read(r, 100))\n"
        "else:\n"
        "    ctx = mp.get_context(mode)\n"
        "    q = ctx.SimpleQueue()\n"
        "    p = ctx.Process(target=child, args=(q,))\n"
        "    p.start(); got = q.get(); p.join()\n"
        "print(got == fd, hasattr(rt, '_fork_intent'))\n"
    )
    out = _python(code)
    same, handler = out.stdout.split()
    if mode == "raw-fork" and handler == "True":
        assert same == "False", "control: a raw fork child should lose the pipe"
    else:
        assert same == "True", (mode, out.stdout, out.stderr)


@pytest.mark.parametrize("preload", [True, False])
def test_set_forkserver_preload_reaches_the_guarded_forkserver(tmp_path, preload):
    # ctx.set_forkserver_preload() on a guarded context sets the stdlib's
    # list, which the guard's forkserver reads; its children are forked from
    # a server that imported the module.  Control: without it, they did not.
    code = (
        "import sys, multiprocessing as mp, mpguard\n"
        "def probe(q):\n"
        "    q.put('colorsys' in sys.modules)\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('guarded-forkserver')\n"
        f"    if {preload!r}:\n"
        "        ctx.set_forkserver_preload(['colorsys'])\n"
        "    q = ctx.SimpleQueue()\n"
        "    p = ctx.Process(target=probe, args=(q,))\n"
        "    p.start(); print(q.get()); p.join()\n"
    )
    out = _python_script(tmp_path, code)
    assert out.stdout.split() == [str(preload)], out.stderr


@pytest.mark.skipif(sys.version_info < (3, 15), reason="on_error= is 3.15+")
@pytest.mark.parametrize("method", ["guarded-forkserver", "forkserver"])
def test_forkserver_preload_on_error_fail_is_passed_on(tmp_path, method):
    # 3.15's set_forkserver_preload(..., on_error="fail"): a module that
    # cannot be preloaded breaks the forkserver, and starting a process
    # raises, under the guarded forkserver as under the stdlib's.
    code = (
        "import multiprocessing as mp, mpguard\n"
        "if __name__ == '__main__':\n"
        f"    ctx = mp.get_context({method!r})\n"
        "    ctx.set_forkserver_preload(['no_such_module_here'], on_error='fail')\n"
        "    p = ctx.Process(target=abs, args=(1,))\n"
        "    try:\n"
        "        p.start(); p.join(); print('started', p.exitcode)\n"
        "    except Exception as e:\n"
        "        print('raised', type(e).__name__)\n"
    )
    out = _python_script(tmp_path, code)
    assert out.stdout.split()[0] == "raised", (out.stdout, out.stderr)
