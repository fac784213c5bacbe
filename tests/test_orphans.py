"""Abandoned children are reaped; children an object owns are not.

The blog recipes' fixes for zombies, ``signal(SIGCHLD, SIG_IGN)`` and a
``waitpid(-1)`` loop, steal the exit statuses ``subprocess`` waits for:
the negative control shows ``Popen.wait()`` getting a wrong status.
``AbandonedReaper`` reaps only the children no ``Popen``/``Process`` owns.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from _support import SHORT, wait_for
from mpguard._group import AbandonedReaper
from mpguard.testing import zombies

pytestmark = [
    pytest.mark.linux,
    # Dropping a running Popen is the point: it warns, as it should.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


def _start():
    kept = subprocess.Popen(["sh", "-c", "exit 7"])
    abandoned = os.posix_spawnp("true", ["true"], os.environ)
    # Dropped while running: subprocess's own list of dropped Popens.
    subprocess.Popen(["sh", "-c", "sleep 0.05; exit 3"])
    return kept, abandoned


def _all_exited(kept, abandoned):
    return wait_for(lambda: {kept.pid, abandoned} <= set(zombies()), SHORT)


def test_abandoned_children_are_reaped_and_owned_ones_keep_their_status():
    kept, abandoned = _start()
    assert _all_exited(kept, abandoned)
    reaper = AbandonedReaper()

    def abandoned_gone() -> bool:
        reaper.check()
        return abandoned not in zombies()

    assert wait_for(abandoned_gone, SHORT)
    assert kept.pid in zombies()  # owned: left for its owner
    assert kept.wait() == 7  # the real status

    def none_left() -> bool:
        reaper.check()
        return not zombies()

    assert wait_for(none_left, SHORT)  # the dropped Popen too


def test_control_a_waitpid_loop_steals_the_status():
    kept, abandoned = _start()
    assert _all_exited(kept, abandoned)
    while True:  # the recipe: reap everything that exited
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not zombies():
                break
            continue
    assert not zombies()
    # subprocess finds its child gone and reports a made-up status.
    assert kept.wait() != 7
