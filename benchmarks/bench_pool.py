"""GuardedPool vs the stdlib Pool, per start method, interleaved in one run.

    python benchmarks/bench_pool.py [--rounds 7] [--quick]
        [--methods fork,forkserver,spawn]

For each start method M the pair is the stdlib Pool on M and GuardedPool on
"guarded-M".  Each round runs every case once for each pool, alternating
which goes first, after one warm-up round (it also starts mpguard's
guardian and forkserver, once-per-process costs).  The tables report
medians and the ratio guarded / stdlib: for throughput higher is better,
for times lower is better.  The machine is noisy: compare ratios, not
absolute figures.  Spawn starts a fresh interpreter per worker, so its
start and churn cases are smaller.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil

import mpguard

if TYPE_CHECKING:
    from collections.abc import Callable

STD = mp.get_context("fork")  # rebound per method in main()
GUARDED = mp.get_context("guarded-fork")


def noop(x: int) -> int:
    return x


_counter = None


def set_counter(counter) -> None:
    global _counter
    _counter = counter


def sleeper(_: int) -> None:
    # Synchronized values cannot be pickled into tasks; the counter is
    # inherited through the pool's initializer instead.
    with _counter.get_lock():
        _counter.value += 1
    time.sleep(600)


def make(kind: str, n: int, **kw):
    if kind == "guarded":
        return mpguard.GuardedPool(n, context=GUARDED, **kw)
    return STD.Pool(n, **kw)


def bench_map(kind: str, items: int, repeat: int = 5) -> float:
    # One map of 100k tiny items takes ~10 ms: repeat it so that a sample
    # is not one scheduler hiccup.
    with make(kind, 2) as pool:
        pool.map(noop, range(100))
        t0 = time.perf_counter()
        for _ in range(repeat):
            pool.map(noop, range(items))
        return repeat * items / (time.perf_counter() - t0)


def bench_apply(kind: str, items: int) -> float:
    with make(kind, 2) as pool:
        t0 = time.perf_counter()
        results = [pool.apply_async(noop, (i,)) for i in range(items)]
        for r in results:
            r.get()
        return items / (time.perf_counter() - t0)


def bench_start_close(kind: str, n: int) -> float:
    t0 = time.perf_counter()
    pool = make(kind, n)
    pool.close()
    pool.join()
    return time.perf_counter() - t0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def bench_terminate(kind: str, n: int) -> float:
    counter = STD.Value("i", 0)
    pool = make(kind, n, initializer=set_counter, initargs=(counter,))
    pool.map_async(sleeper, range(n), chunksize=1)
    deadline = time.monotonic() + 60
    while counter.value < n:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not all start their task")
        time.sleep(0.005)
    pids = [w.pid for w in pool._pool]
    t0 = time.perf_counter()
    pool.terminate()
    while any(_alive(p) for p in pids):
        time.sleep(0.001)
    dt = time.perf_counter() - t0
    pool.join()
    return dt


def bench_churn(kind: str, tasks: int) -> float:
    pool = make(kind, 2, maxtasksperchild=1)
    t0 = time.perf_counter()
    pool.map(noop, range(tasks), chunksize=1)
    dt = time.perf_counter() - t0
    # close+join, not terminate: the stdlib Pool's terminate() can race its
    # own respawning thread and hang forever (gh-96995; seen here).
    pool.close()
    pool.join()
    return tasks / dt


def bench_cold_start(kind: str) -> float:
    """A new program's first pool: interpreter, imports, guard (guardian,
    forkserver), 2 workers, one map, shutdown."""
    method = STD.get_start_method()
    if kind == "guarded":
        head = f"import mpguard; ctx = mp.get_context('guarded-{method}')"
    else:
        head = f"ctx = mp.get_context('{method}')"
    code = (
        "import multiprocessing as mp\n"
        f"{head}\n"
        "if __name__ == '__main__':\n"
        "    with ctx.Pool(2) as pool:\n"
        "        pool.map(abs, range(4))\n"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


Case = tuple[str, str, "Callable[[str], float]", bool]


def cases(quick: bool, method: str = "fork") -> list[Case]:
    """(name, unit, run(kind) -> value, higher_is_better) for each case.

    A spawn worker takes ~60 ms to start and a forkserver one ~15 ms, so
    those methods start and terminate 8 workers, not 32, and churn less.
    """
    k = 10 if quick else 1
    sizes = [8] if method != "fork" else [8, 32]
    doomed = 32 if method == "fork" else 8
    churn = {"fork": 400, "forkserver": 200, "spawn": 40}[method]
    table: list[Case] = [
        ("cold start, Pool(2) + one map", "ms", bench_cold_start, False),
        (
            "map of 100k tiny items",
            "items/s",
            lambda p: bench_map(p, 100_000 // k),
            True,
        ),
        ("20k apply_async", "tasks/s", lambda p: bench_apply(p, 20_000 // k), True),
    ]
    for n in sizes:
        table.append(
            (
                f"start+close, {n} workers",
                "ms",
                lambda p, n=n: bench_start_close(p, n),
                False,
            )
        )
    table.append(
        (
            f"terminate {doomed} busy workers",
            "ms",
            lambda p: bench_terminate(p, doomed),
            False,
        )
    )
    table.append(
        (
            "maxtasksperchild=1 churn",
            "tasks/s",
            lambda p: bench_churn(p, max(10, churn // k)),
            True,
        )
    )
    return table


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    return f"{value:,.0f} {unit}"


TARGETS = {
    "cold start, Pool(2) + one map": "",
    "map of 100k tiny items": ">= 0.97x",
    "20k apply_async": ">= 0.97x",
    "start+close, 8 workers": "time <= 1.15x",
    "start+close, 32 workers": "time <= 1.15x",
    "terminate 32 busy workers": "time <= 1.0x (aim 0.5x)",
    "terminate 8 busy workers": "time <= 1.0x",
    "maxtasksperchild=1 churn": ">= 1.0x",
}


def run_method(method: str, rounds: int, quick: bool, only: str = "") -> None:
    global STD, GUARDED
    STD = mp.get_context(method)
    GUARDED = mp.get_context(f"guarded-{method}")
    table = [c for c in cases(quick, method) if only in c[0]]
    results: dict[tuple[str, str], list[float]] = {}
    for rnd in range(rounds + 1):
        for name, _, fn, _ in table:
            order = ("guarded", "stdlib") if rnd % 2 else ("stdlib", "guarded")
            for kind in order:
                value = fn(kind)
                if rnd:  # round 0 is the warm-up
                    results.setdefault((name, kind), []).append(value)
    print(f"\n### {method}: stdlib {method!r} vs 'guarded-{method}'\n")
    print(f"| case | stdlib {method} Pool | GuardedPool | ratio | target |")
    print("|---|---|---|---|---|")
    for name, unit, _, higher in table:
        s = statistics.median(results[(name, "stdlib")])
        g = statistics.median(results[(name, "guarded")])
        ratio = g / s
        kind = "throughput" if higher else "time"
        row = [name, fmt(s, unit), fmt(g, unit), f"{ratio:.2f}x {kind}", TARGETS[name]]
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    ap.add_argument("--methods", default="fork,forkserver,spawn")
    ap.add_argument("--only", default="", help="run the cases whose name has this")
    a = ap.parse_args()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{a.rounds} rounds{' (quick)' if a.quick else ''}; medians"
    )
    for method in a.methods.split(","):
        run_method(method, a.rounds, a.quick, a.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
