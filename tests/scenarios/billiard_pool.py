"""billiard's Pool on billiard's "guarded" context (mpguard.billiard).

usage: billiard_pool.py REPORT MODE [lost|terminate|wlock-kill|death-race]

MODE guarded: ``billiard.get_context("guarded")``; stdlib: billiard's own
"fork" context (the control).

lost (default): a busy worker is SIGKILLed; billiard's pool fails its task
with ``billiard.exceptions.WorkerLostError`` (lost_worker_timeout=0.5);
then the pool runs on replacements, and zombies are counted.

terminate: every idle worker is SIGKILLed (one of them waits for work
holding the task queue's read lock), then ``terminate()`` is timed, in a
thread, for at most 10 s (4 s for the control).

wlock-kill: a task takes its worker's hold of the result queue's write lock
and SIGKILLs its worker (the OOM killer, mid-message); then one more task
is timed, for at most 8 s (4 s for the control).

death-race: a worker with SIGTERM's default action (as Celery's pool
children have it) announces its exit (DEATH) and releases the result
queue's write lock only 0.3 s later, a slow form of the gap between its
write and its release; billiard SIGTERMs it on receipt.  Then one more
task is timed, for at most 8 s (4 s for the control).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _common import get_ctx, patience, report, zombies_after


def slow(i: int) -> int:
    time.sleep(600 if i == 0 else 0)
    return os.getpid()


def task(i: int) -> tuple[int, int]:
    return os.getpid(), os.getpgrp()


def _worker_outq() -> object:
    """This worker's result queue (the billiard Worker of this process)."""
    import gc

    import billiard.pool

    worker = next(o for o in gc.get_objects() if isinstance(o, billiard.pool.Worker))
    return worker.outq


def die_holding_wlock(_: int) -> None:
    _worker_outq()._wlock.acquire()  # type: ignore[attr-defined]
    os.kill(os.getpid(), signal.SIGKILL)


def announce_death_slowly(_: int) -> None:
    from billiard.reduction import ForkingPickler

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    outq = _worker_outq()
    with outq._wlock:  # type: ignore[attr-defined]
        death = ForkingPickler.dumps((4, (os.getpid(), 0)))  # billiard's DEATH
        outq._writer.send_bytes(death)  # type: ignore[attr-defined]
        time.sleep(0.3)
    time.sleep(600)


#: "guarded" or "stdlib", from the command line.
MODE = "guarded"


def served_after(path: str, ctx: object, how: str) -> None:
    pool = ctx.Pool(2, lost_worker_timeout=0.5)  # type: ignore[attr-defined]
    pids = set(pool.map(slow, range(1, 5)))
    victim = die_holding_wlock if how == "wlock-kill" else announce_death_slowly
    first = pool.apply_async(victim, (0,))
    time.sleep(0.5)
    t0 = time.monotonic()
    try:
        after = pool.apply_async(task, (1,)).get(patience(MODE, 8, 4))
        served = True
    except Exception:  # billiard's TimeoutError
        after, served = None, False
    seconds = time.monotonic() - t0
    try:
        first.get(0.1)
    except Exception:  # the victim's task is lost
        pass
    report(
        path,
        pid=os.getpid(),
        workers=sorted(pids),
        served=served,
        seconds=seconds,
        after=after,
    )
    # A pool whose write lock stays taken cannot terminate(): end without it.
    os._exit(0)


def terminate_after_kill(path: str, ctx: object) -> None:
    import threading

    pool = ctx.Pool(2)  # type: ignore[attr-defined]
    pids = sorted(set(pool.map(slow, range(1, 9))))
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    t0 = time.monotonic()
    done = threading.Thread(target=pool.terminate, daemon=True)
    done.start()
    done.join(patience(MODE, 10, 4))
    if done.is_alive():  # show where billiard waits
        import faulthandler

        faulthandler.dump_traceback(all_threads=True)
    report(
        path,
        pid=os.getpid(),
        workers=pids,
        hung=done.is_alive(),
        seconds=time.monotonic() - t0,
    )
    os._exit(0)


def main() -> None:
    global MODE
    path, mode = sys.argv[1], sys.argv[2]
    MODE = mode
    ctx = get_ctx(mode)
    if sys.argv[3:] == ["terminate"]:
        terminate_after_kill(path, ctx)
    if sys.argv[3:] in (["wlock-kill"], ["death-race"]):
        served_after(path, ctx, sys.argv[3])
    pool = ctx.Pool(2, lost_worker_timeout=0.5)
    r = pool.apply_async(slow, (0,))
    deadline = time.monotonic() + 10
    while not r._worker_pid and time.monotonic() < deadline:  # acked
        time.sleep(0.01)
    victim = r._worker_pid
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    try:
        r.get(10)
        err = None
    except Exception as e:  # billiard wraps it for the traceback
        exc = getattr(e, "exc", e)
        err = {"type": type(exc).__name__, "str": str(exc)}
    after = pool.map(task, range(4))
    report(
        path,
        pid=os.getpid(),
        pgid=os.getpgrp(),
        victim=victim,
        error=err,
        seconds=time.monotonic() - t0,
        after_pgids=sorted({x[1] for x in after}),
        zombies=zombies_after(1.0),
    )
    # billiard's terminate() can hang once a worker died holding its
    # queue lock (billiard's form of gh-96062): end without it.
    os._exit(0)


if __name__ == "__main__":
    main()
