"""CPython's forkserver internals.

Touched: ``util._args_from_interpreter_flags`` (through ``_mp``), and
``ForkServer``'s ``_lock``, ``_forkserver_pid``, ``_forkserver_alive_fd``,
``_forkserver_address`` and ``_preload_modules``; ``forkserver.read_signed``.
Checked on Python 3.9-3.15 (3.14 added the control socket's authkey).
"""

from __future__ import annotations

import os
import sys
from multiprocessing import util

from .._errors import UnsupportedPlatformError
from ._mp import interpreter_flags

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "FORKSERVER_MAIN_ARGS",
    "FORKSERVER_SUPPORTED",
    "after_forkserver_preload",
    "forkserver_detach",
    "forkserver_ensure_running",
    "forkserver_pid",
    "forkserver_poll",
    "forkserver_preload",
    "read_signed",
    "require_forkserver",
]

#: Versions whose ``ForkServer`` this module's copy matches.
FORKSERVER_SUPPORTED = sys.version_info < (3, 16)
#: 3.14 authenticates the forkserver's control socket (gh-97514): the key
#: goes to the server through a pipe at start, and ``connect_to_new_process``
#: answers the server's challenge with ``_forkserver_authkey``.
FORKSERVER_AUTHKEY = sys.version_info >= (3, 14)
_AUTHKEY_LEN = 32  # the stdlib's; <= PIPE_BUF, so one write
#: 3.14 passes the parent's argv to the server as arguments (gh-144503)
#: and takes the main module's path from ``init_main_from_path``.
FORKSERVER_ARGV = sys.version_info >= (3, 14)
#: What follows the server's pgid in its ``forkserver_main(...)`` call: the
#: stdlib's ``main()`` arguments as %-fields (listener fd, alive fd, preload
#: list, keyword dict).
FORKSERVER_MAIN_ARGS = (
    "%d, %d, %r, sys_argv=sys.argv[1:], **%r" if FORKSERVER_ARGV else "%d, %d, %r, **%r"
)


def require_forkserver() -> None:
    """Raise UnsupportedPlatformError where :data:`FORKSERVER_SUPPORTED` is
    False (checked by the context and, for a Process used without it, by
    the guard's forkserver)."""
    if not FORKSERVER_SUPPORTED:
        msg = (
            "guarded-forkserver is tested on Python 3.9-3.15 only (its "
            "forkserver protocol changes between versions); use guarded-spawn "
            "here"
        )
        raise UnsupportedPlatformError(msg)


def forkserver_preload() -> list[str]:
    """The preload list of the stdlib's forkserver (``set_forkserver_preload``).

    A guarded forkserver preloads the same modules, so that
    ``ctx.set_forkserver_preload([...])`` works on a guarded context too.
    """
    from multiprocessing import forkserver  # noqa: PLC0415 - on use

    return list(forkserver._forkserver._preload_modules)  # type: ignore[attr-defined]


def forkserver_ensure_running(
    server: Any,
    command: str,
    spawn: Callable[[Any, list[Any], list[int]], int],
) -> None:
    """``ForkServer.ensure_running`` of 3.9-3.15, with two changes.

    The server is started by *spawn(exe, argv, fds)* instead of
    ``util.spawnv_passfds`` (which cannot choose the child's process group),
    and runs *command* (a ``%``-template with the stdlib's four fields:
    listener fd, alive fd, preload list, keyword dict) instead of
    ``multiprocessing.forkserver.main``.  A server that was reaped already
    (``ChildProcessError``) counts as dead, as one that has exited does.
    """
    import socket  # noqa: PLC0415
    from multiprocessing import connection, resource_tracker  # noqa: PLC0415
    from multiprocessing import spawn as mp_spawn  # noqa: PLC0415

    # A guarded forkserver preloads what set_forkserver_preload() chose, so
    # that ``ctx.set_forkserver_preload([...])`` works on a guarded context.
    _copy_preload(server)
    with server._lock:
        resource_tracker.ensure_running()
        if server._forkserver_pid is not None:
            if not _exited(server._forkserver_pid):
                return  # still alive
            os.close(server._forkserver_alive_fd)
            _forget(server)
        data: dict[str, Any] = {}
        sys_argv: list[str] = []
        if server._preload_modules:
            prep = mp_spawn.get_preparation_data("ignore")
            if FORKSERVER_ARGV:
                # 3.14+: the main module's path under its real key, and the
                # parent's argv as arguments after ``-c`` (gh-144503).
                if "sys_path" in prep:
                    data["sys_path"] = prep["sys_path"]
                if "init_main_from_path" in prep:
                    data["main_path"] = prep["init_main_from_path"]
                sys_argv = list(prep.get("sys_argv", ()))
                on_error = getattr(server, "_preload_on_error", "ignore")
                if on_error != "ignore":  # 3.15's set_forkserver_preload
                    data["on_error"] = on_error
            else:
                wanted = {"main_path", "sys_path"}
                data = {k: v for k, v in prep.items() if k in wanted}
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined,unused-ignore]
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):  # type: ignore[attr-defined,unused-ignore]
                os.chmod(address, 0o600)
            listener.listen()
            # Every client holds the write end of "alive"; the server
            # exits when they are all gone.
            alive_r, alive_w = os.pipe()
            fds = [listener.fileno(), alive_r]
            authkey_r = authkey_w = -1
            if FORKSERVER_AUTHKEY:
                # 3.14+: the server reads the control socket's key from a
                # short-lived pipe, and every client proves it knows it.
                authkey_r, authkey_w = os.pipe()
                fds.append(authkey_r)
                data["authkey_r"] = authkey_r
            try:
                cmd = command % (
                    listener.fileno(),
                    alive_r,
                    server._preload_modules,
                    data,
                )
                exe = mp_spawn.get_executable()
                args = [exe, *interpreter_flags(), "-c", cmd, *sys_argv]
                pid = spawn(exe, args, fds)
            except BaseException:
                os.close(alive_w)
                if authkey_w >= 0:
                    os.close(authkey_w)
                raise
            finally:
                os.close(alive_r)
                if authkey_r >= 0:
                    os.close(authkey_r)
            if FORKSERVER_AUTHKEY:
                try:
                    server._forkserver_authkey = os.urandom(_AUTHKEY_LEN)
                    os.write(authkey_w, server._forkserver_authkey)
                finally:
                    os.close(authkey_w)
            server._forkserver_address = address
            server._forkserver_alive_fd = alive_w
            server._forkserver_pid = pid


def _copy_preload(server: Any) -> None:
    from multiprocessing import forkserver  # noqa: PLC0415 - on use

    stdlib = forkserver._forkserver  # type: ignore[attr-defined,unused-ignore]
    server._preload_modules = forkserver_preload()
    if hasattr(stdlib, "_preload_on_error"):  # 3.15+
        server._preload_on_error = stdlib._preload_on_error


def _forget(server: Any) -> None:
    # Lock held: the server's process is gone or being let go.
    server._forkserver_address = None
    server._forkserver_alive_fd = None
    server._forkserver_pid = None
    if FORKSERVER_AUTHKEY:
        server._forkserver_authkey = None


def after_forkserver_preload(hook: Callable[[], object]) -> None:
    """In a forkserver process: run *hook()* once ``forkserver.main`` has
    preloaded its modules, before it serves any request.

    ``main()`` calls ``util._close_stdin()`` right after its preload block
    (3.9-3.15); the hook rides on that call, once, in this process only
    (children forked later run the original).
    """
    original = util._close_stdin  # type: ignore[attr-defined]
    me = os.getpid()

    def close_stdin() -> None:
        if os.getpid() == me:
            util._close_stdin = original  # type: ignore[attr-defined]
            hook()
        original()

    util._close_stdin = close_stdin  # type: ignore[attr-defined]


def forkserver_pid(server: Any) -> int | None:
    """The pid of *server*'s process, or None if it is not running."""
    pid: int | None = server._forkserver_pid
    return pid


def forkserver_poll(server: Any) -> bool:
    """Reap *server*'s process if it exited; True if it is not running.

    ``ensure_running()`` then sees the dead pid (``ChildProcessError``) and
    starts a new one.
    """
    with server._lock:
        pid = server._forkserver_pid
        return pid is None or _exited(pid)


def _exited(pid: int) -> bool:
    """Reap server *pid* if it exited.  One already reaped (by our reaper,
    or behind our back) counts as exited too."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return bool(done)


def forkserver_detach(server: Any) -> tuple[int, int] | None:
    """Forget *server*'s process: ``(pid, alive_fd)``, or None if none runs.

    The caller closes ``alive_fd`` (the server exits once every client's
    copy is closed) and reaps ``pid``.
    """
    with server._lock:
        pid = server._forkserver_pid
        alive = server._forkserver_alive_fd
        if pid is None or alive is None:
            return None
        _forget(server)
        return pid, alive


def read_signed(fd: int) -> int:
    """One signed integer from a forkserver status pipe (``read_signed``)."""
    from multiprocessing import forkserver  # noqa: PLC0415 - on use

    return int(forkserver.read_signed(fd))  # type: ignore[attr-defined,unused-ignore]
