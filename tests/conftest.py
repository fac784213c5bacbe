from __future__ import annotations

import sys

import psutil
import pytest

if not sys.platform.startswith("linux"):
    collect_ignore_glob = ["test_*linux*.py"]


from _support import GUARDED_METHODS
from mpguard.testing import describe, snapshot


@pytest.fixture(params=GUARDED_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """A guarded start method; a scenario test that takes it runs once per
    method, and its stdlib control runs on the method underneath."""
    return str(request.param)


@pytest.fixture(autouse=True)
def no_leaked_children():
    """Fail a test that leaves a child or grandchild of pytest behind."""
    before = snapshot()
    yield
    left = before.leaked(5.0)
    for pid in left:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert not left, f"leaked processes: {describe(left)}"
