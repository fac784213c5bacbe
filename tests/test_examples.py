"""Every example runs and demonstrates what it claims (exit status 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example(path, tmp_path):
    # Its own session: the examples kill their own parents and groups.
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_there_is_one_example_per_seed_scenario():
    names = {p.stem for p in EXAMPLES}
    assert {"demo", "zombie", "orphan", "sigterm_handler", "killpg"} <= names
