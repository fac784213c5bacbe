"""A worker dies in the middle of one task, through every Pool API.

usage: lost_worker.py REPORT MODE

MODE guarded: for map, imap, imap_unordered, starmap and apply_async, one
task of eight kills its own worker (SIGKILL, as the OOM killer does); for
apply_async also os._exit(3) and a segfault in C.  Reports what each call
returned or raised, which tasks ran to the end, how long the error took,
and whether the pool still works.

MODE stdlib: the same SIGKILL under multiprocessing.Pool; map_async().get()
is bounded by a timeout, and the report says whether it hung.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile
import time

from _common import append_line, get_pool, report, zombies_after

N = 8
VICTIM = 5


def work(arg: tuple[str, int, str]) -> int:
    log, i, how = arg
    if i == VICTIM:
        append_line(log, f"kill {time.monotonic()}")
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "exit":
            os._exit(3)
        else:  # segfault in C code
            ctypes.string_at(0)
    time.sleep(0.05)
    append_line(log, f"done {i}")
    return i * i


def star(log: str, i: int, how: str) -> int:
    return work((log, i, how))


def done_tasks(log: str) -> list[int]:
    with open(log) as f:
        return sorted(int(x.split()[1]) for x in f if x.startswith("done"))


def kill_time(log: str) -> float:
    with open(log) as f:
        return next(float(x.split()[1]) for x in f if x.startswith("kill"))


def describe(e: BaseException) -> dict:
    return {
        "type": type(e).__name__,
        "str": str(e),
        "pid": getattr(e, "pid", None),
        "exitcode": getattr(e, "exitcode", None),
        "signal": None if getattr(e, "signal", None) is None else int(e.signal),
        "task": getattr(e, "task", None),
    }


def run_api(pool, api: str, how: str, tmp: str) -> dict:
    fd, log = tempfile.mkstemp(dir=tmp)
    os.close(fd)
    args = [(log, i, how) for i in range(N)]
    out: dict = {"api": api, "how": how}
    t0 = time.monotonic()
    if api == "map":
        try:
            out["result"] = pool.map(work, args, chunksize=1)
        except Exception as e:
            out["error"] = describe(e)
    elif api == "starmap":
        try:
            out["result"] = pool.starmap(star, args, chunksize=1)
        except Exception as e:
            out["error"] = describe(e)
    elif api == "imap":
        got = []
        try:
            for r in pool.imap(work, args):
                got.append(r)
        except Exception as e:
            out["error"] = describe(e)
        out["result"] = got
    elif api == "imap_unordered":
        it = pool.imap_unordered(work, args)
        got, errors = [], []
        for _ in range(N):
            try:
                got.append(next(it))
            except StopIteration:
                break
            except Exception as e:
                errors.append(describe(e))
        out["result"] = sorted(got)
        out["errors"] = errors
    else:  # apply_async with callbacks
        ok, failed = [], []
        results = [
            pool.apply_async(
                work,
                (a,),
                callback=ok.append,
                error_callback=lambda e: failed.append((time.monotonic(), e)),
            )
            for a in args
        ]
        for r in results:
            r.wait(30)
        out["callbacks"] = sorted(ok)
        out["error_callbacks"] = [describe(e) for _, e in failed]
        if failed:
            out["delay"] = failed[0][0] - kill_time(log)
        errors = []
        for r in results:
            try:
                r.get(0)
            except Exception as e:
                errors.append(describe(e))
        out["errors"] = errors
    out["elapsed"] = time.monotonic() - t0
    out["done"] = done_tasks(log)
    return out


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    if mode == "stdlib":
        pool = get_pool("stdlib", 2)
        fd, log = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        workers = [w.pid for w in pool._pool]
        t0 = time.monotonic()
        res = pool.map_async(work, [(log, i, "sigkill") for i in range(N)], chunksize=1)
        try:
            res.get(timeout=3)
            hung = False
        except Exception as e:  # multiprocessing.TimeoutError
            hung = type(e).__name__ == "TimeoutError"
        report(
            path,
            hung=hung,
            waited=time.monotonic() - t0,
            done=done_tasks(log),
            workers=workers + [w.pid for w in pool._pool],
        )
        os._exit(0)  # terminate() may hang too (gh-78178): not this test's point

    runs = []
    pool = get_pool("guarded", 2)
    seen = {w.pid for w in pool._pool}
    for api in ("map", "starmap", "imap", "imap_unordered", "apply_async"):
        runs.append(run_api(pool, api, "sigkill", tmp))
        seen.update(w.pid for w in pool._pool)
    for how in ("exit", "segv"):
        runs.append(run_api(pool, "apply_async", how, tmp))
        seen.update(w.pid for w in pool._pool)
    after = pool.map(abs, range(-5, 5))
    z = zombies_after(5.0)
    pool.close()
    pool.join()
    report(path, runs=runs, after=after, zombies=z, workers=sorted(seen))


if __name__ == "__main__":
    main()
