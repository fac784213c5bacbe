"""Every start method, guarded: SIGKILL the parent under forkserver and spawn.

Python 3.14 makes forkserver the default on Linux, and macOS uses spawn.
Under forkserver the workers' parent is the forkserver, not your program:
when your program is SIGKILLed the forkserver and every busy worker run on
(PR_SET_PDEATHSIG cannot help, their parent did not die).  This runs a
busy pool under each method, first on the stdlib context and then on the
guarded one, SIGKILLs the parent and lists what still runs one second
later: workers, the tasks' own children, the forkserver.

    python examples/start_methods.py

Exit status 0 means: each stdlib method left processes behind, each
guarded one left none.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import psutil

WORKERS = 2


def task(_: int) -> None:
    """A pool task: start a child of its own, stay busy."""
    subprocess.Popen(["sleep", "600"])
    while True:
        sum(range(10_000))


def parent(method: str) -> None:
    """The program under test: a busy pool on *method*."""
    if method.startswith("guarded"):
        import mpguard  # noqa: F401 - registers the guarded methods
    pool = mp.get_context(method).Pool(WORKERS)
    pool.map_async(task, range(WORKERS), chunksize=1)
    time.sleep(600)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tree(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def run(method: str) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--parent", method], start_new_session=True
    )
    # Wait until both tasks have started their `sleep`.
    deadline = time.monotonic() + 30
    pids = tree(proc.pid)
    while time.monotonic() < deadline:
        pids = tree(proc.pid)
        sleeps = [p for p in pids if alive(p) and psutil.Process(p).name() == "sleep"]
        if len(sleeps) >= WORKERS:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while any(alive(p) for p in pids) and time.monotonic() - t0 < 1.0:
        time.sleep(0.01)
    survivors = [p for p in pids if alive(p)]
    label = f"{method:>18}: {len(pids)} processes;"
    if survivors:
        print(f"{label} 1 s after kill -9 of the parent, {len(survivors)} still run")
    else:
        ms = (time.monotonic() - t0) * 1000
        print(f"{label} all gone {ms:.0f} ms after kill -9 of the parent")
    for p in survivors:  # clean up after the stdlib pool
        try:
            psutil.Process(p).kill()
        except psutil.Error:
            pass
    return survivors


def main() -> int:
    ok = True
    for method in ("forkserver", "spawn"):
        leaked = run(method)
        guarded = run(f"guarded-{method}")
        ok = ok and bool(leaked) and not guarded
    print("OK: every guarded method left nothing behind" if ok else "UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--parent":
        parent(sys.argv[2])
    else:
        sys.exit(main())
