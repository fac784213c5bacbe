"""Celery throughput: the guarded prefork pool vs Celery's own, real workers.

    pip install -e . "celery[redis]>=5.3"     # and a redis-server on PATH
    python benchmarks/bench_celery.py [--rounds 5] [--tasks 2000]
        [--concurrency 2] [--json]

What it measures: tiny tasks per second through a real Celery worker, end
to end.  The benchmark starts its own throw-away redis-server (loopback, a
free port, no persistence), then, for each pool, a real worker process::

    python -m celery -A _celery_bench_app:app --quiet worker -c 2 -P <pool> ...

``stock`` is Celery's prefork pool (``-P prefork``); ``guarded`` is
mpguard's (``CELERY_CUSTOM_WORKER_POOL=mpguard.celery:TaskPool -P custom``).
Once the worker answers a ping and has run a few warm-up tasks, this
process, as an ordinary client, sends ``--tasks`` ``add(i, i)`` tasks with
``apply_async`` and waits for every result (redis broker and result
backend); the time is from the first send to the last result.  The worker
is then stopped with SIGTERM (Celery's warm shutdown), and its session
SIGKILLed to be sure.  Worker start-up and shutdown are not timed.

Each run has a fresh worker and a fresh queue, so nothing left over can mix
into the next.  One warm-up round (both pools, not counted), then rounds of
stock, guarded.  Reported per pool: the median tasks/s and [min..max]; and
guarded / stock as the median of the per-round ratios and as the ratio of
the medians (higher is better for the guarded pool; 1.00x is parity).  A
tiny task spends most of its time outside the pool (the client, redis, the
worker's consumer), the same for both, so a difference in the pool itself
shows here diluted: this is what a Celery user would see, not a pool
microbenchmark (benchmarks/bench_pool.py is).  The machine is noisy:
compare ratios, not absolute figures.

Exit status: 0 measured; 1 a run failed (the worker or redis-server did not
start, results timed out, wrong results); 2 bad input (bad arguments, no
redis-server, Celery or the redis client not installed, mpguard.celery not
importable); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
APP_MODULE = "_celery_bench_app"
PROG = "bench_celery.py"

#: The pools compared: the worker's -P, its CELERY_CUSTOM_WORKER_POOL, and
#: the pool class the running worker must report (checked before timing).
POOLS = {
    "stock": ("prefork", None, "celery.concurrency.prefork:TaskPool"),
    "guarded": ("custom", "mpguard.celery:TaskPool", "mpguard.celery:TaskPool"),
}
ORDER = ("stock", "guarded")

#: Untimed tasks once the worker answers: the pool children's first tasks
#: and the client's first results pay for lazy imports and connections.
WARM_TASKS = 50
#: The warm-up round's size: enough for a fresh interpreter's page cache,
#: not a measurement.
WARM_ROUND_TASKS = 200


class RunError(Exception):
    """A run went wrong: exit status 1, with this message."""


def die(message: str, status: int = 2) -> NoReturn:
    # One line on stderr, no traceback: the message is the diagnosis.
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(status)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        die(f"{message} (see --help)")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        msg = f"expected a positive number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# --- processes this benchmark starts ---------------------------------------


def exited(pid: int) -> bool:
    """Has our child *pid* exited?  Without reaping it.

    An unreaped child's pid (and so its process group and session id)
    cannot be reused, so signalling them stays safe until we reap.
    ``Popen.poll`` would reap it.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def session_members(sid: int) -> list[int]:
    """Live processes of session *sid* (Linux /proc; [] elsewhere).

    A process joins a session only by being born into it, so every member
    of a session our child leads descends from that child: ours to kill.
    """
    pids = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return pids
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # After "(comm)": state ppid pgrp session ...; comm may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


def kill_session(leader: subprocess.Popen[bytes], deadline: float = 5.0) -> None:
    """SIGKILL everything in the session *leader* leads, then reap *leader*.

    ``killpg`` reaches the leader's process group; mpguard's guardian and
    the guarded pool's children live in a group of their own inside the
    same session, so the session is swept too.
    """
    pid = leader.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    end = time.monotonic() + deadline
    while True:
        left = session_members(pid)
        if not left:
            break
        if time.monotonic() > end:
            print(
                f"{PROG}: warning: processes {left} of worker {pid}'s session "
                "survived SIGKILL",
                file=sys.stderr,
            )
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.02)
    leader.wait()


def free_port() -> int:
    # Another process may take the port before redis-server does: the
    # caller retries with a new one if redis-server cannot bind it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Redis:
    """A throw-away redis-server on a free loopback port, in *workdir*."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> None:
        import redis

        for attempt in range(3):
            port = free_port()
            log = self.workdir / f"redis-{attempt}.log"
            with open(log, "wb") as out:
                # Own session: a Ctrl-C in the terminal reaches only this
                # process, whose finally stops redis after the workers.
                self.proc = subprocess.Popen(
                    [
                        self.exe,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.workdir),
                    ],
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
            end = time.monotonic() + timeout
            try:
                while time.monotonic() < end:
                    if self.proc.poll() is not None:
                        break  # most likely the port was taken: next one
                    try:
                        if client.ping():
                            self.url = f"redis://127.0.0.1:{port}/0"
                            return
                    except redis.RedisError:
                        time.sleep(0.05)
            finally:
                client.close()
            why = tail(log) or "no output"
            self.stop()
            if time.monotonic() >= end:
                msg = f"redis-server did not answer within {timeout:g}s: {why}"
                raise RunError(msg)
        msg = f"redis-server would not start: {why}"
        raise RunError(msg)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # only the pid we started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- one measurement --------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, broker: str, workdir: Path) -> None:
        self.args = args
        self.broker = broker
        self.workdir = workdir
        # The client: this process, with the same app module as the worker.
        os.environ["MPGUARD_BENCH_BROKER"] = broker
        sys.path.insert(0, str(HERE))
        import _celery_bench_app

        self.app = _celery_bench_app.app
        self.add = _celery_bench_app.add

    def worker_env(self, pool: str) -> dict[str, str]:
        env = dict(os.environ)
        env["MPGUARD_BENCH_BROKER"] = self.broker
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(HERE) + (os.pathsep + path if path else "")
        custom = POOLS[pool][1]
        if custom is None:
            # An inherited value must not turn the stock run into another.
            env.pop("CELERY_CUSTOM_WORKER_POOL", None)
        else:
            env["CELERY_CUSTOM_WORKER_POOL"] = custom
        return env

    def run(self, pool: str, tasks: int) -> float:
        """One fresh worker of *pool*; *tasks* tasks through it: tasks/s."""
        queue = f"bench-{pool}-{uuid.uuid4().hex[:12]}"
        node = f"{queue}@bench"
        log = self.workdir / f"{queue}.log"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"{APP_MODULE}:app",
            # No banner: the log keeps only warnings and errors, whose last
            # lines are what a failure reports.
            "--quiet",
            "worker",
            "-c",
            str(self.args.concurrency),
            "-P",
            POOLS[pool][0],
            "-Q",
            queue,
            "-n",
            node,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        with open(log, "wb") as out:
            # Own session: the worker leads it, so the cleanup can kill
            # the worker and all it started without touching anything else.
            worker = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self.worker_env(pool),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_ready(worker, node, pool, log)
            self.check(queue, self.batch(queue, WARM_TASKS))
            t0 = time.perf_counter()
            values = self.batch(queue, tasks)
            rate = tasks / (time.perf_counter() - t0)
            self.check(queue, values)  # outside the timing
            return rate
        finally:
            self.stop_worker(worker, pool)

    def wait_ready(
        self, worker: subprocess.Popen[bytes], node: str, pool: str, log: Path
    ) -> None:
        end = time.monotonic() + self.args.start_timeout
        while time.monotonic() < end:
            if exited(worker.pid):
                msg = f"the {pool} worker exited before it answered: {tail(log)}"
                raise RunError(msg)
            if self.app.control.ping(destination=[node], timeout=0.5):
                self.check_pool(node, pool)
                return
        msg = (
            f"the {pool} worker did not answer a ping within "
            f"{self.args.start_timeout:g}s: {tail(log) or 'no output'}"
        )
        raise RunError(msg)

    def check_pool(self, node: str, pool: str) -> None:
        # A pool name typo or a stale environment would otherwise compare
        # prefork with itself and report a flattering 1.00x.
        stats = self.app.control.inspect([node], timeout=5).stats() or {}
        info = stats.get(node, {}).get("pool", {})
        got = info.get("implementation") if isinstance(info, dict) else None
        if got != POOLS[pool][2]:
            msg = f"the {pool} worker runs pool {got!r}, not {POOLS[pool][2]!r}"
            raise RunError(msg)

    def batch(self, queue: str, n: int) -> list[int]:
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import ResultSet

        # Sending one by one, then one native join over redis pub/sub: the
        # usual client, and the same client work for both pools.
        results = [self.add.apply_async((i, i), queue=queue) for i in range(n)]
        try:
            values = ResultSet(results).get(timeout=self.args.result_timeout)
        except CeleryTimeout:
            msg = (
                f"{n} results not back within {self.args.result_timeout:g}s "
                f"(queue {queue})"
            )
            raise RunError(msg) from None
        return list(values)

    @staticmethod
    def check(queue: str, values: list[int]) -> None:
        if values != [2 * i for i in range(len(values))]:
            msg = f"wrong results from queue {queue}"
            raise RunError(msg)

    def stop_worker(self, worker: subprocess.Popen[bytes], pool: str) -> None:
        # os.kill, not Popen.send_signal: that polls, reaps, and would free
        # the pid (and the session id) before kill_session uses it.
        if not exited(worker.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)  # warm shutdown
        end = time.monotonic() + self.args.stop_timeout
        while not exited(worker.pid):
            if time.monotonic() > end:
                print(
                    f"{PROG}: warning: the {pool} worker ignored SIGTERM for "
                    f"{self.args.stop_timeout:g}s; killing it",
                    file=sys.stderr,
                )
                break
            time.sleep(0.02)
        kill_session(worker)


# --- the report -------------------------------------------------------------


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    medians = {pool: statistics.median(v) for pool, v in samples.items()}
    per_round = [g / s for s, g in zip(samples["stock"], samples["guarded"])]
    return {
        "tasks_per_s": samples,
        "median": medians,
        "min": {pool: min(v) for pool, v in samples.items()},
        "max": {pool: max(v) for pool, v in samples.items()},
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": statistics.median(per_round),
        "ratio_of_medians": medians["guarded"] / medians["stock"],
    }


def versions(redis_exe: str) -> dict[str, Any]:
    import celery

    try:
        out = subprocess.run(
            [redis_exe, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        words = out.split()
        redis_version = next((w[2:] for w in words if w.startswith("v=")), "?")
    except (OSError, subprocess.SubprocessError):
        redis_version = "?"
    return {
        "python": platform.python_version(),
        "celery": celery.__version__,
        "redis_server": redis_version,
        "cpus": os.cpu_count(),
    }


def main() -> int:
    ap = Parser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rounds", type=positive, default=5)
    ap.add_argument("--tasks", type=positive, default=2000, help="tasks per run")
    ap.add_argument("--concurrency", type=positive, default=2, help="worker -c")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument(
        "--redis-server", default="redis-server", help="the redis-server to run"
    )
    ap.add_argument("--start-timeout", type=seconds, default=60.0)
    ap.add_argument("--result-timeout", type=seconds, default=300.0)
    ap.add_argument("--stop-timeout", type=seconds, default=60.0)
    args = ap.parse_args()

    # Everything the runs need, checked before anything is started.
    redis_exe = shutil.which(args.redis_server)
    if redis_exe is None:
        die(
            f"{args.redis_server!r} not found on PATH "
            "(install redis-server, or pass --redis-server PATH)"
        )
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        die(f"needs Celery and the redis client: pip install 'celery[redis]' ({e})")
    try:
        import mpguard.celery  # noqa: F401
    except ImportError as e:
        die(f"mpguard.celery does not import: {e}")

    info = versions(redis_exe)
    # With --json, stdout is the JSON alone; the progress goes to stderr.
    progress = sys.stderr if args.json else sys.stdout
    print(
        f"Python {info['python']}, Celery {info['celery']}, redis-server "
        f"{info['redis_server']}, {info['cpus']} CPUs; {args.tasks} tasks x "
        f"{args.rounds} rounds, -c {args.concurrency}; medians",
        file=progress,
        flush=True,
    )

    samples: dict[str, list[float]] = {pool: [] for pool in ORDER}
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as tmp:
        server = Redis(redis_exe, Path(tmp))
        try:
            server.start()
            bench = Bench(args, server.url, Path(tmp))
            for rnd in range(args.rounds + 1):
                tasks = args.tasks if rnd else min(args.tasks, WARM_ROUND_TASKS)
                rates = {pool: bench.run(pool, tasks) for pool in ORDER}
                label = f"round {rnd}" if rnd else "warm-up"
                print(
                    f"  {label}: stock {rates['stock']:,.0f} tasks/s, guarded "
                    f"{rates['guarded']:,.0f} tasks/s "
                    f"({rates['guarded'] / rates['stock']:.2f}x)",
                    file=progress,
                    flush=True,
                )
                if rnd:  # round 0 is the warm-up
                    for pool in ORDER:
                        samples[pool].append(rates[pool])
            # Before redis goes: the client's result listener would
            # otherwise try to reconnect to it.
            bench.app.close()
        except RunError as e:
            die(str(e), status=1)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        finally:
            server.stop()

    result = summary(samples)
    if args.json:
        print(json.dumps({**info, "args": vars(args), **result}, indent=2))
        return 0
    for pool, label in (
        ("stock", "stock (-P prefork)"),
        ("guarded", "guarded (mpguard)"),
    ):
        print(
            f"{label:<20} {result['median'][pool]:>8,.0f} tasks/s "
            f"[{result['min'][pool]:,.0f}..{result['max'][pool]:,.0f}]"
        )
    print(
        f"guarded vs stock: {result['ratio_median_of_rounds']:.2f}x "
        f"(median of per-round ratios; ratio of medians "
        f"{result['ratio_of_medians']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
