"""``mpguard run -- CMD``: a supervisor like tini, tested the way tini is.

Every case runs ``python -m mpguard run`` in its own session (through
``mpguard.testing.run_scenario``, which SIGKILLs all it made at the end);
the command leaves its pids in a JSON report.  Each protection has its
control: the same command under a naive wrapper (``subprocess.call``, as a
Python entry point would run it) leaks, ignores the signal or piles up
zombies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from _support import LONG, SHORT, describe, survivors, wait_for, wait_gone
from mpguard.testing import run_scenario

pytestmark = pytest.mark.linux

MPGUARD_RUN = [sys.executable, "-m", "mpguard", "run"]
#: The control: a wrapper that runs the command and does nothing else.
NAIVE = [
    sys.executable,
    "-c",
    "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
]

# A shell command that publishes JSON {key: [pids]} at $REPORT atomically.
PUBLISH = 'printf "%s" "$1" > "$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"'


def _sh(script: str) -> list[str]:
    return ["sh", "-c", f"publish() {{ {PUBLISH}; }}; {script}"]


def _start(tmp_path, wrapper, script, *opts):
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    cmd = (
        [*wrapper, *opts, "--", *_sh(script)]
        if wrapper is MPGUARD_RUN
        else [*wrapper, *_sh(script)]
    )
    env = {**os.environ, "REPORT": str(report)}
    return run_scenario(cmd, report, env=env, cwd=tmp_path, pid_keys=("pids",))


def _exit_code(sc, timeout=LONG):
    code = sc.wait(timeout)
    assert code is not None, f"still running; {sc.output()}"
    return code


# --- exit statuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 5", 5), ("kill -TERM $$", 143), ("kill -KILL $$", 137)],
)
def test_exit_status_is_the_commands(tmp_path, script, code):
    with _start(tmp_path, MPGUARD_RUN, f'publish "{{}}"; {script}') as sc:
        assert _exit_code(sc) == code


# --- signal forwarding, one signal at a time ----------------------------------------

FORWARDED = ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH"]


@pytest.mark.parametrize("name", FORWARDED)
@pytest.mark.parametrize("wrapper", ["mpguard", "naive"])
def test_each_signal_reaches_the_command(tmp_path, name, wrapper):
    sig = signal.Signals[f"SIG{name}"]
    # The command traps the signal: it leaves a marker and exits 100 + N.
    got = tmp_path / f"got-{name}"
    script = (
        f'trap "echo > {got}; exit $((100 + {int(sig)}))" {name}; '
        'publish "{\\"pids\\": [$$]}"; while :; do sleep 0.05; done'
    )
    w = MPGUARD_RUN if wrapper == "mpguard" else NAIVE
    with _start(tmp_path, w, script) as sc:
        r = sc.report(LONG)
        sc.signal(sig)
        if wrapper == "mpguard":
            assert _exit_code(sc) == 100 + int(sig), sc.output()
            assert got.exists()
            assert not wait_gone(r["pids"], SHORT)
        else:
            # Never forwarded: the wrapper dies of it (leaving the command
            # running), or ignores it (SIGWINCH), or kills the command
            # (SIGINT's KeyboardInterrupt in subprocess.call).
            time.sleep(0.5)
            assert not got.exists()


# --- mpguard run is SIGKILLed -------------------------------------------------------


@pytest.mark.parametrize("wrapper", ["mpguard", "naive"])
def test_the_tree_dies_when_the_supervisor_is_sigkilled(tmp_path, wrapper):
    script = 'sleep 600 & publish "{\\"pids\\": [$$, $!]}"; wait'
    w = MPGUARD_RUN if wrapper == "mpguard" else NAIVE
    with _start(tmp_path, w, script) as sc:
        r = sc.report(LONG)
        sc.signal(signal.SIGKILL)
        if wrapper == "mpguard":
            left = wait_gone(r["pids"], 1.0)
            assert not left, describe(left)
        else:
            time.sleep(0.3)
            assert survivors(r["pids"]) == r["pids"]


# --- what the command leaves behind -------------------------------------------------


def test_leftovers_are_killed_after_the_grace_period(tmp_path):
    # One leftover ignores SIGTERM: it goes with the SIGKILL after the grace.
    script = (
        "sleep 600 & a=$!; sh -c \"trap '' TERM; exec sleep 600\" & b=$!; "
        'publish "{\\"pids\\": [$a, $b]}"; exit 3'
    )
    with _start(tmp_path, MPGUARD_RUN, script, "--grace", "0.5") as sc:
        r = sc.report(LONG)
        assert _exit_code(sc) == 3
        assert not wait_gone(r["pids"], SHORT), describe(r["pids"])


# --- zombies ------------------------------------------------------------------------

STORM = 1000
# Each `sh -c "true &"` exits at once and orphans its `true`: STORM orphans
# that exit, reparented to the nearest subreaper (or to PID 1).
MAKE_ORPHANS = f'i=0; while [ $i -lt {STORM} ]; do sh -c "true &"; i=$((i+1)); done'


def _zombies_of(pid: int) -> int:
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return 0
    n = 0
    for k in kids:
        try:
            n += k.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    return n


# The control: a wrapper that adopts orphans (a subreaper) but never reaps.
NAIVE_SUBREAPER = [
    sys.executable,
    "-c",
    "import ctypes, subprocess, sys; "
    "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "  # PR_SET_CHILD_SUBREAPER
    "sys.exit(subprocess.call(sys.argv[1:]))",
]


@pytest.mark.parametrize("wrapper", ["mpguard", "naive"])
def test_a_zombie_storm_is_reaped(tmp_path, wrapper):
    script = f'{MAKE_ORPHANS}; publish "{{\\"done\\": 1}}"; sleep 600'
    if wrapper == "mpguard":
        ctx = _start(tmp_path, MPGUARD_RUN, script, "--subreaper")
    else:
        ctx = _start(tmp_path, NAIVE_SUBREAPER, script)
    with ctx as sc:
        sc.report(LONG)
        if wrapper == "mpguard":
            assert wait_for(lambda: _zombies_of(sc.pid) == 0, SHORT), _zombies_of(
                sc.pid
            )
        else:
            assert _zombies_of(sc.pid) >= STORM * 0.9


def _skip_without_unshare() -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1)")
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid refused here: {probe.stderr.decode().strip()}")


# Counts the zombies in the PID namespace, from inside it.
COUNT_ZOMBIES = "grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l"


@pytest.mark.parametrize("wrapper", ["mpguard", "naive"])
def test_as_pid_1_in_a_new_pid_namespace_it_reaps_orphans(tmp_path, wrapper):
    _skip_without_unshare()
    n = 200
    script = (
        f'i=0; while [ $i -lt {n} ]; do sh -c "true &"; i=$((i+1)); done; '
        "sleep 0.5; echo zombies=$(" + COUNT_ZOMBIES + ") pid1=$(cat /proc/1/comm)"
    )
    inner = [*MPGUARD_RUN, "--"] if wrapper == "mpguard" else NAIVE
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *inner, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stderr
    fields = dict(kv.split("=") for kv in out.stdout.split())
    assert fields["pid1"].startswith("python"), fields  # the wrapper is PID 1
    if wrapper == "mpguard":
        assert int(fields["zombies"]) == 0, out.stdout
    else:
        assert int(fields["zombies"]) >= n * 0.9, out.stdout


# --- bad input ----------------------------------------------------------------------


def _cli(*args):
    return subprocess.run(
        [*MPGUARD_RUN, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ((), 2, "no command given"),
        (("--",), 2, "no command given"),
        (("--", "no-such-command-here"), 127, "command not found"),
        (("--", "/no/such/file"), 127, "No such file"),
        (("--", "/etc"), 126, "Permission denied"),
        (("--grace", "-1", "--", "true"), 2, "must be >= 0"),
        (("--grace", "soon", "--", "true"), 2, "not a number"),
    ],
)
def test_bad_input_is_one_line_and_a_documented_status(args, code, words):
    out = _cli(*args)
    assert out.returncode == code, out
    assert words in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_help_documents_the_exit_statuses():
    out = _cli("--help")
    assert out.returncode == 0
    for words in ("128+N", "126", "127", "--subreaper", "--grace"):
        assert words in out.stdout


def test_an_unexecutable_file_exits_126(tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    out = _cli("--", str(script))
    assert out.returncode == 126
    assert "Permission denied" in out.stderr
