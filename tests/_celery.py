"""A real ``celery worker`` against a real redis-server, for the Celery tests.

The worker runs ``tests/scenarios/celery_proj.py`` in its own session
(``mpguard.testing.run_scenario``: everything it made is SIGKILLed at the
end).  The tests talk to it as any client would: through the broker, with
the same app module imported here.  Tasks and worker signals leave their
pids as JSON files in a report folder; the test waits for them with a
deadline and remembers every pid for the cleanup.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from _support import LONG, SCENARIOS
from mpguard.testing import Scenario, run_scenario, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["POOLS", "CeleryWorker", "celery_app", "celery_worker"]

#: Pool flavours: the guarded pool set in the app's configuration, the same
#: through Celery's ``-P custom`` environment hook, and Celery's own prefork
#: pool (every protection test's negative control).
POOLS = ("guarded", "custom", "stock")


def celery_app(broker: str) -> Any:
    """The test app module, imported here as the client."""
    os.environ["MPGUARD_TEST_BROKER"] = broker
    if str(SCENARIOS) not in sys.path:
        sys.path.insert(0, str(SCENARIOS))
    mod = importlib.import_module("celery_proj")
    if broker != mod.BROKER:  # pragma: no cover - one server per session
        mod = importlib.reload(mod)
    return mod


class CeleryWorker:
    """A running worker, its queue, its report folder and its scenario."""

    def __init__(self, sc: Scenario, proj: Any, queue: str, report: Path) -> None:
        self.sc = sc
        self.proj = proj
        self.queue = queue
        self.report_dir = report
        ready = sc.report(LONG)
        self.main_pid: int = ready["main_pid"]

    def send(self, task: str, *args: Any, **options: Any) -> Any:
        """Send task *task* of the app with *args*; its AsyncResult."""
        return getattr(self.proj, task).apply_async(args, queue=self.queue, **options)

    def wait_report(self, name: str, timeout: float = LONG) -> dict[str, Any]:
        """The JSON a task or signal left as *name*, once it is there."""
        path = self.report_dir / f"{name}.json"
        assert wait_for(path.exists, timeout), f"no {name} report; {self.log()}"
        data: dict[str, Any] = json.loads(path.read_text())
        for key in ("worker", "grandchildren", "pid"):
            value = data.get(key)
            if value is not None:
                self.sc.remember(value if isinstance(value, list) else [value])
        return data

    def reports(self, prefix: str) -> list[dict[str, Any]]:
        """Every report whose name starts with *prefix*."""
        return [
            json.loads(p.read_text())
            for p in sorted(self.report_dir.glob(f"{prefix}*.json"))
        ]

    def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A remote-control command to this worker only, with a reply."""
        dest = [self.hostname]
        return getattr(self.proj.app.control, method)(
            *args, destination=dest, reply=True, timeout=5, **kwargs
        )

    @property
    def hostname(self) -> str:
        return f"{self.queue}@mpguard-test"

    def stats(self) -> dict[str, Any]:
        """``inspect().stats()`` of this worker.

        Asked again until a deadline: the worker logs "ready" before its
        remote-control queue has subscribed to the broadcast channel (redis
        pub/sub, which keeps nothing for a late subscriber), so a first
        broadcast right after "ready" can go unheard on a loaded machine.
        """
        inspect = self.proj.app.control.inspect(destination=[self.hostname], timeout=1)
        deadline = time.monotonic() + 10
        got = inspect.stats()
        while not got and time.monotonic() < deadline:
            got = inspect.stats()
        assert got, f"no stats reply in 10 s; {self.log()}"
        return dict(got[self.hostname])

    def pool_pids(self) -> list[int]:
        """The pool children, from the worker's own stats."""
        return list(self.stats()["pool"]["processes"])

    def log(self) -> str:
        out, err = self.sc.output()
        return f"worker output:\n{out[-3000:]}\n{err[-6000:]}"


@contextmanager
def celery_worker(
    tmp_path: Path,
    broker: str,
    pool: str,
    *args: str,
    blocking: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[CeleryWorker]:
    """Run a real worker of the test app on *pool* (one of :data:`POOLS`).

    *args* go to ``celery worker``.  *blocking*: a worker without an event
    loop (billiard's threaded Pool), started through ``app.Worker``.
    """
    proj = celery_app(broker)
    queue = "q" + uuid.uuid4().hex[:12]
    report = tmp_path / f"celery-{queue}"
    report.mkdir()
    full_env = dict(os.environ)
    full_env.update(
        PYTHONPATH=str(SCENARIOS),
        MPGUARD_TEST_BROKER=broker,
        MPGUARD_TEST_POOL=pool,
        MPGUARD_TEST_REPORT=str(report),
    )
    full_env.pop("CELERY_CUSTOM_WORKER_POOL", None)
    hostname = f"{queue}@mpguard-test"
    if blocking:
        cmd = [sys.executable, str(SCENARIOS / "celery_proj.py"), "blocking"]
        cmd += [hostname, queue, "2"]
    else:
        cmd = [sys.executable, "-m", "celery", "-A", "celery_proj", "worker"]
        cmd += ["-n", hostname, "-Q", queue, "-l", "INFO"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if "-c" not in args and not any(a.startswith("--autoscale") for a in args):
            cmd += ["-c", "2"]
        if pool == "custom":
            full_env["CELERY_CUSTOM_WORKER_POOL"] = "mpguard.celery:TaskPool"
            cmd += ["-P", "custom"]
        cmd += list(args)
    if env:
        full_env.update(env)
    started = time.monotonic()
    with run_scenario(
        cmd,
        report / "ready.json",
        env=full_env,
        cwd=tmp_path,
        pid_keys=("worker", "grandchildren"),
    ) as sc:
        w = CeleryWorker(sc, proj, queue, report)
        w.started_in = time.monotonic() - started
        yield w
