"""Signals to the parent: teardown with grace, no recursion, no bystanders."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from _support import (
    SCENARIOS,
    SHORT,
    describe,
    scenario,
    survivors,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_parent_signal_tears_group_down_then_dies_of_it(
    tmp_path, sig, mode, start_method
):
    with scenario("busy_pool", tmp_path, mode, method=start_method) as sc:
        r = sc.report()
        t0 = time.monotonic()
        sc.signal(sig)
        rc = sc.wait(SHORT)
        if mode == "guarded":
            left = wait_gone(r["tree"], SHORT)
            dt = time.monotonic() - t0
            assert not left, describe(left)
            # The shell would see 128+N.
            assert rc == -sig, sc.output()
            # Requirement: 50 ms when workers comply (measured here: ~30 ms);
            # asserted with margin for a loaded 2-core CI machine.
            assert dt < 0.5, dt
            print(f"{sig.name}: parent and tree gone in {dt * 1000:.0f} ms")
        else:
            assert rc == -sig
            left = wait_gone(r["workers"] + r["grandchildren"], 1.0)
            assert set(left) == set(r["workers"] + r["grandchildren"]), (
                "control no longer leaks"
            )


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_parent_sigterm_also_kills_setsid_escapees(tmp_path, mode):
    # A grandchild that left the group with setsid is found with psutil
    # before the first signal, and torn down with the group.
    with scenario("busy_pool", tmp_path, mode, "--setsid") as sc:
        r = sc.report()
        sc.signal(signal.SIGTERM)
        assert sc.wait(SHORT) == -signal.SIGTERM
        if mode == "guarded":
            left = wait_gone(r["workers"] + r["grandchildren"], SHORT)
            assert not left, describe(left)
        else:
            left = wait_gone(r["workers"] + r["grandchildren"], 1.0)
            assert set(left) == set(r["workers"] + r["grandchildren"]), (
                "control no longer leaks"
            )


def test_worker_ignoring_sigterm_is_sigkilled_after_grace(tmp_path, start_method):
    # Under guarded-forkserver the group's SIGTERM ends the forkserver at
    # once; its workers must still get their grace period.
    with scenario(
        "busy_pool",
        tmp_path,
        "guarded",
        "--ignore-term",
        "--grace",
        "0.3",
        method=start_method,
    ) as sc:
        r = sc.report()
        t0 = time.monotonic()
        sc.signal(signal.SIGTERM)
        assert sc.wait(SHORT) == -signal.SIGTERM
        dt = time.monotonic() - t0
        assert not wait_gone(r["tree"], SHORT)
        assert 0.3 <= dt < 0.3 + 1.0, dt


def test_chained_user_handler_decides_the_exit_code(tmp_path):
    with scenario("busy_pool", tmp_path, "guarded", "--handler", "exit0") as sc:
        r = sc.report()
        sc.signal(signal.SIGTERM)
        assert sc.wait(SHORT) == 0
        assert not wait_gone(r["workers"] + r["grandchildren"], SHORT)


def test_second_sigterm_skips_the_grace_period(tmp_path):
    log = tmp_path / "mpguard.log"
    with scenario(
        "busy_pool",
        tmp_path,
        "guarded",
        "--ignore-term",
        "--grace",
        "30",
        "--log",
        str(log),
    ) as sc:
        r = sc.report()
        sc.signal(signal.SIGTERM)
        # The first teardown has signalled the group (its debug log says so
        # just before the send); the workers ignore SIGTERM, so it now
        # waits out its 30 s grace.  A second SIGTERM escalates to SIGKILL
        # at once.
        assert wait_for(
            lambda: log.exists() and "SIGTERM to process group" in log.read_text()
        ), log.read_text() if log.exists() else "no log"
        assert survivors(r["workers"]) == r["workers"]
        sc.signal(signal.SIGTERM)
        assert sc.wait(SHORT) == -signal.SIGTERM
        assert not wait_gone(r["workers"] + r["grandchildren"], SHORT)


def _count_runs(log) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def _trap_env(log: Path, start_method: str) -> dict[str, str]:
    # Fork children inherit a handler installed in main(); spawn and
    # forkserver children get one only from importing the main module.
    env = {"TRAP_LOG": str(log)}
    if start_method != "guarded-fork":
        env["TRAP_AT_IMPORT"] = "1"
    return env


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_recursion_trap_handler_runs_once(tmp_path, mode, start_method):
    """The terminate recursion trap with 10 children (a SIGTERM handler that
    terminates every child, installed before they start): one SIGTERM, one
    handler run, all gone.  The control cascades."""
    log = tmp_path / "runs.log"
    env = _trap_env(log, start_method)
    with scenario(
        "recursion_trap", tmp_path, mode, "10", env=env, method=start_method
    ) as sc:
        r = sc.report()
        sc.signal(signal.SIGTERM)
        if mode == "guarded":
            assert sc.wait(SHORT) == -signal.SIGTERM
            assert not wait_gone(r["children"], SHORT)
            assert log.read_text().split() == [str(r["pid"])]
        else:
            # Without mpguard the children run the handler too.  Under fork
            # they inherit it (signal(7): a forked child inherits its
            # parent's signal dispositions) and terminate each other: far
            # more than one run per process (125 runs for 10 children in
            # one measured run).  Under spawn and forkserver each child
            # re-installed it on import.
            more = 11 if start_method == "guarded-fork" else 1
            assert wait_for(lambda: _count_runs(log) > more, SHORT)
            assert set(log.read_text().split()) - {str(r["pid"])}


def _pipeline(tmp_path, mode):
    out = tmp_path / "out.txt"
    script = SCENARIOS / "pipeline.py"
    py, sc = shlex.quote(sys.executable), shlex.quote(str(script))
    cmd = f"{py} {sc} {{report}} {mode} | tee {shlex.quote(str(out))} >/dev/null"
    return out, ["sh", "-c", cmd]


def _tee_of(shell_pid: int) -> int:
    for c in psutil.Process(shell_pid).children():
        if c.name() == "tee":
            return c.pid
    raise AssertionError("no tee in the pipeline")


def _sigterm_parent_of_pipeline(sc) -> tuple[dict, int]:
    """Wait for the pipeline, then SIGTERM its Python side; return (r, tee)."""
    r = sc.report()
    tee = _tee_of(sc.pid)
    sc.remember([tee])
    assert r["pgid"] == os.getpgid(tee), "tee shares the parent's group"
    os.kill(r["pid"], signal.SIGTERM)
    return r, tee


def test_pipeline_bystander_survives(tmp_path, start_method):
    out, argv = _pipeline(tmp_path, "guarded")
    with scenario("pipeline", tmp_path, argv=argv, method=start_method) as sc:
        r, _ = _sigterm_parent_of_pipeline(sc)
        # The shell's status is tee's: tee was not signalled and exited 0
        # after reading everything, the parent's last line included.
        assert sc.wait(SHORT) == 0
        assert not wait_gone(r["workers"], SHORT)
        text = out.read_text()
        assert "line 99" in text
        assert "parent: shutting down" in text


def test_control_killpg_handler_kills_the_pipeline(tmp_path):
    # The common blog recipe: killpg(getpgid(getpid()), SIGKILL) in a
    # SIGTERM handler, to end "all the children".
    _, argv = _pipeline(tmp_path, "killpg")
    with scenario("pipeline", tmp_path, argv=argv) as sc:
        _, tee = _sigterm_parent_of_pipeline(sc)
        # killpg(getpgid(getpid())) hit the shell and tee as well.
        assert sc.wait(SHORT) == -signal.SIGKILL
        # Same killpg, but tee's teardown may finish a moment after the
        # shell's: poll, as everywhere else.
        assert not wait_gone([tee], SHORT)


def _tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


@pytest.mark.parametrize("mode", ["guarded", "stdlib"], ids=["guarded", "stdlib"])
def test_ctrl_c_reaches_parent_only(tmp_path, mode, start_method):
    with scenario("ctrl_c", tmp_path, mode, "4", method=start_method) as sc:
        r = sc.report()
        sent = time.monotonic()
        os.killpg(sc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        if mode == "guarded":
            assert sc.wait(SHORT) == -signal.SIGINT  # 3.8+: exits "by" SIGINT
            gone = time.monotonic()
            assert not wait_gone(r["workers"], SHORT)
            # KeyboardInterrupt interrupts map() within 0.5 s; leaving the
            # `with` block then tears the workers down within grace + 0.5 s.
            kbi = json.loads(Path(str(sc.report_path) + ".kbi").read_text())
            assert kbi["at"] - sent < 0.5, kbi["at"] - sent
            assert gone - sent < 1.0 + 0.5
            _, err = sc.output()
            assert "KeyboardInterrupt" in err
            assert _tracebacks(err) == 1, err  # the parent's, no worker's
            assert "PoolWorker" not in err, err
        else:
            # Workers start printing KeyboardInterrupt tracebacks: "Process
            # ForkPoolWorker-N:" (SpawnPoolWorker, ForkServerPoolWorker) is
            # the header _bootstrap prints before one.  How much of each
            # gets out before the parent's terminate() SIGTERMs the worker
            # is a race (up to 5 tracebacks in all).
            assert wait_for(lambda: "PoolWorker-" in sc.output()[1], SHORT)


# --- SIGINT reaches the children, as a terminal's Ctrl-C would ------------------
#
# Guarded children are not in the terminal's foreground group, so a Ctrl-C
# would reach the parent alone: `with ProcessPoolExecutor(...)` would then
# wait for the running tasks (minutes), and multiprocessing's exit joins a
# busy plain Process forever.  The parent's handler passes SIGINT on to the
# guard's group.  Pool workers ignore it (GuardedPool's `with` terminates
# them), so only plain processes and executor workers see it.


def _send_sigint(sc, to: str) -> None:
    if to == "group":
        os.killpg(sc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        sc.signal(signal.SIGINT)  # `kill -INT pid`


@pytest.mark.parametrize("to", ["group", "parent"])
@pytest.mark.parametrize("kind", ["ppe", "process"])
def test_sigint_interrupts_guarded_children_as_a_terminal_would(
    tmp_path, kind, to, start_method
):
    with scenario("interrupt", tmp_path, "guarded", kind, method=start_method) as sc:
        r = sc.report()
        _send_sigint(sc, to)
        assert sc.wait(SHORT) == -signal.SIGINT, sc.output()
        left = wait_gone(r["workers"] + r["grandchildren"], 1.0)
        assert not left, describe(left)


def test_sigint_reaches_the_children_after_the_guardian_is_lost(tmp_path):
    # Without its leader the group id may be recycled, so it is never
    # signalled again: SIGINT goes to each child through its pidfd.  The
    # grandchildren went with the guardian's protection; the test kills them.
    with scenario("interrupt", tmp_path, "guarded", "process-broken") as sc:
        r = sc.report()
        sc.signal(signal.SIGINT)
        assert sc.wait(SHORT) == -signal.SIGINT, sc.output()
        left = wait_gone(r["workers"], 1.0)
        assert not left, describe(left)
        assert "GuardDegradedWarning" in sc.output()[1]


@pytest.mark.parametrize(
    ("mode", "to"),
    [("nohandlers", "group"), ("nohandlers", "parent"), ("stdlib", "parent")],
)
@pytest.mark.parametrize("kind", ["ppe", "process"])
def test_control_sigint_that_misses_the_children_leaves_the_parent_waiting(
    tmp_path, kind, mode, to
):
    # Without the handler (guarded children, SIGINT to the parent or to its
    # group) or without mpguard (stdlib children, SIGINT to the parent
    # alone), the children never see it and the parent waits for them.
    with scenario("interrupt", tmp_path, mode, kind) as sc:
        r = sc.report()
        _send_sigint(sc, to)
        assert sc.wait(1.5) is None
        assert survivors(r["workers"]) == r["workers"]


def _blocks(mask: int, sig: int) -> bool:
    return bool(mask & (1 << (sig - 1)))


def test_a_process_signal_waits_for_the_main_thread(tmp_path):
    # mpguard's threads block every signal: a SIGTERM the main thread blocks
    # for a moment stays pending for it instead of going to the reaper, and
    # once unblocked it runs the guard's teardown in the main thread.
    with scenario("helper_threads", tmp_path, "guarded") as sc:
        r = sc.report()
        assert r["threads"], "the reaper thread runs"
        for name, mask in r["threads"].items():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                assert _blocks(mask, sig), (name, sig)
        assert r["pending"]
        assert sc.wait(SHORT) == -signal.SIGTERM, sc.output()
        assert not wait_gone([r["child"]], SHORT)


def test_control_a_plain_helper_thread_takes_process_signals(tmp_path):
    with scenario("helper_threads", tmp_path, "unblocked") as sc:
        r = sc.report()
        assert r["threads"]
        assert not any(_blocks(m, signal.SIGTERM) for m in r["threads"].values())
