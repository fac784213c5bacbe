"""A fork GuardedPool forks its first workers back to back, then records them.

Forking ahead keeps every guarantee of one ``start()`` per worker (the
group, the signal dispositions, the mask) and leaves each worker only its
own pipes.  If a worker's ``start()`` fails after the fork, the children
forked for it and for the workers after it are killed and reaped; if a
fork or a pipe fails, nothing is left open.
"""

from __future__ import annotations

import signal

import psutil
import pytest

from _support import SHORT, describe, scenario, wait_for, wait_gone


def _existing(pids: list[int]) -> list[int]:
    """The pids of *pids* that still exist: running, or zombies not reaped."""
    return [pid for pid in pids if psutil.pid_exists(pid)]


def _wait_reaped(pids: list[int], timeout: float = SHORT) -> list[int]:
    """Wait until none of *pids* exists (killed *and* reaped); the rest."""
    wait_for(lambda: not _existing(pids), timeout)
    return _existing(pids)


pytestmark = pytest.mark.linux


def _own_pipes(held: dict[str, list[str]]) -> dict[str, set[str]]:
    """Each worker's pipes shared with the parent, minus those every worker
    holds (the stdlib Pool's queues, which all workers share by design)."""
    common = set.intersection(*(set(v) for v in held.values()))
    return {pid: set(v) - common for pid, v in held.items()}


def test_workers_forked_ahead_are_guarded_and_hold_only_their_own_pipes(tmp_path):
    with scenario("fork_ahead", tmp_path, "fds") as sc:
        r = sc.report()
        # In the guard's group, never the parent's.
        assert len(set(r["pgids"])) == 1, r
        assert r["pgids"][0] != r["parent_pgid"], r
        sigint = 1 << (signal.SIGINT - 1)
        for ign, blk in zip(r["sigign"], r["sigblk"]):
            assert ign & sigint, "a pool worker ignores SIGINT"
            assert blk == 0, "the mask blocked across the fork is restored"
        own = _own_pipes(r["held"])
        assert all(len(p) == 1 for p in own.values()), own
        assert len(set.union(*own.values())) == len(own), own


def test_control_workers_forked_one_by_one_inherit_the_earlier_ones_pipes(tmp_path):
    # The stdlib's loop, kept for respawns: each fork inherits the parent
    # ends of the workers started before it (the first worker's pipe, held
    # by all four, counts as common).
    with scenario("fork_ahead", tmp_path, "one-by-one") as sc:
        own = _own_pipes(sc.report()["held"])
        assert sorted(len(p) for p in own.values()) == [0, 1, 2, 3], own


def test_each_worker_holds_only_its_own_channel_even_after_respawns(tmp_path):
    # A fork copies every descriptor: without closing them, each worker
    # would keep the parent's end of every channel, and the parent's death
    # would not read as EOF in any worker while another one lived.
    with scenario("fork_ahead", tmp_path, "sockets") as sc:
        r = sc.report()
        assert len(r["ran_in"]) > len(r["workers"]), "workers were replaced"
        held = r["held"]
        assert all(len(socks) == 1 for socks in held.values()), held
        assert len({s for socks in held.values() for s in socks}) == len(held), held


def test_control_without_closing_each_worker_holds_every_channel(tmp_path):
    with scenario("fork_ahead", tmp_path, "sockets-shared") as sc:
        held = sc.report()["held"]
        # Its own worker end, and both ends of the three other channels.
        assert all(len(socks) >= 2 * 4 - 1 for socks in held.values()), held


def test_a_failed_start_kills_and_reaps_the_children_forked_for_it(tmp_path):
    with scenario("fork_ahead", tmp_path, "start-fails") as sc:
        r = sc.report()
        assert r["error"] == "injected: the second start() fails"
        assert len(r["forked"]) == 4
        # Gone, not zombies: the scenario is alive and would hold them.
        left = _wait_reaped(r["forked"])
        assert not left, describe(left)
        # Nor are the channels of the workers that never started kept open.
        assert r["sockets_left"] == []


def test_control_without_the_clean_up_the_unstarted_children_are_left(tmp_path):
    with scenario("fork_ahead", tmp_path, "no-discard") as sc:
        r = sc.report()
        assert r["error"] == "injected: the second start() fails"
        # The first worker was started and is terminated with the failed
        # pool; the three forked for the failed start() and after it stay
        # (running, or zombies nobody reaps) while anything holds their
        # Process objects (the scenario does, as a traceback can).
        left = wait_gone(r["forked"], 1.0)
        assert set(left) == set(r["forked"][1:]), describe(r["forked"])


@pytest.mark.parametrize(
    ("mode", "error", "forked"),
    [
        ("fork-fails", "BlockingIOError: [Errno 11] injected: fork fails", 2),
        ("pipe-fails", "OSError: [Errno 24] injected: too many open files", 0),
    ],
)
def test_a_failed_fork_or_pipe_raises_and_leaves_nothing(tmp_path, mode, error, forked):
    with scenario("fork_ahead", tmp_path, mode) as sc:
        r = sc.report()
        assert r["error"] == error
        assert len(r["forked"]) == forked
        assert r["opened"], "the scenario saw no child's pipes"
        assert r["left"] == [], "a child's pipe is still open in the parent"
        left = _wait_reaped(r["forked"])
        assert not left, describe(left)


def test_ctrl_c_during_the_forks_leaves_no_worker_outside_a_pool(tmp_path):
    # mpguard's handler waits until every child forked meanwhile is in the
    # group and recorded; the KeyboardInterrupt then comes, and the workers
    # of the pool that could not be built are killed and reaped.
    with scenario("fork_ahead", tmp_path, "interrupt") as sc:
        r = sc.report()
        assert r["interrupted"], "the SIGINT was not seen as a KeyboardInterrupt"
        assert len(r["forked"]) >= 2, r
        stray = [pid for pid in r["forked"] if pid not in r["workers"]]
        left = _wait_reaped(stray)
        assert not left, describe(left)


def test_control_ctrl_c_during_the_stdlib_pools_forks_leaves_workers_running(
    tmp_path,
):
    with scenario("fork_ahead", tmp_path, "interrupt-stdlib") as sc:
        r = sc.report()
        assert r["interrupted"]
        assert r["workers"] == []  # Pool() raised: there is no pool
        # Both forked workers are left, in no pool: the first started, the
        # second's pid lost between fork() and its Popen.  They run on, or
        # exit when the dropped pool's queues close, and nobody reaps them.
        wait_for(lambda: len(_existing(r["forked"])) < 2, 1.0)
        assert _existing(r["forked"]) == r["forked"], describe(r["forked"])
