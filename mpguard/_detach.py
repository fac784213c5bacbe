"""Children meant to outlive this process: :func:`spawn_detached`.

Discussion
----------
Everything else in mpguard makes children die with their parent.  A
program that must outlive it (a daemon the parent launches) is the
opposite case, and the recipes for it are traps of their own:

* a plain ``Popen`` leaves a zombie with the parent once the program exits
  (nobody waits for it), or, waited for, ties the parent to it;
* the classic double fork (fork, ``setsid``, fork again, exit the middle
  process) done with ``os.fork()`` in a threaded Python parent runs Python
  code between fork and exec, where a lock held by another thread at the
  fork never comes free;
* a pidfile written with ``open(path, "w")`` races a second instance (both
  "win"), shows readers an empty file, and a stale one (its program died,
  or its pid now belongs to another program) blocks every later start.

Here the middle process is a fresh interpreter started by ``subprocess``
(no ``preexec_fn``): in its own session, outside the guard's group, it
starts the program with ``posix_spawn``, reports the pid and exits; the
parent reaps it at once, and the program, reparented to init (or to the
nearest subreaper), is nobody's zombie.  The pidfile is written to a
temporary name and linked into place, which fails if it exists (the
``O_EXCL`` of a rename): readers never see it half written, and of two
racing starts one gets a clear error.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    StrPath = str | os.PathLike[str]

__all__ = ["spawn_detached"]

# The middle process: spawn argv[2:], report "pid" or "E errno" on fd
# argv[1], exit.  The program is then reparented to init.
_MIDDLE = """\
import os, sys
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
try:
    pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
except OSError as e:
    os.write(fd, ("E %d" % e.errno).encode())
else:
    os.write(fd, str(pid).encode())
os._exit(0)
"""


def spawn_detached(
    args: Sequence[str],
    *,
    pidfile: StrPath | None = None,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
) -> int:
    """Start *args* detached from this process; its pid.

    The program runs in its own session, outside the guard's process
    group (mpguard never signals it), with stdio on ``/dev/null`` unless
    *stdin*, *stdout* or *stderr* say otherwise (anything ``subprocess``
    accepts).  No zombie is left with this process nor with the middle one.

    Args:
        args: the program and its arguments (``PATH`` is searched).
        pidfile: where to write the pid, created exclusively and atomically.
            A stale pidfile (its pid is gone, or now belongs to a process
            started after the file was written) is replaced.
        cwd: the program's working directory.
        env: the program's environment (default: this process's).

    Raises:
        FileExistsError: *pidfile* names a running process.
        OSError: the program could not be started (``FileNotFoundError``,
            ``PermissionError``), or *pidfile* could not be written (its
            directory is missing or not writable); nothing is left running.
        ValueError: *args* is empty.
    """
    argv = [os.fsdecode(a) for a in args]
    if not argv:
        msg = "spawn_detached() needs a program to run"
        raise ValueError(msg)
    path = os.fspath(pidfile) if pidfile is not None else None
    if path is not None:
        _clear_stale(path)
    pid = _spawn(argv, cwd, env, stdin, stdout, stderr)
    if path is not None:
        try:
            _write_pidfile(path, pid)
        except OSError:
            _kill(pid)
            raise
    return pid


def _spawn(
    argv: list[str],
    cwd: StrPath | None,
    env: Mapping[str, str] | None,
    stdin: Any,
    stdout: Any,
    stderr: Any,
) -> int:
    r, w = os.pipe()
    try:
        devnull = subprocess.DEVNULL
        middle = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _MIDDLE, str(w), *argv],
            stdin=devnull if stdin is None else stdin,
            stdout=devnull if stdout is None else stdout,
            stderr=devnull if stderr is None else stderr,
            cwd=cwd,
            env=env,
            pass_fds=(w,),
            start_new_session=True,  # out of our session and the guard's group
        )
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 64):
            out += chunk
        middle.wait()  # no zombie with us
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    text = out.decode()
    if text.startswith("E "):
        code = int(text[2:])
        raise OSError(code, os.strerror(code), argv[0])
    if not text:
        msg = f"could not start {argv[0]!r} detached (the middle process died)"
        raise OSError(errno.ECHILD, msg)
    return int(text)


def _clear_stale(path: str) -> None:
    """Remove *path* if stale; FileExistsError if its process runs."""
    try:
        with open(path) as f:
            text = f.read().strip()
        written = os.stat(path).st_mtime
    except FileNotFoundError:
        return
    owner = _live_owner(text, written)
    if owner is not None:
        pid, name = owner
        msg = f"{path} belongs to running process {pid} ({name})"
        raise FileExistsError(errno.EEXIST, msg, path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _live_owner(text: str, written: float) -> tuple[int, str] | None:
    """(pid, name) of the process the pidfile names, if it still runs."""
    import psutil  # noqa: PLC0415 - only with a pidfile

    try:
        pid = int(text.split(maxsplit=1)[0])
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # Started after the file was written: the pid was reused.
        if proc.create_time() > written + 1.0:
            return None
        return pid, proc.name()
    except (ValueError, IndexError, psutil.Error):
        return None


def _write_pidfile(path: str, pid: int) -> None:
    """Write *pid* to a temporary file and link it in as *path*.

    ``link`` fails if *path* exists: the exclusive create of ``O_EXCL``,
    with the content already complete.
    """
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError as e:
        msg = f"{path} was created by another start meanwhile"
        raise FileExistsError(errno.EEXIST, msg, path) from e
    finally:
        os.unlink(tmp)


def _kill(pid: int) -> None:
    import psutil  # noqa: PLC0415

    try:
        psutil.Process(pid).kill()
    except psutil.Error:
        pass
