"""A pool whose busy workers each started a grandchild; then the parent ends.

usage: busy_pool.py REPORT MODE [options]

MODE: guarded (mpguard.GuardedPool on $MPGUARD_TEST_METHOD), stdlib (the
stdlib Pool on the method underneath, the negative control) or pdeathsig
(stdlib Pool whose initializer arms PR_SET_PDEATHSIG=SIGKILL, the
billiard/Celery technique).  The report's ``tree`` lists every process the
scenario had started (workers, grandchildren, guardian, forkserver,
resource tracker).

--busy python|c|sleep   what workers do once they have reported
--workers N             pool size (default 2)
--setsid                the grandchild leaves the group with setsid
--in-thread             build the pool in a thread that then exits
--churn                 maxtasksperchild=1: workers replaced by the pool's
                        own thread before they report
--end hold|exit|return|raise|terminate
                        how the parent ends once it has reported
--ignore-term           workers ignore SIGTERM
--grace S               GuardedPool grace
--handler exit0         a user SIGTERM handler that calls sys.exit(0)
--semaphore             the parent also makes a Lock of the method's own
                        (a named semaphore under spawn and forkserver, which
                        the resource tracker reports once the parent is gone)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings

from _common import (
    busy,
    get_ctx,
    get_pool,
    hold,
    report,
    start_grandchild,
    tree,
    wait_files,
)


def task(arg: tuple[str, int, str, bool, bool]) -> None:
    outdir, i, kind, setsid, ignore_term = arg
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc = start_grandchild(setsid=setsid)
    info = {"worker": os.getpid(), "pgid": os.getpgrp(), "grandchild": gc}
    tmp = os.path.join(outdir, f"{i}.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.path.join(outdir, f"{i}.json"))
    busy(kind)


def quick(_: int) -> int:
    return os.getpid()


def arm_pdeathsig(marker_dir: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # The marker is written by hand, atomically, not with report(): this
    # control's workers must not import mpguard at all.
    tmp = os.path.join(marker_dir, f"{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write("{}")
    os.replace(tmp, os.path.join(marker_dir, f"{os.getpid()}.json"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("mode", choices=["guarded", "stdlib", "pdeathsig"])
    ap.add_argument("--busy", default="python")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--setsid", action="store_true")
    ap.add_argument("--in-thread", action="store_true")
    ap.add_argument("--churn", action="store_true")
    ap.add_argument("--end", default="hold")
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--grace", type=float)
    ap.add_argument("--handler")
    ap.add_argument("--log", help="write mpguard's debug log to this file")
    ap.add_argument("--semaphore", action="store_true")
    a = ap.parse_args()

    if a.log:
        import logging

        handler = logging.FileHandler(a.log)
        logging.getLogger("mpguard").addHandler(handler)
        logging.getLogger("mpguard").setLevel(logging.DEBUG)

    if a.handler == "exit0":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    kw: dict = {}
    armed = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(a.report)))
    if a.mode == "pdeathsig":
        kw["initializer"] = arm_pdeathsig
        kw["initargs"] = (armed,)
    if a.churn:
        kw["maxtasksperchild"] = 1
    if a.grace is not None and a.mode == "guarded":
        kw["grace"] = a.grace
    mode = "stdlib" if a.mode == "pdeathsig" else a.mode

    caught: list[str] = []
    box: dict = {}

    def build() -> None:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            box["pool"] = get_pool(mode, a.workers, **kw)
            # Recorded here: once this thread ends, a pdeathsig pool's
            # workers die and its handler thread forks replacements.
            box["first"] = [w.pid for w in box["pool"]._pool]
            if a.mode == "pdeathsig":
                # Exit the thread only once every worker has armed
                # pdeathsig: arming after the thread is gone never fires
                # (the man page's race), which would make this flaky.
                wait_files(armed, a.workers)
        caught.extend(f"{x.category.__name__}: {x.message}" for x in w)

    if a.in_thread:
        t = threading.Thread(target=build)
        t.start()
        t.join()
    else:
        build()
    pool = box["pool"]
    first = box["first"]
    if a.semaphore:  # held for the scenario's whole life
        box["lock"] = get_ctx(mode).Lock()
    report(a.report + ".early", pid=os.getpid(), first_workers=first)
    if a.churn:
        # Each quick task retires its worker: the replacements are forked
        # by the pool's _handle_workers thread, not by us.
        pool.map(quick, range(a.workers * 3), chunksize=1)

    outdir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(a.report)))
    args = [(outdir, i, a.busy, a.setsid, a.ignore_term) for i in range(a.workers)]
    result = pool.map_async(task, args, chunksize=1)
    infos = wait_files(
        outdir, a.workers, timeout=10.0 if a.mode == "pdeathsig" else 30.0
    )
    report(
        a.report,
        pid=os.getpid(),
        pgid=os.getpgrp(),
        first_workers=first,
        workers=[x["worker"] for x in infos],
        worker_pgids=[x["pgid"] for x in infos],
        grandchildren=[x["grandchild"] for x in infos],
        tree=tree(),
        warnings=caught,
    )
    if a.end == "exit":
        os._exit(0)
    elif a.end == "raise":
        raise RuntimeError("scenario ends with an exception")
    elif a.end == "terminate":
        t0 = time.monotonic()
        pool.terminate()
        dt = time.monotonic() - t0
        report(a.report + ".terminate", seconds=dt)
        hold()
    elif a.end == "return":
        del result
        return
    else:
        hold()


if __name__ == "__main__":
    main()
