"""Two blog recipes for subprocess zombies, rewritten with mpguard.Popen.

The recipe starts ``subprocess.Popen(["python", "worker.py"])`` and never
waits for it: the finished child stays a zombie (``<defunct>``) until the
parent exits.  Its fixes are traps:

* ``signal.signal(signal.SIGCHLD, signal.SIG_IGN)``: the kernel discards
  every exit status, so ``subprocess.run(...).returncode`` says 0 for a
  child that failed (``waitpid()`` fails with ECHILD, waitpid(2));
* a SIGCHLD handler that loops on ``os.waitpid(-1, WNOHANG)``: it collects
  the statuses ``subprocess`` was waiting for, with the same lie.

``mpguard.Popen`` is a drop-in: a Popen its owner dropped is reaped as soon
as its child exits, a kept one keeps its exact status, and the child dies
with the parent however the parent ends.

    python examples/popen_zombie.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

import mpguard

CHILD = [sys.executable, "-c", "import time; time.sleep(0.2)"]


def zombies() -> list[int]:
    return [
        p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE
    ]


def settle() -> None:
    time.sleep(0.6)  # the child's 0.2 s, and start-up


def main() -> int:
    # 1. The recipe: a Popen nobody waits for leaves a zombie.
    subprocess.Popen(CHILD)
    settle()
    left = zombies()
    print(f"subprocess.Popen, never waited for: zombies {left}")
    for pid in left:  # clean up before the next part
        os.waitpid(pid, 0)

    # 2. The recipe's fix: SIGCHLD ignored.  No zombie, but a lying status.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    lie = subprocess.run(["sh", "-c", "exit 3"]).returncode
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print(f"with SIGCHLD ignored, 'exit 3' reports returncode {lie}")

    # 3. mpguard.Popen: dropped and reaped, kept and exact.
    mpguard.Popen(CHILD)
    settle()
    guarded_left = zombies()
    print(f"mpguard.Popen, never waited for: zombies {guarded_left}")
    exact = mpguard.run(["sh", "-c", "exit 3"]).returncode
    print(f"mpguard.run('exit 3').returncode == {exact}")

    ok = bool(left) and lie == 0 and not guarded_left and exact == 3
    print("OK" if ok else "UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
