"""The parent of a pool runs in a shell pipeline: `python pipeline.py | tee`.

usage: pipeline.py REPORT MODE

MODE killpg: the common blog recipe for ending "all the children", a
SIGTERM handler doing ``os.killpg(os.getpgid(os.getpid()), SIGKILL)``; it
kills the group, and the group is the shell pipeline's (a shell puts a
pipeline in one process group: setpgid(2), credentials(7)), so `tee` dies
too and output is lost.
MODE guarded: GuardedPool; a user handler prints a last line and mpguard
chains it after tearing its own group down.
"""

from __future__ import annotations

import os
import signal
import sys

from _common import busy, get_pool, hold, report


def work(i: int) -> None:
    busy("sleep")


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "killpg":

        def handler(signum, frame):
            print("parent: shutting down", flush=True)
            os.killpg(os.getpgid(os.getpid()), signal.SIGKILL)

    else:

        def handler(signum, frame):
            print("parent: shutting down", flush=True)

    signal.signal(signal.SIGTERM, handler)
    pool = get_pool("guarded" if mode == "guarded" else "stdlib", 2)
    pool.map_async(work, range(2))
    for i in range(100):
        print(f"line {i}")
    sys.stdout.flush()
    report(
        path, pid=os.getpid(), pgid=os.getpgrp(), workers=[w.pid for w in pool._pool]
    )
    hold()


if __name__ == "__main__":
    main()
