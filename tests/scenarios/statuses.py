"""Exit statuses stay exact while children are reaped.

usage: statuses.py REPORT MODE

MODE guarded: guarded Processes come and go (reaped by mpguard) while the
program runs subprocess and joins other Processes.
MODE sig_ign: the common blog recipe against zombies,
``signal(SIGCHLD, SIG_IGN)``: children are then reaped by the kernel and
``waitpid()`` fails with ECHILD (waitpid(2), NOTES), which ``subprocess``
turns into returncode 0 (Lib/subprocess.py, ``Popen._try_wait``).
MODE waitpid_all: the other common recipe, a SIGCHLD handler looping over
``os.waitpid(-1, WNOHANG)``: it reaps children that other code was going to
wait for, and takes their statuses with it (python/cpython#92881).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from _common import get_ctx, report


def exit_with(code: int) -> None:
    os._exit(code)


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "sig_ign":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    elif mode == "waitpid_all":

        def wait_child(signum, frame):
            try:
                while True:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
            except ChildProcessError:
                pass

        signal.signal(signal.SIGCHLD, wait_child)
    ctx = get_ctx("guarded" if mode == "guarded" else "stdlib")
    # Unjoined children that the reaper (if any) collects in the background.
    bg = [ctx.Process(target=exit_with, args=(5,)) for _ in range(5)]
    for p in bg:
        p.start()
    returncodes = []
    exitcodes = []
    for i in range(20):
        returncodes.append(subprocess.run(["sh", "-c", "exit 3"]).returncode)
        p = ctx.Process(target=exit_with, args=(7,))
        p.start()
        p.join(5)
        exitcodes.append(p.exitcode)
        if i == 10:
            time.sleep(0.05)
    try:
        subprocess.run(["sh", "-c", "exit 3"], check=True)
        check_raised = False
    except subprocess.CalledProcessError:
        check_raised = True
    time.sleep(0.1)
    report(
        path,
        pid=os.getpid(),
        returncodes=returncodes,
        exitcodes=exitcodes,
        bg_exitcodes=[p.exitcode for p in bg],
        check_raised=check_raised,
    )


if __name__ == "__main__":
    main()
