"""In-process checks of pure API: errors, policy, input validation.

Nothing here starts a guarded child or changes a signal disposition.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal

import pytest

import mpguard
from mpguard import _platform


def test_public_api_is_exported():
    for name in mpguard.__all__:
        assert hasattr(mpguard, name), name


@pytest.mark.parametrize(
    "cls",
    [
        mpguard.MPGuardError,
        mpguard.GuardSetupError,
        mpguard.GuardClosedError,
        mpguard.UnsupportedPlatformError,
    ],
)
def test_errors_pickle_and_decode_signals(cls):
    err = cls("worker died while running a task", pid=4242, pgid=4240, exitcode=-9)
    assert isinstance(err, mpguard.MPGuardError)
    assert str(err) == (
        "worker died while running a task (pid=4242, pgid=4240, signal=SIGKILL)"
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.pid, back.pgid, back.exitcode, back.signal) == (
        4242,
        4240,
        -9,
        signal.SIGKILL,
    )
    assert str(back) == str(err)


@pytest.mark.parametrize(
    "cls",
    [mpguard.WorkerLostError, mpguard.TaskTimeoutError, mpguard.PoolTerminatedError],
)
def test_task_errors_name_the_task_and_pickle(cls):
    kw = {"timeout": 2.5} if cls is mpguard.TaskTimeoutError else {}
    err = cls(
        "worker died while running a task", pid=4242, exitcode=-9, task="f(3)", **kw
    )
    assert isinstance(err, mpguard.TaskError)
    expected = "worker died while running a task (pid=4242, signal=SIGKILL, task=f(3)"
    assert str(err).startswith(expected)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.pid, back.signal, back.task) == (4242, signal.SIGKILL, "f(3)")
    assert str(back) == str(err)
    if kw:
        assert back.timeout == 2.5
        assert str(err).endswith("timeout=2.5s)")
        assert isinstance(err, TimeoutError)


def test_error_types_are_also_stdlib_types():
    assert issubclass(mpguard.GuardSetupError, OSError)
    assert issubclass(mpguard.UnsupportedPlatformError, NotImplementedError)
    assert issubclass(mpguard.GuardClosedError, RuntimeError)
    assert issubclass(mpguard.GuardDegradedWarning, RuntimeWarning)
    err = mpguard.GuardSetupError("setpgid failed", pid=1, errno=1, hint="try X")
    assert str(err).endswith("; try X")
    assert pickle.loads(pickle.dumps(err)).errno == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_bad_grace_is_a_value_error(bad):
    with pytest.raises(ValueError, match="grace"):
        mpguard.configure(grace=bad)
    with pytest.raises(ValueError, match="grace"):
        mpguard.GuardedPool(1, grace=bad)


def test_grace_must_be_a_number():
    with pytest.raises(TypeError, match="grace"):
        mpguard.GuardedPool(1, grace="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGCHLD, 999])
def test_uncatchable_or_unknown_signals_are_refused(sig):
    with pytest.raises(ValueError, match=r"signal|SIG"):
        mpguard.configure(signals=(sig,))


def test_configure_keeps_what_it_is_not_given():
    before = mpguard.get_policy()
    try:
        p = mpguard.configure(grace=2.5)
        assert p.grace == 2.5
        assert p.signals == before.signals
    finally:
        mpguard.configure(grace=before.grace)


def test_guarded_pool_refuses_a_plain_context():
    with pytest.raises(TypeError, match="guarded context"):
        mpguard.GuardedPool(1, context=mp.get_context("fork"))


@pytest.mark.parametrize("pgid", [0, 1, -1])
def test_killpg_refuses_pgid_le_1(pgid):
    with pytest.raises(mpguard.MPGuardError, match="<= 1"):
        _platform.killpg(pgid, signal.SIGTERM)


def test_killpg_refuses_own_group():
    with pytest.raises(mpguard.MPGuardError, match="own process group"):
        _platform.killpg(os.getpgrp(), 0)


def test_process_table_sees_this_process():
    table = _platform.process_table()
    me = [e for e in table if e.pid == os.getpid()]
    assert len(me) == 1
    assert me[0].ppid == os.getppid()
    assert me[0].pgid == os.getpgrp()


def test_descendants_walks_the_tree():
    table = [
        _platform.ProcEntry(10, 1, 10, False),
        _platform.ProcEntry(11, 10, 10, False),
        _platform.ProcEntry(12, 11, 12, False),
        _platform.ProcEntry(13, 1, 13, False),
    ]
    assert _platform.descendants([10], table) == [11, 12]
    assert _platform.group_members(10, table) == [10, 11]


@pytest.mark.parametrize("bad", [-0.1, 0.95, 5, float("nan")])
def test_parent_death_grace_is_bounded(bad):
    # At most 0.9 s: the group must be gone within 1 s of the parent's death.
    with pytest.raises(ValueError, match="parent_death_grace"):
        mpguard.configure(parent_death_grace=bad)


def test_parent_handlers_must_be_a_bool():
    with pytest.raises(TypeError, match="parent_handlers"):
        mpguard.configure(parent_handlers="no")  # type: ignore[arg-type]


def test_bad_parent_death_grace_in_the_environment_is_named():
    import subprocess
    import sys

    # Read on first use (the import stays light): the first pool fails,
    # naming the variable, and the command says so in one line.
    env = {**__import__("os").environ, "MPGUARD_PARENT_DEATH_GRACE": "2"}
    code = "import mpguard; mpguard.GuardedPool(1)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "MPGUARD_PARENT_DEATH_GRACE must be a number of seconds from 0" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "mpguard", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("mpguard: MPGUARD_PARENT_DEATH_GRACE must be")
    assert len(out.stderr.splitlines()) == 1


def test_import_loads_only_what_registration_needs():
    # Every spawn and forkserver worker, and every short script, imports
    # mpguard: it costs no more than multiprocessing's own pool module.
    # Checked as the set of modules loaded, not as a time.
    import subprocess
    import sys

    code = """
import sys
import multiprocessing.pool
before = set(sys.modules)
import mpguard
print(" ".join(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    heavy = {"typing", "logging", "dataclasses", "inspect", "psutil", "ctypes", "mmap"}
    assert not loaded & heavy
    assert not {m for m in loaded if m.startswith(("mpguard._group", "mpguard._pool"))}
    # ...and the rest comes on first use.
    code = (
        "import mpguard, sys; mpguard.GuardedPool; "
        "print('mpguard._pool' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "True", out.stderr


def test_a_fork_pool_loads_no_typing_and_no_resource_tracker():
    # A script that only builds a fork GuardedPool and maps pays for neither:
    # typing (2 ms, and 0.8 MiB more for every fork to copy) and the
    # resource tracker with multiprocessing.spawn (1.4 ms).  The control
    # shows the check can fail: the stdlib's own spawn Pool loads the
    # tracker.
    import subprocess
    import sys

    code = """
import sys
import multiprocessing as mp
import mpguard
if __name__ == "__main__":
    before = set(sys.modules)
    if sys.argv[1] == "guarded":
        pool = mpguard.GuardedPool(2)
    else:
        pool = mp.get_context("spawn").Pool(1)
    with pool:
        pool.map(abs, range(4))
    print(" ".join(sorted(set(sys.modules) - before)))
"""

    def loaded(kind: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", code, kind],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return set(out.stdout.split())

    heavy = {"typing", "multiprocessing.resource_tracker", "multiprocessing.spawn"}
    assert not loaded("guarded") & heavy
    assert "multiprocessing.resource_tracker" in loaded("control")


def test_logging_is_not_imported_for_mpguard_but_records_flow_once_it_is():
    # mpguard logs through a stand-in that imports nothing: a program that
    # never imports logging cannot read the records anyway.  One that
    # imports it, even after mpguard, gets them, with the caller's line.
    import subprocess
    import sys

    code = """
import sys
import mpguard
if __name__ == "__main__":
    with mpguard.GuardedPool(1) as pool:
        pool.map(abs, [1])
    mpguard.shutdown()
    print("logging imported:", "logging" in sys.modules)
    import logging
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(module)s %(message)s"
    )
    with mpguard.GuardedPool(1) as pool:
        pool.map(abs, [1])
    mpguard.shutdown()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "logging imported: False" in out.stdout
    assert "mpguard _guard teardown (api)" in out.stdout, out.stdout


class _MyPolicy(mpguard.GuardPolicy):
    pass


def test_policy_and_capabilities_are_frozen_records():
    # Records of mpguard's own (no dataclasses import): what a frozen
    # dataclass gives, field by field.
    import copy
    import pickle
    import signal

    from mpguard._config import replace

    p = mpguard.GuardPolicy(grace=2.0)
    assert p == mpguard.GuardPolicy(2.0) != mpguard.GuardPolicy(grace=3.0)
    assert hash(p) == hash(mpguard.GuardPolicy(grace=2.0))
    assert pickle.loads(pickle.dumps(p)) == p
    assert repr(p).startswith("GuardPolicy(grace=2.0, signals=(")
    with pytest.raises(AttributeError, match="cannot assign to field 'grace'"):
        p.grace = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete field 'grace'"):
        del p.grace  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected argument 'bogus'"):
        mpguard.GuardPolicy(bogus=1)  # type: ignore[call-arg]
    q = replace(p, signals=(signal.SIGTERM,))
    assert (q.grace, q.signals) == (2.0, (signal.SIGTERM,))
    # match patterns (3.10+) bind positionally by these names.
    assert mpguard.GuardPolicy.__match_args__[:2] == ("grace", "signals")
    if hasattr(copy, "replace"):  # 3.13+
        assert copy.replace(p, grace=5.0).grace == 5.0
    m = _MyPolicy(grace=1.0)  # a subclass keeps its class
    assert type(pickle.loads(pickle.dumps(m))) is _MyPolicy
    assert repr(m).startswith("_MyPolicy(grace=1.0")
    caps = mpguard.capabilities()
    assert caps.as_dict()["python"] == caps.python
    assert pickle.loads(pickle.dumps(caps)) == caps
