"""A worker dies in the middle of a task: only that task fails.

    python examples/worker_death.py

One task of ten SIGKILLs its own worker, as the OOM killer would.  With the
stdlib Pool, ``map()`` would never return (CPython gh-66587).  GuardedPool
raises ``WorkerLostError`` for that one task, runs the nine others, replaces
the worker and carries on.  A task that overruns ``timeout=`` is killed,
with everything it started, and fails with ``TaskTimeoutError``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import mpguard


def work(i: int) -> int:
    if i == 7:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return i * i


def main() -> int:
    with mpguard.GuardedPool(2) as pool:
        # imap yields the results before the lost task, then raises.
        got = []
        lost = None
        try:
            for value in pool.imap(work, range(10)):
                got.append(value)
        except mpguard.WorkerLostError as e:
            print(f"after {got}: {e}")
            lost = e
        assert lost is not None
        assert lost.signal == signal.SIGKILL
        assert lost.task == "work(7)"

        # apply_async: the other nine results arrive; the lost one fails.
        results = [pool.apply_async(work, (i,)) for i in range(10)]
        ok = []
        for r in results:
            try:
                ok.append(r.get(timeout=10))
            except mpguard.WorkerLostError as e:
                print(f"one task lost: {e}")
        assert ok == [i * i for i in range(10) if i != 7], ok

        # A per-task timeout really kills.
        t0 = time.monotonic()
        try:
            pool.apply(time.sleep, (60,), timeout=0.5)
        except mpguard.TaskTimeoutError as e:
            print(f"after {time.monotonic() - t0:.2f}s: {e}")

        # The pool is still usable.
        print("still works:", pool.map(abs, [-1, -2, -3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
