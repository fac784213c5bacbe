"""One guardian, started by hand in either of its interpreters, and a member.

usage: guardian.py REPORT KIND ACTION

KIND perl or python: the guardian's command line
(``_guardian.command``), with this process as its owner and leader of a
group of its own.  A ``sleep 600`` is started into that group.  ACTION:

* hold: keep the lifeline open and hold still (the test SIGKILLs us, or
  checks that nothing happens while we live);
* release: close the lifeline, as an owner that exits does, and hold still.
"""

from __future__ import annotations

import os
import subprocess
import sys

from _common import hold, report

from mpguard import _compat, _platform
from mpguard._group import _guardian


def main() -> None:
    path, kind, action = sys.argv[1], sys.argv[2], sys.argv[3]
    perl = _platform.PERL if kind == "perl" else None
    if kind == "perl" and perl is None:
        raise SystemExit("no perl on PATH")
    r, w = os.pipe()
    cmd = _guardian.command(os.getpid(), r, 0.0, perl=perl)
    guardian = subprocess.Popen(
        cmd,
        pass_fds=(r,),
        stdin=subprocess.DEVNULL,
        env=_guardian.spawn_env(perl),
        **_compat.guardian_spawn_kwargs(),
    )
    os.close(r)
    g = guardian.pid
    member = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: os.setpgid(0, g))
    if action == "release":
        os.close(w)
    report(
        path,
        guardian=guardian.pid,
        member=member.pid,
        pgid=os.getpgid(member.pid),
        cmd=cmd,
        # For the runner's cleanup.
        workers=[guardian.pid],
        grandchildren=[member.pid],
    )
    hold()


if __name__ == "__main__":
    main()
