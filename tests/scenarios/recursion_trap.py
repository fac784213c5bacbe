"""Seed 003's terminate recursion trap, verbatim in spirit.

usage: recursion_trap.py REPORT MODE N LOG

A SIGTERM handler that terminates every child is installed *before* the
children are forked, so (without mpguard) they inherit it, and each child
terminates the siblings it knows about: a cascade of handler runs.  Each run
appends its pid to LOG.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _common import append_line, get_ctx, hold, report

processes = []


def fun(x: int) -> None:
    while True:
        time.sleep(0.05)


def main() -> None:
    path, mode, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def term(sig_num, frame):  # seed 003's handler
        append_line(log, str(os.getpid()))
        for p in processes:
            p.terminate()

    signal.signal(signal.SIGTERM, term)  # before the children: the trap
    ctx = get_ctx(mode)
    for i in range(n):
        t = ctx.Process(target=fun, args=(i,))
        t.daemon = True
        t.start()
        processes.append(t)
    report(path, pid=os.getpid(), children=[p.pid for p in processes])
    hold()


if __name__ == "__main__":
    main()
