"""The worker's side of a GuardedPool: runs in the worker process.

The loop itself is the stdlib's ``multiprocessing.pool.worker`` (so
initializer, ``maxtasksperchild``, exception wrapping and unpicklable
results behave exactly as in ``multiprocessing.Pool``); mpguard only swaps
the two queues it reads and writes for the worker's own channel.  There is
no shared queue and so no shared lock for a dying worker to leave taken
(gh-96062), and no half-read message for the next reader to choke on.
"""

from __future__ import annotations

import mmap
import os
from multiprocessing import reduction
from multiprocessing.reduction import ForkingPickler

from .. import _compat
from . import _wire

# typing.TYPE_CHECKING without importing typing: a spawn or forkserver
# worker loads this module, and typing costs it 2 ms at start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable
    from typing import Any

    from ._dispatch import Channel

__all__ = ["SlotRef", "worker_main"]


class SlotRef:
    """A worker's slot as sent to a spawn or forkserver worker.

    Such a worker inherits no memory: it gets the slot's file descriptor
    (through the start method's own fd passing, ``reduction.DupFd``) and
    maps the same page.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _map_slot, (reduction.DupFd(self.fd),)


def _map_slot(dupfd: Any) -> mmap.mmap:
    fd = dupfd.detach()
    try:
        return mmap.mmap(fd, mmap.PAGESIZE)
    finally:
        os.close(fd)


class _Inbox:
    """What the stdlib worker loop calls ``inqueue``: only ``get()``."""

    def __init__(self, sock: socket.socket, slot: mmap.mmap) -> None:
        self._sock = sock
        self._buf = _wire.new_buffer()
        self._slot = _wire.slot_word(slot)
        self.seq = 0

    def get(self) -> Any:
        msg = _wire.recv(self._sock, self._buf, block=True)
        if msg is None:  # the parent is gone (the guardian kills us anyway)
            raise EOFError
        self.seq = msg.seq
        # "Started" mark, before anything of the task runs (unpickling
        # included): a worker that dies without it never ran the task, and
        # the parent gives the task to another worker instead of failing
        # it.  One 64-bit store; timed tasks also stamp the clock, which
        # starts the parent's deadline.
        if msg.flags & _wire.TIMED:
            self._slot[0] = _wire.stamp(msg.seq)
        else:
            self._slot[0] = _wire.mark(msg.seq)
        try:
            return ForkingPickler.loads(_wire.payload(msg))
        except Exception as e:  # noqa: BLE001 - the task's error, not ours
            # A task this worker cannot unpickle (its function lives in the
            # parent's ``python -c`` __main__, or in a module this worker
            # cannot import) fails as that error, and the worker goes on:
            # raised here it would kill the worker, and every replacement
            # would die on the same task.  The job is unknown (it is inside
            # the pickle): None tells the parent to use its own record.
            return (None, None, _raise, (_with_hint(e),), {})


def _raise(error: BaseException) -> None:
    raise error


_HINT = (
    "mpguard: a spawn or forkserver worker could not unpickle this task; "
    "define its function and arguments in a module the worker can import "
    "(not in the main module of `python -c` or an interactive session)"
)


def _with_hint(error: Exception) -> Exception:
    """*error* with a hint saying why a fresh worker cannot load the task."""
    if hasattr(error, "add_note"):  # 3.11+: shown under the traceback
        error.add_note(_HINT)
    else:  # pragma: no cover - 3.9/3.10
        error.args = (*error.args, _HINT)
    return error


class _Outbox:
    """What the stdlib worker loop calls ``outqueue``: only ``put()``."""

    def __init__(self, sock: socket.socket, inbox: _Inbox) -> None:
        self._sock = sock
        self._inbox = inbox

    def put(self, obj: Any) -> None:
        # Pickle first: an unpicklable result raises here, and the stdlib
        # loop then sends a MaybeEncodingError instead.
        data = bytes(ForkingPickler.dumps(obj))
        _wire.send(self._sock, self._inbox.seq, 0, data, block=True)


def worker_main(
    sock: socket.socket,
    inherited: Channel | None,
    slot: mmap.mmap,
    initializer: Callable[..., object] | None,
    initargs: Iterable[Any],
    maxtasks: int | None,
    wrap_exception: bool,
) -> None:
    """Target of every GuardedPool worker process.

    *inherited* is a fork worker's channel, as its parent holds it: the
    worker closes the parent's end of it and every other channel the fork
    copied, so that the parent's death reads as EOF.  None for the others,
    which inherit no descriptor they were not given.
    """
    if inherited is not None:
        inherited.isolate()
    # SIGINT is already ignored here (Ctrl-C is the parent's business): set
    # between fork and target for fork workers (_start._child.prepare), and
    # when the process object is unpickled for spawn/forkserver ones
    # (_start._context._FreshChild).
    inbox = _Inbox(sock, slot)
    _compat.pool_worker(
        inbox, _Outbox(sock, inbox), initializer, initargs, maxtasks, wrap_exception
    )
