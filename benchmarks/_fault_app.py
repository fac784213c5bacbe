"""The application the fault matrix runs: one pool, one scenario, one run.

    python benchmarks/_fault_app.py POOL SCENARIO REPORTFILE

``benchmarks/fault_matrix.py`` starts it in a session of its own and hurts
it from outside; run by hand it just blocks in ``map`` (Ctrl-C it).  It
uses each pool the way a user would: a ``with`` block, ``map``, the pool's
defaults, two workers.  What it does is published as JSON lines appended to
REPORTFILE, each with one ``O_APPEND`` write so that the lines of the
parent, its workers and the bystander never interleave:

* ``start``: the parent's pid, pgid and session;
* ``task``: a task started, in worker ``pid``, with the ``grandchild`` it
  started (a ``sleep 300`` it never waits for);
* ``exit``: a task is about to ``os._exit(3)``;
* ``map``: ``map`` returned, or raised (``exc``), with ``t``, a
  CLOCK_MONOTONIC time (system-wide, so comparable with the runner's);
* ``with-exit``: the ``with`` block is left;
* ``traceback``: the parent itself dies of an uncaught exception (its own
  traceback is expected; every other one on stderr is "stray").

Tasks read the scenario from the environment (``FAULT_SCENARIO``,
``FAULT_REPORT``): every worker inherits it, whatever the start method,
and ``map`` gets plain ints that every peer pickles the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

WORKERS = 2
#: Per-task limit in the task-timeout scenario, for every pool that has one.
TASK_TIMEOUT = 0.5
#: Tasks in the churn scenario (each worker runs one, then is replaced).
CHURN_TASKS = 40
#: How long a busy task runs: far longer than any run of the matrix.
BUSY = 30.0
#: Seconds the app holds its pool open after ``map`` in some scenarios, so
#: that what the pool does by itself is told apart from its teardown.
HOLD = 1.2

GUARDED = ("guarded", "guarded-forkserver", "guarded-spawn", "guarded-ppe")


def emit(ev: str, **data: Any) -> None:
    """Append one JSON line to the report with a single O_APPEND write."""
    data.update(ev=ev, pid=data.get("pid", os.getpid()), t=time.monotonic())
    fd = os.open(
        os.environ["FAULT_REPORT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    try:
        os.write(fd, (json.dumps(data) + "\n").encode())
    finally:
        os.close(fd)


def task(i: int) -> int:
    """One task: what it does depends on the scenario under test."""
    scenario = os.environ["FAULT_SCENARIO"]
    if scenario == "churn":
        time.sleep(0.005)
        return os.getpid()
    victim = i == 0
    worker_fault = scenario in ("worker-sigkill", "worker-exit", "task-timeout")
    if worker_fault and not victim:
        # The other task finishes at once: map's error must not wait on it.
        time.sleep(0.05)
        emit("task", i=i, grandchild=None)
        return i
    # A grandchild the task starts and never waits for: the tree a pool
    # must not leave behind (a shell command, a browser, a server...).
    kid = subprocess.Popen(["sleep", "300"])
    emit("task", i=i, grandchild=kid.pid)
    if scenario == "worker-exit":
        time.sleep(0.3)
        emit("exit", i=i)
        os._exit(3)
    time.sleep(BUSY)
    return i


# --- the pools: how each is built and mapped ------------------------------

Mapper = Callable[[Callable[[int], int], "list[int]"], "list[int]"]


def open_pool(name: str, scenario: str) -> tuple[Any, Mapper]:
    """The pool *name* as a user builds it for *scenario*, and its ``map``.

    Only options the scenario needs are passed: ``maxtasksperchild=1`` (or
    the pool's equivalent) for churn, a per-task timeout for task-timeout.
    Everything else is the pool's default.
    """
    import multiprocessing as mp

    churn = scenario == "churn"
    timed = scenario == "task-timeout"
    if name.startswith("mp-"):
        ctx = mp.get_context(name[3:])
        pool = ctx.Pool(WORKERS, maxtasksperchild=1 if churn else None)
        return pool, lambda f, xs: pool.map(f, xs, chunksize=1)
    if name.startswith("guarded") and name != "guarded-ppe":
        import mpguard

        kw: dict[str, Any] = {"maxtasksperchild": 1 if churn else None}
        if timed:
            kw["task_timeout"] = TASK_TIMEOUT
        if name != "guarded":  # "guarded" is GuardedPool's default context
            kw["context"] = mp.get_context(name)
        pool = mpguard.GuardedPool(WORKERS, **kw)
        return pool, lambda f, xs: pool.map(f, xs, chunksize=1)
    if name in ("ppe", "guarded-ppe"):
        from concurrent.futures import ProcessPoolExecutor

        kw = {}
        if name == "guarded-ppe":
            import mpguard  # registers the guarded methods

            # ProcessPoolExecutor refuses max_tasks_per_child under fork and
            # picks spawn itself when given no context: do the same.
            kw["mp_context"] = mp.get_context("guarded-spawn" if churn else "guarded")
        if churn:
            kw["max_tasks_per_child"] = 1
        ex = ProcessPoolExecutor(WORKERS, **kw)
        return ex, lambda f, xs: list(ex.map(f, xs))
    if name == "billiard":
        import billiard

        bpool = billiard.Pool(
            WORKERS,
            maxtasksperchild=1 if churn else None,
            # A pool-wide hard limit is what turns billiard's timeouts on.
            timeout=TASK_TIMEOUT if timed else None,
        )
        if not timed:
            return bpool, lambda f, xs: bpool.map(f, xs, chunksize=1)

        # billiard's hard time limit (its worker is killed) is per task, on
        # apply_async: Pool(timeout=...) with map crashes billiard's timeout
        # thread (a map job keeps a list of accept times, 4.3.2).
        def amap(f: Callable[[int], int], xs: list[int]) -> list[int]:
            rs = [bpool.apply_async(f, (x,), timeout=TASK_TIMEOUT) for x in xs]
            return [r.get() for r in rs]

        return bpool, amap
    if name == "loky":
        from loky import get_reusable_executor

        lex = get_reusable_executor(max_workers=WORKERS)
        return lex, lambda f, xs: list(lex.map(f, xs))
    if name == "pebble":
        import pebble

        ppool = pebble.ProcessPool(max_workers=WORKERS, max_tasks=1 if churn else 0)
        tmo = TASK_TIMEOUT if timed else None
        return ppool, lambda f, xs: list(ppool.map(f, xs, timeout=tmo).result())
    if name == "mpire":
        from mpire import WorkerPool

        wpool = WorkerPool(n_jobs=WORKERS)
        mkw: dict[str, Any] = {"progress_bar": False, "chunk_size": 1}
        if churn:
            mkw["worker_lifespan"] = 1
        if timed:
            mkw["task_timeout"] = TASK_TIMEOUT
        return wpool, lambda f, xs: wpool.map(f, xs, **mkw)
    raise SystemExit(f"_fault_app.py: unknown pool {name!r}")


# --- the scenarios --------------------------------------------------------


def pipeline_handler(pool_name: str) -> None:
    """The app's SIGTERM shutdown path when it runs as ``app | tee``.

    For the peers, the blog recipe for ending "all the children": signal
    the whole process group.  In a pipeline that group is the shell's, so
    the recipe also hits ``tee`` and the shell: the bystanders the matrix
    watches.  GuardedPool needs no recipe: the handler just leaves the
    ``with`` block, and the pool's own teardown ends the workers.
    """

    def recipe(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the killpg hits us too
        os.killpg(os.getpgid(0), signal.SIGTERM)
        sys.exit(128 + signum)

    def leave(signum: int, frame: object) -> None:
        sys.exit(128 + signum)

    guarded = pool_name in GUARDED
    signal.signal(signal.SIGTERM, leave if guarded else recipe)


def excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
    """Note that the parent's own traceback is expected, then print it."""
    emit("traceback", exc=tp.__name__)
    sys.__excepthook__(tp, value, tb)


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: _fault_app.py POOL SCENARIO REPORTFILE", file=sys.stderr)
        return 2
    pool_name, scenario, report = sys.argv[1:]
    os.environ["FAULT_REPORT"] = report
    os.environ["FAULT_SCENARIO"] = scenario
    sys.excepthook = excepthook
    emit("start", pgid=os.getpgrp(), sid=os.getsid(0))
    if scenario == "pipeline":
        pipeline_handler(pool_name)
        for i in range(20):  # output for tee: the pipeline's reason to exist
            print(f"line {i}", flush=True)
    items = list(range(CHURN_TASKS if scenario == "churn" else WORKERS))
    pool, run_map = open_pool(pool_name, scenario)
    with pool:
        try:
            run_map(task, items)
            emit("map", outcome="returned")
        except BaseException as e:
            emit("map", outcome="raised", exc=f"{type(e).__name__}: {e}"[:300])
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt, SystemExit: as a user's program
        if scenario in ("churn", "task-timeout"):
            time.sleep(HOLD)  # the pool idles, still open
    emit("with-exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
