"""A late wake-up never touches a recycled file descriptor.

The pool's result loop and the guard's reaper are woken through a pipe.  A
thread can outlive the close of that pipe (a pool's handler thread after
``terminate()``'s bounded join, the reaper finishing after ``shutdown()``),
and the kernel gives a closed number to the very next ``pipe()``.  A byte
written there landed in a new pool's result pipe, whose reader then waited
forever for the rest of a message: ``map()`` hung (seen once in CI, and
about once in 20 runs of the context scenario on a loaded machine).
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading

import pytest

from _support import SHORT, wait_for
from mpguard import _platform
from mpguard._group._children import ChildTable
from mpguard._pool._dispatch import Dispatcher


def _fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def _recycle(freed: set[int]) -> list[tuple[int, ...]]:
    """Give every number in *freed* to the write end of a new pipe, as the
    next ``pipe()`` or ``socket()`` of a new pool would; return the pipes.

    The pipes' own ends are moved above the freed numbers first, so that
    each freed number is a writer (a write to a reader would just fail).
    """
    pipes: list[tuple[int, ...]] = []
    for n in sorted(freed):
        r, w = os.pipe()
        high_r = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 256)
        high_w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 256)
        os.close(r)
        if w != n:
            os.close(w)
        os.dup2(high_w, n)
        os.set_blocking(high_r, False)
        pipes.append((high_r, high_w, n))
    return pipes


def _written(pipes: list[tuple[int, ...]]) -> list[bytes]:
    """What arrived in *pipes* (and close them)."""
    got = []
    for r, *ws in pipes:
        try:
            got.append(os.read(r, 64))
        except BlockingIOError:
            pass
        for fd in (r, *ws):
            os.close(fd)
    return got


class _RawPipe:
    """The old wake pipe: two plain numbers, used after close as before."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def wake(self) -> None:
        try:
            os.write(self.w, b"\0")
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd"
)


@pytest.mark.parametrize("kind", ["WakePipe", "control-raw-pipe"])
def test_a_wake_after_close_writes_nowhere(kind):
    before = _fds()
    pipe = _platform.WakePipe() if kind == "WakePipe" else _RawPipe()
    mine = _fds() - before
    pipe.close()
    pipes = _recycle(mine)
    pipe.wake()  # a thread that outlived the close
    got = _written(pipes)
    if kind == "WakePipe":
        assert got == []
    else:
        assert got == [b"\0"], "control: the old pipe writes into a new one"


def test_a_dispatcher_woken_after_close_leaves_new_pipes_alone():
    ctrl, keep = multiprocessing.Pipe(duplex=False)
    before = _fds()
    d = Dispatcher(ctrl, task_timeout=None, processes=1)
    mine = _fds() - before
    d.close()
    pipes = _recycle(mine)
    try:
        d.stop()  # late: the worker handler's died() or a second terminate
        d._wake()
        assert _written(pipes) == []
    finally:
        ctrl.close()
        keep.close()


def test_the_reaper_woken_after_it_ended_leaves_new_pipes_alone():
    table = ChildTable(lambda: None)
    before_threads = set(threading.enumerate())
    before = _fds()
    table.start()
    (reaper,) = set(threading.enumerate()) - before_threads
    mine = _fds() - before
    table.stop()
    # The reaper closes its pipe on its way out, after stop() returned.
    assert wait_for(lambda: not reaper.is_alive(), SHORT)
    pipes = _recycle(mine)
    table.wake()  # a late idle wake-up of a guard already shut down
    assert _written(pipes) == []
