"""GuardedPool's dispatcher: hands tasks to workers and notices lost ones.

The stdlib Pool feeds every worker from one shared pipe.  A worker that dies
while it holds that pipe's read lock freezes every other worker (gh-96062),
one that dies mid-read leaves half a message for the next reader, and nobody
knows which task the dead worker had taken, so ``map()`` waits forever
(gh-66587).  ProcessPoolExecutor and loky avoid the hang by breaking the whole
pool on the first death.

Here each worker has its own channel of atomic messages
(``_platform.channel_pair``), and the parent decides who runs what:

* ``put()`` (the stdlib's task-handler thread) pickles a task and sends it
  straight to the worker with the most room, keeping at most ``PREFETCH``
  tasks queued per worker; the rest waits in a bounded backlog.
* ``get()`` (the stdlib's result-handler thread) is an event loop over every
  worker's channel and its pidfd.  A result frees room, so the loop sends
  the next task; an idle worker takes queued tasks back from a busy one.
* When a worker's pidfd fires, the loop reads the results it managed to
  send, takes back the tasks still queued for it (they never started and
  go to other workers), and what is left is the one task it had taken:
  that task, and only that one, fails with ``WorkerLostError``.
* Tasks with a timeout are stamped by the worker when they start (one
  64-bit store in a shared page); the loop SIGKILLs the worker and its
  descendants when one overruns and fails it with ``TaskTimeoutError``.
  Tasks without a timeout cost nothing: no stamp, no timer.

Every decision above (which worker, what waits, what is stolen, requeued,
lost or given up, which task overran) is made by ``_schedule.Schedule``, on
plain data; this module is the I/O around it: the lock, the channels, the
event loop, pickling, the errors and the kills.

The stdlib's threads, result classes and worker loop are unchanged: only
the functions they call to move a task or a result are ours.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import reprlib
import selectors
import threading
import time
from collections import deque
from multiprocessing.reduction import ForkingPickler

from .. import _compat, _platform
from .._errors import TaskTimeoutError, WorkerLostError
from .._group import kill_now
from . import _wire
from ._schedule import PREFETCH, Schedule, Task, Worker

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    import socket
    from typing import Any, NamedTuple

__all__ = ["PREFETCH", "Channel", "Dispatcher"]

#: Messages read from one worker per wake-up, so that one chatty worker
#: cannot starve the others.
_READ_BATCH = 256

_RESULTS, _CTRL, _WAKE = range(3)

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlevel = 2


if TYPE_CHECKING:

    class _ChannelFields(NamedTuple):
        parent: socket.socket
        child: socket.socket
        slot: mmap.mmap
        slot_fd: int | None = None

else:
    # The tuple typing.NamedTuple would build, without importing typing.
    _ChannelFields = collections.namedtuple(
        "_ChannelFields", "parent child slot slot_fd", defaults=(None,)
    )


class Channel(_ChannelFields):
    """One worker's channel: the parent's end, the worker's end, its slot.

    ``slot_fd`` is the slot's file, for workers that do not inherit memory
    (spawn, forkserver); None for fork workers.
    """

    __slots__ = ()

    def close(self) -> None:
        """Close both ends and unmap the slot."""
        # Out of the registry before the descriptors are closed: a worker
        # forked in between keeps one stale descriptor open (as the
        # stdlib's workers keep its queues), but could never close a number
        # the kernel has since handed to someone else's file.
        _OPEN.pop(id(self), None)
        self._close_descriptors()
        try:
            self.slot.close()
        except BufferError:  # pragma: no cover - a slot view is alive
            pass

    def _close_descriptors(self) -> None:
        """Close both sockets and the slot's file (not the mapping)."""
        self.parent.close()
        self.child.close()
        if self.slot_fd is not None:
            try:
                os.close(self.slot_fd)
            except OSError:  # pragma: no cover - closed already
                pass

    def isolate(self) -> None:
        """In a fork worker: keep this channel's worker end and nothing else.

        A fork copies every descriptor of the parent, so each worker would
        hold the parent's end of its own channel and both ends of every
        other channel of every pool (63 sockets in each worker of a
        32-worker pool).  The parent's death would then not read as EOF in
        any worker while another one lives.  Closed through the socket
        objects, so that no copy of them in this process closes a recycled
        number later.  The other channels' slots stay mapped (a page each,
        gone with the process): unmapping them cost each worker more than
        closing the sockets.
        """
        for key, channel in list(_OPEN.items()):
            if channel is not self:
                # Out of this process's registry, so that a pool this worker
                # starts does not close them again in its own workers.
                del _OPEN[key]
                channel._close_descriptors()
        self.parent.close()


#: Every channel of this process that is not closed yet, by id: what a
#: fork worker inherited and closes (``Channel.isolate``).
_OPEN: dict[int, Channel] = {}


def _describe(t: Task) -> str:
    """*t* as shown in an error: the function and its (shortened) args."""
    func, args = t.func, t.args
    chunk = _compat.task_items(func, args)
    if chunk is not None:
        func, items, starred = chunk
        if len(items) != 1:
            return f"{_name(func)} on {len(items)} items (chunk {t.index})"
        args = items[0] if starred else (items[0],)
    try:
        shown = ", ".join(_repr.repr(a) for a in args)
    except Exception:  # noqa: BLE001 - a user __repr__ may raise anything
        shown = "..."
    return f"{_name(func)}({shown})"


def _name(func: Any) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", func))


class _Worker(Worker):
    """A worker with its channel and a view of its slot word."""

    __slots__ = ("channel", "stamp")

    def __init__(self, channel: Channel, budget: int | None) -> None:
        super().__init__(budget)
        self.channel = channel
        self.stamp = _wire.slot_word(channel.slot)


def _word(w: _Worker) -> int:
    """*w*'s slot word: what it last started (written by the worker)."""
    return w.stamp[0]


class _Raw:
    """A result as received: unpickled by ``get()``, outside the lock."""

    __slots__ = ("data", "index", "job")

    def __init__(self, job: Any, index: Any, data: bytes) -> None:
        self.job = job
        self.index = index
        self.data = data


class Dispatcher:
    """Moves tasks and results between a GuardedPool and its workers.

    Args:
        ctrl: the read end of the pool's outqueue; only the parent writes
            to it now (the ``None`` sentinels of close and terminate).
        task_timeout: default per-task timeout in seconds, or None.
        processes: the pool size (for the "workers keep dying" check).
        inherits: workers are forked and inherit the slots' memory; False
            for spawn and forkserver workers, which map the slot's file.
    """

    def __init__(
        self,
        ctrl: Any,
        *,
        task_timeout: float | None,
        processes: int,
        inherits: bool = True,
    ):
        self._ctrl = ctrl
        self._inherits = inherits
        self._task_timeout = task_timeout
        self._processes = processes
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Every decision, made under self._lock; it calls back _send and
        # _take to move a task in or out of a channel.
        self._sched: Schedule[_Worker] = Schedule(processes, self._send, self._take)
        self._results: deque[Any] = deque()
        self._seq = itertools.count(1)
        self._buf = _wire.new_buffer()
        self._job_timeouts: dict[Any, float] = {}
        self._put_waiting = False
        self._sleep_until = math.inf
        self._stopped = False
        self._closed = False
        self._sel = selectors.DefaultSelector()
        # Woken by threads that may outlive close() (a bounded join after
        # terminate): a WakePipe never touches a recycled descriptor.
        self._waker = _platform.WakePipe()
        self._sel.register(ctrl.fileno(), selectors.EVENT_READ, _CTRL)
        self._sel.register(self._waker.fileno(), selectors.EVENT_READ, _WAKE)
        self._registered: set[int] = set()
        self._free: list[Channel] = []
        # Every channel handed out and not released yet, by id: close()
        # lets go of the ones whose worker never started (a later worker's
        # creation or start() raised), which _OPEN would otherwise keep.
        self._made: set[int] = set()

    # --- workers (any thread) ---------------------------------------------

    def channel(self) -> Channel:
        """A channel for a worker about to be started.

        The channel of a worker that ended cleanly (``maxtasksperchild``)
        is reused: it is empty, and this takes creating, registering and
        closing a socketpair and a mapping off the critical path of worker
        churn.
        """
        with self._lock:
            if self._free:
                return self._free.pop()
        parent, child = _platform.channel_pair()
        # MAP_SHARED: the worker writes, we read.  A fork worker inherits an
        # anonymous mapping; others map the slot's file themselves.
        slot, slot_fd = _platform.shared_page(by_fd=not self._inherits)
        channel = Channel(parent, child, slot, slot_fd)
        with self._lock:
            # A fork by another thread right before this inherits the pair
            # without finding it in _OPEN, and keeps it open (as the
            # stdlib's workers keep every queue of the parent): rare, and
            # never a descriptor closed in error.  After close() the
            # channel is left to the garbage collector.
            if not self._closed:
                _OPEN[id(channel)] = channel
                self._made.add(id(channel))
        return channel

    def prepare(self, channel: Channel, budget: int | None) -> _Worker:
        """Register a worker about to start and queue its first tasks.

        Called before the fork, so the new worker finds work waiting the
        moment it runs, as it would in the stdlib's shared queue.
        """
        w = _Worker(channel, budget)
        with self._lock:
            if self._closed:
                w.dead = True
                return w
            fd = channel.parent.fileno()
            self._sched.add(fd, w)
            if fd not in self._registered:
                self._sel.register(fd, selectors.EVENT_READ, _RESULTS)
                self._registered.add(fd)
            self._sched.refill(w)
            self._wake_put()
        return w

    def started(self, w: _Worker, proc: Any) -> None:
        """*w* runs as *proc*."""
        with self._lock:
            w.proc = proc
            if w.dead:  # the pool closed meanwhile
                self._release(w.channel)

    def abort(self, w: _Worker) -> None:
        """*w* failed to start: take its tasks back for the others."""
        with self._lock:
            if not w.dead:
                self._sched.abort(w)
                self._forget(w)
                self._wake_put()
            else:
                self._release(w.channel)

    def set_timeout(self, job: Any, timeout: float) -> None:
        """Give job *job* (one ``apply_async``) its own timeout."""
        self._job_timeouts[job] = timeout

    # --- the task handler's side ------------------------------------------

    def put(self, task: tuple[Any, ...] | None) -> None:
        """Hand *task* to a worker (``Pool._quick_put``)."""
        if task is None:
            self._put_sentinel()
            return
        timeout = self._task_timeout
        if self._job_timeouts:
            timeout = self._job_timeouts.pop(task[0], timeout)
        # Pickle outside the lock; a PicklingError goes back to the stdlib
        # task handler, which fails this task as the stdlib does.
        # Framed here too: this thread has time to spare, the one that
        # sends most tasks (the result handler, refilling) has none.
        seq = next(self._seq)
        data = bytes(ForkingPickler.dumps(task))
        message = _wire.encode(seq, _wire.TIMED if timeout else 0, data)
        if message is None:
            t = Task(seq, task, data, timeout)
        else:
            t = Task(seq, task, message, timeout, encoded=True)
        with self._lock:
            sched = self._sched
            if sched.full():
                # Woken only once the backlog is half empty: waking this
                # thread for every free slot costs a GIL hand-off per task.
                self._put_waiting = True
                while not sched.low() and not self._stopped:
                    self._room.wait()
                self._put_waiting = False
            if self._stopped:
                return
            # Only an empty backlog may be skipped (Schedule.assign): the
            # tasks in it are older.  Checked *after* waiting: while this
            # thread waited, the loop may have emptied the backlog and left
            # workers idle, and a task appended then would wait for an
            # event that never comes.
            sched.assign(t)

    def _put_sentinel(self) -> None:
        with self._lock:
            w = self._sched.sentinel_to()
            if w is None:
                return
            data = bytes(ForkingPickler.dumps(None))
            try:
                _wire.send(w.channel.parent, 0, 0, data, block=True)
            except OSError:
                pass

    def _send(self, w: _Worker, t: Task) -> bool:
        """Send *t* to *w* without blocking (the schedule's ``send``; lock
        held)."""
        try:
            if t.encoded:
                _wire.send_encoded(w.channel.parent, t.data)
            else:
                flags = _wire.TIMED if t.timeout else 0
                _wire.send(w.channel.parent, t.seq, flags, t.data, block=False)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # pragma: no cover - the channel was closed
            return False
        # The loop sleeps until the next deadline it knew of: a sooner one
        # must wake it.
        if t.timeout and time.monotonic() + t.timeout < self._sleep_until:
            self._wake()
        return True

    def _take(self, w: _Worker) -> int | None:
        """Take the next message queued for *w* back out of its channel
        (the schedule's ``take``; lock held): its seq, or None if none.

        The task keeps its pickle: the message is dropped.
        """
        try:
            msg = _wire.recv(w.channel.child, self._buf, block=False)
        except (BlockingIOError, InterruptedError):
            return None  # nothing queued, or the worker took it first
        if msg is None:  # pragma: no cover
            return None
        _discard(msg)
        return msg.seq

    def _wake_put(self) -> None:
        """Wake a waiting ``put()`` once the backlog is half empty (lock
        held; after anything that may have drained the backlog)."""
        if self._put_waiting and self._sched.low():
            self._room.notify_all()

    def _wake(self) -> None:
        self._waker.wake()

    # --- the result handler's side: the event loop ------------------------

    def get(self) -> Any:
        """Return the next ``(job, i, (ok, value))`` (``Pool._quick_get``)."""
        results = self._results
        sched = self._sched
        while True:
            if self._stopped:
                return None
            if results:
                item = results.popleft()
                if type(item) is _Raw:
                    return self._load(item)
                return item
            self._sleep_until = math.inf
            timeout = self._check_timeouts() if sched.timed else None
            if timeout is not None:
                self._sleep_until = time.monotonic() + timeout
            try:
                events = self._sel.select(timeout)
            except (OSError, ValueError):
                if self._closed:
                    return None
                raise
            for key, _ in events:
                kind = key.data
                if kind == _RESULTS:
                    # Looked up by fd: a reused channel keeps its
                    # registration while its worker changes.
                    w = sched.workers.get(key.fd)
                    if w is not None:
                        self._on_results(w)
                elif kind == _CTRL:
                    results.append(self._ctrl.recv())
                else:
                    self._waker.drain()

    @staticmethod
    def _load(item: _Raw) -> Any:
        try:
            value = ForkingPickler.loads(item.data)
        except Exception as e:  # noqa: BLE001 - delivered as the task's error
            # The stdlib's result thread would die here and hang the pool.
            return (item.job, item.index, (False, e))
        if value[0] is None:
            # The worker could not unpickle the task, so it could not name
            # the job (mpguard._pool._worker): the answer is for ours.
            return (item.job, item.index, value[2])
        return value

    def _on_results(self, w: _Worker) -> None:
        with self._lock:
            if w.dead:
                return
            self._read_results(w)
            # A result frees room: send the next task, or take one queued
            # behind a busy worker.
            self._sched.refill(w)
            self._wake_put()

    def _read_results(self, w: _Worker) -> int:
        """Queue what *w* has answered (lock held); return how many."""
        done = self._sched.done
        append = self._results.append
        got = 0
        for seq, data in _wire.recv_ready(w.channel.parent, self._buf, _READ_BATCH):
            t = done(w, seq)
            if t is None:  # pragma: no cover - never sent to this worker
                continue
            if isinstance(data, Exception):  # its payload could not be read
                append((t.job, t.index, (False, data)))
            else:
                append(_Raw(t.job, t.index, data))
            got += 1
        if got:
            self._sched.answered(w, got)
        return got

    def died(self, w: _Worker) -> None:
        """*w* exited and was reaped: deliver its results, requeue its
        unstarted tasks, and fail the one it had taken.

        Called from the join of the stdlib's worker-handler thread, which
        already wakes on every worker's sentinel (a pidfd) to replace it:
        watching the same pidfds here too would only add a second thread
        wake-up per exit.  Idempotent.
        """
        # Counted by _died, not by comparing len(self._results) before and
        # after: the loop pops results concurrently, and a pop between the
        # two reads hid the new one, so the loop slept on a result it never
        # returned (the lost task's get() hung).
        if self._died(w):
            self._wake()  # the loop may be asleep with nothing else to do

    def _died(self, w: _Worker) -> int:
        """Do :meth:`died`'s work; return how many results it added."""
        with self._lock:
            if w.dead:
                return 0
            read = 0
            if w.outstanding:  # the common exit (maxtasksperchild) skips this
                read = self._read_results(w)
            exitcode = w.proc.exitcode
            # The worker is gone: its slot word is final.
            lost, given_up = self._sched.died(w, w.stamp[0], exitcode)
            # Reuse the channel only after a clean exit with nothing left in
            # it (maxtasksperchild): no task, no unread close() sentinel.
            clean = not lost and not w.sent_none and exitcode == 0
            self._forget(w, reuse=clean)
            self._wake_put()
        for t in lost:
            err = self._lost(w, t, exitcode)
            self._results.append((t.job, t.index, (False, err)))
        for t in given_up:
            err = WorkerLostError(
                "workers keep exiting before they run any task",
                pid=w.proc.pid,
                exitcode=exitcode,
                task=_describe(t),
                hint="check the pool's initializer",
            )
            self._results.append((t.job, t.index, (False, err)))
        return read + len(lost) + len(given_up)

    def _lost(self, w: _Worker, t: Task, exitcode: int | None) -> Exception:
        if w.killed_for == t.seq:
            return TaskTimeoutError(
                "task timed out; its worker and everything it started were killed",
                pid=w.proc.pid,
                exitcode=exitcode,
                task=_describe(t),
                timeout=t.timeout,
            )
        return WorkerLostError(
            "worker died while running a task",
            pid=w.proc.pid,
            exitcode=exitcode,
            task=_describe(t),
        )

    def _forget(self, w: _Worker, *, reuse: bool = False) -> None:
        """Stop feeding *w*; keep its channel for reuse or close it (lock held)."""
        self._sched.remove(w.channel.parent.fileno(), w)
        w.stamp.release()  # release the buffer export before unmapping
        if reuse and not self._closed and len(self._free) < self._processes:
            self._free.append(w.channel)
            return
        self._release(w.channel)

    def _release(self, channel: Channel) -> None:
        self._made.discard(id(channel))
        fd = channel.parent.fileno()
        if fd in self._registered:
            self._registered.discard(fd)
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
        channel.close()

    # --- timeouts ----------------------------------------------------------

    def _check_timeouts(self) -> float | None:
        """Kill overrunning workers; return seconds until the next deadline."""
        now = int(time.monotonic() * 1000)
        with self._lock:
            victims, soonest = self._sched.expired(now, _word)
        for w in victims:
            # SIGKILL the worker and its descendants at once: the task's
            # own children would otherwise outlive it.
            popen = _compat.process_popen(w.proc)
            if popen is not None:
                kill_now([popen])
        return soonest

    # --- shutdown ------------------------------------------------------------

    def stop(self) -> None:
        """Stop dispatching: ``get()`` returns None, ``put()`` drops tasks."""
        with self._lock:
            self._stopped = True
            self._room.notify_all()
        self._wake()

    def close(self) -> None:
        """Stop, and release every channel and descriptor.  Idempotent."""
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in list(self._sched.workers.values()):
                self._forget(w)
            for channel in self._free:
                self._release(channel)
            self._free.clear()
            # Out of the registry only: a worker still starting (a respawn
            # that outlived terminate()'s bounded join) keeps working
            # sockets, and the garbage collector closes them with its
            # Process, as it closes the unstarted ones.
            for key in self._made:
                _OPEN.pop(key, None)
            self._made.clear()
            self._sched.backlog.clear()
            self._sel.close()
            self._waker.close()


def _discard(msg: _wire.Message) -> None:
    """Drop a message taken back from a channel (the task keeps its data)."""
    if msg.fd is not None:
        os.close(msg.fd)
