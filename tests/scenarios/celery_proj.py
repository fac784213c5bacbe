"""The Celery app the Celery tests run a real worker of.

The worker is ``celery -A celery_proj worker`` (or ``python celery_proj.py
blocking ...`` for a worker without an event loop, which runs billiard's
threaded Pool).  Set by the test, in the environment:

* ``MPGUARD_TEST_BROKER``: the redis URL (broker and result backend);
* ``MPGUARD_TEST_POOL``: ``guarded`` (``worker_pool`` set in the app's
  configuration), ``custom`` (set by the test through
  ``CELERY_CUSTOM_WORKER_POOL`` and ``-P custom``) or ``stock`` (Celery's
  own prefork pool, the negative control);
* ``MPGUARD_TEST_REPORT``: a folder where tasks and worker signals leave
  their pids, one JSON file each; ``ready.json`` (the worker's main pid) is
  written once the worker consumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

BROKER = os.environ.get("MPGUARD_TEST_BROKER", "redis://127.0.0.1:6379/0")
POOL = os.environ.get("MPGUARD_TEST_POOL", "guarded")
REPORT = os.environ.get("MPGUARD_TEST_REPORT", "")

app = Celery("celery_proj", broker=BROKER, backend=BROKER)
app.conf.update(
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    task_track_started=True,
)
if POOL == "guarded":
    app.conf.worker_pool = "mpguard.celery:TaskPool"

#: A grandchild that ignores SIGTERM (the disposition survives exec).
STUBBORN = ["sh", "-c", "trap '' TERM; exec sleep 600"]
SLEEPER = ["sleep", "600"]


def _report(name: str, data: object) -> None:
    if not REPORT:
        return
    path = os.path.join(REPORT, name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


@signals.worker_ready.connect
def _ready(**_: object) -> None:
    _report("ready", {"main_pid": os.getpid()})


@signals.worker_process_init.connect
def _process_init(**_: object) -> None:
    _report(f"init-{os.getpid()}", {"pid": os.getpid(), "pgid": os.getpgrp()})


@signals.worker_process_shutdown.connect
def _process_shutdown(pid: int | None = None, **_: object) -> None:
    _report(f"shutdown-{os.getpid()}", {"pid": os.getpid()})


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def whoami() -> list[int]:
    return [os.getpid(), os.getpgrp()]


@app.task
def hold(tag: str, seconds: float, stubborn: bool = False, leave: bool = False) -> str:
    """Start a grandchild, report the pids, then sleep *seconds*.

    *leave*: the grandchild is left running when the task returns, as a
    task that starts a helper and forgets it would.
    """
    kid = subprocess.Popen(STUBBORN if stubborn else SLEEPER)
    _report(
        tag,
        {"worker": os.getpid(), "pgid": os.getpgrp(), "grandchildren": [kid.pid]},
    )
    time.sleep(seconds)
    if not leave:
        kid.kill()
        kid.wait()
    return tag


@app.task
def background(tag: str, seconds: float) -> str:
    """Start a job in the background the way a shell does (its parent, the
    shell, exits at once), report its pid, then work *seconds*."""
    out = subprocess.run(
        ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    job = int(out.stdout)
    _report(tag, {"worker": os.getpid(), "grandchildren": [job]})
    time.sleep(seconds)
    return tag


@app.task
def cleans_up(tag: str) -> None:
    """Handle SIGTERM by leaving a marker file, then wait to be killed."""

    def on_term(signum: int, frame: object) -> None:
        _report(tag + "-cleaned", {"pid": os.getpid()})
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    _report(tag, {"worker": os.getpid(), "grandchildren": []})
    time.sleep(600)


@app.task
def soft(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return "slept"


@app.task
def abandon() -> int:
    """Start a process and never wait for it (the zombie-maker)."""
    return os.posix_spawnp("true", ["true"], os.environ)


KEPT: list[subprocess.Popen[bytes]] = []


@app.task
def start_kept(code: int) -> int:
    """Start a child and keep its Popen (its owner waits later), and one
    that is abandoned; return the kept child's pid."""
    kept = subprocess.Popen(["sh", "-c", f"exit {code}"])
    KEPT.append(kept)
    os.posix_spawnp("true", ["true"], os.environ)
    return kept.pid


@app.task
def wait_kept() -> list[int | None]:
    """The exit statuses of the kept children, as their owner sees them."""
    return [p.wait() for p in KEPT]


def _blocking(argv: list[str]) -> int:
    """A worker without an event loop: billiard's threaded Pool."""
    name, queue, concurrency = argv
    worker = app.Worker(
        hostname=name,
        queues=[queue],
        concurrency=int(concurrency),
        use_eventloop=False,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        loglevel="INFO",
    )
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__" and sys.argv[1:2] == ["blocking"]:
    sys.exit(_blocking(sys.argv[2:]))
