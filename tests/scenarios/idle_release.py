"""The guardian goes once nothing is guarded, and comes back when needed.

usage: idle_release.py REPORT MODE

MODE guarded: a GuardedPool maps and is closed and joined; the scenario
reports its children right after, then waits (up to 3 s) until it has
none; two pools back to back within the linger share one guardian; a pool
after the release gets a new one.
MODE control: the stdlib fork Pool, the same steps.
"""

from __future__ import annotations

import os
import sys
import time

import psutil
from _common import get_pool, report


def children() -> list[int]:
    out = []
    for c in psutil.Process().children():
        try:
            if "resource_tracker" not in " ".join(c.cmdline()):
                out.append(c.pid)
        except psutil.Error:  # exited while we looked
            continue
    return out


def gone_after(timeout: float) -> float | None:
    t0 = time.monotonic()
    while children():
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.005)
    return time.monotonic() - t0


def pgid_of(pool) -> int:
    return os.getpgid(pool._pool[0].pid)


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    out: dict = {}
    pool = get_pool(mode, 2)
    out["map"] = pool.map(abs, [-1, -2, -3])
    first = pgid_of(pool)
    pool.close()
    pool.join()
    out["children_after_join"] = children()
    out["pids"] = out["children_after_join"]
    out["released_after"] = gone_after(3.0)
    # Back to back: the second pool comes within the linger.
    a = get_pool(mode, 1)
    ga = pgid_of(a)
    a.terminate()
    a.join()
    b = get_pool(mode, 1)
    gb = pgid_of(b)
    b.terminate()
    b.join()
    out["back_to_back_same_group"] = ga == gb
    out["new_group_after_release"] = ga != first
    out["released_again_after"] = gone_after(3.0)
    report(path, **out)


if __name__ == "__main__":
    main()
