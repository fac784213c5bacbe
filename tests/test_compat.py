"""The private CPython (and billiard) internals ``mpguard._compat`` reads.

Run on every supported Python by tox and CI: a stdlib change to any of
them shows up here by name, not as a scenario that hangs.  Each check runs
in a fresh interpreter, since some change process-wide state.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECKS = {
    "interpreter_flags": (
        "from mpguard import _compat\n"
        "flags = _compat.interpreter_flags()\n"
        "assert isinstance(flags, list) and '-B' in flags, flags\n"
    ),
    "forkserver_preload": (
        "import multiprocessing as mp\n"
        "from mpguard import _compat\n"
        "assert _compat.forkserver_preload() == ['__main__']\n"
        "mp.set_forkserver_preload(['json'])\n"
        "assert _compat.forkserver_preload() == ['json']\n"
    ),
    "forkserver_supported": (
        "import sys\n"
        "from mpguard import _compat\n"
        "assert _compat.FORKSERVER_SUPPORTED == (sys.version_info < (3, 14))\n"
        "from multiprocessing import forkserver\n"
        "fs = forkserver.ForkServer()\n"
        "for name in ('_lock', '_forkserver_pid', '_forkserver_alive_fd',\n"
        "             '_forkserver_address', '_preload_modules'):\n"
        "    assert hasattr(fs, name), name\n"
    ),
    "default_context_if_set": (
        "import multiprocessing as mp, mpguard\n"
        "from mpguard import _compat\n"
        "assert _compat.default_context_if_set() is None\n"
        "assert mp.get_start_method(allow_none=True) is None  # not pinned\n"
        "mp.set_start_method('guarded-spawn')\n"
        "assert _compat.default_context_if_set() is mp.get_context('guarded-spawn')\n"
    ),
    "billiard": (
        "import threading, billiard, billiard.pool, mpguard.billiard\n"
        "from mpguard import _compat\n"
        "ctx = billiard.get_context('guarded')\n"
        "assert _compat.register_billiard_context('guarded', object()) is ctx\n"
        "pool = ctx.Pool(1)\n"
        "_compat.stop_billiard_respawn()\n"
        "assert pool._state == billiard.pool.TERMINATE\n"
        "assert pool._worker_handler._state == billiard.pool.TERMINATE\n"
        "pool.terminate()\n"
    ),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_compat(name):
    if name == "billiard":
        pytest.importorskip("billiard")
    out = subprocess.run(
        [sys.executable, "-B", "-c", CHECKS[name] + "print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert out.stdout.strip() == "ok", out.stderr
