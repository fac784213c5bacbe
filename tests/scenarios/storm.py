"""Kill storm: SIGKILL random workers while thousands of short tasks run.

usage: storm.py REPORT MODE SEED TASKS KILLS PHASE

TASKS tasks of about 1 ms each go in through apply_async; a killer thread,
seeded with SEED, SIGKILLs a random live worker KILLS times, spread over
the expected run time.  PHASE says what the main thread does meanwhile:

  run        wait for every result (each get() bounded by a timeout)
  close      close() and join() at once, while the storm goes on
  terminate  terminate() once about half the tasks are done

Each task logs "start I PID" before it works.  The report lists, per task,
its value or its error's type and pid, the killed pids, and how long the
phase took; the test decides whether exactly the right tasks failed.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import threading
import time

from _common import append_line, get_pool, report, zombies_after

WORKERS = 2


def task(arg: tuple[str, int]) -> int:
    log, i = arg
    append_line(log, f"start {i} {os.getpid()}")
    time.sleep(0.001)
    return i * 3


def killer(pool, rng, kills, span, killed, stop) -> None:
    mean = span / max(kills, 1)
    while len(killed) < kills and not stop.is_set():
        time.sleep(rng.uniform(0, 2 * mean))
        live = [w.pid for w in list(pool._pool) if w.pid and w.pid not in killed]
        if not live:
            continue
        pid = rng.choice(sorted(live))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)


def outcome(r) -> list:
    if not r.ready():
        return ["pending"]
    try:
        return ["ok", r.get(0)]
    except Exception as e:
        return [type(e).__name__, getattr(e, "pid", None)]


def main() -> None:
    path, mode, seed, tasks, kills, phase = sys.argv[1:7]
    tasks, kills = int(tasks), int(kills)
    rng = random.Random(int(seed))
    fd, log = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    pool = get_pool(mode, WORKERS)
    killed: list[int] = []
    stop = threading.Event()
    span = tasks * 0.0012 / WORKERS
    results = [pool.apply_async(task, ((log, i),)) for i in range(tasks)]
    t = threading.Thread(target=killer, args=(pool, rng, kills, span, killed, stop))
    t.start()
    t0 = time.monotonic()
    hung = False
    if phase == "run":
        # The stdlib control hangs for good: give up on it sooner.
        deadline = t0 + (60 if mode == "guarded" else 3 * span + 3)
        for r in results:
            r.wait(max(0.0, deadline - time.monotonic()))
            if not r.ready():
                hung = True
                break
    elif phase == "close":
        pool.close()
        pool.join()
    else:
        while sum(r.ready() for r in results) < tasks // 2:
            if time.monotonic() > t0 + 60:
                hung = True
                break
            time.sleep(0.005)
        t0 = time.monotonic()
        pool.terminate()
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    if hung:
        # The stdlib control: report and leave; its terminate() may hang too.
        report(path, hung=True, killed=killed, elapsed=elapsed)
        os._exit(0)
    if phase == "run":
        pool.close()
        pool.join()
    elif phase == "terminate":
        pool.join()
    with open(log) as f:
        starts = [line.split()[1:] for line in f]
    report(
        path,
        hung=False,
        elapsed=elapsed,
        killed=killed,
        outcomes=[outcome(r) for r in results],
        starts=[[int(i), int(p)] for i, p in starts],
        zombies=zombies_after(5.0),
    )


if __name__ == "__main__":
    main()
