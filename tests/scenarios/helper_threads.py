"""mpguard's own threads block every signal, so the main thread gets them.

usage: helper_threads.py REPORT MODE

A signal sent to a process goes to any one thread that does not block it
(signal(7)), and CPython runs its handler only in the main thread.  Taken
by a helper thread, a SIGTERM only sets a flag; a main thread blocked in a
system call (``join()`` polling a pidfd) never wakes to run the handler,
and the guard's teardown never happens.

MODE guarded: start a guarded Process (the guard's reaper thread starts
with it); report each thread's blocked signals; then block SIGTERM in the
main thread, send SIGTERM to the process, and report whether it is still
pending for the process (no other thread took it).  Then unblock it: the
guard tears the group down and the process dies of SIGTERM.

MODE unblocked: the same threads started as plain threads (the control):
report the reaper's blocked signals, then hold.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

from _common import hold, report


def status_mask(task: str, field: str) -> int:
    with open(f"/proc/self/task/{task}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise LookupError(field)


def masks() -> dict[str, int]:
    out = {}
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            name = f.read().strip()
        out[f"{task} {name}"] = status_mask(task, "SigBlk")
    return out


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    import mpguard  # noqa: F401
    from mpguard import _platform

    if mode == "unblocked":
        _platform.start_thread_without_signals = lambda t: t.start()  # type: ignore[assignment]
    p = mp.get_context("guarded").Process(target=time.sleep, args=(60,))
    p.start()
    main_tid = str(os.getpid())
    threads = {k: v for k, v in masks().items() if not k.startswith(main_tid + " ")}
    if mode == "unblocked":
        report(path, child=p.pid, threads=threads)
        hold()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    with open("/proc/self/status") as f:
        shared = next(int(x.split()[1], 16) for x in f if x.startswith("ShdPnd:"))
    report(
        path,
        child=p.pid,
        threads=threads,
        pending=bool(shared & (1 << (signal.SIGTERM - 1))),
    )
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    time.sleep(30)  # not reached: the handler runs above


if __name__ == "__main__":
    main()
