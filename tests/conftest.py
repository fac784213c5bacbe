from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

if not sys.platform.startswith("linux"):
    collect_ignore_glob = ["test_*linux*.py"]


from _support import GUARDED_METHODS, SHORT
from mpguard.testing import wait_gone

# The plugin tests run pytest inside pytest.
pytest_plugins = ["pytester"]

# A suite started as a background job of a shell without job control
# (`bash -c 'pytest &'`) inherits SIGINT ignored, and an ignored signal
# stays ignored across fork and exec: every scenario would then shrug off
# Ctrl-C, and the tests that check Ctrl-C handling would fail for reasons
# that have nothing to do with mpguard.  Scenarios start from Python's
# default instead.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=GUARDED_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """A guarded start method; a scenario test that takes it runs once per
    method, and its stdlib control runs on the method underneath."""
    return str(request.param)


# --- a real redis-server for the Celery tests ---------------------------------
#
# pytest-redis starts the redis-server binary on a free loopback port for the
# session and stops it afterwards.  Without the binary the Celery tests skip,
# except in CI (.ci/run sets MPGUARD_REQUIRE_REDIS), where they fail.

try:
    from pytest_redis import factories as _redis_factories
except ImportError:  # pragma: no cover - the test extra brings it
    _redis_factories = None
else:
    # timeout: redis closes a client idle this long; the test client keeps
    # one connection for the whole session (pytest-redis defaults to 30 s).
    mpguard_redis_proc = _redis_factories.redis_proc(port=None, save="", timeout=3600)


@pytest.fixture
def kill_at_end() -> Iterator[list[int]]:
    """pids a test made outside a scenario (a detached program, a
    grandchild of the control): SIGKILLed when the test ends."""
    pids: list[int] = []
    yield pids
    pids = [pid for pid in pids if pid != os.getpid()]  # never pytest itself
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    wait_gone(pids, SHORT)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a real redis-server for this session."""
    import os
    import shutil

    why = None
    if shutil.which("redis-server") is None:
        why = "redis-server is not on PATH (apt-get install redis-server)"
    elif _redis_factories is None:
        why = "pytest-redis is not installed (pip install -e '.[test]')"
    if why is not None:
        if os.environ.get("MPGUARD_REQUIRE_REDIS"):
            pytest.fail(f"the Celery tests need a real redis-server: {why}")
        pytest.skip(why)
    proc = request.getfixturevalue("mpguard_redis_proc")
    yield f"redis://{proc.host}:{proc.port}/0"
    # A Celery AsyncResult unsubscribes from the server when it is
    # collected: collect the client's last ones while the server still runs
    # (torn down after this), not at interpreter exit, where the failed
    # unsubscribe would end the run with an error.
    import gc

    gc.collect()
