"""Every example runs and demonstrates what it claims (exit status 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

pytestmark = pytest.mark.linux


def _run(path, tmp_path, env=None):
    """Run example *path*; its exit status (None if it hung) and output."""
    # Its own session: the examples kill their own parents and groups.
    # Output goes to a file, not a pipe: an orphan an example failed to
    # clean up (the stdlib half of a demo) must not block the test.
    log = tmp_path / "output.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(path)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        rc = proc.wait(90)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the example's own session
        except ProcessLookupError:
            pass
        proc.wait()
    return rc, log.read_text(errors="replace")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example(path, tmp_path):
    rc, text = _run(path, tmp_path)
    assert rc == 0, text


def test_there_is_one_example_per_classic_recipe():
    # The main demo, and one rewrite of each recipe that blog posts keep
    # giving against zombies and orphans: an unjoined child, daemon=True,
    # a SIGTERM handler set before the children, killpg of one's own group.
    names = {p.stem for p in EXAMPLES}
    assert {"demo", "zombie", "orphan", "sigterm_handler", "killpg"} <= names


def test_celery_demo(tmp_path, redis_url):
    # A real worker, SIGKILLed while two tasks run: nothing survives.
    pytest.importorskip("celery")
    demo = Path(__file__).parent.parent / "examples" / "celery_app" / "run_demo.py"
    rc, text = _run(demo, tmp_path, env={**os.environ, "REDIS_URL": redis_url})
    assert rc == 0, text
    assert "nothing survived" in text
