"""A common blog recipe, rewritten: killing "the group" without bystanders.

The recipe ends everything from a SIGTERM handler::

    def term(signum, frame):
        os.killpg(os.getpgid(os.getpid()), signal.SIGKILL)

That group is the shell's job: a shell puts the processes of one command
or pipeline in one process group (credentials(7), setpgid(2)).  In
``python app.py | tee log`` it holds ``tee`` too, which dies, and the log
loses its end.  mpguard's workers have a group of their own that never
holds the parent, and mpguard tears only that group down on SIGTERM.  This
demo runs itself behind ``| tee`` and SIGTERMs the Python side.

    python examples/killpg.py
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import psutil


def sleepy(i: int) -> None:
    time.sleep(600)


def parent() -> None:
    import mpguard

    pool = mpguard.GuardedPool(2)
    pool.map_async(sleepy, range(2))
    print(f"parent pgid={os.getpgrp()}, worker pgid={os.getpgid(pool._pool[0].pid)}")
    print("ready", flush=True)
    signal.pause()


def main() -> int:
    out = tempfile.mktemp()
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} --parent | tee {out}"
    shell = subprocess.Popen(
        ["sh", "-c", cmd], start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(out):
            with open(out) as f:
                if "ready" in f.read():
                    break
        time.sleep(0.01)
    py = [c for c in psutil.Process(shell.pid).children() if c.name() != "tee"]
    py[0].send_signal(signal.SIGTERM)
    rc = shell.wait(10)  # the pipeline's status is tee's
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    print(text.strip())
    print(f"pipeline exit status (tee's): {rc}")
    return 0 if rc == 0 and "ready" in text else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--parent":
        parent()
    else:
        sys.exit(main())
