"""GuardedPool vs the stdlib Pool, per start method: ratios from one run.

    python benchmarks/bench_pool.py [--rounds 5] [--methods fork,forkserver,spawn]
        [--only TEXT] [--quick] [--tripwire RATIO] [--memory] [--physical]

For each start method M the pair is the stdlib Pool on M and GuardedPool on
"guarded-M".  Every sample runs in a fresh interpreter (``--sample``), so no
case inherits another's guardian, forkserver, caches or garbage; the two
pools alternate which goes first, round by round.  Each round pairs one
stdlib sample with one guarded sample, and the ratio is taken per pair:

    ratio = GuardedPool's speed / the stdlib's speed  (above 1: faster)

(for a time: stdlib time / guarded time).  The table gives the median
ratio and its min..max over the rounds: the machine is noisy, compare
ratios, not absolute figures.  The ``import`` and ``cold start`` cases time
a whole new interpreter from outside (``import mpguard`` against ``import
multiprocessing.pool``; import, ``Pool(2)``, one small map, exit).

``--quick`` (under 2 minutes, in CI) runs smaller cases for 3 rounds; with
``--tripwire 0.5`` the exit status is 1 if any median ratio is below 0.5,
that is if GuardedPool takes more than twice the stdlib's time on any
case: a tripwire for a gross regression, not a timed test.  ``--memory``
adds the guardian's resident size and the per-worker memory of both pools;
``--physical`` the kernel's floor under the guarantees (fork, pidfd_open,
setpgid, the signal mask, one killpg, in a fresh interpreter) and the page
faults per fork worker start, in the parent and in the worker.
"""

from __future__ import annotations

import argparse
import compileall
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# Bytecode is written and read as on a user's machine (a PYTHONDONTWRITEBYTECODE
# in the environment would make every fresh process compile mpguard again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class Case(NamedTuple):
    name: str
    unit: str  # "s" (a time: lower is better) or "/s" (a rate: higher is better)
    goal: str


# --- one sample, in a fresh process (--sample) ------------------------------------


def noop(x: int) -> int:
    return x


def spin(n: int) -> int:
    # CPU-bound: a few ms of pure Python per item.
    total = 0
    for i in range(n):
        total += i * i
    return total


_counter = None


def set_counter(counter) -> None:
    global _counter
    _counter = counter


def sleeper(_: int) -> None:
    with _counter.get_lock():
        _counter.value += 1
    time.sleep(600)


def make(kind: str, method: str, n: int, **kw):
    if kind == "guarded":
        import mpguard

        return mpguard.GuardedPool(n, context=mp.get_context(f"guarded-{method}"), **kw)
    return mp.get_context(method).Pool(n, **kw)


def _warm(kind: str, method: str) -> None:
    # The once-per-program costs (guardian, forkserver, imports) are the
    # cold-start case's; the other cases measure a pool in a running program.
    with make(kind, method, 1) as pool:
        pool.apply(noop, (0,))


def s_map(kind: str, method: str, items: int, chunksize: int | None) -> float:
    _warm(kind, method)
    with make(kind, method, 2) as pool:
        pool.map(noop, range(100))
        t0 = time.perf_counter()
        for _ in range(5):
            pool.map(noop, range(items), chunksize=chunksize)
        return 5 * items / (time.perf_counter() - t0)


def s_apply(kind: str, method: str, items: int) -> float:
    _warm(kind, method)
    with make(kind, method, 2) as pool:
        t0 = time.perf_counter()
        results = [pool.apply_async(noop, (i,)) for i in range(items)]
        for r in results:
            r.get()
        return items / (time.perf_counter() - t0)


def s_cpu(kind: str, method: str, items: int) -> float:
    _warm(kind, method)
    with make(kind, method, 2) as pool:
        t0 = time.perf_counter()
        pool.map(spin, [200_000] * items, chunksize=1)
        return items / (time.perf_counter() - t0)


def s_startup(kind: str, method: str, n: int, lives: int) -> float:
    # Create, run one task, close and join: a pool's whole life.  The
    # median of *lives* in this process: one life of a 2-worker pool is a
    # few milliseconds, and a single one swung the ratio from 0.6 to 1.5.
    _warm(kind, method)
    times = []
    for _ in range(lives):
        t0 = time.perf_counter()
        pool = make(kind, method, n)
        pool.apply(noop, (0,))
        pool.close()
        pool.join()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _busy_pool(kind: str, method: str, n: int):
    """A pool of *n* workers, each inside a long task (:func:`sleeper`)."""
    counter = mp.get_context(method).Value("i", 0)
    pool = make(kind, method, n, initializer=set_counter, initargs=(counter,))
    pool.map_async(sleeper, range(n), chunksize=1)
    deadline = time.monotonic() + 60
    while counter.value < n:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not all start their task")
        time.sleep(0.005)
    return pool


def s_terminate(kind: str, method: str, n: int) -> float:
    import psutil

    _warm(kind, method)
    pool = _busy_pool(kind, method, n)
    procs = [psutil.Process(w.pid) for w in pool._pool]
    t0 = time.perf_counter()
    pool.terminate()
    # Until every worker is gone (reaped, or at least dead): what a caller
    # that wants its CPUs and memory back waits for.
    for p in procs:
        try:
            while p.status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.0005)
        except psutil.NoSuchProcess:
            pass
    dt = time.perf_counter() - t0
    pool.join()
    return dt


def s_churn(kind: str, method: str, tasks: int) -> float:
    _warm(kind, method)
    pool = make(kind, method, 2, maxtasksperchild=1)
    t0 = time.perf_counter()
    pool.map(noop, range(tasks), chunksize=1)
    dt = time.perf_counter() - t0
    # close+join, not terminate: the stdlib Pool's terminate() can race its
    # own respawning thread and hang forever (gh-96995).
    pool.close()
    pool.join()
    return tasks / dt


# --- whole-process cases, timed from outside -------------------------------------


def import_code(kind: str, method: str) -> str:
    del method
    return "import mpguard" if kind == "guarded" else "import multiprocessing.pool"


def cold_code(kind: str, method: str) -> str:
    if kind == "guarded":
        head = f"import mpguard\nctx = mp.get_context('guarded-{method}')"
    else:
        head = f"ctx = mp.get_context('{method}')"
    return (
        "import multiprocessing as mp\n"
        f"{head}\n"
        "if __name__ == '__main__':\n"
        "    with ctx.Pool(2) as pool:\n"
        "        pool.map(abs, range(10))\n"
    )


def whole_process(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, cwd=ROOT)
    return time.perf_counter() - t0


# --- the table ----------------------------------------------------------------------


def cases(quick: bool, method: str) -> list[tuple[Case, Callable[[str], float]]]:
    """Each case and how to take one sample of it for a kind of pool."""
    k = 10 if quick else 1
    # A spawn worker takes ~60 ms to start and a forkserver one ~15 ms:
    # those methods start 8 workers at most, and churn less.
    sizes = [2, 8, 32] if method == "fork" else [2, 8]
    doomed = 32 if method == "fork" else 8
    churn = {"fork": 400, "forkserver": 200, "spawn": 40}[method] // (4 if quick else 1)

    def sample(fn: str, *args: object) -> Callable[[str], float]:
        return lambda kind: run_sample(fn, kind, method, *args)

    table: list[tuple[Case, Callable[[str], float]]] = []
    if method == "fork":  # the import does not depend on the method
        table.append(
            (
                Case("import mpguard (vs multiprocessing.pool)", "s", "<= +5 ms"),
                lambda kind: whole_process(import_code(kind, method)),
            )
        )
    table += [
        (
            Case("cold start: Pool(2) + one map + exit", "s", ">= 0.87 (1.15x time)"),
            lambda kind: whole_process(cold_code(kind, method)),
        ),
        (
            Case("map 100k tiny, default chunks", "/s", ">= 0.97"),
            sample("s_map", 100_000 // k, None),
        ),
        (
            Case("map 100k, chunksize 1000", "/s", ">= 0.97"),
            sample("s_map", 100_000 // k, 1000),
        ),
        (Case("20k apply_async", "/s", ">= 0.97"), sample("s_apply", 20_000 // k)),
        (Case("CPU-bound efficiency", "/s", ">= 0.97"), sample("s_cpu", 40 // k * 2)),
    ]
    for n in sizes:
        table.append(
            (
                Case(f"create + 1 task + close/join, N={n}", "s", ">= 0.95"),
                sample("s_startup", n, 3 if quick else 5),
            )
        )
    table.append(
        (
            Case(f"terminate {doomed} busy workers until gone", "s", ">= 1.0"),
            sample("s_terminate", doomed),
        )
    )
    table.append(
        (
            Case("maxtasksperchild=1 churn", "/s", ">= 1.0"),
            sample("s_churn", max(10, churn)),
        )
    )
    return table


def _in_fresh_process(
    fn: str, *args: object, timeout: float = 600, env: dict[str, str] | None = None
) -> str:
    """What ``fn(*args)`` prints, run in a fresh interpreter (``--sample``),
    with *env* added to its environment."""
    out = subprocess.run(
        [sys.executable, str(HERE), "--sample", json.dumps([fn, *args])],
        check=True,
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        cwd=ROOT,
        timeout=timeout,
    )
    return out.stdout.strip().splitlines()[-1]


def run_sample(fn: str, kind: str, method: str, *args: object) -> float:
    """One sample of ``fn(kind, method, *args)`` in a fresh interpreter."""
    return float(_in_fresh_process(fn, kind, method, *args))


def speed_ratio(case: Case, stdlib: float, guarded: float) -> float:
    """GuardedPool's speed over the stdlib's: above 1 is faster."""
    return stdlib / guarded if case.unit == "s" else guarded / stdlib


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    return f"{value:,.0f}/s"


def run_method(method: str, rounds: int, quick: bool, only: str) -> list[float]:
    """Print *method*'s table; return its median ratios."""
    table = [(c, fn) for c, fn in cases(quick, method) if only in c.name]
    samples: dict[str, dict[str, list[float]]] = {c.name: {} for c, _ in table}
    # Round 0 warms the file cache (interpreter, modules) and is dropped,
    # unless --quick.
    first = 0 if quick else 1
    for rnd in range(rounds + first):
        order = ("guarded", "stdlib") if rnd % 2 else ("stdlib", "guarded")
        for case, fn in table:
            for kind in order:
                value = fn(kind)
                if rnd >= first:
                    samples[case.name].setdefault(kind, []).append(value)
    print(f"\n### {method}: stdlib {method!r} vs 'guarded-{method}'\n")
    print("| case | stdlib | GuardedPool | speed ratio, median [min..max] | goal |")
    print("|---|---|---|---|---|")
    medians = []
    for case, _ in table:
        s, g = samples[case.name]["stdlib"], samples[case.name]["guarded"]
        ratios = [speed_ratio(case, a, b) for a, b in zip(s, g)]
        med = statistics.median(ratios)
        medians.append(med)
        extra = ""
        if case.name.startswith("import"):
            extra = f" ({(statistics.median(g) - statistics.median(s)) * 1000:+.1f} ms)"
        row = [
            case.name,
            fmt(statistics.median(s), case.unit),
            fmt(statistics.median(g), case.unit) + extra,
            f"{med:.2f} [{min(ratios):.2f}..{max(ratios):.2f}]",
            case.goal,
        ]
        print("| " + " | ".join(row) + " |", flush=True)
    return medians


# --- memory ---------------------------------------------------------------------------


def memory_report() -> None:
    """The guardian's memory (in perl if there is one, and in python), and
    each pool's per-worker memory (fork)."""
    m = json.loads(_in_fresh_process("s_memory", "", "fork", timeout=300))
    py = json.loads(
        _in_fresh_process(
            "s_memory", "", "fork", timeout=300, env={"MPGUARD_DISABLE": "perl"}
        )
    )
    mib = 1 << 20
    print("\n### memory (fork, 4 workers, after one map)\n")
    print("| process | RSS | USS (its own pages) | anonymous |")
    print("|---|---|---|---|")
    for name, g in ((f"guardian ({m['guardian']})", m), ("guardian (python)", py)):
        if name == "guardian (python)" and m["guardian"] == "python":
            continue
        rss, uss, anon = (g[f"guardian_{k}"] / mib for k in ("rss", "uss", "anon"))
        print(f"| {name} | {rss:.1f} MiB | {uss:.1f} MiB | {anon:.1f} MiB |")
    for kind in ("stdlib", "guarded"):
        rss, uss = m[f"{kind}_rss"], m[f"{kind}_uss"]
        print(f"| {kind} worker (mean) | {rss / mib:.1f} MiB | {uss / mib:.2f} MiB | |")


def s_memory(kind: str, method: str) -> str:
    import psutil

    import mpguard
    from mpguard._group import current_guard

    del kind
    out: dict[str, float] = {}
    for k in ("stdlib", "guarded"):
        with make(k, method, 4) as pool:
            pool.map(noop, range(100))
            procs = [psutil.Process(w.pid) for w in pool._pool]
            infos = [p.memory_full_info() for p in procs]
            out[f"{k}_rss"] = statistics.mean(i.rss for i in infos)
            out[f"{k}_uss"] = statistics.mean(i.uss for i in infos)
            if k == "guarded":
                pgid = current_guard().pgid
                g = psutil.Process(pgid).memory_full_info()
                out["guardian_rss"], out["guardian_uss"] = g.rss, g.uss
                # Anonymous memory: what the guardian costs the machine for
                # good (USS also counts the file pages of an interpreter that
                # no other process maps, such as perl's).
                with open(f"/proc/{pgid}/status") as f:
                    anon = next(x for x in f if x.startswith("RssAnon:"))
                out["guardian_anon"] = int(anon.split()[1]) * 1024
                out["guardian"] = "perl" if current_guard().guardian.perl else "python"
    del mpguard
    return json.dumps(out)


# --- physical references ----------------------------------------------------------


def _median_us(fn: Callable[[], float], n: int) -> float:
    return statistics.median(fn() for _ in range(n)) * 1e6


def _sleepers(n: int) -> list[int]:
    """Fork *n* children that sleep for a minute; their pids."""
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
    return kids


def _child_cpu(argv: list[str]) -> float:
    """CPU seconds (user + system) of one run of *argv* to its exit."""
    import resource

    def used() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    before = used()
    subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False
    )
    return used() - before


def _interpreter_starts() -> dict[str, float]:
    """The guardian's start, the one cost of a cold start no code in the
    owner can remove: an interpreter (``python -I -S``) and its imports,
    in CPU time, against a bare ``python -I -S -c pass``.  Run outside a
    group of its own, the guardian script exits (status 2) right after its
    start-up, before it would watch anything."""
    # The guardian's own command lines (in python, and in perl if there is
    # one), asked of mpguard in another process: the references after this
    # one are taken in this process, which must stay a bare interpreter
    # (forks copy its memory).
    code = (
        "import json, sys; from mpguard import _platform;"
        "from mpguard._group._guardian import command;"
        "pid = int(sys.argv[1]);"
        "print(json.dumps([command(pid, 0, 0.0),"
        " _platform.PERL and command(pid, 0, 0.0, perl=_platform.PERL)]))"
    )
    python_guardian, perl_guardian = json.loads(
        subprocess.run(
            [sys.executable, "-c", code, str(os.getpid())],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    bare = [sys.executable, "-I", "-S", "-c", "pass"]
    out = {
        "`python -I -S -c pass`, CPU": _median_us(lambda: _child_cpu(bare), 21),
        "the python guardian's start (`python -I -S` + its imports), CPU": _median_us(
            lambda: _child_cpu(python_guardian), 21
        ),
    }
    if perl_guardian:
        out["the perl guardian's start (`perl -f` + its script), CPU"] = _median_us(
            lambda: _child_cpu(perl_guardian), 21
        )
    return out


def s_physical(kind: str, method: str) -> str:
    """What the guarantees cost the kernel, in a fresh interpreter: the floor
    under each case, against which a Python-level cost is measured."""
    del kind, method
    out: dict[str, float] = {}

    def fork_exit_wait() -> float:
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return time.perf_counter() - t0

    out["fork + _exit + waitpid"] = _median_us(fork_exit_wait, 200)
    out.update(_interpreter_starts())
    # Children to act on: sleeping, in a group of their own.
    kids = _sleepers(32)
    pgid = kids[0]
    for pid in kids:
        os.setpgid(pid, pgid)

    def pidfd_open_close() -> float:
        t0 = time.perf_counter()
        os.close(os.pidfd_open(kids[1]))
        return time.perf_counter() - t0

    def setpgid() -> float:
        t0 = time.perf_counter()
        os.setpgid(kids[1], pgid)
        return time.perf_counter() - t0

    def sigmask_pair() -> float:
        t0 = time.perf_counter()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return time.perf_counter() - t0

    out["pidfd_open + close"] = _median_us(pidfd_open_close, 200)
    out["setpgid (parent side)"] = _median_us(setpgid, 200)
    out["pthread_sigmask block + restore"] = _median_us(sigmask_pair, 200)
    t0 = time.perf_counter()
    os.killpg(pgid, signal.SIGKILL)
    t1 = time.perf_counter()
    for pid in kids:
        os.waitpid(pid, 0)
    t2 = time.perf_counter()
    out["one killpg of 32 sleepers"] = (t1 - t0) * 1e6
    out["reaping those 32 (waitpid each)"] = (t2 - t1) * 1e6
    # The same 32 killed one by one, as a pool's terminate() must (the
    # group holds every guarded child, not only one pool's).
    kids = _sleepers(32)
    time.sleep(0.05)
    t0 = time.perf_counter()
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    t1 = time.perf_counter()
    for pid in kids:
        os.waitpid(pid, 0)
    out["32 kill calls, SIGKILL"] = (t1 - t0) * 1e6
    return json.dumps(out)


def s_faults(kind: str, method: str, n: int) -> str:
    """Page faults per worker start (fork): in the parent while it builds
    the pool, and in a worker between fork and its target (copy-on-write
    of the pages each side writes)."""
    import multiprocessing.pool as mpool
    import resource

    _warm(kind, method)
    if kind == "guarded":
        from mpguard._pool import _worker

        holder, name = _worker, "worker_main"
    else:
        holder, name = mpool, "worker"
    real = getattr(holder, name)
    r, w = os.pipe()

    def counted(*args: object) -> object:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        os.write(w, f"{own}\n".encode())
        return real(*args)

    setattr(holder, name, counted)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pool = make(kind, method, n)
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    data = b""
    while data.count(b"\n") < n:
        data += os.read(r, 4096)
    pool.close()
    pool.join()
    child = statistics.mean(int(x) for x in data.split())
    return json.dumps({"parent": parent / n, "child": child})


def s_kill_floor(kind: str, method: str, n: int, lives: int) -> float:
    """The terminate case without the pool's own terminate(): its *n* busy
    workers killed and reaped the way the stdlib's ``terminate()`` does it
    (``os.kill`` SIGTERM to each, then each one's ``Popen.wait``), the
    pool's threads stopped first so that nothing replaces them.  The same
    system calls on both pools: what is left is the kernel tearing their
    workers down.  The median of *lives* pools, in seconds."""
    from multiprocessing.pool import TERMINATE

    _warm(kind, method)
    times = []
    for _ in range(lives):
        pool = _busy_pool(kind, method, n)
        handler = pool._worker_handler  # type: ignore[attr-defined]
        handler._state = TERMINATE
        pool._change_notifier.put(None)  # type: ignore[attr-defined]
        handler.join()
        workers = list(pool._pool)  # type: ignore[attr-defined]
        time.sleep(0.02)
        t0 = time.perf_counter()
        for w in workers:
            os.kill(w.pid, signal.SIGTERM)
        for w in workers:
            w._popen.wait()
        times.append(time.perf_counter() - t0)
        pool.terminate()
        pool.join()
    return statistics.median(times)


def kill_floor_report(n: int, rounds: int) -> None:
    """:func:`s_kill_floor` for both pools, in fresh processes, alternating."""
    pairs = []
    for r in range(rounds):
        order = ("stdlib", "guarded") if r % 2 == 0 else ("guarded", "stdlib")
        got = {
            k: float(_in_fresh_process("s_kill_floor", k, "fork", n, 5)) for k in order
        }
        pairs.append((got["stdlib"], got["guarded"]))
    std = statistics.median(p[0] for p in pairs) * 1e3
    grd = statistics.median(p[1] for p in pairs) * 1e3
    ratios = [s / g for s, g in pairs]
    print(
        f"\n### killing a pool's {n} busy fork workers with the stdlib's own "
        f"calls (median of {rounds} rounds of 5)\n"
    )
    print("| stdlib Pool's workers | GuardedPool's workers | speed ratio |")
    print("|---|---|---|")
    print(
        f"| {std:.1f} ms | {grd:.1f} ms | {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}..{max(ratios):.2f}] |"
    )


def physical_report(n: int) -> None:
    """The kernel's floor, and the page faults per fork worker start."""
    ref = json.loads(_in_fresh_process("s_physical", "", "fork", timeout=300))
    print("\n### physical references (fresh interpreter, median)\n")
    print("| operation | time |")
    print("|---|---|")
    for name, us in ref.items():
        print(f"| {name} | {us:,.1f} µs |")
    print(f"\n### page faults per fork worker start ({n} workers, mean of 5)\n")
    print("| pool | in the parent, per worker | in a worker, fork to target |")
    print("|---|---|---|")
    for kind in ("stdlib", "guarded"):
        runs = [
            json.loads(_in_fresh_process("s_faults", kind, "fork", n)) for _ in range(5)
        ]
        parent = statistics.mean(x["parent"] for x in runs)
        child = statistics.mean(x["child"] for x in runs)
        print(f"| {kind} | {parent:.0f} | {child:.0f} |")


# --- main -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rounds", type=int, default=None, help="default 5; 3 with --quick"
    )
    ap.add_argument("--quick", action="store_true", help="smaller cases (CI)")
    ap.add_argument("--methods", default="fork,forkserver,spawn")
    ap.add_argument("--only", default="", help="run the cases whose name has this")
    ap.add_argument(
        "--tripwire",
        type=float,
        default=None,
        metavar="RATIO",
        help="exit 1 if a median speed ratio is below RATIO (0.5: twice as slow)",
    )
    ap.add_argument("--memory", action="store_true", help="also report memory")
    ap.add_argument(
        "--physical",
        action="store_true",
        help="also report the kernel's floor (fork, pidfd_open, setpgid, killpg) "
        "and the page faults per fork worker start",
    )
    ap.add_argument("--sample", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sample:
        fn, *args = json.loads(a.sample)
        print(globals()[fn](*args))
        return 0
    rounds = a.rounds if a.rounds is not None else (3 if a.quick else 5)
    # Compiled once here, as pip does on install: no sample compiles mpguard.
    compileall.compile_dir(str(ROOT / "mpguard"), quiet=1)
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {rounds} "
        f"rounds{' (quick)' if a.quick else ''}; each sample a fresh process"
    )
    t0 = time.monotonic()
    worst: list[tuple[float, str]] = []
    for method in a.methods.split(","):
        for ratio in run_method(method, rounds, a.quick, a.only):
            worst.append((ratio, method))
    if a.memory:
        memory_report()
    if a.physical:
        physical_report(32)
        kill_floor_report(32, rounds)
    print(f"\n({time.monotonic() - t0:.0f} s)")
    if a.tripwire is not None and worst and min(worst)[0] < a.tripwire:
        ratio, method = min(worst)
        print(
            f"bench_pool: a median speed ratio is {ratio:.2f} on {method} (tripwire "
            f"{a.tripwire}): GuardedPool got more than {1 / a.tripwire:.1f}x slower",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
