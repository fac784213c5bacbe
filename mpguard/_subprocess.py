"""Guarded subprocesses: ``mpguard.Popen``, ``run``, ``call``, ``check_call``
and ``check_output``, drop-ins for the ``subprocess`` ones.

Discussion
----------
A program that starts children with :mod:`subprocess` meets the pools'
problems again: SIGKILLed, its children and theirs run on as orphans; and a
timeout kills only the direct child.  With the stdlib::

    subprocess.run(["sh", "-c", "sleep 60 & sleep 60"],
                   capture_output=True, timeout=1)

raises after 1 s and leaves the background ``sleep`` running as an orphan,
and the documented ``proc.kill(); proc.communicate()`` after a
``TimeoutExpired`` blocks until that grandchild exits, because it holds the
output pipe.  The usual fixes are traps: ``signal(SIGCHLD, SIG_IGN)`` and a
``waitpid(-1)`` loop both collect exit statuses that ``subprocess`` then
never sees (``returncode`` 0 for a failed child, or ``ECHILD``).

Here:

* **group and death**: the child joins the guard's process group before it
  execs, so the guardian kills it, and whatever it started that stayed in
  the group, however the parent ends.  On 3.11+ that is ``Popen``'s own
  ``process_group=`` (``setpgid`` in the child between fork and exec, in C:
  no ``preexec_fn``, which is unsafe in a threaded parent).  3.9 and 3.10
  lack it: the child is started through a small exec shim (one interpreter
  start-up, about 10 ms) that joins the group and execs the command, and
  reports an exec failure back, so ``FileNotFoundError`` is raised as the
  stdlib raises it;
* **statuses**: ``returncode``, ``wait()``, ``poll()`` and
  ``communicate()`` are the stdlib's own, and nothing reaps behind them.
  A ``Popen`` its owner dropped while the child ran (the seed of many
  zombies: ``subprocess.Popen([...])`` and never a ``wait()``) is reaped
  as soon as the child exits, by ``subprocess``'s own clean-up of dropped
  Popens, which otherwise waits for the next ``Popen`` to be made;
* **timeouts take the tree**: ``kill()`` and ``terminate()`` signal the
  child and its descendants (found before the signal), and
  ``communicate(timeout=)`` kills the tree when the timeout expires
  (``kill_on_timeout=False`` keeps the stdlib's behaviour), then raises
  ``TimeoutExpired`` as the stdlib does;
* **one guard**: guarded Popens and guarded pools share the guard, its
  group and its guardian.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

from . import _compat, _platform
from ._group import acquire
from ._group._ladder import signal_procs, snapshot_descendants

if TYPE_CHECKING:
    from ._group import Guard

__all__ = ["Popen", "call", "check_call", "check_output", "run"]

#: ``Popen(process_group=)``: the child joins a group before exec (3.11+).
HAVE_PROCESS_GROUP = sys.version_info >= (3, 11)

# The exec shim for 3.9/3.10: join group argv[1], tell an exec failure on
# fd argv[2] (close-on-exec: EOF on success), exec argv[3] with argv[4:].
_SHIM = """\
import os, sys
fd = int(sys.argv[2])
try:
    os.set_inheritable(fd, False)
    os.setpgid(0, int(sys.argv[1]))
    os.execvp(sys.argv[3], sys.argv[4:])
except OSError as e:
    os.write(fd, ("%d:%s" % (e.errno, e.filename or "")).encode())
os._exit(127)
"""


class _Hold:
    """One hold on the guard, released once: by ``wait()``/``poll()`` or,
    for a dropped Popen, when its child exits."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self.guard.unhold()


def _on_exit(hold: _Hold, fd: int, ref: weakref.ref[Popen]) -> None:
    """The reaper thread's callback: the child of a guarded Popen exited."""
    hold.guard.release_fd(fd)
    os.close(fd)
    # Reaps the Popens their owners dropped (this one, if it was), never
    # one still referenced: its owner's wait() reads the status.
    _compat.reap_dropped_popens()
    popen = ref()
    if popen is None or popen.returncode is not None:
        hold.release()


class Popen(subprocess.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` whose child dies with this process.

    Same arguments as :class:`subprocess.Popen`, plus:

    Args:
        kill_on_timeout: keyword-only.  When ``communicate(timeout=)``
            expires, kill the child and its whole subtree, reap the child,
            then raise ``TimeoutExpired`` (default).  False: the stdlib's
            behaviour (the child runs on).

    Raises:
        ValueError: ``start_new_session`` or ``process_group`` asks for the
            child to leave the guard's group (use :func:`spawn_detached`
            for a child meant to outlive this process).
        GuardSetupError: the guard's group could not be joined.
    """

    def __init__(
        self, args: Any, *posargs: Any, kill_on_timeout: bool = True, **kwargs: Any
    ) -> None:
        if kwargs.get("start_new_session") or kwargs.get("process_group") is not None:
            msg = (
                "mpguard.Popen keeps the child in the guard's process group; "
                "use mpguard.spawn_detached() for a child meant to outlive "
                "this process"
            )
            raise ValueError(msg)
        self.kill_on_timeout = kill_on_timeout
        guard = acquire()  # held until the child's status is collected
        self._hold = _Hold(guard)
        try:
            if HAVE_PROCESS_GROUP:
                kwargs["process_group"] = guard.pgid
                super().__init__(args, *posargs, **kwargs)
            else:  # pragma: no cover - 3.9/3.10
                self._start_through_shim(guard, args, posargs, kwargs)
        except BaseException:
            self._hold.release()
            raise
        if _platform.CAPS.pidfd:
            # The callback holds no reference to the Popen: dropping it is
            # what makes it the stdlib's to reap.
            fd, hold, ref = (
                _platform.pidfd_open(self.pid),
                self._hold,
                weakref.ref(self),
            )
            guard.watch(fd, lambda: _on_exit(hold, fd, ref))
        # A Popen dropped after its status was collected by its own
        # finalizer still lets the guard go.  (One dropped while its child
        # runs does too: the guard then stays for the child, which is in
        # its group.)
        weakref.finalize(self, self._hold.release)

    def _start_through_shim(
        self, guard: Guard, args: Any, posargs: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """3.9/3.10: run *args* as the stdlib would, through :data:`_SHIM`."""
        if posargs:
            msg = "on Python < 3.11, give mpguard.Popen's other arguments by keyword"
            raise TypeError(msg)
        shell = kwargs.pop("shell", False)
        executable = kwargs.pop("executable", None)
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if shell:
            argv = ["/bin/sh", "-c", *argv]
            executable = executable or "/bin/sh"
        program = executable if executable is not None else argv[0]
        r, w = os.pipe()
        try:
            pass_fds = (*kwargs.pop("pass_fds", ()), w)
            shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(guard.pgid)]
            shim += [str(w), os.fsdecode(program), *map(os.fsdecode, argv)]
            super().__init__(shim, pass_fds=pass_fds, **kwargs)
            self.args = args
            os.close(w)
            w = -1
            report = b""
            while chunk := os.read(r, 4096):
                report += chunk
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        if report:
            self.wait()
            errno_s, _, filename = report.decode().partition(":")
            errno = int(errno_s)
            raise OSError(errno, os.strerror(errno), filename or program)

    # --- the guard is held until the child's status is collected --------

    def poll(self) -> int | None:
        """As ``subprocess.Popen.poll``."""
        code = super().poll()
        if code is not None:
            self._hold.release()
        return code

    def wait(self, timeout: float | None = None) -> int:
        """As ``subprocess.Popen.wait``."""
        code = super().wait(timeout)
        self._hold.release()
        return code

    # --- signals that take the tree ------------------------------------

    def _signal_tree(self, sig: int) -> None:
        # The descendants are found before any signal: once the child dies
        # they are reparented and no longer found below it.
        desc = snapshot_descendants([self.pid]) if self.returncode is None else []
        self.send_signal(sig)
        signal_procs(desc, sig)

    def terminate(self) -> None:
        """SIGTERM the child and every process below it."""
        self._signal_tree(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child and every process below it.

        A grandchild that holds the output pipe dies too, so the
        ``communicate()`` that follows returns.
        """
        self._signal_tree(signal.SIGKILL)

    def communicate(
        self,
        input: Any = None,  # noqa: A002 - the stdlib's name
        timeout: float | None = None,
    ) -> tuple[Any, Any]:
        """As ``subprocess.Popen.communicate``; on ``TimeoutExpired`` the
        child's tree is killed and the child reaped first, unless
        ``kill_on_timeout=False``."""
        try:
            return super().communicate(input, timeout)
        except subprocess.TimeoutExpired:
            if self.kill_on_timeout:
                self.kill()
                self.wait()
            raise


def run(
    *popenargs: Any,
    input: Any = None,  # noqa: A002 - the stdlib's name
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` on :class:`Popen`: a timeout kills the whole tree."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            msg = "stdin and input arguments may not both be used."
            raise ValueError(msg)
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            msg = "stdout and stderr arguments may not be used with capture_output."
            raise ValueError(msg)
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.poll()
        assert retcode is not None
        if check and retcode:
            raise subprocess.CalledProcessError(
                retcode, process.args, output=stdout, stderr=stderr
            )
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> int:
    """``subprocess.call`` on :class:`Popen`."""
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException:
            p.kill()
            p.wait()
            raise


def check_call(*popenargs: Any, **kwargs: Any) -> int:
    """``subprocess.check_call`` on :class:`Popen`."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd: Any = kwargs.get("args", popenargs[0] if popenargs else None)
        raise subprocess.CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """``subprocess.check_output`` on :class:`Popen`."""
    for kw in ("stdout", "check"):
        if kw in kwargs:
            msg = f"{kw} argument not allowed, it will be overridden."
            raise ValueError(msg)
    if "input" in kwargs and kwargs["input"] is None:
        # As the stdlib: input=None means empty input, not inherited stdin.
        text = ("text", "universal_newlines", "encoding", "errors")
        kwargs["input"] = "" if any(kwargs.get(k) for k in text) else b""
    return run(
        *popenargs, stdout=subprocess.PIPE, timeout=timeout, check=True, **kwargs
    ).stdout
