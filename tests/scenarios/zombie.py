"""A child the program never joins (a common blog recipe's zombie).

usage: zombie.py REPORT MODE

The child records when it exits (CLOCK_MONOTONIC is system-wide), then
exits; the parent never joins it and sleeps.  Without mpguard it stays a
zombie until the parent exits ("a child that terminates, but has not been
waited for becomes a zombie": wait(2), NOTES).
"""

from __future__ import annotations

import os
import sys
import time

from _common import get_ctx, hold, report


def child(path: str) -> None:
    with open(path, "w") as f:
        f.write(repr(time.monotonic()))


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    exit_path = path + ".exit"
    p = get_ctx(mode).Process(target=child, args=(exit_path,))
    p.start()
    report(path, pid=os.getpid(), child_pid=p.pid, exit_path=exit_path)
    hold()


if __name__ == "__main__":
    main()
