"""A common blog recipe, rewritten: the parent dies, the children do not.

The recipe marks its children daemonic and expects them to die with the
parent::

    p = multiprocessing.Process(target=fun, args=(i,))
    p.daemon = True
    p.start()

``daemon`` only means that the parent, when it exits, tries to terminate
them (Python docs, ``multiprocessing.Process.daemon``); SIGKILL cannot be
caught (signal(7)).  So after ``kill -9`` of the parent they keep running,
orphans adopted by init (_exit(2)).  With the guarded context they, and
what they started, are SIGKILLed at once.  This script plays the parent in
a new session, kills itself with SIGKILL, and a watcher checks the result.

    python examples/orphan.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import psutil


def fun(x: int) -> None:
    subprocess.Popen(["sleep", "600"])  # a grandchild, too
    while True:
        time.sleep(1)


def parent(pidfile: str) -> None:
    import mpguard  # noqa: F401

    ctx = mp.get_context("guarded")
    procs = [ctx.Process(target=fun, args=(i,), daemon=True) for i in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let each start its grandchild
    me = psutil.Process()
    pids = [c.pid for c in me.children(recursive=True)]
    with open(pidfile + ".tmp", "w") as f:
        f.write(" ".join(map(str, pids)))
    os.replace(pidfile + ".tmp", pidfile)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 ourselves


def main() -> int:
    pidfile = f"/tmp/mpguard-orphan-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, __file__, pidfile], start_new_session=True)
    proc.wait()
    with open(pidfile) as f:
        pids = [int(x) for x in f.read().split()]
    os.unlink(pidfile)

    def alive() -> list[int]:
        out = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.Error:
                pass
        return out

    deadline = time.monotonic() + 1.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    left = alive()
    # The guardian (the group's leader) is among the pids and is gone too.
    print(
        f"parent killed with SIGKILL; of {len(pids)} descendants, {len(left)} survive"
    )
    return 0 if not left else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        parent(sys.argv[1])
    else:
        sys.exit(main())
