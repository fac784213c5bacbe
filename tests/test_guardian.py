"""The guardian in both its interpreters: perl when one is on PATH, else python.

Each case starts the guardian's real command line (``_guardian.command``)
from a scenario that owns it, with a ``sleep`` in its group, and checks the
three ways its watch ends: the owner's death (seen through a pidfd), the
lifeline's EOF (the owner released it), and neither (the control: nothing
is killed while the owner lives and holds the lifeline).  The pool-level
guarantees run on whichever guardian the machine gives (perl here); the
parent-death tests also run the python one (``MPGUARD_DISABLE=perl``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from _support import (
    alive,
    describe,
    python_in_own_session,
    scenario,
    wait_for,
    wait_gone,
)
from mpguard import _platform
from mpguard._group import _guardian

pytestmark = pytest.mark.linux

KINDS = [
    pytest.param(
        "perl",
        marks=pytest.mark.skipif(_platform.PERL is None, reason="no perl on PATH"),
    ),
    "python",
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_group_dies_with_the_owner(tmp_path, kind):
    with scenario("guardian", tmp_path, kind, "hold") as sc:
        r = sc.report()
        assert r["pgid"] == r["guardian"]
        script = "_guardian_main.pl" if kind == "perl" else "_guardian_main.py"
        assert any(a.endswith(script) for a in r["cmd"]), r["cmd"]
        sc.signal(signal.SIGKILL)
        left = wait_gone([r["member"], r["guardian"]], 2.0)
        assert not left, describe(left)


@pytest.mark.parametrize("kind", KINDS)
def test_the_group_dies_when_the_lifeline_closes(tmp_path, kind):
    with scenario("guardian", tmp_path, kind, "release") as sc:
        r = sc.report()
        left = wait_gone([r["member"], r["guardian"]], 2.0)
        assert not left, describe(left)
        assert alive(sc.pid)  # the owner lives: the lifeline said it


@pytest.mark.parametrize("kind", KINDS)
def test_control_nothing_dies_while_the_owner_lives_sigterm_spares_it(tmp_path, kind):
    with scenario("guardian", tmp_path, kind, "hold") as sc:
        r = sc.report()
        # Watched for a while: the guardian kills nothing on its own.
        assert not wait_for(lambda: not alive(r["member"]), 1.0)
        # A graceful teardown's group-wide SIGTERM: the member dies of it,
        # the guardian ignores it (it must outlive the workers).
        os.killpg(r["pgid"], signal.SIGTERM)
        assert not wait_gone([r["member"]], 2.0)
        assert alive(r["guardian"])
        sc.signal(signal.SIGKILL)
        assert not wait_gone([r["guardian"]], 2.0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_guardian_that_leads_no_group_exits_2_and_kills_nothing(kind):
    # Started in this test's own group: it must never signal that group.
    perl = _platform.PERL if kind == "perl" else None
    r, w = os.pipe()
    try:
        p = subprocess.run(
            _guardian.command(os.getpid(), r, 0.0, perl=perl),
            pass_fds=(r,),
            env=_guardian.spawn_env(perl),
            timeout=30,
            check=False,
        )
    finally:
        os.close(r)
        os.close(w)
    assert p.returncode == 2


def test_a_perl_guardian_gets_no_perl_variables(monkeypatch):
    # PERL5OPT and PERL5LIB could load code into it; python -I ignores its
    # own PYTHON* variables, so its environment is inherited as is.
    monkeypatch.setenv("PERL5OPT", "-Mstrict")
    monkeypatch.setenv("PERL5LIB", "/nowhere")
    env = _guardian.spawn_env("/usr/bin/perl")
    assert env is not None
    assert not any(k.startswith("PERL") for k in env)
    assert env["PATH"] == os.environ["PATH"]
    assert _guardian.spawn_env(None) is None


def test_a_perl_that_cannot_run_the_guardian_is_warned_and_python_takes_over(tmp_path):
    # A `perl` first on PATH that exits at once, as one that cannot run the
    # script would: the guard is warned broken (its children no longer die
    # with the owner), and the next guardian runs in python.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "perl").write_text("#!/bin/sh\nexit 255\n")
    (fake / "perl").chmod(0o755)
    code = (
        "import multiprocessing as mp, time, warnings, mpguard\n"
        "from mpguard._group import current_guard\n"
        "warnings.simplefilter('always')\n"
        "ctx = mp.get_context('guarded')\n"
        "from mpguard._group import holding\n"
        "with holding() as first:\n"
        "    deadline = time.monotonic() + 10\n"
        "    while first.guardian.held() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "q = ctx.Process(target=time.sleep, args=(5,)); q.start()\n"
        "with open(f'/proc/{current_guard().pgid}/cmdline', 'rb') as f:\n"
        "    print(f.read().split(b'\\0')[0].decode())\n"
        "q.kill(); q.join()\n"
    )
    out = python_in_own_session(
        code, {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    )
    assert out.returncode == 0, out.stderr
    assert "exited with status 255" in out.stderr, out.stderr
    assert "is gone" in out.stderr, out.stderr  # the broken guard, warned
    assert out.stdout.strip() == sys.executable
