"""A test that leaks a process: pytest passes it, mpguard's plugin does not.

The test starts a "server" and forgets to stop it.  Plain pytest reports
the test as passed and the server runs on after the session.  With the
plugin on (``--mpguard-leaks=kill``, or ``mpguard_leaks = fail`` in the ini
file), the test errors at its teardown with the tree of what leaked, and
the leaked tree is killed.

    python examples/leak_check.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

TEST = """
import subprocess

def test_starts_a_server():
    server = subprocess.Popen(["sleep", "600"])
    with open("leaked.pid", "w") as f:
        f.write(str(server.pid))
"""


def pytest(folder: Path, *args: str) -> tuple[int, str]:
    # Output to a file, not a pipe: the leaked server inherits it, and a
    # pipe would stay open until the server exits.
    log = folder / "pytest.log"
    with open(log, "w") as out:
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return rc, log.read_text()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_leaky.py").write_text(TEST)
        (folder / "pytest.ini").write_text("[pytest]\n")

        rc, _ = pytest(folder)
        pid = int((folder / "leaked.pid").read_text())
        print(f"plain pytest: exit status {rc}")
        print(f"the server (pid {pid}) runs on: {alive(pid)}")
        before_ok = rc == 0 and alive(pid)
        os.kill(pid, signal.SIGKILL)  # the demo cleans up after plain pytest

        rc, text = pytest(folder, "--mpguard-leaks=kill")
        pid = int((folder / "leaked.pid").read_text())
        print(f"\nwith --mpguard-leaks=kill: exit status {rc}")
        start = text.find("mpguard:")
        print(text[start : text.find("===", start)].rstrip())
        print(f"the server (pid {pid}) runs on: {alive(pid)}")
        after_ok = rc == 1 and "[leaked]" in text and not alive(pid)
    return 0 if before_ok and after_ok else 1


if __name__ == "__main__":
    sys.exit(main())
