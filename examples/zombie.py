"""A common blog recipe, rewritten: a child the program never waits for.

The recipe starts ``subprocess.Popen(["python", "worker.py"])`` and never
waits for it.  Without mpguard the finished child stays a zombie
(``<defunct>``) until the parent exits; the recipe's fix,
``signal.signal(signal.SIGCHLD, signal.SIG_IGN)``, makes
``subprocess.run(...).returncode`` lie (0 instead of the real code):
``waitpid()`` then fails with ECHILD (waitpid(2)) and ``subprocess`` reports
0.  A guarded Process is reaped as soon as it exits, and exit codes stay
exact.

    python examples/zombie.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

import psutil

import mpguard  # noqa: F401 - registers "guarded"


def work() -> None:
    os._exit(7)


def state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "reaped"


def main() -> int:
    ctx = mp.get_context("guarded")
    p = ctx.Process(target=work)
    p.start()  # ... and never joined
    deadline = time.monotonic() + 5
    while state(p.pid) != "reaped" and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"guarded child {p.pid}: {state(p.pid)}, exitcode {p.exitcode}")
    rc = subprocess.run(["sh", "-c", "exit 3"]).returncode
    print(f"subprocess returncode while mpguard reaps: {rc}")
    return 0 if (state(p.pid) == "reaped" and p.exitcode == 7 and rc == 3) else 1


if __name__ == "__main__":
    sys.exit(main())
