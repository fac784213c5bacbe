"""CPython's ``multiprocessing.pool.Pool`` internals.

Touched: ``Pool._setup_queues`` (replaced: ``_inqueue``, ``_outqueue``
and its ``_reader``/``put``, ``_quick_put``/``_quick_get``: the seam where
GuardedPool swaps in its dispatcher),
``Pool._map_async``/``_processes``/``_check_running``/``_taskqueue``,
``Pool._repopulate_pool`` and the arguments it passes (``_ctx``,
``_inqueue``, ``_outqueue``, ``_initializer``, ``_initargs``,
``_maxtasksperchild``, ``_wrap_exception``),
``Pool._pool``/``_state``, ``Pool._terminate`` (a util.Finalize),
``Pool._worker_handler``/``_task_handler``/``_result_handler`` and their
``_state``, the queues' ``_reader``/``_writer`` (and
``Pool._help_stuff_finish``), the worker
loop ``pool.worker``, the chunk helpers ``mapstar``/``starmapstar``, and
the result classes' ``_job``/``_set``/``_number_left``/``_index``.  Same in
3.9-3.15.
"""

from __future__ import annotations

import multiprocessing.pool
import threading
import time
from multiprocessing import connection, reduction, util

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = [
    "PoolBase",
    "fail_pending",
    "map_chunksize",
    "pool_worker",
    "replace_pool_terminator",
    "stop_pool_respawn",
    "submit_apply",
    "task_items",
]

_TERMINATE = multiprocessing.pool.TERMINATE

#: The stdlib worker loop: ``worker(inqueue, outqueue, initializer,
#: initargs, maxtasks, wrap_exception)``.  It only calls ``inqueue.get()``
#: and ``outqueue.put()`` (and closes ``_writer``/``_reader`` if present).
pool_worker: Callable[..., None] = multiprocessing.pool.worker  # type: ignore[attr-defined]

_CHUNK_HELPERS = (
    multiprocessing.pool.mapstar,  # type: ignore[attr-defined]
    multiprocessing.pool.starmapstar,  # type: ignore[attr-defined]
)


def map_chunksize(pool: multiprocessing.pool.Pool, iterable: Any) -> tuple[Any, int]:
    """``(iterable, chunksize)`` as ``Pool._map_async`` computes them when
    no chunksize is given, but from the pool's size.

    The stdlib (3.9-3.15) divides by ``len(pool._pool)``, the workers
    present right now.  That is 0 between the death of every worker and
    the start of their replacements (milliseconds under fork, about 100 ms
    under spawn), and ``map()`` then raises ZeroDivisionError; this was
    the unexplained load-dependent failure of the idle-kill test.
    ``pool._processes`` is the same number the rest of the time.  The
    iterable comes back as a list if it had no ``len()``, as the stdlib
    makes it.
    """
    pool._check_running()  # type: ignore[attr-defined]
    if not hasattr(iterable, "__len__"):
        iterable = list(iterable)
    chunksize, extra = divmod(len(iterable), pool._processes * 4)  # type: ignore[attr-defined]
    return iterable, (chunksize + 1 if extra else chunksize)


def task_items(func: Any, args: Any) -> tuple[Any, Sequence[Any], bool] | None:
    """``(user_function, items, starred)`` if the task is a map chunk.

    ``map``/``imap``/``starmap`` send chunks as ``mapstar((f, items))`` or
    ``starmapstar((f, items))``; anything else gives None.
    """
    if func in _CHUNK_HELPERS:
        try:
            f, items = args[0]
            len(items)
        except (TypeError, ValueError, IndexError):
            return None
        return f, items, func is _CHUNK_HELPERS[1]
    return None


def submit_apply(
    pool: multiprocessing.pool.Pool,
    func: Callable[..., Any],
    args: Any,
    kwds: Any,
    callback: Callable[[Any], object] | None,
    error_callback: Callable[[BaseException], object] | None,
    before_submit: Callable[[Any], None],
) -> multiprocessing.pool.AsyncResult[Any]:
    """``Pool.apply_async``, calling *before_submit(job)* before the task is
    queued (so that per-job settings are in place when it is dispatched).

    Same body as the stdlib's (3.9-3.15): ``_check_running``, an
    ``ApplyResult``, one ``(job, 0, func, args, kwds)`` task.
    """
    pool._check_running()  # type: ignore[attr-defined]
    result = multiprocessing.pool.ApplyResult(pool, callback, error_callback)
    before_submit(result._job)  # type: ignore[attr-defined]
    pool._taskqueue.put(([(result._job, 0, func, args, kwds)], None))  # type: ignore[attr-defined]
    return result


def fail_pending(cache: dict[Any, Any], error: Callable[[], BaseException]) -> int:
    """Fail every result still in the pool's *cache*; return how many.

    After ``terminate()`` nothing will ever answer them, and the stdlib
    leaves their ``get()`` waiting forever.  ``ApplyResult`` and
    ``MapResult`` finish when every chunk is set (``_number_left``); an
    ``IMapIterator`` raises at the next position it would have yielded.
    """
    n = 0
    for result in list(cache.values()):
        job = getattr(result, "_job", None)
        try:
            if hasattr(result, "_number_left") or not hasattr(result, "_index"):
                left = max(1, getattr(result, "_number_left", 1))
                for _ in range(left):
                    if job not in cache:
                        break
                    result._set(0, (False, error()))
            else:
                result._set(result._index, (False, error()))
        except Exception:  # noqa: BLE001 - a user callback raised: not ours
            util.debug("mpguard: callback raised while failing a pending task")
        cache.pop(job, None)
        n += 1
    return n


def replace_pool_terminator(
    pool: multiprocessing.pool.Pool,
    kill_workers: Callable[[Sequence[Any], float], None],
    grace: float,
    stop: Callable[[], None],
    finish: Callable[[Any], None],
) -> None:
    """Make ``pool.terminate()`` bounded and kill-first.

    The stdlib ``_terminate_pool`` can block forever: in
    ``_help_stuff_finish`` on ``inqueue._rlock`` held by a dead worker
    (gh-78178, gh-73945), in ``outqueue.put`` on a ``_wlock`` a dead worker
    held, and in ``p.join()`` on a worker that ignores SIGTERM.  The
    replacement stops respawning, kills the workers first (with escalation),
    and only then drains queues without their locks, with every join
    bounded.  *stop* is called before the kill (GuardedPool: its
    dispatcher stops handing out tasks) and *finish* with the result cache
    at the end (GuardedPool: fail what is still pending, close channels).
    """
    old = pool._terminate  # type: ignore[attr-defined]
    args = old._args
    old.cancel()
    pool._terminate = util.Finalize(  # type: ignore[attr-defined]
        pool,
        _terminate_pool,
        args=(*args, kill_workers, grace, stop, finish),
        exitpriority=15,
    )


def _terminate_pool(
    taskqueue: Any,
    inqueue: Any,
    outqueue: Any,
    pool: list[Any],
    change_notifier: Any,
    worker_handler: threading.Thread,
    task_handler: threading.Thread,
    result_handler: threading.Thread,
    cache: Any,
    kill_workers: Callable[[Sequence[Any], float], None],
    grace: float,
    stop: Callable[[], None],
    finish: Callable[[Any], None],
) -> None:
    # Budget: kill_workers takes at most grace + 0.25 s; the rest is shared
    # by the thread joins so that terminate() returns within grace + 0.5 s.
    deadline = time.monotonic() + grace + 0.45
    current = threading.current_thread()

    # Stop respawning before killing, or _handle_workers would replace the
    # workers we kill (same ordering reason as the stdlib's comment).
    worker_handler._state = _TERMINATE  # type: ignore[attr-defined]
    task_handler._state = _TERMINATE  # type: ignore[attr-defined]
    _put_nowait(change_notifier)
    if current is not worker_handler:
        worker_handler.join(0.1)

    # The result handler must see TERMINATE before the dispatcher stops
    # feeding it, or its "drain until the cache is empty" loop would spin.
    result_handler._state = _TERMINATE  # type: ignore[attr-defined]
    stop()
    kill_workers(list(pool), grace)

    # Nothing to drain: GuardedPool workers never touch inqueue (each has
    # its own channel), and stop() above woke a task handler waiting in the
    # dispatcher's put(), which is what the stdlib's _help_stuff_finish
    # drains inqueue for.
    _put_nowait(change_notifier)
    _put_nowait(outqueue)  # wakes _handle_results

    for thread in (worker_handler, task_handler, result_handler):
        if thread is not current:
            thread.join(max(0.0, deadline - time.monotonic()))
    finish(cache)
    util.debug("mpguard: pool terminated")


def _put_nowait(queue: Any) -> None:
    # A sentinel straight to the pipe (one write below PIPE_BUF: atomic),
    # so that terminate() waits on no lock: a stdlib SimpleQueue's put()
    # would take its _wlock (GuardedPool's queues have none, but this also
    # serves a stdlib Pool's, in the compat checks).
    try:
        queue._writer.send_bytes(_NONE_PICKLE)
    except OSError:
        pass


def _none_pickle() -> bytes:
    from multiprocessing.reduction import ForkingPickler  # noqa: PLC0415

    return bytes(ForkingPickler.dumps(None))


_NONE_PICKLE = _none_pickle()


def stop_pool_respawn(pool: multiprocessing.pool.Pool) -> None:
    """Ask ``_handle_workers`` to stop replacing workers.

    Safe from a signal handler: it only sets a flag, taking no lock (the
    interrupted main thread may be anywhere, a stdlib Pool's main thread
    inside its change notifier's lock).  The thread sees the flag when the
    killed workers' sentinels wake it.
    """
    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:
        handler._state = _TERMINATE
    pool._state = _TERMINATE  # type: ignore[attr-defined]


class _SentinelQueue:
    """A ``SimpleQueue`` for the parent's threads only: GuardedPool's
    ``outqueue`` (``put(None)`` from ``_handle_tasks`` and
    ``_terminate_pool``, read by the dispatcher) and change notifier
    (``close()``, the result cache, ``_handle_workers``; both waited on
    by ``_handle_workers`` through ``_reader``).  A ``SimpleQueue``'s
    semaphores serialise readers and writers in other processes; here
    there are none, and the writers need no lock either: every message is
    a sentinel, sent in one write(2) below PIPE_BUF, which is atomic.  So
    a ``Pool.__del__`` that the garbage collector runs inside another
    ``put()`` of the same thread, or a signal handler's, cannot deadlock."""

    def __init__(self) -> None:
        self._reader, self._writer = connection.Pipe(duplex=False)

    def put(self, obj: Any) -> None:
        data = reduction.ForkingPickler.dumps(obj)
        if len(data) > _ATOMIC:
            msg = f"a sentinel queue takes small objects only ({len(data)} bytes)"
            raise ValueError(msg)
        self._writer.send_bytes(data)

    def get(self) -> Any:
        return reduction.ForkingPickler.loads(self._reader.recv_bytes())

    def empty(self) -> bool:
        return not self._reader.poll()

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


#: A pickle this small goes out in one write(2) (``Connection.send_bytes``
#: joins its 4-byte header to it), below POSIX's smallest PIPE_BUF (512).
_ATOMIC = 500


class _NotifierContext:
    """The pool's context while ``Pool.__init__`` makes its change notifier:
    ``SimpleQueue()`` gives a :class:`_SentinelQueue` and puts the real
    context back on the pool; anything else is the real context's."""

    def __init__(self, pool: PoolBase, ctx: Any) -> None:
        self.pool: PoolBase | None = pool
        self.ctx = ctx

    def SimpleQueue(self) -> _SentinelQueue:  # noqa: N802 - the context's name
        pool, self.pool = self.pool, None
        if pool is not None:
            pool._ctx = self.ctx
        return _SentinelQueue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx, name)


class PoolBase(multiprocessing.pool.Pool):
    """``multiprocessing.pool.Pool`` with its private seams given names.

    GuardedPool builds on this class and never touches a private attribute
    of the stdlib's Pool itself.
    """

    _ctx: Any  # the context; a _NotifierContext for a moment in __init__

    def _mpguard_early_init(self) -> None:
        """What ``Pool.__del__`` needs even if ``__init__`` raises before
        the stdlib's ``__init__`` ran (the stdlib sets these first too)."""
        self._pool: list[Any] = []
        self._state = multiprocessing.pool.INIT

    def _setup_queues(self) -> None:
        # Not the stdlib's SimpleQueues: the workers never see them
        # (each has its own channel), and each costs a pipe and two
        # semaphores (0.16 ms to make on fork; on spawn and forkserver
        # named ones, registered with the resource tracker).  What is left
        # of them: inqueue, a name the stdlib passes around; outqueue, the
        # pipe on which close() and terminate() post their sentinels.
        self._inqueue = None
        self._outqueue = _SentinelQueue()
        method = self._ctx.get_start_method()
        put, get, process = self._mpguard_channels(method, self._outqueue._reader)
        self._quick_put = put
        self._quick_get = get
        # The stdlib calls self.Process(ctx, target=..., args=...) for each
        # worker; an instance attribute overrides the staticmethod.
        self.Process = process  # type: ignore[method-assign]
        # The stdlib's __init__ makes its change notifier next, as
        # self._ctx.SimpleQueue() (3.9-3.15).  Only the parent's threads
        # use it too (close(), the result cache, _handle_workers), so it
        # gets a pipe without semaphores as well: the context is wrapped
        # until that call, which puts the real one back.
        self._ctx = _NotifierContext(self, self._ctx)

    @staticmethod
    def _help_stuff_finish(inqueue: Any, task_handler: Any, size: int) -> None:
        # Called only by the stdlib's own terminator, which GuardedPool
        # replaces right after __init__: if a KeyboardInterrupt lands in
        # between, that one runs, with inqueue None.  Nothing to drain then:
        # no worker reads it.
        if inqueue is not None:
            multiprocessing.pool.Pool._help_stuff_finish(  # type: ignore[attr-defined]
                inqueue, task_handler, size
            )

    def _repopulate_pool(self) -> None:
        # The stdlib's ``_repopulate_pool_static`` loop for the pool's first
        # workers (its worker handler calls the static one by name, so
        # respawns keep the stdlib's loop), with every worker created before
        # the first starts: the subclass may then start them together.
        if isinstance(self._ctx, _NotifierContext):  # a Python that changed
            self._ctx = self._ctx.ctx  # the order: the real one, at least
        workers = []
        for _ in range(self._processes - len(self._pool)):  # type: ignore[attr-defined]
            w = self.Process(
                self._ctx,
                target=pool_worker,
                args=(
                    self._inqueue,
                    self._outqueue,
                    self._initializer,  # type: ignore[attr-defined]
                    self._initargs,  # type: ignore[attr-defined]
                    self._maxtasksperchild,  # type: ignore[attr-defined]
                    self._wrap_exception,  # type: ignore[attr-defined]
                ),
            )
            w.name = w.name.replace("Process", "PoolWorker")
            w.daemon = True
            workers.append(w)
        self._mpguard_start_workers(workers, self._pool)

    def _mpguard_start_workers(self, workers: list[Any], pool: list[Any]) -> None:
        """Start *workers* and append each to *pool* once started (the
        stdlib's order: a started worker is in the pool if a later one
        fails).  Subclasses may start them together."""
        for w in workers:
            w.start()
            pool.append(w)

    def _mpguard_channels(
        self, method: str, ctrl: Any
    ) -> tuple[Callable[[Any], None], Callable[[], Any], Callable[..., Any]]:
        """``(put, get, process_factory)`` for a pool on start *method*;
        *ctrl* is the read end of the outqueue, which only the parent
        writes to now.  Subclasses implement it."""
        raise NotImplementedError

    def _map_async(  # the stdlib's helper behind map/starmap and their _async
        self,
        func: Any,
        iterable: Any,
        mapper: Any,
        chunksize: int | None = None,
        callback: Any = None,
        error_callback: Any = None,
    ) -> Any:
        if chunksize is None:
            # Not from the workers alive this instant: there may be none.
            iterable, chunksize = map_chunksize(self, iterable)
        return super()._map_async(  # type: ignore[misc]
            func, iterable, mapper, chunksize, callback, error_callback
        )

    def _mpguard_workers(self) -> list[Any]:
        """The worker Processes of this instant (``Pool._pool``)."""
        workers: list[Any] = self._pool
        return workers

    def _mpguard_terminated(self) -> bool:
        """True once ``terminate()`` was called."""
        return bool(self._state == _TERMINATE)

    def _mpguard_threads(self) -> tuple[threading.Thread, ...]:
        """The pool's worker-, task- and result-handler threads."""
        return (
            self._worker_handler,  # type: ignore[attr-defined]
            self._task_handler,  # type: ignore[attr-defined]
            self._result_handler,  # type: ignore[attr-defined]
        )
