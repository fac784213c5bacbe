"""Children started with ``subprocess``-style calls, then the parent ends.

usage: popen.py REPORT MODE [pool|detach|return|raise|leftover]

MODE guarded: ``mpguard.Popen``; stdlib: ``subprocess.Popen`` (the
control).  Each child is ``sh`` with a background ``sleep`` (a grandchild
that stays in the child's group) and a foreground one.  With ``pool``, a
guarded pool runs beside the Popens, and the pgids of both are reported
(one guard, one group).  With ``detach``, a ``sleep`` started by
``mpguard.spawn_detached`` is reported as ``detached`` (meant to outlive
the scenario).  The scenario then waits to be signalled; with ``return``
or ``raise`` it ends that way once the file REPORT.go appears.

``leftover``: instead, one ``run()`` of a shell that leaves a background
``sleep`` behind and exits; the scenario waits past the guard's idle
linger (0.5 s), reports, and waits to be signalled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _common import report

SCRIPT = "sleep 600 & echo $!; exec sleep 600"


def _pool_pgids() -> list[int]:
    import mpguard

    pool = mpguard.GuardedPool(2)
    global POOL
    POOL = pool  # kept open until the scenario is signalled
    return sorted(set(pool.map(_pgid, range(4))))


def _pgid(_: int) -> int:
    return os.getpgrp()


POOL = None


def leftover(path: str, mode: str) -> None:
    if mode == "guarded":
        import mpguard

        run = mpguard.run
    else:
        run = subprocess.run
    script = "sleep 600 >/dev/null 2>&1 & echo $!"
    out = run(["sh", "-c", script], capture_output=True, check=True)
    time.sleep(1.5)  # past the guard's idle linger
    report(path, pid=os.getpid(), grandchildren=[int(out.stdout)])
    time.sleep(600)


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if sys.argv[3:] == ["leftover"]:
        leftover(path, mode)
        return
    if mode == "guarded":
        import mpguard

        popen = mpguard.Popen
    else:
        popen = subprocess.Popen
    kids = [popen(["sh", "-c", SCRIPT], stdout=subprocess.PIPE) for _ in range(2)]
    grandchildren = [int(k.stdout.readline()) for k in kids]  # type: ignore[union-attr]
    pool_pgids = _pool_pgids() if sys.argv[3:] == ["pool"] else []
    extra = {}
    if sys.argv[3:] == ["detach"]:
        import mpguard

        extra["detached"] = mpguard.spawn_detached(["sleep", "600"])
    report(
        path,
        pid=os.getpid(),
        pgid=os.getpgrp(),
        workers=[k.pid for k in kids],
        child_pgids=[os.getpgid(k.pid) for k in kids],
        grandchildren=grandchildren,
        pool_pgids=pool_pgids,
        **extra,
    )
    if sys.argv[3:] in (["return"], ["raise"]):
        go = path + ".go"
        deadline = time.monotonic() + 600
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        if sys.argv[3] == "raise":
            raise RuntimeError("the scenario's main() fails")
        return
    time.sleep(600)


if __name__ == "__main__":
    main()
