"""billiard's internals (billiard 4.x, Celery's multiprocessing fork).

Touched: ``billiard.context._concrete_contexts``, ``Supervisor._state``,
``Pool._state``, ``billiard.pool.TERMINATE``, ``threading._active``,
``Pool._process_by_pid``, ``Process._popen``, the ``_controlled_termination``
and ``_job_terminated`` marks, the result handler's ``state_handlers`` (its
``DEATH`` entry) and the queues' ``_wlock``, and, overridden,
``Pool._help_stuff_finish`` (with the inqueue's ``_rlock`` and ``_reader``),
``Pool.process_flush_queues``, ``TimeoutHandler._trywaitkill`` and
``Worker._make_child_methods``.
"""

from __future__ import annotations

import sys
import threading
import time

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "billiard_pool_class",
    "billiard_popen",
    "billiard_pool_state",
    "billiard_worker_by_pid",
    "billiard_worker_hooked",
    "guarded_timeout_handler",
    "mark_job_terminated",
    "register_billiard_context",
    "stop_billiard_respawn",
]


def register_billiard_context(name: str, ctx: object) -> object:
    """:func:`register_context` for billiard's table of contexts.

    ``billiard.context._concrete_contexts`` plays the same part in billiard
    (4.x) as in CPython: ``get_context``, ``set_start_method`` and the
    child's ``_force_start_method`` resolve names in it.
    """
    import billiard.context  # noqa: PLC0415 - optional dependency

    table: dict[str, object] = billiard.context._concrete_contexts
    return table.setdefault(name, ctx)


def stop_billiard_respawn() -> None:
    """:func:`stop_pool_respawn` for every billiard Pool of this process.

    billiard pools are not registered with the guard (Celery builds them
    itself), so they are found through their ``Supervisor`` threads, whose
    ``pool`` attribute is the pool.  Without this a Supervisor that sees
    the teardown's dead workers starts replacements, gets GuardClosedError
    and ends the whole process with ``os._exit(1)`` (billiard's
    ``PoolThread.run``).  billiard 4.x: ``Supervisor._state``,
    ``Pool._state``, ``TERMINATE``.  Pools without a Supervisor (Celery's
    AsynPool) respawn from the event loop of the main thread, which the
    teardown occupies.

    Takes no lock: it may run in a signal handler, in a main thread that
    was interrupted holding ``threading``'s own lock, so the thread table
    (``threading._active``, 3.9-3.15) is copied without
    ``threading.enumerate()``.
    """
    pool_mod = sys.modules.get("billiard.pool")
    if pool_mod is None:
        return
    threads: list[Any] = []
    for _ in range(10):
        try:
            threads = list(threading._active.values())  # type: ignore[attr-defined]
            break
        except RuntimeError:  # changed size while copied: try again
            continue
    for thread in threads:
        if isinstance(thread, pool_mod.Supervisor):
            thread._state = pool_mod.TERMINATE
            pool = getattr(thread, "pool", None)
            if pool is not None:
                pool._state = pool_mod.TERMINATE


def billiard_popen(proc: Any) -> Any:
    """A billiard process's Popen, or None before it started."""
    return getattr(proc, "_popen", None)


def billiard_pool_state(pool: Any) -> Any:
    """A billiard Pool's ``_state`` (RUN, CLOSE, TERMINATE)."""
    return pool._state


def billiard_worker_by_pid(pool: Any, pid: int) -> Any:
    """The worker process of billiard *pool* whose pid is *pid*, or None."""
    proc, _ = pool._process_by_pid(pid)
    return proc


def mark_job_terminated(proc: Any) -> None:
    """Mark *proc* as terminated on purpose, as ``Pool.terminate_job`` does:
    billiard then reports its job as terminated, not as a lost worker."""
    proc._controlled_termination = True
    proc._job_terminated = True


def guarded_timeout_handler(kill: Callable[[Any], None]) -> type:
    """billiard's ``TimeoutHandler`` with *kill(worker)* for a hard limit.

    billiard's ``_trywaitkill`` sends SIGTERM to the worker (to its whole
    group only if the worker leads one, billiard PR #204), then SIGKILL to
    the worker alone after 0.1 s: what the task started runs on.  Both the
    threaded Pool and Celery's AsynPool end a hard time limit there.
    """
    import billiard.pool  # noqa: PLC0415 - optional dependency

    class TimeoutHandler(billiard.pool.TimeoutHandler):  # type: ignore[misc]
        def _trywaitkill(self, worker: Any) -> None:
            kill(worker)

    return TimeoutHandler


def billiard_worker_hooked(base: type, waiting: Callable[[bool], object]) -> type:
    """billiard Worker class *base* that calls ``waiting(True)`` in the
    worker process before each wait for a job and ``waiting(False)`` once
    the wait returns.

    billiard's ``Worker._make_child_methods`` builds ``wait_for_job``, the
    one call the work loop makes between jobs; it is wrapped there.  The
    wait may block until the next job arrives (Celery's AsynPool reads a
    whole payload), so *waiting* is told, not polled.
    """

    class Worker(base):  # type: ignore[misc,valid-type,unused-ignore]
        def _make_child_methods(self, *args: Any, **kwargs: Any) -> None:
            super()._make_child_methods(*args, **kwargs)
            wait_for_job: Any = getattr(self, "wait_for_job")  # noqa: B009 - untyped

            def wait_for_job_between_jobs(*a: Any, **kw: Any) -> Any:
                waiting(True)
                try:
                    return wait_for_job(*a, **kw)
                finally:
                    waiting(False)

            self.wait_for_job = wait_for_job_between_jobs

    return Worker


#: How long a queue lock may stay taken before its holder is taken for
#: dead.  A live worker holds the inqueue's read lock across one poll of at
#: most a second, and the result queue's write lock for one message.
TERMINATE_LOCK_WAIT = 1.5


def _take_or_free(lock: Any) -> bool:
    """Take *lock* within :data:`TERMINATE_LOCK_WAIT`; True if taken.

    Not taken by then, its holder is a dead worker (a live one holds it for
    one poll or one message): the lock is released for it, so that the
    pool's own threads, blocked on it too, go on.  A billiard ``Lock`` is a
    semaphore: any process may release it.
    """
    if lock.acquire(True, TERMINATE_LOCK_WAIT):
        return True
    try:
        lock.release()
    except ValueError:  # released meanwhile
        pass
    return False


#: Serializes the checks of write locks: two checks that both found a lock
#: stuck would release it twice, and two workers could then write at once.
_CHECK = threading.Lock()


def _free_if_stuck(lock: Any) -> None:
    """Free a queue's write lock *lock* if a dead worker holds it."""
    if lock is None:
        return
    with _CHECK:
        if _take_or_free(lock):
            lock.release()  # taken only to know it is free: put() takes it


def _end_dying_worker(pool: Any, pid: int, sig: int) -> None:
    """billiard's answer to a worker's DEATH message, once it is safe.

    A worker that leaves (a SIGTERM, its task limit) sends DEATH and then
    sleeps a second; billiard's result handler SIGTERMs it on receipt.  The
    worker is still inside ``put()`` then, between its write and releasing
    the result queue's write lock: on a busy machine the signal lands there
    (seen in about one hard time limit in three on two cores), the lock is
    never released, and the next worker's ACK blocks forever: the pool
    stops serving.  Here the signal waits until the lock is free.
    """
    _free_if_stuck(pool._outqueue._wlock)
    proc, _ = pool._process_by_pid(pid)
    popen = billiard_popen(proc) if proc is not None else None
    if popen is not None:
        popen.send_signal(sig)  # through the pidfd: the pid may be reaped


def billiard_pool_class(stragglers: Callable[[list[Any]], None]) -> type:
    """billiard's ``Pool`` whose ``terminate()`` cannot hang on a dead worker.

    billiard's ``terminate()`` takes two of the pool's queue locks with no
    timeout: the task queue's read lock (``_help_stuff_finish``), which an
    idle worker holds while it waits for work, and the result queue's write
    lock (``_set_result_sentinel``), which a worker holds while it sends a
    message.  A worker SIGKILLed at such a moment (the OOM killer) leaves
    the lock taken forever and ``terminate()`` never returns: billiard's
    copy of CPython gh-96062 and gh-78178, reproduced on billiard 4.3.
    Here both waits are bounded, and a lock whose holder is dead is freed.
    Then billiard SIGTERMs the workers and joins them with no timeout
    either, and a worker blocked on such a lock may not die of it (seen on
    billiard 4.2): ``stragglers(workers)``, started on a thread just
    before, ends the ones that outlive a grace period.

    While the pool runs, the result queue's write lock is kept from the
    same fate: a worker killed by a signal is followed by a check that
    frees the lock if it stays taken (:func:`_free_if_stuck`), and the
    SIGTERM billiard sends a worker that announced its exit waits until the
    worker has released the lock (:func:`_end_dying_worker`).
    """
    import billiard.common  # noqa: PLC0415 - optional dependency
    import billiard.pool  # noqa: PLC0415

    class Pool(billiard.pool.Pool):  # type: ignore[misc]
        def create_result_handler(self, **kwargs: Any) -> Any:
            handler = super().create_result_handler(**kwargs)

            def on_death(pid: int, exitcode: int) -> None:
                threading.Thread(
                    target=_end_dying_worker,
                    args=(self, pid, billiard.common.TERM_SIGNAL),
                    name="mpguard-billiard-death",
                    daemon=True,
                ).start()

            # The handler looks DEATH up in this same dict for each message.
            handler.state_handlers[billiard.pool.DEATH] = on_death
            return handler

        def process_flush_queues(self, worker: Any) -> None:
            super().process_flush_queues(worker)
            code = worker.exitcode
            if code is not None and code < 0:  # killed by a signal
                threading.Thread(
                    target=_free_if_stuck,
                    args=(self._outqueue._wlock,),
                    name="mpguard-billiard-lock",
                    daemon=True,
                ).start()

        @staticmethod
        def _help_stuff_finish(inqueue: Any, task_handler: Any, _pool: Any) -> None:
            taken = _take_or_free(inqueue._rlock)
            try:
                while task_handler.is_alive() and inqueue._reader.poll():
                    inqueue._reader.recv()
                    time.sleep(0)
            except Exception:  # noqa: BLE001 - a dead reader's half message
                pass
            if not taken:
                # The pool's finalizer releases it again (it took it as
                # billiard does): leave it taken, as billiard would.
                inqueue._rlock.acquire(False)

        @classmethod
        def _set_result_sentinel(cls, outqueue: Any, pool: Any) -> None:
            # The last step before billiard terminates and joins the workers.
            threading.Thread(
                target=stragglers,
                args=(list(pool),),
                name="mpguard-billiard-terminate",
                daemon=True,
            ).start()
            _free_if_stuck(outqueue._wlock)
            outqueue.put(None)

    return Pool
