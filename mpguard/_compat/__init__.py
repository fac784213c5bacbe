"""Every use of a private CPython or billiard API lives in this package.

mpguard builds on multiprocessing's internals where the stdlib offers no
public seam (a start method, a Pool that can lose a worker, a forkserver in
a chosen process group).  Those touches are all here, one module per area,
each naming the internals it reads and the versions it was checked on:

* ``_mp``: contexts, Process/Popen internals, fds, atexit, interpreter
  flags;
* ``_forkserver``: ``ForkServer`` state and its start-up;
* ``_pool``: ``multiprocessing.pool.Pool`` internals (``PoolBase``);
* ``_billiard``: billiard's context table and Supervisor threads.

``tests/test_compat.py`` checks each touch on every supported Python, and
``tests/test_architecture.py`` fails if a private attribute of a stdlib or
billiard object is read anywhere else in mpguard.
"""

from __future__ import annotations

from .. import _lazy

# Each name is loaded from its module on first use (PEP 562): ``import
# mpguard`` registers its contexts with ``_mp`` alone, and the pool, the
# forkserver and billiard internals load when used.  The type checker reads
# the imports below; ``typing`` itself is not imported (its import cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._billiard import (
        billiard_pool_class,
        billiard_pool_state,
        billiard_popen,
        billiard_worker_by_pid,
        billiard_worker_hooked,
        guarded_timeout_handler,
        mark_job_terminated,
        register_billiard_context,
        stop_billiard_respawn,
    )
    from ._forkserver import (
        FORKSERVER_MAIN_ARGS,
        FORKSERVER_SUPPORTED,
        after_forkserver_preload,
        forkserver_detach,
        forkserver_ensure_running,
        forkserver_pid,
        forkserver_poll,
        forkserver_preload,
        read_signed,
        require_forkserver,
    )
    from ._mp import (
        CHILD_RUNS_ATEXIT,
        ForkServerContextBase,
        bootstrap_of,
        check_available,
        child_atexit_begin,
        child_atexit_end,
        close_fds,
        default_context_if_set,
        flush_std_streams,
        fork_keeps_tracker,
        guardian_spawn_kwargs,
        interpreter_flags,
        may_start,
        pickle_for_child,
        popen_fds,
        process_popen,
        raw_handler,
        reap_dropped_popens,
        register_context,
        run_process,
        set_raw_handler,
        sigmask,
    )
    from ._pool import (
        PoolBase,
        fail_pending,
        map_chunksize,
        pool_worker,
        replace_pool_terminator,
        stop_pool_respawn,
        submit_apply,
        task_items,
    )

#: The module that defines each name.
_WHERE = {
    **dict.fromkeys(
        (
            "billiard_pool_class",
            "billiard_pool_state",
            "billiard_popen",
            "billiard_worker_by_pid",
            "billiard_worker_hooked",
            "guarded_timeout_handler",
            "mark_job_terminated",
            "register_billiard_context",
            "stop_billiard_respawn",
        ),
        "_billiard",
    ),
    **dict.fromkeys(
        (
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
        ),
        "_forkserver",
    ),
    **dict.fromkeys(
        (
            "CHILD_RUNS_ATEXIT",
            "ForkServerContextBase",
            "bootstrap_of",
            "check_available",
            "child_atexit_begin",
            "child_atexit_end",
            "close_fds",
            "default_context_if_set",
            "flush_std_streams",
            "fork_keeps_tracker",
            "guardian_spawn_kwargs",
            "interpreter_flags",
            "may_start",
            "pickle_for_child",
            "popen_fds",
            "process_popen",
            "raw_handler",
            "reap_dropped_popens",
            "register_context",
            "run_process",
            "set_raw_handler",
            "sigmask",
        ),
        "_mp",
    ),
    **dict.fromkeys(
        (
            "PoolBase",
            "fail_pending",
            "map_chunksize",
            "pool_worker",
            "replace_pool_terminator",
            "stop_pool_respawn",
            "submit_apply",
            "task_items",
        ),
        "_pool",
    ),
}

if not TYPE_CHECKING:
    __getattr__ = _lazy.loader(__name__, _WHERE)


__all__ = [
    "CHILD_RUNS_ATEXIT",
    "FORKSERVER_MAIN_ARGS",
    "FORKSERVER_SUPPORTED",
    "ForkServerContextBase",
    "PoolBase",
    "after_forkserver_preload",
    "billiard_pool_class",
    "billiard_popen",
    "billiard_pool_state",
    "billiard_worker_by_pid",
    "billiard_worker_hooked",
    "bootstrap_of",
    "check_available",
    "child_atexit_begin",
    "child_atexit_end",
    "close_fds",
    "default_context_if_set",
    "fail_pending",
    "flush_std_streams",
    "fork_keeps_tracker",
    "forkserver_detach",
    "forkserver_ensure_running",
    "forkserver_pid",
    "forkserver_poll",
    "forkserver_preload",
    "guarded_timeout_handler",
    "guardian_spawn_kwargs",
    "interpreter_flags",
    "may_start",
    "map_chunksize",
    "mark_job_terminated",
    "pickle_for_child",
    "pool_worker",
    "popen_fds",
    "process_popen",
    "raw_handler",
    "read_signed",
    "reap_dropped_popens",
    "register_billiard_context",
    "register_context",
    "replace_pool_terminator",
    "require_forkserver",
    "run_process",
    "set_raw_handler",
    "sigmask",
    "stop_billiard_respawn",
    "stop_pool_respawn",
    "submit_apply",
    "task_items",
]
