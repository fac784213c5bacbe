"""Helpers shared by the scenario scripts.  Never imports pytest.

A scenario is started by a test in its own session.  It publishes what the
test needs (pids, pgids, results) as JSON through :func:`report`, written to
a temporary file and renamed into place so that a reader never sees half a
report.

The generic helpers come from :mod:`mpguard.testing`, imported inside each
wrapper below and never at the top: ``import mpguard.testing`` runs
``mpguard/__init__.py`` (which registers the guarded start methods), and a
scenario must be able to do things before mpguard is imported (``api.py``
measures what the import itself changes), and a negative control must run
its stdlib pool exactly as a program without mpguard would.  By the time a
control reports, its children exist already; the import then only adds
entries to multiprocessing's table of start methods: no guard, no handler,
no thread.  A spawn child re-imports the main module, and with it this one,
without importing mpguard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def report(path: str, **data: object) -> None:
    """Publish *data* atomically at *path* (:func:`mpguard.testing.publish`)."""
    from mpguard.testing import publish

    publish(path, **data)


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write (safe across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def start_grandchild(*, setsid: bool = False) -> int:
    """Start `sleep 600` from a worker; return its pid (left running)."""
    p = subprocess.Popen(["sleep", "600"], start_new_session=setsid)
    return p.pid


def busy(kind: str, seconds: float = 600.0) -> None:
    """Stay busy: in Python bytecode, in a C call holding the GIL, or asleep."""
    end = time.monotonic() + seconds
    if kind == "c":
        import hashlib

        while time.monotonic() < end:
            # ~seconds of C code per call: Python-level handlers cannot run.
            hashlib.pbkdf2_hmac("sha256", b"x", b"y", 3_000_000)
    elif kind == "sleep":
        time.sleep(seconds)
    else:
        while time.monotonic() < end:
            sum(range(1000))


def wait_files(directory: str, n: int, timeout: float = 30.0) -> list[dict]:
    """Wait until *directory* holds *n* JSON files; return their contents."""
    deadline = time.monotonic() + timeout
    while True:
        names = [x for x in os.listdir(directory) if x.endswith(".json")]
        if len(names) >= n:
            out = []
            for name in sorted(names):
                with open(os.path.join(directory, name)) as f:
                    out.append(json.load(f))
            return out
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {n} worker reports in {directory}")
        time.sleep(0.01)


def zombie_children() -> list[int]:
    """Pids of this process's children that are zombies (not yet reaped)."""
    from mpguard.testing import zombies

    return zombies()


def zombies_after(timeout: float = 5.0) -> list[int]:
    """Zombie children still there after waiting up to *timeout* seconds."""
    from mpguard.testing import wait_for, zombies

    wait_for(lambda: not zombies(), timeout, 0.01)
    return zombies()


def patience(mode: str, deadline: float, control: float) -> float:
    """How long to wait for a call that hangs the control pool forever.

    The guarded pool gets *deadline*, the time it must finish within.  The
    control (the stdlib's pool, or billiard's own) never returns from such
    a call, and takes milliseconds when it does, so *control* seconds tell
    a hang apart on any machine and keep the suite short.
    """
    return deadline if mode == "guarded" else control


def hold() -> None:
    """Wait for the test to act (signal us); never returns on its own."""
    while True:
        signal.pause()


def method() -> str:
    """The guarded start method under test (the tests' ``start_method``
    fixture sets it; "guarded-fork" by default)."""
    return os.environ.get("MPGUARD_TEST_METHOD", "guarded-fork")


def stdlib_method() -> str:
    """The stdlib method the guarded one builds on: the negative control."""
    if method() == "billiard":
        return "fork"
    return method().split("-", 1)[1]


def get_pool(mode: str, processes: int, **kw: object):
    """The pool under test: mpguard's, or the stdlib Pool (control), both
    on the start method under test."""
    return get_ctx(mode).Pool(processes, **kw)


def get_ctx(mode: str):
    """The context under test; method "billiard" means billiard's "guarded"
    context (and its "fork" context as the control)."""
    import multiprocessing as mp

    if method() == "billiard":
        import billiard

        if mode == "guarded":
            import mpguard.billiard

            return billiard.get_context("guarded")
        return billiard.get_context("fork")
    if mode == "guarded":
        import mpguard  # noqa: F401 - registers the guarded methods

        return mp.get_context(method())
    return mp.get_context(stdlib_method())


def tree(pid: int | None = None) -> list[int]:
    """Every live descendant of *pid* (default: this process)."""
    from mpguard.testing import descendants

    return descendants(pid)
