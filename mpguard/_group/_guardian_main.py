"""The guardian: leader of a guard's process group.

Its twin ``_guardian_main.pl`` runs instead wherever a perl is on PATH
(it starts on 2 ms of CPU where this takes 15): keep the two in step.

Started by the owner (the user's process) in a ``python -I -S`` with
``setpgid(0, 0)`` applied before exec, so its pid is the group id every
guarded child joins.  ``_guardian.command`` imports this file as a module
(its cached bytecode, not a compile at every start) and calls
``main([PATH, OWNER_PID, LIFELINE_FD, GRACE])``; ``python -I -S
_guardian_main.py OWNER_PID LIFELINE_FD GRACE`` does the same.  It imports
nothing from mpguard and runs no user code.

Why a separate process:

* ``PR_SET_PDEATHSIG`` follows the *thread* that forked a child (prctl(2):
  "the parent" is the thread that created the process): a pool
  built in a short-lived thread, or workers respawned by the pool's
  ``_handle_workers`` thread, would be killed while the parent lives on.
  The guardian instead watches the owner *process* through a pidfd (and a
  lifeline pipe, and ``getppid()``), whatever thread started anything.
* The group needs a stable leader so that its id cannot be recycled while
  the owner may still signal it (setpgid(2): a group lives while it has a
  member, and its id is its leader's pid).  The owner never reaps the guardian before
  it is done with the group, so the pgid stays reserved.
* SIGKILL of the group from outside the workers ends them even inside C
  code, and ends everything they started that stayed in the group.

The guardian ignores the guarded signals: a group-wide SIGTERM from a
graceful teardown must not take the leader down before the workers.
"""

# Only C modules, the ones the interpreter has already loaded to start
# where it can: every millisecond of CPU spent here is taken from the
# owner's first workers on a small machine.
# * ``_signal``, not ``signal``: its enums would bring enum, functools and
#   collections (3 ms).
# * ``posix``, not ``os``: ``os`` is Python code that imports stat,
#   posixpath and _collections_abc, about 3 ms of CPU at every start
#   (measured with getrusage(RUSAGE_CHILDREN) over 40 starts: 20.1 against
#   17.4 ms for the whole interpreter with select).  Every call below is
#   posix's own function, which ``os`` only re-exports.
import _signal as signal  # type: ignore[import-not-found]  # no stubs
import posix
import select
import sys
import time

_IGNORED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _others_left(me: int) -> bool:
    """Whether a live process other than us is still in group *me*."""
    for name in posix.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == me and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _end_group(me: int, grace: float) -> None:
    """SIGTERM the group and give it *grace* seconds, then SIGKILL it."""
    if grace > 0:
        # We ignore SIGTERM ourselves.  A member that handles SIGTERM gets
        # the grace to clean up; one that leaves it at its default action
        # dies of it at once, before any PR_SET_PDEATHSIG handler of its
        # own can run.  The wait ends as soon as the group is empty (only
        # /proc can tell: we are a member ourselves).
        posix.killpg(me, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if not _others_left(me):
                    break
            except OSError:  # no /proc: wait out the grace
                pass
            time.sleep(0.01)
    posix.killpg(me, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Watch the owner; end our own group when it is gone."""
    owner = int(argv[1])
    lifeline = int(argv[2])
    grace = float(argv[3]) if len(argv) > 3 else 0.0
    for name in _IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    # The owner blocked these while spawning us; they are ignored now.
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if posix.getpgrp() != posix.getpid():
        # Never kill a group we do not lead: that could be the shell's.
        return 2
    fds = [lifeline]
    pidfd = None
    try:
        pidfd = posix.pidfd_open(owner)
        fds.append(pidfd)
    except (AttributeError, OSError):
        pass  # no pidfd (macOS, old kernel) or the owner is already gone
    # Open first, then check: if getppid() still is the owner, the pidfd
    # names the owner and not a process that recycled its pid.
    while posix.getppid() == owner:
        ready, _, _ = select.select(fds, [], [], 1.0 if pidfd is None else None)
        if pidfd is not None and pidfd in ready:
            break
        if lifeline in ready and not posix.read(lifeline, 64):
            break  # EOF: the owner exited or released us
    _end_group(posix.getpid(), grace)
    return 0  # pragma: no cover - the line above kills us too


if __name__ == "__main__":
    sys.exit(main(sys.argv))
