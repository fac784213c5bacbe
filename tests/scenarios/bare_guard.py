"""A guard used without any pool: spawn a program into the group, track it.

usage: bare_guard.py REPORT MODE

MODE guarded: ``mpguard._group.holding()`` gives a held guard; ``sleep
600`` is started into its group by ``guard.spawn`` (posix_spawn) and a
second one by fork + ``_child.prepare`` + exec, each tracked as a
``Child.adopt``; a third ``sleep`` is started and exits at once and must be
reaped without a ``wait``.  Then the scenario holds still for the test to
SIGKILL it.
MODE control: the same two sleeps by plain ``subprocess.Popen``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from _common import hold, report, zombie_children


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "control":
        a = subprocess.Popen(["sleep", "600"])
        b = subprocess.Popen(["sleep", "600"])
        report(path, pids=[a.pid, b.pid], pgid=os.getpgrp())
        hold()

    from mpguard._group import Child, holding
    from mpguard._start import _child

    children = []
    with holding() as guard:
        pid = guard.spawn(["/bin/sleep", "600"])
        children.append(Child.adopt(guard, pid))

        plan = guard.child_plan(pool_worker=False)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, guard.block)
        pid = os.fork()
        if pid == 0:
            code = _child.prepare(plan, old)
            if code == 0:
                try:
                    os.execv("/bin/sleep", ["sleep", "600"])
                except OSError:
                    code = 127
            os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        guard.adopt(pid)
        children.append(Child.adopt(guard, pid))

        quick = Child.adopt(guard, guard.spawn(["/bin/true"]))
    # The reaper collects the exited one without any wait() of ours.
    import time

    deadline = time.monotonic() + 5
    while quick.returncode is None and time.monotonic() < deadline:
        time.sleep(0.005)
    report(
        path,
        pids=[c.pid for c in children],
        pgid=os.getpgrp(),
        guard_pgid=guard.pgid,
        guardian_pid=guard.pgid,
        member_pgids=[os.getpgid(c.pid) for c in children],
        quick_returncode=quick.returncode,
        quick_zombie=quick.pid in zombie_children(),
    )
    hold()


if __name__ == "__main__":
    main()
