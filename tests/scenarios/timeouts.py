"""Per-task timeouts must really kill (pebble#129).

usage: timeouts.py REPORT MODE

MODE guarded:
  * apply_async(timeout=0.5) on a task that starts `sleep 600` and then
    spins in Python, and on one stuck in C code;
  * a pool with task_timeout=0.5 running map(chunksize=1) over fast tasks
    and one slow one, while untimed apply_async tasks on another pool run;
  * the pool goes on afterwards.
MODE stdlib: the same first task; AsyncResult.get(timeout=0.5) gives up
waiting, but the worker and its grandchild run on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from _common import append_line, busy, get_pool, report


def spawn_and_spin(piddir: str) -> None:
    p = subprocess.Popen(["sleep", "600"])
    append_line(os.path.join(piddir, "pids"), f"{os.getpid()} {p.pid}")
    busy("python")


def stuck_in_c(_: int) -> None:
    busy("c")


def maybe_slow(i: int) -> int:
    if i == 3:
        time.sleep(600)
    time.sleep(0.02)
    return i


def pids(piddir: str) -> list[list[int]]:
    path = os.path.join(piddir, "pids")
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path) as f:
        return [[int(x) for x in line.split()] for line in f]


def error(e: BaseException, t0: float) -> dict:
    return {
        "type": type(e).__name__,
        "str": str(e),
        "pid": getattr(e, "pid", None),
        "timeout": getattr(e, "timeout", None),
        "is_timeout": isinstance(e, TimeoutError),
        "after": time.monotonic() - t0,
    }


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    piddir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    if mode == "stdlib":
        pool = get_pool("stdlib", 2)
        r = pool.apply_async(spawn_and_spin, (piddir,))
        t0 = time.monotonic()
        try:
            r.get(timeout=0.5)
            out = None
        except Exception as e:
            out = error(e, t0)
        worker, grandchild = pids(piddir)[0]
        report(path, error=out, worker_pid=worker, grandchild_pid=grandchild)
        os._exit(0)

    out: dict = {}
    pool = get_pool("guarded", 2)
    # Untimed tasks on another pool run meanwhile: they pay nothing.
    other = get_pool("guarded", 1)
    untimed = other.apply_async(time.sleep, (1.5,))

    t0 = time.monotonic()
    r = pool.apply_async(spawn_and_spin, (piddir,), timeout=0.5)
    try:
        r.get(10)
    except Exception as e:
        out["spin"] = error(e, t0)
    worker, grandchild = pids(piddir)[0]
    out["worker_pid"], out["grandchild_pid"] = worker, grandchild

    t0 = time.monotonic()
    try:
        pool.apply(stuck_in_c, (0,), timeout=0.5)
    except Exception as e:
        out["c"] = error(e, t0)

    timed = get_pool("guarded", 2, task_timeout=0.5)
    t0 = time.monotonic()
    try:
        timed.map(maybe_slow, range(8), chunksize=1)
    except Exception as e:
        out["map"] = error(e, t0)
    out["imap_unordered"] = []
    for x in timed.imap_unordered(maybe_slow, [0, 1, 2, 4]):
        out["imap_unordered"].append(x)  # no timeout hit: all results
    out["after"] = pool.map(abs, [-1, -2])
    try:
        pool.apply_async(abs, (1,), timeout=0)
    except ValueError as e:
        out["bad_timeout"] = f"ValueError: {e}"
    out["apply_with_timeout"] = pool.apply(abs, (-3,), timeout=5)
    import multiprocessing as mp

    with mp.get_context("guarded").Pool(1, task_timeout=0.25) as via_ctx:
        out["ctx_pool_timeout"] = via_ctx.task_timeout
    out["untimed_ok"] = untimed.get(10) is None
    for p in (pool, other, timed):
        p.close()
        p.join()
    report(path, **out)


if __name__ == "__main__":
    main()
