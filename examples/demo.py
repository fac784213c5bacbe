"""mpguard's main demo: SIGKILL the parent of a busy pool, see what survives.

Runs the same program twice, first with the stdlib ``multiprocessing.Pool``
and then with ``mpguard.GuardedPool``.  Each time a parent process starts a
pool of 3 workers; every worker starts a child of its own (``sleep``) and
stays busy.  The demo then SIGKILLs the parent, as ``kill -9`` or the OOM
killer would, and lists with psutil what is still running one second later.

    python examples/demo.py

Exit status 0 means: the stdlib pool left orphans, GuardedPool left none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

WORKERS = 3


def task(outdir: str) -> None:
    """A pool task: start a child, publish both pids, stay busy."""
    child = subprocess.Popen(["sleep", "600"])
    # Written aside and renamed into place: the demo must never read a
    # half-written file.
    tmp = os.path.join(outdir, f"{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"worker": os.getpid(), "child": child.pid}, f)
    os.replace(tmp, os.path.join(outdir, f"{os.getpid()}.json"))
    while True:
        sum(range(10_000))


def parent(kind: str, outdir: str) -> None:
    """The program under test: a busy pool whose workers have children."""
    if kind == "guarded":
        import mpguard

        pool = mpguard.GuardedPool(WORKERS)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(WORKERS)
    pool.map_async(task, [outdir] * WORKERS, chunksize=1)
    time.sleep(600)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run(kind: str) -> list[int]:
    outdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--parent", kind, outdir],
        start_new_session=True,
    )
    deadline = time.monotonic() + 30

    def published() -> list[str]:
        return [n for n in os.listdir(outdir) if n.endswith(".json")]

    while len(published()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = []
    for name in published():
        with open(os.path.join(outdir, name)) as f:
            info = json.load(f)
        pids += [info["worker"], info["child"]]
    print(f"{kind:>8}: parent {proc.pid}, workers and their children: {sorted(pids)}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while any(alive(p) for p in pids) and time.monotonic() - t0 < 1.0:
        time.sleep(0.01)
    survivors = [p for p in pids if alive(p)]
    if survivors:
        print(f"{kind:>8}: 1 s after kill -9 of the parent, still running: {survivors}")
    else:
        ms = (time.monotonic() - t0) * 1000
        print(f"{kind:>8}: everything gone {ms:.0f} ms after kill -9 of the parent")
    for p in survivors:  # clean up after the stdlib pool
        try:
            psutil.Process(p).kill()
        except psutil.Error:
            pass
    return survivors


def main() -> int:
    leaked = run("stdlib")
    guarded = run("guarded")
    ok = bool(leaked) and not guarded
    print("OK: GuardedPool left nothing behind" if ok else "UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--parent":
        parent(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
