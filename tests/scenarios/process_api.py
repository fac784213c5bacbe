"""Process and executor APIs on guarded contexts, and a task the worker
cannot unpickle.

usage: process_api.py REPORT CASE MODE

CASE terminate / kill: a Process whose target started `sleep 600` is
  terminated (killed); the report says whether the grandchild still runs.
CASE executor_kill / executor_terminate: ProcessPoolExecutor.kill_workers()
  (terminate_workers(), 3.14+) while each worker's task holds a `sleep 600`
  grandchild.
CASE interrupt: Process.interrupt() (3.14+) on a sleeping child.
CASE unpicklable: the task's function lives in a module the parent imported
  and then deleted from disk, so a fresh worker cannot import it.
MODE guarded: the guarded start method under test; stdlib: the stdlib one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import get_ctx, patience, report


def hold_grandchild(q) -> None:
    p = subprocess.Popen(["sleep", "600"])
    q.put(p.pid)
    time.sleep(600)


def task_with_grandchild(path: str) -> None:
    p = subprocess.Popen(["sleep", "600"])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{p.pid}\n".encode())
    os.close(fd)
    time.sleep(600)


def ready_then_sleep(q) -> None:
    q.put(os.getpid())  # the interpreter is up and the handlers are set
    time.sleep(600)


def gone_within(pids: list[int], timeout: float) -> bool:
    # Imported here, after the scenario ran: a stdlib control must not have
    # mpguard loaded while it runs.
    from mpguard.testing import wait_gone

    return not wait_gone(pids, timeout)


def main() -> None:
    path, case, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ctx = get_ctx(mode)
    out: dict = {"case": case}
    if case in ("terminate", "kill"):
        q = ctx.SimpleQueue()
        p = ctx.Process(target=hold_grandchild, args=(q,))
        p.start()
        grandchild = q.get()
        getattr(p, case)()
        p.join(10)
        out.update(
            exitcode=p.exitcode,
            grandchild_pid=grandchild,
            grandchild_gone=gone_within([grandchild], 1.0),
        )
    elif case in ("executor_kill", "executor_terminate"):
        import concurrent.futures as cf

        pidfile = os.path.join(os.path.dirname(os.path.abspath(path)), "gc.pids")
        ex = cf.ProcessPoolExecutor(2, mp_context=ctx)
        futures = [ex.submit(task_with_grandchild, pidfile) for _ in range(2)]
        deadline = time.monotonic() + 20
        pids: list[int] = []
        while len(pids) < 2 and time.monotonic() < deadline:
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    pids = [int(x) for x in f.read().split()]
            time.sleep(0.01)
        workers = list(ex._processes)
        if case == "executor_kill":
            ex.kill_workers()
        else:
            ex.terminate_workers()
        out.update(
            grandchild_pids=pids,
            worker_pids=workers,
            grandchildren_gone=gone_within(pids, 1.0),
            futures_done=all(f.done() for f in futures) or "not all futures done",
        )
        ex.shutdown(wait=False, cancel_futures=True)
    elif case == "interrupt":
        q = ctx.SimpleQueue()
        p = ctx.Process(target=ready_then_sleep, args=(q,))
        p.start()
        q.get()
        p.interrupt()
        p.join(10)
        out.update(exitcode=p.exitcode)
    elif case == "unpicklable":
        d = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
        with open(os.path.join(d, "only_in_parent.py"), "w") as f:
            f.write("def inc(x):\n    return x + 1\n")
        sys.path.insert(0, d)
        import only_in_parent

        # Gone from disk: a fresh worker (spawn, forkserver) cannot import
        # it, although the parent's sys.path travels to the child.
        shutil.rmtree(d)

        pool = ctx.Pool(2)
        t0 = time.monotonic()
        r = pool.apply_async(only_in_parent.inc, (1,))
        try:
            # The control's workers are up once Pool() returns.
            r.get(patience(mode, 5, 3))
            out["error"] = None
        except Exception as e:
            out["error"] = {
                "type": type(e).__name__,
                "str": str(e),
                "notes": list(getattr(e, "__notes__", [])),
                "args": [str(a) for a in e.args],
                "after": time.monotonic() - t0,
            }
        if mode == "guarded":
            out["after_map"] = pool.map(abs, [-1, -2, -3])
            out["workers"] = [w.pid for w in pool._pool]
            pool.terminate()
            pool.join()
        else:
            out["workers"] = [w.pid for w in pool._pool]
            report(path, **out)
            os._exit(0)  # the stdlib pool may hang in terminate()
    report(path, **out)


if __name__ == "__main__":
    main()
