"""A guarded pool inside ``daemon.DaemonContext`` (python-daemon, PEP 3143).

usage: daemonized.py REPORT

The scenario starts itself again as ``daemonized.py REPORT --daemon`` and
waits.  That process daemonizes (double fork, new session, stdio on
/dev/null, cwd /), runs a guarded pool and reports its pid, its workers'
pids and pgid and the map's result; then it waits to be killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _common import report


def square(x: int) -> tuple[int, int, int]:
    return x * x, os.getpid(), os.getpgrp()


def daemon_main(path: str) -> None:
    import daemon

    err = open(path + ".err", "w")  # noqa: SIM115 - kept for the daemon's life
    with daemon.DaemonContext(working_directory="/", umask=0o022, stderr=err):
        import mpguard

        with mpguard.GuardedPool(2) as pool:
            out = pool.map(square, range(8))
            report(
                path,
                pid=os.getpid(),
                sid=os.getsid(0),
                pgid=os.getpgrp(),
                squares=[x for x, _, _ in out],
                workers=sorted({p for _, p, _ in out}),
                worker_pgids=sorted({g for _, _, g in out}),
            )
            time.sleep(600)


def main() -> None:
    path = os.path.abspath(sys.argv[1])
    if sys.argv[2:] == ["--daemon"]:
        daemon_main(path)
        return
    # The test's scenario process: outlives the daemonizing one, which
    # exits at once (DaemonContext's first fork).
    subprocess.run([sys.executable, __file__, path, "--daemon"], check=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
