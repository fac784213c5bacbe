"""What every program below runs once its start method is set."""

from __future__ import annotations

import json
import multiprocessing as mp
import os


def work(x: int) -> tuple[int, int]:
    return os.getpid(), os.getpgrp()


def child(q) -> None:
    q.put((os.getpid(), os.getpgrp(), mp.get_start_method()))


def run() -> None:
    import mpguard

    with mp.Pool(2) as pool:  # the stdlib Pool, on the default context
        stdlib_pool = pool.map(work, range(4))
    with mpguard.GuardedPool(2) as pool:  # context=None follows the default
        guarded_pool = pool.map(work, range(4))
        guarded_method = pool._ctx.key
    q = mp.SimpleQueue()
    p = mp.Process(target=child, args=(q,))
    p.start()
    proc = q.get()
    p.join()
    out = {
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "start_method": mp.get_start_method(),
        "stdlib_pool": stdlib_pool,
        "guarded_pool": guarded_pool,
        "guarded_method": guarded_method,
        "process": proc,
        "exitcode": p.exitcode,
    }
    tmp = os.environ["REPORT"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, os.environ["REPORT"])
