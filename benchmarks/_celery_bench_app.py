"""The Celery app benchmarks/bench_celery.py runs its workers and client on.

Not a benchmark itself: the worker loads it as ``-A _celery_bench_app:app``
and the benchmark imports it as the client.  ``MPGUARD_BENCH_BROKER`` is the
redis URL of the benchmark's own redis-server, broker and result backend
both.  The pool is chosen on the worker's command line, never here, so that
both pools run exactly this configuration.
"""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("MPGUARD_BENCH_BROKER", "redis://127.0.0.1:6379/0")

app = Celery("_celery_bench_app", broker=BROKER, backend=BROKER)
app.conf.update(
    # Celery's defaults otherwise (prefetch, acks): the benchmark measures
    # the pool as people run it, not a tuned setup.
    broker_connection_retry_on_startup=True,  # and no deprecation warning
    worker_hijack_root_logger=False,
    # The redis is thrown away after the run; short expiry keeps it small.
    result_expires=600,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y
