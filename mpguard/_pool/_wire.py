"""Messages on a pool worker's channel (both ends use this module).

A message is one atomic socket message (``_platform.channel_pair``)::

    header: seq (u64) | flags (u8)   then either
    the pickled payload                        (inline), or
    payload size (u64) + one SCM_RIGHTS fd     (flag FD: large payloads)

``seq`` numbers tasks; a worker echoes the task's ``seq`` in its result, so
the parent can match results to the tasks it handed to that worker.  The
parent may also take unclaimed messages back out of a worker's receive
queue (when the worker dies, or to give queued work to an idle worker):
because each message is atomic, every task is either still queued, taken
by the worker, or answered, never half-read.
"""

from __future__ import annotations

import array
import collections
import mmap
import os
import socket
import struct
import time

from .. import _platform

# typing.TYPE_CHECKING without importing typing: every spawn and forkserver
# worker loads this module, and typing costs it 2 ms at start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

__all__ = [
    "FD",
    "HEADER",
    "TIMED",
    "Message",
    "elapsed_ms",
    "encode",
    "new_buffer",
    "mark",
    "payload",
    "recv",
    "recv_ready",
    "send",
    "send_encoded",
    "slot_word",
    "stamp",
    "started",
]

HEADER = struct.Struct("<QB")
_SIZE = struct.Struct("<Q")
#: Flag: the payload is in the attached file descriptor.
FD = 1
#: Flag: the task has a timeout; the worker stamps its start in its slot.
TIMED = 2

_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize)
BUFSIZE = HEADER.size + _platform.INLINE_MAX
_DONTWAIT = socket.MSG_DONTWAIT


if TYPE_CHECKING:

    class Message(NamedTuple):
        """A message as received: exactly one of *data* and *fd* is set."""

        seq: int
        flags: int
        data: bytes | memoryview | None
        fd: int | None
        size: int

else:
    # The class typing.NamedTuple would build, without importing typing.
    Message = collections.namedtuple("Message", "seq flags data fd size")
    Message.__doc__ = "A message as received: exactly one of *data* and *fd* is set."


def new_buffer() -> mmap.mmap:
    """A receive buffer of :data:`BUFSIZE` bytes, for :func:`recv` and
    :func:`recv_ready`.

    An anonymous mapping, not a ``bytearray``: the kernel backs a page
    only once a message reaches it, where a bytearray's zero-fill writes
    all 15 pages at once.  Every worker makes one as it starts, and a
    small message then costs it one page fault, not 15 (60 KiB less of
    each worker's own memory).
    """
    return mmap.mmap(-1, BUFSIZE)


def send(
    sock: socket.socket, seq: int, flags: int, data: bytes, *, block: bool
) -> None:
    """Send one message.  Raises BlockingIOError if *block* is false and the
    socket is full; nothing is sent then.

    A payload too large for one message travels in an anonymous file whose
    descriptor is attached to the message.
    """
    mflags = 0 if block else _DONTWAIT
    message = encode(seq, flags, data)
    if message is not None:
        sock.send(message, mflags)
        return
    fd = _platform.anon_file(data)
    try:
        _send_fd(sock, seq, flags, fd, len(data), mflags)
    finally:
        _close(fd)


def encode(seq: int, flags: int, data: bytes) -> bytes | None:
    """The whole message for *data* if it travels inline, else None.

    Encoded once when a task is queued, so that the thread that sends it
    (the pool's result handler, which also receives every result) only
    makes the system call: :func:`send_encoded`.
    """
    if len(data) <= _platform.INLINE_MAX:
        return HEADER.pack(seq, flags & ~FD) + data
    return None


def send_encoded(sock: socket.socket, message: bytes) -> None:
    """Send a message made by :func:`encode` without blocking (raises
    BlockingIOError, sending nothing, if the socket is full)."""
    sock.send(message, _DONTWAIT)


def _send_fd(
    sock: socket.socket, seq: int, flags: int, fd: int, size: int, mflags: int
) -> None:
    sock.sendmsg(
        [HEADER.pack(seq, flags | FD) + _SIZE.pack(size)],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
        mflags,
    )


def recv(sock: socket.socket, buf: mmap.mmap, *, block: bool) -> Message | None:
    """Receive one message into *buf* (size :data:`BUFSIZE`); None at EOF.

    An inline payload is a view into *buf*: use it before the next call.
    Raises BlockingIOError if *block* is false and nothing is queued.
    """
    n, anc, _flags, _ = sock.recvmsg_into([buf], _FD_SPACE, 0 if block else _DONTWAIT)
    if n == 0:
        return None
    return _decode(buf, n, anc)


def recv_ready(
    sock: socket.socket, buf: mmap.mmap, limit: int
) -> list[tuple[int, bytes | Exception]]:
    """Every message already queued on *sock*, up to *limit*, as ``(seq,
    payload)`` pairs with the payloads copied out of *buf*.

    For the parent, which reads a batch per wake-up: one call, and one
    tuple per message.  A payload that came in a file and cannot be read
    (its descriptor was dropped for want of free descriptors, or reading
    it failed) is the exception instead, for that message's task alone.
    A read error on the socket ends the batch like an empty socket (the
    worker's pidfd tells the rest).
    """
    out: list[tuple[int, bytes | Exception]] = []
    recvmsg_into = sock.recvmsg_into
    bufs = [buf]
    unpack = HEADER.unpack_from
    start = HEADER.size
    while len(out) < limit:
        try:
            n, anc, mflags, _ = recvmsg_into(bufs, _FD_SPACE, _DONTWAIT)
        except OSError:  # BlockingIOError: nothing more queued
            break
        if n == 0:  # pragma: no cover - EOF: the worker is gone
            break
        seq, flags = unpack(buf)
        if anc or flags & FD or mflags & socket.MSG_CTRUNC:
            # A payload in a file (the general path).
            try:
                out.append((seq, bytes(payload(_decode(buf, n, anc)))))
            except (OSError, EOFError) as e:
                out.append((seq, e))
            continue
        out.append((seq, buf[start:n]))
    return out


def _decode(buf: mmap.mmap, n: int, anc: list[tuple[int, int, bytes]]) -> Message:
    fds: list[int] = []
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
            fds.extend(got)
    seq, flags = HEADER.unpack_from(buf)
    if flags & FD:
        if not fds:  # pragma: no cover - MSG_CTRUNC: out of descriptors
            msg = "payload descriptor was not received (out of file descriptors?)"
            raise OSError(msg)
        for extra in fds[1:]:  # pragma: no cover - never sent
            _close(extra)
        (size,) = _SIZE.unpack_from(buf, HEADER.size)
        return Message(seq, flags, None, fds[0], size)
    for extra in fds:  # pragma: no cover - never sent
        _close(extra)
    return Message(seq, flags, memoryview(buf)[HEADER.size : n], None, n - HEADER.size)


def payload(msg: Message) -> bytes | memoryview:
    """The pickled payload of *msg*; closes its descriptor, if any."""
    if msg.fd is None:
        assert msg.data is not None
        return msg.data
    try:
        return _platform.read_anon_file(msg.fd, msg.size)
    finally:
        _close(msg.fd)


def slot_word(slot: mmap.mmap) -> memoryview:
    """The first 64-bit word of a worker's slot page, as ``view[0]``.

    A memoryview, not ``ctypes.c_uint64.from_buffer`` (ctypes costs every
    program 2 ms to import): both read and write the aligned word with one
    8-byte copy, so a reader never sees half a store.
    """
    return memoryview(slot).cast("B")[:8].cast("Q")


def stamp(seq: int) -> int:
    """The slot word a worker writes when it starts timed task *seq*.

    One 64-bit word (one store, never torn): the low 32 bits of *seq* and
    of the monotonic clock in milliseconds (CLOCK_MONOTONIC is the same
    clock in every process).
    """
    return ((seq & 0xFFFFFFFF) << 32) | (int(time.monotonic() * 1000) & 0xFFFFFFFF)


def elapsed_ms(word: int, now_ms: int) -> int:
    """Milliseconds since stamp *word* was written, at clock *now_ms*.

    The clock wraps every 2**32 ms (49 days), so the difference is taken
    modulo 2**32.  A stamp written after the caller read *now_ms* (the
    worker started the task meanwhile) reads as 0, not as a wrapped 49
    days that would kill the task at once.
    """
    elapsed = (now_ms - (word & 0xFFFFFFFF)) & 0xFFFFFFFF
    return 0 if elapsed >= 1 << 31 else elapsed


def mark(seq: int) -> int:
    """The slot word for untimed task *seq*: :func:`stamp` without a clock."""
    return (seq & 0xFFFFFFFF) << 32


def started(word: int, seq: int) -> bool:
    """Whether slot *word* says task *seq* was started."""
    return word >> 32 == seq & 0xFFFFFFFF


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # pragma: no cover
        pass
