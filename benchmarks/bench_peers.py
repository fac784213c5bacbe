"""GuardedPool against every peer, in one run, as ratios to the stdlib Pool.

    pip install -e ".[bench]"
    python benchmarks/bench_peers.py [--rounds 3] [--quick]

Peers: the stdlib fork Pool (the reference), GuardedPool,
concurrent.futures.ProcessPoolExecutor (fork), billiard.Pool, loky's
reusable executor, pebble.ProcessPool and mpire.WorkerPool (fork).  Two
workers each; every pool is started and warmed up outside the timing.

Cases: one ``map`` of 100k tiny items (chunked as the stdlib chunks it, for
everyone), and tiny tasks submitted one by one (``apply_async``, ``submit``,
``schedule``).  Physical references, in the same run: one bare
fork + _exit + waitpid, and one round trip of a small object over a
``multiprocessing.Pipe`` to a child and back.

Rounds interleave the peers; the table shows medians.  The machine is
noisy: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import mpguard

FORK = mp.get_context("fork")
WORKERS = 2


def noop(x: int) -> int:
    return x


# --- the pools -----------------------------------------------------------


class Peer:
    """A pool under test: how to start it, map, submit one task, stop it."""

    name = ""

    def start(self) -> None: ...

    def map(self, n: int) -> None: ...

    def submit_all(self, n: int) -> None: ...

    def stop(self) -> None: ...


def chunk(n: int) -> int:
    # What multiprocessing.Pool.map picks: 4 chunks per worker.
    size, extra = divmod(n, WORKERS * 4)
    return size + bool(extra)


class StdPool(Peer):
    name = "stdlib fork Pool"

    def make(self) -> Any:
        return FORK.Pool(WORKERS)

    def start(self) -> None:
        self.pool = self.make()

    def map(self, n: int) -> None:
        self.pool.map(noop, range(n))

    def submit_all(self, n: int) -> None:
        rs = [self.pool.apply_async(noop, (i,)) for i in range(n)]
        for r in rs:
            r.get()

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()


class Guarded(StdPool):
    name = "mpguard GuardedPool"

    def make(self) -> Any:
        return mpguard.GuardedPool(WORKERS)


class Billiard(StdPool):
    name = "billiard Pool"

    def make(self) -> Any:
        import billiard

        return billiard.get_context("fork").Pool(WORKERS)


class PPE(Peer):
    name = "ProcessPoolExecutor"

    def make(self) -> Any:
        return concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK)

    def start(self) -> None:
        self.ex = self.make()
        self.ex.submit(noop, 0).result()

    def map(self, n: int) -> None:
        list(self.ex.map(noop, range(n), chunksize=chunk(n)))

    def submit_all(self, n: int) -> None:
        fs = [self.ex.submit(noop, i) for i in range(n)]
        for f in fs:
            f.result()

    def stop(self) -> None:
        self.ex.shutdown()


class Loky(PPE):
    name = "loky"

    def make(self) -> Any:
        from loky import get_reusable_executor

        return get_reusable_executor(max_workers=WORKERS)

    def stop(self) -> None:
        self.ex.shutdown(kill_workers=True)


class Pebble(StdPool):
    name = "pebble ProcessPool"

    def make(self) -> Any:
        import pebble

        pool = pebble.ProcessPool(max_workers=WORKERS, context=FORK)
        pool.schedule(noop, (0,)).result()
        return pool

    def map(self, n: int) -> None:
        list(self.pool.map(noop, range(n), chunksize=chunk(n)).result())

    def submit_all(self, n: int) -> None:
        for f in [self.pool.schedule(noop, (i,)) for i in range(n)]:
            f.result()


class Mpire(StdPool):
    name = "mpire WorkerPool"

    def make(self) -> Any:
        from mpire import WorkerPool

        pool = WorkerPool(n_jobs=WORKERS, start_method="fork", keep_alive=True)
        pool.map(noop, range(10))
        return pool

    def map(self, n: int) -> None:
        self.pool.map(noop, range(n), chunk_size=chunk(n), progress_bar=False)

    def stop(self) -> None:
        self.pool.terminate()


PEERS: list[type[Peer]] = [StdPool, Guarded, PPE, Billiard, Loky, Pebble, Mpire]

# Submitting one task at a time is 50-600x slower in some peers: give each
# peer a task count that takes a fraction of a second, and compare rates.
SUBMIT_N = {"pebble ProcessPool": 1_000, "mpire WorkerPool": 5_000}


# --- physical references --------------------------------------------------


def fork_exit_wait(n: int) -> float:
    """Seconds for one fork + os._exit + waitpid."""
    t0 = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - t0) / n


def _echo(conn: Any) -> None:
    while True:
        obj = conn.recv()
        if obj is None:
            return
        conn.send(obj)


def pipe_round_trip(n: int) -> float:
    """Seconds for one small object to a child over a Pipe and back."""
    a, b = FORK.Pipe()
    p = FORK.Process(target=_echo, args=(b,))
    p.start()
    a.send(0)
    a.recv()
    t0 = time.perf_counter()
    for i in range(n):
        a.send(i)
        a.recv()
    dt = (time.perf_counter() - t0) / n
    a.send(None)
    p.join()
    return dt


# --- the run ----------------------------------------------------------------


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    a = ap.parse_args()
    k = 10 if a.quick else 1
    map_n, submit_n = 100_000 // k, 20_000 // k
    rates: dict[tuple[str, str], list[float]] = {}
    refs: dict[str, list[float]] = {"fork": [], "pipe": []}
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12 fork+threads
    for rnd in range(a.rounds):
        refs["fork"].append(fork_exit_wait(200 // k))
        refs["pipe"].append(pipe_round_trip(5_000 // k))
        order = PEERS if rnd % 2 == 0 else PEERS[::-1]
        for cls in order:
            peer = cls()
            peer.start()
            try:
                peer.map(1000)
                reps = 3
                dt = timed(lambda: [peer.map(map_n) for _ in range(reps)])  # noqa: B023
                rates.setdefault((peer.name, "map"), []).append(reps * map_n / dt)
                n = max(50, SUBMIT_N.get(peer.name, submit_n) // k)
                dt = timed(lambda: peer.submit_all(n))  # noqa: B023
                rates.setdefault((peer.name, "submit"), []).append(n / dt)
            finally:
                peer.stop()
    med = {key: statistics.median(v) for key, v in rates.items()}
    base_map = med[(StdPool.name, "map")]
    base_sub = med[(StdPool.name, "submit")]
    fork_us = statistics.median(refs["fork"]) * 1e6
    pipe_us = statistics.median(refs["pipe"]) * 1e6
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{WORKERS} workers, {a.rounds} rounds{' (quick)' if a.quick else ''}; "
        "medians\n"
    )
    print(
        "| pool | map, items/s | ratio | one-by-one tasks/s | ratio "
        "| µs per task | Pipe round trips per task |"
    )
    print("|---|---|---|---|---|---|---|")
    for cls in PEERS:
        m, s = med[(cls.name, "map")], med[(cls.name, "submit")]
        per_task = 1e6 / s
        print(
            f"| {cls.name} | {m:,.0f} | {m / base_map:.2f}x | {s:,.0f} "
            f"| {s / base_sub:.2f}x | {per_task:.1f} | {per_task / pipe_us:.1f} |"
        )
    print(
        f"\nPhysical references: fork + _exit + waitpid = {fork_us:.0f} µs; "
        f"Pipe round trip = {pipe_us:.1f} µs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
