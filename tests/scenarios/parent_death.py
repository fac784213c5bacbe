"""The parent-death policy: what a guarded child gets when its parent dies.

usage: parent_death.py REPORT GRACE KIND

GRACE is ``mpguard.configure(parent_death_grace=...)``.  KIND ``cleans``: the
child handles SIGTERM by writing ``REPORT.cleaned`` and exiting;
``stubborn``: the child ignores SIGTERM.  Each child also starts a
grandchild ``sleep``.  The scenario publishes the pids and holds still for
the test to SIGKILL it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from _common import hold, report

import mpguard


def child(marker: str, kind: str) -> None:
    kid = subprocess.Popen(["sleep", "600"])

    def cleanup(signum: int, frame: object) -> None:
        kid.kill()
        kid.wait()
        with open(marker, "w") as f:
            f.write("cleaned")
        os._exit(0)

    if kind == "cleans":
        signal.signal(signal.SIGTERM, cleanup)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(marker + ".kid", "w") as f:
        f.write(str(kid.pid))
    while True:
        time.sleep(1)


def main() -> None:
    path, grace, kind = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    mpguard.configure(parent_death_grace=grace)
    ctx = mpguard.get_context("guarded")
    marker = path + ".cleaned"
    p = ctx.Process(target=child, args=(marker, kind))
    p.start()
    deadline = time.monotonic() + 30
    while not os.path.exists(marker + ".kid") and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(marker + ".kid") as f:
        kid = int(f.read())
    report(path, pid=os.getpid(), child_pid=p.pid, grandchild_pid=kid)
    hold()


if __name__ == "__main__":
    main()
