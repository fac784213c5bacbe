"""The terminate recursion trap of a common blog recipe, verbatim in spirit.

usage: TRAP_LOG=LOG recursion_trap.py REPORT MODE N

A SIGTERM handler that terminates every child (``p.terminate()`` sends
SIGTERM on POSIX) is installed *before* the children are forked, so
(without mpguard) they inherit it (a forked child inherits a copy of its
parent's signal dispositions: signal(7)), and each child terminates the
siblings it knows about: a cascade of handler runs.  Each run appends its
pid to LOG.

With $TRAP_AT_IMPORT set, the handler is installed when this module is
imported, which is how it reaches spawn and forkserver children: they
import the main module again (a forkserver preloads it and forks from it).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _common import append_line, get_ctx, hold, report

processes = []
LOG = os.environ.get("TRAP_LOG", "")


def term(sig_num, frame):  # the recipe's handler: terminate every child
    append_line(LOG, str(os.getpid()))
    for p in processes:
        p.terminate()


if os.environ.get("TRAP_AT_IMPORT"):
    signal.signal(signal.SIGTERM, term)


def fun(ready: str) -> None:
    append_line(ready, str(os.getpid()))  # its handler, if any, is in place
    while True:
        time.sleep(0.05)


def main() -> None:
    path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGTERM, term)  # before the children: the trap
    ctx = get_ctx(mode)
    ready = path + ".ready"
    for _ in range(n):
        t = ctx.Process(target=fun, args=(ready,))
        t.daemon = True
        t.start()
        processes.append(t)
    # Report once every child runs its target: a spawn child installs an
    # import-time handler only while it starts up.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(ready):
            with open(ready) as f:
                if len(f.read().split()) >= n:
                    break
        time.sleep(0.01)
    report(path, pid=os.getpid(), children=[p.pid for p in processes])
    hold()


if __name__ == "__main__":
    main()
