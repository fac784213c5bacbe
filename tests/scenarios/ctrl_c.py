"""Ctrl-C during Pool.map: SIGINT to the terminal's foreground group.

usage: ctrl_c.py REPORT MODE N

The test sends SIGINT to this scenario's whole process group, as a terminal
does.  The stdlib fork Pool's workers are in that group and each prints a
KeyboardInterrupt traceback; mpguard's are not, and ignore SIGINT anyway.
Reported once every worker is inside a task.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from _common import get_pool, report, wait_files


def slow(arg: tuple[str, int]) -> int:
    outdir, i = arg
    # Atomically: the parent's wait_files() reads every *.json it sees, and
    # an empty file just created here failed one CI run with JSONDecodeError.
    tmp = os.path.join(outdir, f"{i}.tmp")
    with open(tmp, "w") as f:
        f.write("{}")
    os.replace(tmp, os.path.join(outdir, f"{i}.json"))
    time.sleep(600)
    return i


def main() -> None:
    path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    outdir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    with get_pool(mode, n) as pool:
        result = pool.map_async(slow, [(outdir, i) for i in range(n)], chunksize=1)
        wait_files(outdir, n)
        report(path, pid=os.getpid(), workers=[w.pid for w in pool._pool])
        try:
            result.get()
        except KeyboardInterrupt:
            # When it reached us (CLOCK_MONOTONIC is system-wide).
            report(path + ".kbi", at=time.monotonic())
            raise


if __name__ == "__main__":
    main()
