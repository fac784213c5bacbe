"""Situations that hang the stdlib Pool, each bounded by a watchdog.

usage: hangs.py REPORT MODE CASE

CASE
  poisoned     SIGKILL every idle worker at once: in the stdlib one of
               them held the task queue's read lock (gh-96062), so map()
               and then terminate() (gh-78178) block forever.
  callback     terminate() while the result thread is stuck in a user
               callback.
  ignore_term  leave a `with` block while every worker ignores SIGTERM.
  initializer  an initializer that always raises: the pool respawns
               workers forever and get() never returns.

Every blocking call runs in a thread joined with a timeout, so a hang is
reported (``"hung": true``) instead of hanging this script.  The script
leaves with os._exit: a hung stdlib pool cannot be shut down cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from _common import get_pool, patience, report

#: The guarded pool's deadline for each blocking call.
BOUND = 4.0
#: "guarded" or "stdlib", from the command line.
MODE = "guarded"


def bounded(fn, timeout: float | None = None) -> dict:
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = type(e).__name__
            out["str"] = str(e)
            out["hint"] = getattr(e, "hint", None)

    t0 = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    if timeout is None:
        timeout = patience(MODE, BOUND, 2.0)
    t.join(timeout)
    out["hung"] = t.is_alive()
    out["elapsed"] = time.monotonic() - t0
    return out


def ignore_term_forever(_: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)


def failing_initializer() -> None:
    raise RuntimeError("no database")


def main() -> None:
    global MODE
    path, mode, case = sys.argv[1:4]
    MODE = mode
    out: dict = {}
    if case == "poisoned":
        pool = get_pool(mode, 2)
        pool.map(abs, range(4))  # workers now idle in the task queue
        time.sleep(0.2)
        if mode == "stdlib":
            # Wait until an idle worker is blocked reading the queue with
            # its read lock taken (value 0), so that the kill poisons it
            # whatever the machine's load.
            lock = pool._inqueue._rlock._semlock
            deadline = time.monotonic() + 10
            while lock._get_value() != 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        victims = [w.pid for w in pool._pool]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out["victims"] = victims
        if mode == "stdlib":
            # Let the pool replace its workers first: a stdlib map() on a
            # pool with no live worker yet fails at once (ZeroDivisionError:
            # its chunksize divides by len(self._pool)) instead of reaching
            # the poisoned lock, which made this control fail now and then.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                not pool._pool or {w.pid for w in list(pool._pool)} & set(victims)
            ):
                time.sleep(0.01)
        out["map"] = bounded(lambda: pool.map_async(abs, range(-5, 5)).get())
        out["terminate"] = bounded(pool.terminate)
    elif case == "callback":
        pool = get_pool(mode, 2)
        stuck = threading.Event()
        pool.apply_async(abs, (1,), callback=lambda _: stuck.wait())
        time.sleep(0.3)  # the result thread is now inside the callback
        out["terminate"] = bounded(pool.terminate)
    elif case == "ignore_term":
        kw = {"grace": 0.3} if mode == "guarded" else {}
        pool = get_pool(mode, 2, **kw)
        res = pool.map_async(ignore_term_forever, range(2), chunksize=1)
        time.sleep(0.5)  # both workers are in the task, SIGTERM ignored
        out["workers"] = [w.pid for w in pool._pool]

        def leave() -> None:
            with pool:
                pass

        out["exit_with"] = bounded(leave)
        out["get_after"] = bounded(lambda: res.get(), 2.0)
    else:  # initializer
        pool = get_pool(mode, 2, initializer=failing_initializer)
        out["get"] = bounded(lambda: pool.apply_async(abs, (-1,)).get())
    report(path, **out)
    os._exit(0)


if __name__ == "__main__":
    main()
