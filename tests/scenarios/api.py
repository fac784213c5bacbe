"""Exercise the guarded context's API and report each check by name.

usage: api.py REPORT

Runs in its own process because it installs handlers and starts the guard.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import warnings
from multiprocessing import resource_tracker
from multiprocessing.context import ForkContext

from _common import report

records: list[str] = []


class Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        records.append(record.getMessage())


def square(x: int) -> int:
    return x * x


def child_info(q) -> None:
    q.put(
        {
            "pgid": os.getpgrp(),
            "start_method": mp.get_start_method(),
            "sigint": repr(signal.getsignal(signal.SIGINT)),
            "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        }
    )


def worker_info(_: int) -> dict:
    return {
        "pgid": os.getpgrp(),
        "sigint": repr(signal.getsignal(signal.SIGINT)),
        "sigterm": repr(signal.getsignal(signal.SIGTERM)),
    }


def event_setter(ev) -> None:
    ev.set()


def user_term(signum, frame) -> None:
    pass


def main() -> None:
    path = sys.argv[1]
    out: dict = {"pid": os.getpid(), "pgid": os.getpgrp()}
    logger = logging.getLogger("mpguard")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Collect())

    # Dispositions before the guard exists: SIGHUP ignored (as under nohup),
    # SIGTERM with a user handler that must be chained, not lost.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, user_term)
    out["threads_before"] = threading.active_count()

    import mpguard

    out["threads_after_import"] = threading.active_count()
    out["sigterm_untouched_by_import"] = signal.getsignal(signal.SIGTERM) is user_term
    ctx = mp.get_context("guarded")
    out["register_idempotent"] = mpguard.register() is ctx is mpguard.get_context()
    out["start_method_name"] = ctx.get_start_method()
    out["listed_in_all_start_methods"] = "guarded" in mp.get_all_start_methods()

    # SemLock: unlinked at once, no resource tracker.  CPython's
    # synchronize.SemLock.__init__ unlinks the named semaphore at once only
    # for a context whose get_start_method() is "fork" (3.11+:
    # ``self._is_fork_ctx``), and "guarded" reports "fork".
    ctx.Lock()
    out["resource_tracker_started"] = (
        resource_tracker._resource_tracker._pid is not None
    )

    q = ctx.Queue()
    p = ctx.Process(target=child_info, args=(q,))
    p.start()
    out["child"] = q.get(timeout=10)
    p.join(10)
    out["child_exitcode"] = p.exitcode
    h = signal.getsignal(signal.SIGTERM)
    out["sigterm_handler_type"] = type(h).__name__
    out["sigterm_chains_user_handler"] = getattr(h, "previous", None) is user_term
    out["sighup_left_ignored"] = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN

    # A child forked outside mpguard while its handlers are installed sees
    # exactly what it would see without mpguard: the user's handler.
    plain = mp.get_context("fork")
    q2 = plain.Queue()
    p = plain.Process(target=child_info, args=(q2,))
    p.start()
    out["plain_child"] = q2.get(timeout=10)
    p.join(10)

    ev = ctx.Event()
    p = ctx.Process(target=event_setter, args=(ev,))
    p.start()
    out["event"] = ev.wait(10)
    p.join(10)

    with ctx.Manager() as m:
        d = m.dict()
        d["k"] = 1
        out["manager"] = dict(d)

    with ctx.Pool(2) as pool:
        out["pool_map"] = pool.map(square, range(5))
        infos = pool.map(worker_info, range(4), chunksize=1)
        out["workers"] = [w.pid for w in pool._pool]
    out["worker_info"] = infos
    out["pool_is_guarded"] = isinstance(pool, mpguard.GuardedPool)

    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        out["ppe_map"] = list(ex.map(square, range(5)))
    if sys.version_info >= (3, 11):
        try:
            cf.ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=1)
            out["ppe_rejects_max_tasks"] = False
        except ValueError:
            out["ppe_rejects_max_tasks"] = True

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pool = mpguard.GuardedPool(1)
        out["guardian_pgid"] = pool._pool[0].pid and os.getpgid(pool._pool[0].pid)
        del pool
        gc.collect()
    out["unclosed_warning"] = [x.category.__name__ for x in w]

    # fork() with threads alive: Python 3.12+ warns (gh-100228).  mpguard
    # neither adds nor hides that warning.
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = ctx.Process(target=square, args=(1,))
        p.start()
        p.join(10)
    out["fork_with_threads_warning"] = [
        x.category.__name__ for x in w if "multi-threaded" in str(x.message)
    ]
    # guarded-spawn and guarded-forkserver never fork this (threaded)
    # process: posix_spawn for the child or the forkserver, so no warning.
    for name in ("guarded-spawn", "guarded-forkserver"):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            p = mp.get_context(name).Process(target=square, args=(1,))
            p.start()
            p.join(10)
        out[f"{name}_with_threads_warning"] = [
            x.category.__name__ for x in w if "multi-threaded" in str(x.message)
        ]
    stop.set()
    t.join()

    first_pgid = out["guardian_pgid"]
    mpguard.shutdown()
    out["sigterm_restored_after_shutdown"] = (
        signal.getsignal(signal.SIGTERM) is user_term
    )
    with ctx.Pool(1) as pool:
        out["new_guard_pgid"] = os.getpgid(pool._pool[0].pid)
    out["new_guard_differs"] = out["new_guard_pgid"] != first_pgid

    # configure(signals=...) decides which signals the next guard handles.
    mpguard.shutdown()
    mpguard.configure(signals=(signal.SIGTERM,))
    with ctx.Pool(1) as pool:
        pool.map(square, [1])
    out["sigint_after_configure"] = repr(signal.getsignal(signal.SIGINT))
    out["sigterm_after_configure"] = type(signal.getsignal(signal.SIGTERM)).__name__

    # Negative control for the _name decision: the same context named
    # anything but "fork" makes SemLock register with a resource tracker.
    class Misnamed(ForkContext):
        _name = "guarded-misnamed"

    Misnamed().Lock()
    out["misnamed_starts_tracker"] = resource_tracker._resource_tracker._pid is not None
    # "guarded" as the global default: plain mp.Process is then guarded.
    mp.set_start_method("guarded", force=True)
    q3 = mp.SimpleQueue()
    p = mp.Process(target=child_info, args=(q3,))
    p.start()
    out["default_child"] = q3.get()
    p.join(10)
    out["default_popen_module"] = type(p._popen).__module__
    out["log"] = records
    report(path, **out)


if __name__ == "__main__":
    main()
