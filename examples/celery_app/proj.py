"""A Celery app whose worker is safe to kill: the example's ``proj``.

The one line that opts the worker in is ``app.conf.worker_pool``; everything
else is an ordinary Celery app.  Broker and result backend: the redis at
``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

    celery -A proj worker -c 2 -l INFO         # in examples/celery_app/

``run_demo.py``, next to this file, runs a worker of this app and
SIGKILLs its main process while the tasks run.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("proj", broker=REDIS_URL, backend=REDIS_URL)
app.conf.worker_pool = "mpguard.celery:TaskPool"  # the one line
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(bind=True)
def crunch(self: Any, seconds: float = 2.0) -> dict[str, int]:
    """Start a helper process, work while it runs, and wait for it.

    ``sleep`` stands in for the helper a real task starts (ffmpeg, a
    headless browser, a shell script).  While it runs, the task's state is
    ``RUNNING`` with both pids, so a client can see who does the work.
    """
    helper = subprocess.Popen(["sleep", str(seconds)])
    self.update_state(
        state="RUNNING", meta={"pool_child": os.getpid(), "helper": helper.pid}
    )
    rounds = 0
    while helper.poll() is None:
        sum(range(10_000))  # the task's own share of the work
        rounds += 1
        time.sleep(0.05)
    return {"helper": helper.pid, "helper_status": helper.returncode, "rounds": rounds}
