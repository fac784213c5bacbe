"""A child meant to outlive its parent: mpguard.spawn_detached.

A blog recipe against zombies forks twice: the middle process exits at
once, the grandchild is adopted by init, and nobody has a zombie.  Written
with ``os.fork()`` in a threaded Python program it runs Python code between
fork and exec, and its pidfile (``open(path, "w")``) races a second start
and goes stale when the daemon dies.

``spawn_detached`` does it without forking Python: the program runs in its
own session, outside mpguard's group (the guard never signals it), no
zombie is left, and the pidfile is written atomically; a live one refuses a
second start, a stale one is replaced.

    python examples/detached.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import psutil

import mpguard


def gone_or_zombie(proc: psutil.Process, timeout: float = 5.0) -> None:
    # Not our child (init adopted it): poll, a zombie counts as dead.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)


def main() -> int:
    pidfile = os.path.join(tempfile.mkdtemp(), "sleeper.pid")
    pid = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    proc = psutil.Process(pid)
    print(f"detached sleep: pid {pid}, session {os.getsid(pid)}, parent {proc.ppid()}")
    with open(pidfile) as f:
        print(f"pidfile says {f.read().strip()}")
    try:
        mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
        refused = False
    except FileExistsError as e:
        print(f"second start refused: {e.strerror}")
        refused = True
    proc.kill()
    gone_or_zombie(proc)
    # The pidfile is stale now: the next start replaces it.
    again = mpguard.spawn_detached(["sleep", "600"], pidfile=pidfile)
    print(f"after the daemon died, a new start got pid {again}")
    psutil.Process(again).kill()
    mine = [p.pid for p in psutil.Process().children()]
    ok = refused and os.getsid(pid) != os.getsid(0) and pid not in mine
    print("OK" if ok else "UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
