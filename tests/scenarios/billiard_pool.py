"""billiard's Pool on billiard's "guarded" context (mpguard.billiard).

usage: billiard_pool.py REPORT MODE [lost|terminate]

MODE guarded: ``billiard.get_context("guarded")``; stdlib: billiard's own
"fork" context (the control).

lost (default): a busy worker is SIGKILLed; billiard's pool fails its task
with ``billiard.exceptions.WorkerLostError`` (lost_worker_timeout=0.5);
then the pool runs on replacements, and zombies are counted.

terminate: every idle worker is SIGKILLed (one of them waits for work
holding the task queue's read lock), then ``terminate()`` is timed, in a
thread, for at most 10 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _common import get_ctx, report, zombies_after


def slow(i: int) -> int:
    time.sleep(600 if i == 0 else 0)
    return os.getpid()


def task(i: int) -> tuple[int, int]:
    return os.getpid(), os.getpgrp()


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
    done.join(10)
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
    path, mode = sys.argv[1], sys.argv[2]
    ctx = get_ctx(mode)
    if sys.argv[3:] == ["terminate"]:
        terminate_after_kill(path, ctx)
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
