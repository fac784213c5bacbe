"""Every use of a private CPython API lives in this module.

Each helper names the stdlib internals it touches and the Python versions it
was checked against (3.9 to 3.13).  ``tests/test_compat.py`` runs on every
supported version in tox, so a change in the stdlib shows up in one diff.
"""

from __future__ import annotations

import atexit
import multiprocessing.context
import multiprocessing.pool
import os
import sys
import threading
import time
from multiprocessing import util
from typing import TYPE_CHECKING, Any

from ._errors import UnsupportedPlatformError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "CHILD_RUNS_ATEXIT",
    "child_atexit_begin",
    "child_atexit_end",
    "default_context_if_set",
    "FORKSERVER_SUPPORTED",
    "fail_pending",
    "forkserver_ensure_running",
    "forkserver_preload",
    "require_forkserver",
    "guardian_spawn_kwargs",
    "map_chunksize",
    "interpreter_flags",
    "pool_worker",
    "register_billiard_context",
    "register_context",
    "replace_pool_terminator",
    "stop_billiard_respawn",
    "stop_pool_respawn",
    "submit_apply",
    "task_items",
]

# 3.13 popen_fork clears the parent's atexit callbacks in the child and runs
# the child's own at exit (gh-83856).  3.9-3.12 do neither.  A guarded child
# must behave like a plain fork child of the same version.
CHILD_RUNS_ATEXIT = sys.version_info >= (3, 13)


def child_atexit_begin() -> None:
    """In a fork child: what 3.13's popen_fork does before ``_bootstrap``."""
    if CHILD_RUNS_ATEXIT:
        atexit._clear()  # type: ignore[attr-defined,unused-ignore]
        atexit.register(util._exit_function)  # type: ignore[attr-defined,unused-ignore]


def child_atexit_end() -> None:
    """In a fork child: what 3.13's popen_fork does before ``os._exit``."""
    if CHILD_RUNS_ATEXIT:
        atexit._run_exitfuncs()  # type: ignore[attr-defined,unused-ignore]


def register_context(name: str, ctx: object) -> object:
    """Register *ctx* under *name*, idempotently; return the registered one.

    ``multiprocessing.context._concrete_contexts`` is the table that
    ``get_context()`` and ``set_start_method()`` resolve names in (3.9-3.14;
    loky registers its contexts the same way).  ``setdefault`` keeps a
    context that is already there, so importing mpguard twice, or reloading
    it, changes nothing.
    """
    table: dict[str, object] = multiprocessing.context._concrete_contexts  # type: ignore[attr-defined]
    return table.setdefault(name, ctx)


def default_context_if_set() -> object | None:
    """The context ``set_start_method()`` chose, or None if none was chosen.

    ``multiprocessing.get_context()`` would answer too, but it also *fixes*
    the default on first use (gh-109070), after which the program's own
    ``set_start_method()`` raises; ``get_start_method()`` gives only the
    name, which a guarded context shares with its stdlib method.  Reads
    ``context._default_context._actual_context`` (3.9-3.14).
    """
    default: Any = multiprocessing.context._default_context
    return default._actual_context  # type: ignore[no-any-return]


def register_billiard_context(name: str, ctx: object) -> object:
    """:func:`register_context` for billiard's table of contexts.

    ``billiard.context._concrete_contexts`` plays the same part in billiard
    (4.x) as in CPython: ``get_context``, ``set_start_method`` and the
    child's ``_force_start_method`` resolve names in it.
    """
    import billiard.context  # noqa: PLC0415 - optional dependency

    table: dict[str, object] = billiard.context._concrete_contexts
    return table.setdefault(name, ctx)


def guardian_spawn_kwargs() -> dict[str, Any]:
    """``subprocess.Popen`` keywords that make the child a group leader.

    ``process_group=0`` (3.11+) calls ``setpgid(0, 0)`` in the child before
    exec, without a preexec_fn, so ``_posixsubprocess`` may still use vfork.
    3.9 and 3.10 need ``preexec_fn``.  ``start_new_session`` would not do:
    workers could not join a group in another session (setpgid EPERM).
    """
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - 3.9/3.10 only


# --- spawn and forkserver internals ------------------------------------------
#
# Touched: ``util._args_from_interpreter_flags`` (what ``spawn``'s command
# line passes on: -O, -X options, warnings ...), and ``ForkServer``'s
# ``_lock``, ``_forkserver_pid``, ``_forkserver_alive_fd``,
# ``_forkserver_address`` and ``_preload_modules``.  ``ensure_running`` and
# ``connect_to_new_process`` are the same in 3.9-3.13; 3.14 adds an authkey
# handshake (gh-97514), which is why guarded forkserver is refused there
# until it is tested.

#: Versions whose ``ForkServer`` this module's copy matches.
FORKSERVER_SUPPORTED = sys.version_info < (3, 14)


def require_forkserver() -> None:
    """Raise UnsupportedPlatformError where :data:`FORKSERVER_SUPPORTED` is
    False (checked by the context and, for a Process used without it, by
    the guard's forkserver)."""
    if not FORKSERVER_SUPPORTED:
        msg = (
            "guarded-forkserver is tested on Python 3.9-3.13 only (3.14 "
            "changed the forkserver protocol); use guarded-spawn here"
        )
        raise UnsupportedPlatformError(msg)


def interpreter_flags() -> list[str]:
    """The interpreter options a spawned child must share with this one."""
    return util._args_from_interpreter_flags()  # type: ignore[attr-defined,no-any-return]


def forkserver_preload() -> list[str]:
    """The preload list of the stdlib's forkserver (``set_forkserver_preload``).

    A guarded forkserver preloads the same modules, so that
    ``ctx.set_forkserver_preload([...])`` works on a guarded context too.
    """
    from multiprocessing import forkserver  # noqa: PLC0415

    return list(forkserver._forkserver._preload_modules)  # type: ignore[attr-defined]


def forkserver_ensure_running(
    server: Any,
    command: str,
    spawn: Callable[[Any, list[Any], list[int]], int],
) -> None:
    """``ForkServer.ensure_running`` of 3.9-3.13, with two changes.

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

    with server._lock:
        resource_tracker.ensure_running()
        if server._forkserver_pid is not None:
            try:
                pid, _ = os.waitpid(server._forkserver_pid, os.WNOHANG)
            except ChildProcessError:
                pid = server._forkserver_pid
            if not pid:
                return  # still alive
            os.close(server._forkserver_alive_fd)
            server._forkserver_address = None
            server._forkserver_alive_fd = None
            server._forkserver_pid = None
        data: dict[str, Any] = {}
        if server._preload_modules:
            wanted = {"main_path", "sys_path"}
            prep = mp_spawn.get_preparation_data("ignore")
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
            try:
                cmd = command % (
                    listener.fileno(),
                    alive_r,
                    server._preload_modules,
                    data,
                )
                exe = mp_spawn.get_executable()
                args = [exe, *interpreter_flags(), "-c", cmd]
                pid = spawn(exe, args, [listener.fileno(), alive_r])
            except BaseException:
                os.close(alive_w)
                raise
            finally:
                os.close(alive_r)
            server._forkserver_address = address
            server._forkserver_alive_fd = alive_w
            server._forkserver_pid = pid


# --- multiprocessing.pool.Pool internals ------------------------------------
#
# Touched: Pool._terminate (a util.Finalize), Pool._worker_handler /
# _task_handler / _result_handler and their ``_state``, the SimpleQueue
# internals ``_reader``/``_writer``, the worker loop ``pool.worker``, the
# chunk helpers ``mapstar``/``starmapstar``, and the result classes'
# ``_set``/``_number_left``/``_index``.  Same in 3.9-3.13.

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

    The stdlib (3.9-3.13) divides by ``len(pool._pool)``, the workers
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

    Same body as the stdlib's (3.9-3.13): ``_check_running``, an
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
    _put_nowait(outqueue)  # wakes _handle_results; bypasses outqueue._wlock

    for thread in (worker_handler, task_handler, result_handler):
        if thread is not current:
            thread.join(max(0.0, deadline - time.monotonic()))
    finish(cache)
    util.debug("mpguard: pool terminated")


def _put_nowait(queue: Any) -> None:
    # SimpleQueue.put would take _wlock.  Only the parent's threads write
    # to these queues now, but a write straight to the pipe (one write below
    # PIPE_BUF: atomic) needs no lock at all, so terminate() waits on none.
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
    interrupted main thread may hold the change notifier's lock).  The
    thread sees the flag when the killed workers' sentinels wake it.
    """
    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:
        handler._state = _TERMINATE
    pool._state = _TERMINATE  # type: ignore[attr-defined]


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
    (``threading._active``, 3.9-3.14) is copied without
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
