"""A common blog recipe, rewritten: a SIGTERM handler set before the children.

The recipe installs ``term()``, which terminates every child, *before*
forking::

    def term(signum, frame):
        for p in processes:
            p.terminate()  # SIGTERM on POSIX

    signal.signal(signal.SIGTERM, term)  # then start the children

A forked child inherits a copy of its parent's signal dispositions
(signal(7)), so the children run ``term()`` too and terminate each other
(125 handler runs for 10 children, measured).  With the guarded context
the same code runs the handler exactly once, in the parent, after mpguard
has torn the children's group down; the parent then dies of SIGTERM (exit
143).

    python examples/sigterm_handler.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time

processes: list[mp.Process] = []


def fun(x: int) -> None:
    while True:
        time.sleep(1)


def parent(log: str) -> None:
    import mpguard  # noqa: F401

    def term(sig_num, frame):  # the recipe's handler, unchanged
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        for p in processes:
            p.terminate()

    signal.signal(signal.SIGTERM, term)
    ctx = mp.get_context("guarded")
    for i in range(10):
        t = ctx.Process(target=fun, args=(i,), daemon=True)
        t.start()
        processes.append(t)
    print("ready", flush=True)
    for p in processes:
        p.join()


def main() -> int:
    log = tempfile.mktemp()
    proc = subprocess.Popen(
        [sys.executable, __file__, log],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(10)
    with open(log) as f:
        runs = f.read().split()
    os.unlink(log)
    print(f"handler runs: {len(runs)} (pids {runs}); parent exit status {128 - rc}")
    return 0 if (len(runs) == 1 and rc == -signal.SIGTERM) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        parent(sys.argv[1])
    else:
        sys.exit(main())
