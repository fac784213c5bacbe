"""maxtasksperchild=1 churn, then count the parent's zombie children.

usage: churn.py REPORT MODE

MODE guarded / stdlib; MODE sig_ign: the stdlib Pool under the common blog
recipe against zombies, ``signal(SIGCHLD, SIG_IGN)``.  Children then never
become zombies and ``waitpid()`` fails with ECHILD (waitpid(2), NOTES);
multiprocessing's ``Popen.poll()`` swallows that error and returns None
(Lib/multiprocessing/popen_fork.py), so a retired worker's exit code can
never be read and the pool stops replacing workers.  MODE guarded_sig_ign:
GuardedPool under the same recipe; also reports the CPU the parent used
(a waiter spinning on a dead worker's pidfd would burn it).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

from _common import get_pool, report, zombie_children


def task(i: int) -> int:
    return os.getpid()


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode in ("sig_ign", "guarded_sig_ign"):
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    kind = "guarded" if mode.startswith("guarded") else "stdlib"
    pool = get_pool(kind, 2, maxtasksperchild=1)
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        # The SIG_IGN control hangs forever, and its 40 tasks take under a
        # second when they do not: 4 s tells the hang apart.
        bound = 4 if mode == "sig_ign" else 10
        pids = pool.map_async(task, range(40), chunksize=1).get(bound)
        hung = False
    except multiprocessing.TimeoutError:
        pids, hung = [], True
    # Idle for a moment: nothing should be running in the parent.
    time.sleep(0.5)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    # Zombies right after the map, then after 100 ms.
    z0 = zombie_children()
    time.sleep(0.1)
    z1 = zombie_children()
    report(
        path,
        pid=os.getpid(),
        workers=sorted(set(pids)),
        hung=hung,
        cpu=cpu,
        wall=wall,
        zombies_at_once=z0,
        zombies_after_100ms=z1,
    )
    if hung:
        os._exit(0)  # the stdlib pool cannot be shut down cleanly now
    pool.close()
    pool.join()


if __name__ == "__main__":
    main()
