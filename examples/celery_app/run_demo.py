"""mpguard's Celery demo: SIGKILL a busy worker's main process, see what survives.

Starts a real worker of ``proj`` (``celery -A proj worker -c 2``, whose app
sets ``worker_pool = "mpguard.celery:TaskPool"``) and sends it two tasks
that each start a ``sleep`` helper.  While both run, the demo SIGKILLs the
worker's main process, as ``kill -9`` or the OOM killer would, and lists
with psutil what of the worker's tree is still running a second later:
nothing.  (Celery's own prefork pool leaves both helpers running.)

Broker and result backend: the redis at ``REDIS_URL``; if it is not set,
the demo starts a redis-server of its own on a free loopback port.  It
stops everything it started before it exits.

    python examples/celery_app/run_demo.py

Exit status: 0 nothing survived; 1 something survived, or the demo could
not run (the worker did not start, a task did not); 2 bad input (an
argument, no redis-server on PATH, REDIS_URL unreachable, Celery, the redis
client or mpguard.celery not importable); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

PROG = "run_demo.py"
HERE = Path(__file__).resolve().parent
TASKS = 2
HELPER_SECONDS = 600
INSTALL = "pip install 'mpguard[celery]' redis"

try:
    import psutil
    import redis
    from celery.exceptions import CeleryError

    import mpguard.celery  # noqa: F401 - the pool the worker loads
except ImportError as e:
    print(f"{PROG}: {e} (install: {INSTALL})", file=sys.stderr)
    sys.exit(2)


class DemoError(Exception):
    """The demo could not run: exit status 1, with this message."""


def die(message: str) -> NoReturn:
    # One line, no traceback: the message is the diagnosis.
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        die(f"{message} (see --help)")


# --- the processes this demo starts -------------------------------------------


def spawn(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # Its own session: a Ctrl-C in the terminal reaches only this
        # script, and stop() can find everything the process started.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )


def exited(pid: int) -> bool:
    """Has our child *pid* exited?  Without reaping it: until it is reaped,
    its pid (and so its session id) cannot be reused."""
    try:
        return (
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        )
    except ChildProcessError:
        return True


def session_members(sid: int) -> list[int]:
    """Live processes of session *sid*: all descend from its leader."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send *sig* to our child *proc*, then SIGKILL whatever is left of its
    session, then reap it."""
    if not exited(proc.pid):
        os.kill(proc.pid, sig)
        end = time.monotonic() + 5
        while not exited(proc.pid) and time.monotonic() < end:
            time.sleep(0.02)
    end = time.monotonic() + 5
    while (left := session_members(proc.pid)) and time.monotonic() < end:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    if left:
        print(f"{PROG}: warning: could not stop {left}", file=sys.stderr)
    proc.wait()


def tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:]) or "no output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(exe: str, workdir: Path, started: list[Any]) -> str:
    """A throw-away redis-server on a free loopback port: its URL."""
    for attempt in range(3):
        port = free_port()  # another process may take it first: retry
        log = workdir / f"redis-{attempt}.log"
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
        proc = spawn(argv, log, cwd=workdir)
        started.append((proc, signal.SIGTERM))
        url = f"redis://127.0.0.1:{port}/0"
        end = time.monotonic() + 15
        while not exited(proc.pid) and time.monotonic() < end:
            if redis_answers(url):
                print(
                    f"redis-server {proc.pid} on 127.0.0.1:{port} (REDIS_URL not set)"
                )
                return url
            time.sleep(0.05)
        stop(proc, signal.SIGTERM)
        started.remove((proc, signal.SIGTERM))
    raise DemoError(f"redis-server would not start: {tail(log)}")


# --- the demo -------------------------------------------------------------------


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_ready(app: Any, node: str, worker: subprocess.Popen[bytes], log: Path) -> str:
    """Wait until the worker answers; the pool class it runs."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if exited(worker.pid):
            raise DemoError(f"the worker exited: {tail(log)}")
        if app.control.ping(destination=[node], timeout=0.5):
            stats = app.control.inspect([node], timeout=5).stats() or {}
            return str(stats.get(node, {}).get("pool", {}).get("implementation"))
    raise DemoError(f"the worker did not answer within 60 s: {tail(log)}")


def wait_running(
    results: list[Any], worker: subprocess.Popen[bytes], log: Path
) -> list[dict[str, int]]:
    """Wait until every task runs and has started its helper; their pids."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if exited(worker.pid):
            raise DemoError(f"the worker exited: {tail(log)}")
        states = [r.state for r in results]
        if all(s == "RUNNING" for s in states):
            return [dict(r.info) for r in results]
        if any(s in ("SUCCESS", "FAILURE") for s in states):
            raise DemoError(f"a task ended early: {states}: {tail(log)}")
        time.sleep(0.05)
    raise DemoError(f"the tasks did not start within 60 s: {tail(log)}")


def describe(p: psutil.Process, roles: dict[int, str]) -> str:
    if p.pid in roles:
        return roles[p.pid]
    try:
        cmdline = " ".join(p.cmdline())
    except psutil.Error:
        return "(gone)"
    if "_guardian_main" in cmdline:
        return "mpguard's guardian (leads the pool's process group)"
    return cmdline[:60]


def demo(url: str, workdir: Path, started: list[Any]) -> int:
    os.environ["REDIS_URL"] = url  # for proj, here and in the worker
    sys.path.insert(0, str(HERE))
    import proj

    queue = f"mpguard-demo-{uuid.uuid4().hex[:8]}"  # nothing else's tasks
    node = f"{queue}@demo"
    log = workdir / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "proj", "worker", "-c", "2"]
    argv += ["-Q", queue, "-n", node, "-l", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    path = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    worker = spawn(argv, log, cwd=HERE, env=env)
    started.append((worker, signal.SIGKILL))
    pool = wait_ready(proj.app, node, worker, log)
    print(f"celery worker {worker.pid}: pool {pool}, 2 processes")
    if pool != "mpguard.celery:TaskPool":
        raise DemoError(f"the worker runs pool {pool}, not mpguard.celery:TaskPool")

    results = [
        proj.crunch.apply_async((HELPER_SECONDS,), queue=queue) for _ in range(TASKS)
    ]
    try:
        running = wait_running(results, worker, log)
    finally:
        # Unsubscribe from the results now, while redis still answers.
        results.clear()
    roles: dict[int, str] = {}
    for i, info in enumerate(running, 1):
        roles[info["pool_child"]] = f"pool child, running task {i}"
        roles[info["helper"]] = f"sleep {HELPER_SECONDS}, the helper task {i} started"
    order = list(roles)  # the guardian first, then each task's pair
    tree = sorted(
        psutil.Process(worker.pid).children(recursive=True),
        key=lambda p: order.index(p.pid) if p.pid in roles else -1,
    )
    print(f"{TASKS} tasks running; below the worker's main process:")
    for p in tree:
        print(f"  {p.pid:>7}  {describe(p, roles)}")

    os.kill(worker.pid, signal.SIGKILL)
    t0 = time.monotonic()
    print(f"kill -9 {worker.pid} (the worker's main process)")
    while any(alive(p) for p in tree) and time.monotonic() - t0 < 1.0:
        time.sleep(0.005)
    ms = (time.monotonic() - t0) * 1000
    time.sleep(max(0.0, 1.0 - ms / 1000))
    # What is left of the tree, and anything else the worker's session holds.
    left = [p for p in tree if alive(p)]
    seen = {p.pid for p in left}
    for pid in session_members(worker.pid):
        if pid not in seen:
            try:
                left.append(psutil.Process(pid))
            except psutil.Error:
                pass
    if left:
        print("still running 1 s after kill -9 of the worker:")
        for p in left:
            print(f"  {p.pid:>7}  {describe(p, roles)}")
        print("FAILED: the worker's tree survived its main process")
        return 1
    print(f"everything gone {ms:.0f} ms after kill -9 of the worker")
    print("OK: nothing survived")
    return 0


def terminated(signum: int, frame: object) -> NoReturn:
    print(f"{PROG}: terminated, cleaning up", file=sys.stderr)
    sys.exit(128 + signum)  # the finally blocks stop what was started


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="SIGKILL a busy Celery worker running mpguard.celery:TaskPool "
        "and list what survives (REDIS_URL: the broker; default: a redis-server "
        "started here).",
    )
    parser.parse_args(argv)
    url = os.environ.get("REDIS_URL")
    exe = shutil.which("redis-server")
    if not url and exe is None:
        die("no redis-server on PATH: install one, or set REDIS_URL")
    try:
        if url and not redis_answers(url):
            die(f"no redis answers at REDIS_URL={url}")
    except ValueError as e:  # not a redis URL
        die(f"REDIS_URL={url}: {e}")
    # SIGTERM to this script: clean up as for Ctrl-C.
    signal.signal(signal.SIGTERM, terminated)
    workdir = Path(tempfile.mkdtemp(prefix="mpguard-celery-demo-"))
    started: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []
    try:
        if not url:
            assert exe is not None
            url = start_redis(exe, workdir, started)
        return demo(url, workdir, started)
    except (DemoError, CeleryError, redis.RedisError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        for proc, sig in reversed(started):  # the worker first, then redis
            stop(proc, sig)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
