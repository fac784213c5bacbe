"""GuardedPool's scheduling decisions, as plain code.

Which worker gets a task, what waits in the backlog, when an idle worker
takes a queued task from a busy one, which tasks of a dead worker go to
another worker and which one is lost, when the pool gives up on workers
that keep dying, which timed task overran: all of it is decided here, on
plain data, so that it can be tested without starting a process.

Nothing here touches a socket, a lock, a clock or a process.  The
dispatcher (``_dispatch``) owns those: it holds its lock around every call,
passes the clock and the workers' slot words in, and supplies the two
operations on a worker's channel that a decision needs:

* ``send(w, task) -> bool``: queue *task* in *w*'s channel without
  blocking; False (nothing sent) when the channel is full.
* ``take(w) -> int | None``: take the next message still queued in *w*'s
  channel back out of it; its ``seq``, or None when nothing is queued.  It
  raises OSError if the channel cannot be read.

This is on the per-task path (``map`` of 100k tiny items, 20k
``apply_async``): one ``Task`` per task, ``__slots__`` everywhere, and no
other allocation per task.
"""

from __future__ import annotations

import math
from collections import deque

from . import _wire

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Generic, TypeVar

__all__ = ["BACKLOG_MAX", "PREFETCH", "Schedule", "Task", "Worker"]

#: Tasks queued in one worker's channel, counting the one it runs.  Enough
#: to hide the round trip to the parent between tiny tasks; idle workers
#: take queued tasks back, so a long task delays nothing behind it.
PREFETCH = 4
#: Tasks waiting for a worker before ``put()`` blocks, which is what keeps
#: ``imap`` over an endless generator from pickling it all up front (the
#: stdlib gets that from its pipe filling up).
BACKLOG_MAX = 256


class Task:
    """One task of the pool: ``task`` is the stdlib's ``(job, i, func, args,
    kwds)``, *data* its pickle (or its whole message if *encoded*), *seq*
    its number on the wire."""

    __slots__ = ("args", "data", "encoded", "func", "index", "job", "seq", "timeout")

    def __init__(
        self,
        seq: int,
        task: tuple[Any, ...],
        data: bytes,
        timeout: float | None,
        *,
        encoded: bool = False,
    ) -> None:
        self.seq = seq
        self.job = task[0]
        self.index = task[1]
        # Kept only to describe the task in an error.
        self.func = task[2]
        self.args = task[3]
        # The pickled task, kept until it is answered: a task taken back
        # from a channel, or received by a worker that died before starting
        # it, is sent again from here.  At most PREFETCH per worker.
        self.data = data
        # *data* is the whole message, header included (``_wire.encode``).
        self.encoded = encoded
        self.timeout = timeout


class Worker:
    """A worker as the schedule sees it: the tasks it holds and its limits.

    The dispatcher subclasses it to add the worker's channel and slot.
    """

    __slots__ = (
        "answered",
        "budget",
        "dead",
        "killed_for",
        "outstanding",
        "proc",
        "sent_none",
    )

    def __init__(self, budget: int | None) -> None:
        # The process once started; None before.  Only whether it is set
        # matters here (a worker not started yet cannot be killed).
        self.proc: Any = None
        self.budget = budget  # tasks it may still be given (maxtasksperchild)
        # seq -> task, in the order sent: the worker's own FIFO order, so
        # the first one is the task it runs (or will run next).
        self.outstanding: dict[int, Task] = {}
        self.sent_none = False  # it was sent close()'s sentinel
        self.dead = False
        self.killed_for: int | None = None  # seq of the task it overran
        self.answered = 0

    def room(self) -> int:
        """How many more tasks it may be sent now."""
        if self.dead or self.sent_none:
            return 0
        free = PREFETCH - len(self.outstanding)
        if self.budget is not None:
            free = min(free, self.budget)
        return free


if TYPE_CHECKING:
    W = TypeVar("W", bound=Worker)
else:
    # typing.Generic's subscription without importing typing (2 ms of a
    # cold start): Schedule[W] is for the type checker only.
    class Generic:
        __slots__ = ()

        def __class_getitem__(cls, item: object) -> type:
            return cls

    W = Worker


class Schedule(Generic[W]):
    """The pool's workers, their queued tasks and the backlog, and every
    decision about them (see the module docstring for *send* and *take*).

    Args:
        processes: the pool size (for the "workers keep dying" check).
        send: queue a task in a worker's channel without blocking.
        take: take the next queued message back out of a worker's channel.
    """

    __slots__ = (
        "_send",
        "_take",
        "backlog",
        "early_deaths",
        "processes",
        "timed",
        "workers",
    )

    def __init__(
        self,
        processes: int,
        send: Callable[[W, Task], bool],
        take: Callable[[W], int | None],
    ) -> None:
        self.processes = processes
        self._send = send
        self._take = take
        # Keyed by whatever the dispatcher finds a worker by (its channel's
        # fd); in the order added, which is the tie-break between workers.
        self.workers: dict[int, W] = {}
        self.backlog: deque[Task] = deque()
        self.timed = 0  # timed tasks in workers' channels
        self.early_deaths = 0  # workers in a row that failed before answering

    # --- workers -------------------------------------------------------------

    def add(self, key: int, w: W) -> None:
        """Schedule tasks to *w* from now on."""
        self.workers[key] = w

    def remove(self, key: int, w: W) -> None:
        """Stop scheduling tasks to *w* (added as *key*)."""
        w.dead = True
        self.workers.pop(key, None)

    # --- tasks ----------------------------------------------------------------

    def full(self) -> bool:
        """Whether the backlog is full: ``put()`` must wait."""
        return len(self.backlog) >= BACKLOG_MAX

    def low(self) -> bool:
        """Whether the backlog is half empty: a waiting ``put()`` may go on.

        Not as soon as it is below the bound: waking the putting thread for
        every free slot costs a GIL hand-off per task.
        """
        return len(self.backlog) <= BACKLOG_MAX // 2

    def pick(self) -> W | None:
        """The worker with the most room (the first of equals), or None."""
        best, most = None, 0
        for w in self.workers.values():
            room = w.room()
            if room > most:
                best, most = w, room
        return best

    def assign(self, t: Task) -> None:
        """Send *t* to the worker with the most room, or queue it in the
        backlog."""
        # Only an empty backlog may be skipped: the tasks in it are older.
        # Called only after put() waited for room: while it waited, the
        # loop may have emptied the backlog and left workers idle, and a
        # task appended then would wait for an event that never comes.
        if not self.backlog:
            w = self.pick()
            if w is not None and self._give(w, t):
                return
        # Invariant: a non-empty backlog means every worker was full
        # when it filled, so each will answer and be refilled.
        self.backlog.append(t)

    def _give(self, w: W, t: Task) -> bool:
        """Send *t* to *w* and account for it; False if its channel is full."""
        # Counted before the send: the I/O side wakes the event loop for a
        # timed task, and the loop reads ``timed`` without the lock to
        # decide whether it needs a deadline at all.  Counted after, the
        # loop could wake, read 0, and sleep with no deadline: the task
        # would never be killed.
        if t.timeout:
            self.timed += 1
        if not self._send(w, t):
            if t.timeout:
                self.timed -= 1
            return False
        w.outstanding[t.seq] = t
        if w.budget is not None:
            w.budget -= 1
        return True

    def refill(self, w: W) -> None:
        """Top *w* up from the backlog, or let it take queued work."""
        backlog = self.backlog
        if backlog:
            while backlog and w.room() > 0:
                t = backlog.popleft()
                if not self._give(w, t):
                    backlog.appendleft(t)
                    break
        elif not w.outstanding and w.room() > 0:
            self._steal_for(w)

    def _steal_for(self, w: W) -> None:
        """Move one queued, unstarted task from the busiest worker to *w*."""
        victim = max(
            (v for v in self.workers.values() if v is not w and not v.dead),
            key=lambda v: len(v.outstanding),
            default=None,
        )
        # A worker's first task is the one it runs (or is about to): only
        # the ones queued behind it can be taken.
        if victim is None or len(victim.outstanding) < 2:
            return
        seq = self._take(victim)
        if seq is None:
            return  # the victim took it first
        t = victim.outstanding.pop(seq, None)
        if t is None:  # pragma: no cover - only tasks are queued
            return
        if victim.budget is not None:
            victim.budget += 1
        if t.timeout:
            self.timed -= 1
        if not self._give(w, t):  # pragma: no cover - empty channel
            self.backlog.appendleft(t)

    def fill(self) -> None:
        """Refill every worker (tasks were requeued)."""
        for w in list(self.workers.values()):
            self.refill(w)

    # --- answers --------------------------------------------------------------

    def done(self, w: W, seq: int) -> Task | None:
        """*w* answered task *seq*: forget it; None if *w* did not have it."""
        t = w.outstanding.pop(seq, None)
        if t is not None and t.timeout:
            self.timed -= 1
        return t

    def answered(self, w: W, count: int) -> None:
        """*w* answered *count* tasks (after as many ``done()``)."""
        w.answered += count
        # A worker that answers ran its initializer: the pool works.
        self.early_deaths = 0

    def sentinel_to(self) -> W | None:
        """The worker to send close()'s next ``None`` sentinel to, marked
        as sent; None once every live worker has one.

        The stdlib sends one None per worker once close() has drained the
        cache: each worker gets one, after everything it was given.
        """
        for w in self.workers.values():
            if not w.dead and not w.sent_none:
                w.sent_none = True
                return w
        return None

    # --- deaths ---------------------------------------------------------------

    def abort(self, w: W) -> None:
        """*w* failed to start: give the tasks queued for it to the others."""
        w.dead = True
        self.backlog.extendleft(reversed(self._take_back(w)))
        self.fill()

    def died(
        self, w: W, word: int, exitcode: int | None
    ) -> tuple[list[Task], list[Task]]:
        """*w* exited (its results already read; *word* is its slot word).

        Requeues its unstarted tasks at the front of the backlog, in order,
        and returns ``(lost, given_up)``: the task it had started (at most
        one), and, if the pool gives up (:meth:`gives_up`), every task it
        would otherwise have requeued plus the whole backlog.
        """
        w.dead = True
        lost: list[Task] = []
        requeue: list[Task] = []
        if w.outstanding:  # the common exit (maxtasksperchild) skips this
            requeue = self._take_back(w)
            # What is left was received whole: at most one task, since
            # a worker takes the next only after answering.  Without
            # its "started" mark it never ran (the worker died inside
            # recvmsg, or just after): that one goes to another worker.
            for t in list(w.outstanding.values()):
                if not _wire.started(word, t.seq):
                    del w.outstanding[t.seq]
                    if t.timeout:
                        self.timed -= 1
                    requeue.append(t)
            lost = list(w.outstanding.values())
            w.outstanding.clear()
            self.timed -= sum(1 for t in lost if t.timeout)
        given_up: list[Task] = []
        if self.gives_up(w, lost, exitcode):
            # Handing the tasks on would only feed the next worker that
            # fails the same way (a slow spawn start leaves no moment
            # with a task in the backlog): fail them all.
            given_up = [*requeue, *self.backlog]
            self.backlog.clear()
        elif requeue:
            self.backlog.extendleft(reversed(requeue))
            self.fill()
        return lost, given_up

    def gives_up(self, w: W, lost: list[Task], exitcode: int | None) -> bool:
        """Count *w* if it exited with an error before taking any task;
        True once that happened ``max(3, processes)`` times in a row.

        Workers that do so again and again are the stdlib's endless respawn
        loop around a failing initializer, where every task would wait
        forever.  Signals do not count: a kill storm is not this.  Any
        answer from any worker resets the count (:meth:`answered`).
        """
        if lost or w.answered or not exitcode or exitcode < 0:
            return False
        self.early_deaths += 1
        return self.early_deaths >= max(3, self.processes)

    def _take_back(self, w: W) -> list[Task]:
        """Take every task still queued for (dead) *w* out of its channel.

        Messages are atomic, so each task is either here or was received
        whole by the worker: these never started.
        """
        back = []
        take = self._take
        while True:
            try:
                seq = take(w)
            except OSError:
                break
            if seq is None:
                break
            t = w.outstanding.pop(seq, None)
            if t is None:  # the close() sentinel
                continue
            if t.timeout:
                self.timed -= 1
            back.append(t)
        return back

    # --- timeouts ---------------------------------------------------------------

    def expired(
        self, now_ms: int, word: Callable[[W], int]
    ) -> tuple[list[W], float | None]:
        """Workers whose timed task overran at clock *now_ms* (milliseconds,
        as :func:`_wire.stamp`), each marked ``killed_for`` that task, and
        the seconds until the next deadline (None: no timed task runs).

        *word* reads a worker's slot word.
        """
        victims = []
        soonest = math.inf
        for w in self.workers.values():
            if w.dead or w.proc is None or w.killed_for is not None:
                continue
            if not w.outstanding:
                continue
            t = next(iter(w.outstanding.values()))
            if not t.timeout:
                continue
            stamp = word(w)
            if _wire.started(stamp, t.seq):
                left = t.timeout - _wire.elapsed_ms(stamp, now_ms) / 1000
            else:  # not started yet: it cannot end before a full timeout
                left = t.timeout
            if left <= 0:
                w.killed_for = t.seq
                victims.append(w)
            else:
                soonest = min(soonest, left)
        return victims, None if soonest == math.inf else soonest
