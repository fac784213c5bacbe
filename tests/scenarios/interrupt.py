"""SIGINT while a ProcessPoolExecutor or a plain Process is busy.

usage: interrupt.py REPORT MODE KIND

MODE: ``guarded`` (the start method under test), ``stdlib`` (the method
underneath: the control), or ``nohandlers`` (guarded, but with
``parent_handlers=False``: no handler passes the SIGINT on).  KIND:
``ppe`` (``with ProcessPoolExecutor(...)``: leaving the block waits for the
running tasks), ``process`` (``Process.start()`` then ``join()``; at exit
multiprocessing joins non-daemonic children too) or ``process-broken``
(the same after the guardian was SIGKILLed).  Each task starts a
``sleep`` grandchild and blocks.  Reported once both are busy; the test
then sends SIGINT, to the parent alone or to the whole group (Ctrl-C).
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import time

from _common import get_ctx, report, start_grandchild, wait_files


def task(outdir: str, i: int) -> int:
    kid = start_grandchild()
    tmp = os.path.join(outdir, f"{i}.tmp")
    with open(tmp, "w") as f:
        f.write(f'{{"worker": {os.getpid()}, "grandchild": {kid}}}')
    os.replace(tmp, os.path.join(outdir, f"{i}.json"))
    time.sleep(600)
    return i


def publish(path: str, outdir: str) -> None:
    infos = wait_files(outdir, 2)
    report(
        path,
        pid=os.getpid(),
        workers=[x["worker"] for x in infos],
        grandchildren=[x["grandchild"] for x in infos],
    )


def main() -> None:
    path, mode, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    outdir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    ctx = get_ctx("stdlib" if mode == "stdlib" else "guarded")
    if mode == "nohandlers":
        import mpguard

        mpguard.configure(parent_handlers=False)
    if kind == "ppe":
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
            futures = [ex.submit(task, outdir, i) for i in range(2)]
            publish(path, outdir)
            for f in futures:
                f.result()
    else:
        procs = [ctx.Process(target=task, args=(outdir, i)) for i in range(2)]
        for p in procs:
            p.start()
        wait_files(outdir, 2)
        if kind == "process-broken":
            lose_guardian()
        publish(path, outdir)
        for p in procs:
            p.join()


def lose_guardian() -> None:
    """SIGKILL the guardian and wait until the guard knows: its group id is
    no longer safe to signal, so SIGINT must go to each child by pidfd."""
    import signal

    from mpguard._group import _guard  # private: no public way to break it

    guard = _guard._guard
    assert guard is not None
    os.kill(guard.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while guard.state is not _guard.GuardState.BROKEN:
        if time.monotonic() > deadline:
            sys.exit("the guard never noticed its guardian's death")
        time.sleep(0.01)


if __name__ == "__main__":
    main()
