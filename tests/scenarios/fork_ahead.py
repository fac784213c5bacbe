"""A fork GuardedPool's first workers, forked back to back ("fork ahead").

usage: fork_ahead.py REPORT MODE

MODE:

fds             GuardedPool(4); report each worker's pgid, its ignored and
                blocked signals, and the pipes it shares with the parent
one-by-one      the same with forking ahead turned off (the control: each
                worker then inherits the pipes of the workers forked before
                it, as in the stdlib's loop)
start-fails     the second worker's start() raises after all four were
                forked; report the forked pids, then hold
no-discard      the same, with the clean-up of the forked, unstarted
                children turned off (the control: they are left behind)
fork-fails      os.fork() fails from the third call on; report the pids
                that were forked, and which children's pipes are still open
pipe-fails      the same when opening a child's pipes fails from the third
                child on (EMFILE)
sockets         GuardedPool(4, maxtasksperchild=2) after a map that
                replaced workers; report the parent's sockets each worker
                holds (a fork worker keeps only its own channel's end)
sockets-shared  the same without the worker closing what it inherited
                (the control: each worker holds both ends of every other
                channel, and the parent's end of its own)
interrupt       SIGINT (Ctrl-C) reaches the parent right after its second
                worker fork; report the forked pids and the pool's workers
interrupt-stdlib  the same with the stdlib fork Pool (the control: the pid
                of the fork the KeyboardInterrupt cut short is lost, and the
                workers run on in no pool)

The test reads the report, checks with psutil, and kills the session.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
import time

from _common import hold, report

N = 4


def pipes_of(pid: int, kind: str = "pipe") -> set[str]:
    """The pipe (or *kind*) inodes *pid* holds open."""
    out = set()
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if target.startswith(kind + ":"):
            out.add(target)
    return out


def status_mask(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def record_child_pipes(fail_from: int = 0) -> set[str]:
    """Record the pipes opened for guarded fork children from now on; with
    *fail_from*, opening them fails from that call on (EMFILE)."""
    from mpguard._start import _fork

    opened: set[str] = set()
    real = _fork.ChildPipes.open.__func__  # type: ignore[attr-defined]
    calls = []

    def recording(cls):  # type: ignore[no-untyped-def]
        calls.append(1)
        if fail_from and len(calls) >= fail_from:
            raise OSError(errno.EMFILE, "injected: too many open files")
        pipes = real(cls)
        for fd in (*pipes.child_ends(), *pipes.parent_ends()):
            opened.add(os.readlink(f"/proc/self/fd/{fd}"))
        return pipes

    _fork.ChildPipes.open = classmethod(recording)  # type: ignore[method-assign,assignment]
    return opened


_KEPT: list[object] = []


def record_forked(keep: bool = False) -> list[int]:
    """Wrap the fork-ahead step; return the list it fills with the pids.
    With *keep*, hold on to the Process objects too."""
    from mpguard._start import _fork

    forked: list[int] = []
    real = _fork.fork_ahead

    def spy(processes):  # type: ignore[no-untyped-def]
        real(processes)
        if keep:
            # As a traceback of the failed pool can: a worker whose Process
            # is collected sees its channel close and exits.
            _KEPT.extend(processes)
        for p in processes:
            f = getattr(p, _fork.FORKED_ATTR, None)
            if f is not None:
                forked.append(f.pid)

    _fork.fork_ahead = spy
    return forked


def pid_of(_: int) -> int:
    return os.getpid()


def mark(folder: str) -> None:
    with open(os.path.join(folder, str(os.getpid())), "w"):
        pass


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode in ("interrupt", "interrupt-stdlib"):
        forked, interrupted, workers = interrupted_start(mode)
        report(path, forked=forked, interrupted=interrupted, workers=workers)
        hold()
    import mpguard
    from mpguard._pool import _pool

    if mode in ("fds", "one-by-one"):
        if mode == "one-by-one":
            _pool.fork_ahead = lambda processes: None  # type: ignore[assignment]
        before = pipes_of(os.getpid())
        pool = mpguard.GuardedPool(N)
        assert pool.map(abs, range(-8, 0)) == list(range(8, 0, -1))
        workers = [w.pid for w in pool._pool]
        mine = pipes_of(os.getpid()) - before
        held = {str(pid): sorted(pipes_of(pid) & mine) for pid in workers}
        report(
            path,
            workers=workers,
            parent_pgid=os.getpgrp(),
            pgids=[os.getpgid(pid) for pid in workers],
            sigign=[status_mask(pid, "SigIgn") for pid in workers],
            sigblk=[status_mask(pid, "SigBlk") for pid in workers],
            held=held,
        )
        hold()

    if mode in ("sockets", "sockets-shared"):
        if mode == "sockets-shared":
            from mpguard._pool._dispatch import Channel

            Channel.isolate = lambda self: self.parent.close()  # type: ignore[method-assign]
        before = pipes_of(os.getpid(), "socket")
        # Each worker marks itself from its initializer, which runs after
        # its descriptors are sorted out: a respawned worker is read only
        # once it got that far.
        marks = os.path.join(os.path.dirname(path), "marks")
        os.mkdir(marks)
        pool = mpguard.GuardedPool(
            N, maxtasksperchild=2, initializer=mark, initargs=(marks,)
        )
        pids = set(pool.map(pid_of, range(4 * N), chunksize=1))
        # The workers that ran their second task exit and are replaced
        # meanwhile: read until one look sees the same live, marked workers.
        deadline = time.monotonic() + 10
        while True:
            workers = [w.pid for w in pool._pool]
            ready = set(os.listdir(marks))
            try:
                mine = pipes_of(os.getpid(), "socket") - before
                held = {
                    str(pid): sorted(pipes_of(pid, "socket") & mine) for pid in workers
                }
            except OSError:  # one exited while we read
                held = {}
            if (
                held
                and all(str(pid) in ready for pid in workers)
                and workers == [w.pid for w in pool._pool]
                and all(w.is_alive() for w in pool._pool)
            ):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the pool's workers never settled")
            time.sleep(0.01)
        report(path, workers=workers, ran_in=sorted(pids), held=held)
        hold()

    if mode in ("start-fails", "no-discard"):
        forked = record_forked(keep=mode == "no-discard")
        if mode == "no-discard":
            _pool.discard_forked = lambda processes: None  # type: ignore[assignment]
        from mpguard._pool import _process

        real_start = _process.PoolWorkerBase.start
        calls = []

        def start(self):  # type: ignore[no-untyped-def]
            calls.append(self)
            if len(calls) == 2:
                raise RuntimeError("injected: the second start() fails")
            real_start(self)

        _process.PoolWorkerBase.start = start  # type: ignore[method-assign]
        sockets = pipes_of(os.getpid(), "socket")
        try:
            mpguard.GuardedPool(N)
        except RuntimeError as e:
            error = str(e)
        else:
            error = ""
        del calls[:]
        gc.collect()
        # The channels of the workers that never started: closed with them.
        left = sorted(pipes_of(os.getpid(), "socket") - sockets)
        report(path, forked=forked, error=error, sockets_left=left)
        hold()

    if mode in ("fork-fails", "pipe-fails"):
        forked = record_forked()
        from mpguard._group import acquire

        acquire()  # the guard's own pipes exist before, and it stays up
        opened = record_child_pipes(3 if mode == "pipe-fails" else 0)
        real_fork = os.fork
        calls = []

        def fork() -> int:
            calls.append(1)
            if len(calls) >= 3:
                raise BlockingIOError(errno.EAGAIN, "injected: fork fails")
            return real_fork()

        if mode == "fork-fails":
            os.fork = fork
        try:
            mpguard.GuardedPool(N)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        else:
            error = ""
        os.fork = real_fork
        import multiprocessing

        # The reaped workers' Popens (held by multiprocessing's table of
        # children until the next look) close their pipes with them.
        multiprocessing.active_children()
        gc.collect()
        report(
            path,
            forked=forked,
            error=error,
            opened=sorted(opened),
            left=sorted(opened & pipes_of(os.getpid())),
        )
        hold()


def interrupted_start(mode: str) -> tuple[list[int], bool, list[int]]:
    """Build a 4-worker pool while SIGINT lands right after the 2nd fork."""
    import multiprocessing as mp

    import mpguard

    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
            if len(forked) == 2:
                os.kill(os.getpid(), signal.SIGINT)
        return pid

    os.fork = fork
    pool = None
    interrupted = False
    try:
        if mode == "interrupt":
            pool = mpguard.GuardedPool(N)
        else:
            pool = mp.get_context("fork").Pool(N)
        # A deferred KeyboardInterrupt may land after __init__ returned.
        time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
    os.fork = real_fork
    workers = [w.pid for w in pool._pool] if pool is not None else []
    return forked, interrupted, workers


if __name__ == "__main__":
    main()
