"""The pool's scheduling decisions, without a process or a socket.

Each worker's channel is modelled by ``Channels``: a queue of task numbers
per worker, as the socket's receive queue would hold them.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING

import pytest

from mpguard._pool import _wire
from mpguard._pool._schedule import BACKLOG_MAX, PREFETCH, Schedule, Task, Worker

if TYPE_CHECKING:
    from collections.abc import Iterable

#: A slot word that says no task was started (seq 0 is never a task's).
UNSTARTED = _wire.mark(0)
#: A monotonic clock reading, in ms, at which timed tasks are stamped.
T0 = 5_000_000


class Channels:
    """Every worker's channel: the seqs queued in it, oldest first."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.queued: dict[Worker, deque[int]] = {}

    def send(self, w: Worker, t: Task) -> bool:
        """The schedule's ``send``: False when *w*'s channel is full."""
        q = self.queued.setdefault(w, deque())
        if len(q) >= self.capacity:
            return False
        q.append(t.seq)
        return True

    def take(self, w: Worker) -> int | None:
        """The schedule's ``take``: the oldest queued seq, or None."""
        q = self.queued.get(w)
        return q.popleft() if q else None

    def receive(self, w: Worker) -> int:
        """The worker takes its next message."""
        return self.queued[w].popleft()

    def of(self, w: Worker) -> list[int]:
        """The seqs queued in *w*'s channel."""
        return list(self.queued.get(w, ()))


def make(processes: int = 2, capacity: int = 100) -> tuple[Schedule[Worker], Channels]:
    """A schedule over fake channels of *capacity* messages."""
    ch = Channels(capacity)
    return Schedule(processes, ch.send, ch.take), ch


_keys = itertools.count()


def add(s: Schedule[Worker], budget: int | None = None) -> Worker:
    """A new worker (as the dispatcher adds one, keyed by its channel)."""
    w = Worker(budget)
    s.add(next(_keys), w)
    return w


def task(seq: int, timeout: float | None = None) -> Task:
    """Task *seq*, as ``put()`` makes it."""
    return Task(seq, ("job", seq, len, (seq,), {}), b"pickle", timeout)


def assign(s: Schedule[Worker], *seqs: int, timeout: float | None = None) -> None:
    """Hand tasks *seqs* to the schedule, in order."""
    for seq in seqs:
        s.assign(task(seq, timeout))


def seqs(tasks: Iterable[Task]) -> list[int]:
    """The seqs of *tasks*, in order."""
    return [t.seq for t in tasks]


def sent(w: Worker) -> list[int]:
    """The seqs *w* holds, in the order sent."""
    return list(w.outstanding)


# --- picking a worker --------------------------------------------------------


def test_task_goes_to_the_worker_with_most_room():
    s, _ = make()
    a, b, c = add(s), add(s), add(s)
    assign(s, 1, 2, 3, 4, 5)
    # Equal room: the first added wins, so tasks go round.
    assert (sent(a), sent(b), sent(c)) == ([1, 4], [2, 5], [3])
    assert s.pick() is c
    b.outstanding.clear()
    assert s.pick() is b


def test_dead_or_closing_workers_get_nothing():
    s, _ = make()
    a, b = add(s), add(s)
    a.dead = True
    assert s.pick() is b
    b.sent_none = True
    assert (a.room(), b.room()) == (0, 0)
    assert s.pick() is None
    assign(s, 1)
    assert seqs(s.backlog) == [1]


def test_prefetch_bounds_each_worker_and_the_rest_waits():
    s, ch = make()
    w = add(s)
    assign(s, *range(1, PREFETCH + 3))
    assert sent(w) == list(range(1, PREFETCH + 1))
    assert ch.of(w) == list(range(1, PREFETCH + 1))
    assert seqs(s.backlog) == [PREFETCH + 1, PREFETCH + 2]
    assert w.room() == 0
    assert s.pick() is None


def test_maxtasksperchild_budget_limits_what_a_worker_is_given():
    s, _ = make()
    w = add(s, budget=2)
    assign(s, 1, 2, 3)
    assert sent(w) == [1, 2]
    assert w.budget == 0
    assert seqs(s.backlog) == [3]
    assert s.done(w, 1) is not None
    s.refill(w)
    assert sent(w) == [2]
    assert seqs(s.backlog) == [3]


def test_full_channel_leaves_the_task_in_the_backlog():
    s, ch = make(capacity=1)
    w = add(s, budget=5)
    assign(s, 1, 2, 3)
    assert sent(w) == [1]
    assert ch.of(w) == [1]
    assert w.budget == 4
    assert seqs(s.backlog) == [2, 3]
    ch.receive(w)
    s.refill(w)
    assert sent(w) == [1, 2]
    assert seqs(s.backlog) == [3]


# --- the backlog ----------------------------------------------------------------


def test_backlog_is_first_in_first_out():
    s, ch = make()
    w = add(s)
    assign(s, *range(1, 11))
    assert seqs(s.backlog) == [5, 6, 7, 8, 9, 10]
    for seq in (1, 2):
        assert ch.receive(w) == seq
        s.done(w, seq)
        s.answered(w, 1)
        s.refill(w)
    assert sent(w) == [3, 4, 5, 6]
    assert seqs(s.backlog) == [7, 8, 9, 10]


def test_a_task_skips_only_an_empty_backlog():
    s, _ = make()
    w = add(s)
    assign(s, 1, 2, 3, 4, 5)
    s.done(w, 1)  # room again, not yet refilled
    assign(s, 6)
    assert sent(w) == [2, 3, 4]
    assert seqs(s.backlog) == [5, 6]


def test_put_waits_at_the_bound_and_is_woken_at_half():
    s, _ = make()  # no worker: everything waits
    assign(s, *range(1, BACKLOG_MAX))
    assert len(s.backlog) == BACKLOG_MAX - 1
    assert not s.full()
    assign(s, BACKLOG_MAX)
    assert s.full()
    while len(s.backlog) > BACKLOG_MAX // 2 + 1:
        s.backlog.popleft()
    assert not s.low()
    s.backlog.popleft()
    assert len(s.backlog) == BACKLOG_MAX // 2
    assert s.low()
    assert s.backlog[0].seq == BACKLOG_MAX // 2 + 1


# --- refill and stealing ----------------------------------------------------------


def test_refill_takes_from_the_backlog_before_stealing():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2, 3, 4, 5)
    b = add(s)
    ch.receive(a)
    s.refill(b)
    assert sent(b) == [5]
    assert sent(a) == [1, 2, 3, 4]
    assert ch.of(a) == [2, 3, 4]
    assert not s.backlog


def test_idle_worker_takes_the_next_queued_task_of_the_busiest():
    s, ch = make()
    a = add(s, budget=10)
    assign(s, 1, 2)
    assign(s, 3, timeout=7.0)
    assign(s, 4)
    c = add(s)
    assign(s, 5, 6)
    b = add(s, budget=10)
    assert (sent(a), sent(c)) == ([1, 2, 3, 4], [5, 6])
    ch.receive(a)
    ch.receive(c)
    assert (a.budget, s.timed) == (6, 1)
    s.refill(b)
    assert sent(b) == [2]
    assert ch.of(b) == [2]
    assert sent(a) == [1, 3, 4]
    assert ch.of(a) == [3, 4]
    assert sent(c) == [5, 6]
    assert (a.budget, b.budget) == (7, 9)
    s.done(b, 2)
    s.refill(b)  # takes the timed one: still counted once
    assert sent(b) == [3]
    assert s.timed == 1


def test_no_stealing_from_a_worker_with_one_task():
    s, ch = make()
    a = add(s)
    assign(s, 1)
    b = add(s)
    s.refill(b)  # task 1 is still in a's channel, but it is a's next
    assert (sent(a), sent(b)) == ([1], [])
    assert ch.of(a) == [1]


def test_a_worker_with_work_does_not_steal():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2, 3, 4)
    b = add(s)
    assign(s, 5)
    s.refill(b)
    assert (sent(a), sent(b)) == ([1, 2, 3, 4], [5])
    assert ch.of(a) == [1, 2, 3, 4]


def test_no_stealing_if_the_victim_took_it_first():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2)
    ch.queued[a].clear()  # received meanwhile (the race with the worker)
    b = add(s)
    s.refill(b)
    assert (sent(a), sent(b)) == ([1, 2], [])


def test_no_stealing_from_a_dead_worker():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2, 3)
    a.dead = True
    b = add(s)
    s.refill(b)
    assert (sent(a), sent(b)) == ([1, 2, 3], [])
    assert ch.of(a) == [1, 2, 3]


# --- answers ----------------------------------------------------------------


def test_an_answer_frees_room_and_counts():
    s, _ = make()
    w = add(s)
    assign(s, 1, timeout=3.0)
    assert (s.timed, w.room()) == (1, PREFETCH - 1)
    t = s.done(w, 1)
    assert t is not None
    assert (t.seq, t.timeout) == (1, 3.0)
    assert (s.timed, w.room()) == (0, PREFETCH)
    assert s.done(w, 99) is None
    s.early_deaths = 2
    s.answered(w, 3)
    assert (w.answered, s.early_deaths) == (3, 0)


def test_one_close_sentinel_per_live_worker():
    s, _ = make()
    a, b, c = add(s), add(s), add(s)
    b.dead = True
    assert s.sentinel_to() is a
    assert s.sentinel_to() is c
    assert s.sentinel_to() is None
    assert (a.sent_none, b.sent_none, c.sent_none) == (True, False, True)
    assert a.room() == 0


# --- deaths -------------------------------------------------------------------


def test_death_requeues_what_never_started_and_loses_the_started_task():
    s, ch = make()
    w = add(s)
    assign(s, 1, timeout=5.0)
    assign(s, 2)
    assign(s, 3, timeout=5.0)
    assign(s, 4, 5, 6)
    assert ch.receive(w) == 1
    assert s.timed == 2
    lost, given_up = s.died(w, _wire.stamp(1), exitcode=-9)
    assert seqs(lost) == [1]
    assert given_up == []
    assert seqs(s.backlog) == [2, 3, 4, 5, 6]
    assert ch.of(w) == []
    assert (w.dead, w.outstanding, s.timed) == (True, {}, 0)
    assert s.early_deaths == 0


def test_a_received_task_without_the_started_mark_is_requeued():
    s, ch = make()
    w = add(s)
    assign(s, 1, 2, 3)
    ch.receive(w)  # died inside recvmsg, or just after: no mark
    lost, given_up = s.died(w, _wire.mark(0), exitcode=-9)
    assert (lost, given_up) == ([], [])
    # Taken back from the channel first, then the one it had received.
    assert seqs(s.backlog) == [2, 3, 1]


def test_requeued_tasks_go_before_the_backlog():
    s, ch = make()
    w = add(s)
    assign(s, *range(1, 9))
    ch.receive(w)
    s.died(w, _wire.mark(1), exitcode=1)
    assert seqs(s.backlog) == [2, 3, 4, 5, 6, 7, 8]


def test_requeued_tasks_go_to_a_worker_with_room():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2, 3, 4, 5)
    b = add(s)
    c = add(s)
    assign(s, 6)  # backlog not empty: behind 5
    ch.receive(a)
    lost, _ = s.died(a, _wire.mark(1), exitcode=-9)
    assert seqs(lost) == [1]
    assert (sent(b), sent(c)) == ([2, 3, 4, 5], [6])
    assert ch.of(b) == [2, 3, 4, 5]
    assert not s.backlog


def test_take_back_skips_the_close_sentinel():
    s, ch = make()
    w = add(s)
    assign(s, 1, 2)
    assert s.sentinel_to() is w
    ch.queued[w].insert(1, 0)  # close()'s None, skipped wherever it is
    assert ch.of(w) == [1, 0, 2]
    ch.receive(w)
    lost, _ = s.died(w, _wire.mark(1), exitcode=0)
    assert seqs(lost) == [1]
    assert seqs(s.backlog) == [2]
    assert ch.of(w) == []


def test_clean_exit_with_nothing_left():
    s, ch = make()
    w = add(s, budget=1)
    assign(s, 1)
    ch.receive(w)
    s.done(w, 1)
    s.answered(w, 1)
    assert s.died(w, _wire.mark(1), exitcode=0) == ([], [])
    assert (w.dead, list(s.backlog), s.early_deaths) == (True, [], 0)


def test_abort_gives_the_queued_tasks_to_the_others():
    s, ch = make()
    a = add(s)
    assign(s, 1, 2, 3, 4, 5)
    b = add(s)
    s.abort(a)
    assert a.dead
    assert ch.of(a) == []
    assert sent(b) == [1, 2, 3, 4]
    assert seqs(s.backlog) == [5]


def test_remove_stops_scheduling_to_a_worker():
    s, _ = make()
    a, b = add(s), add(s)
    (key,) = [k for k, v in s.workers.items() if v is a]
    s.remove(key, a)
    assert a.dead
    assert list(s.workers.values()) == [b]


# --- giving up on a failing initializer ---------------------------------------------


def _early_death(s: Schedule[Worker], exitcode: int | None = 1) -> list[Task]:
    """A worker that gets the first tasks and dies before taking one."""
    w = Worker(None)
    s.add(-1, w)
    s.refill(w)
    lost, given_up = s.died(w, UNSTARTED, exitcode)
    assert lost == []
    s.remove(-1, w)
    return given_up


@pytest.mark.parametrize(("processes", "limit"), [(1, 3), (3, 3), (5, 5)])
def test_gives_up_after_max_3_processes_early_deaths_in_a_row(processes, limit):
    s, _ = make(processes)
    assign(s, *range(1, 8))
    for n in range(1, limit):
        assert _early_death(s) == []
        assert s.early_deaths == n
        assert seqs(s.backlog) == list(range(1, 8))
    assert seqs(_early_death(s)) == list(range(1, 8))
    assert not s.backlog
    assert s.early_deaths == limit


@pytest.mark.parametrize("exitcode", [0, None, -9, -15])
def test_signals_and_clean_exits_do_not_count(exitcode):
    s, _ = make(1)
    assign(s, 1)
    for _ in range(5):
        assert _early_death(s, exitcode) == []
    assert s.early_deaths == 0
    assert seqs(s.backlog) == [1]


def test_a_worker_that_answered_or_lost_a_task_does_not_count():
    s, ch = make(1)
    _early_death(s)
    assert s.early_deaths == 1
    w = add(s)
    w.answered = 1
    assert s.gives_up(w, [], 1) is False
    assert s.gives_up(w, [task(1)], 1) is False
    w.answered = 0
    assign(s, 2)
    ch.receive(w)
    lost, given_up = s.died(w, _wire.mark(2), exitcode=1)
    assert (seqs(lost), given_up) == ([2], [])
    assert s.early_deaths == 1


def test_any_answer_resets_the_count():
    s, _ = make(1)
    _early_death(s)
    _early_death(s)
    assert s.early_deaths == 2
    s.answered(Worker(None), 1)
    assert s.early_deaths == 0
    assert _early_death(s) == []
    assert _early_death(s) == []
    assert s.early_deaths == 2


# --- timeouts -----------------------------------------------------------------


def started_at(seq: int, ms: int) -> int:
    """The slot word of timed task *seq* stamped at clock *ms*."""
    return _wire.mark(seq) | ms


def test_started_task_past_its_deadline_is_a_victim():
    s, _ = make()
    w = add(s)
    w.proc = "proc"
    assign(s, 1, timeout=2.0)
    word = started_at(1, T0)
    assert _wire.started(word, 1)
    assert _wire.elapsed_ms(word, T0 + 500) == 500
    assert s.expired(T0 + 500, lambda _: word) == ([], 1.5)
    assert w.killed_for is None
    assert s.expired(T0 + 2000, lambda _: word) == ([w], None)
    assert w.killed_for == 1
    # Killed once: the death is on its way.
    assert s.expired(T0 + 9000, lambda _: word) == ([], None)


def test_a_task_not_started_yet_is_not_a_victim():
    s, _ = make()
    w = add(s)
    w.proc = "proc"
    assign(s, 1, timeout=2.0)
    assign(s, 2, timeout=2.0)
    word = started_at(0, T0)  # an earlier task's stamp
    assert not _wire.started(word, 1)
    assert s.expired(T0 + 60_000, lambda _: word) == ([], 2.0)
    assert w.killed_for is None


def test_the_next_deadline_is_the_soonest():
    s, _ = make()
    a = add(s)
    assign(s, 1, timeout=2.0)
    b = add(s)
    assign(s, 2, timeout=5.0)
    a.proc = b.proc = "proc"
    words = {a: started_at(1, T0), b: started_at(2, T0 + 250)}
    assert s.expired(T0 + 1000, words.__getitem__) == ([], 1.0)
    assert s.expired(T0 + 2000, words.__getitem__) == ([a], 3.25)
    assert (a.killed_for, b.killed_for) == (1, None)


def test_untimed_or_unstarted_workers_have_no_deadline():
    s, _ = make()
    a = add(s)
    assign(s, 1)  # untimed, ahead of a timed one
    assign(s, 2, timeout=0.5)
    b = add(s)
    assign(s, 3, timeout=0.5)  # b has no process yet
    a.proc = "proc"
    words = {a: started_at(1, T0), b: started_at(3, T0)}
    assert s.expired(T0 + 10_000, words.__getitem__) == ([], None)
    assert (a.killed_for, b.killed_for) == (None, None)
