"""The guardian process, seen from the owner: start it, hold it, release it.

The guardian (``_guardian_main.py``, in a ``python -I -S``) leads the
process group every guarded child joins, so the group's id is its pid and
the owner is never a member.  It watches the owner and SIGKILLs the whole
group when the owner dies, however it dies.  Why a separate process and not
``PR_SET_PDEATHSIG`` in each child: see ``_guardian_main``.

The owner holds the group id for as long as the guardian is unreaped: a
pgid cannot be recycled while its leader exists, so ``killpg`` on it can
never hit a stranger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

from .. import _compat, _platform
from .._config import log
from .._errors import GuardDegradedWarning, GuardSetupError

# typing.TYPE_CHECKING without importing typing: this module is on the
# pool's path, and typing costs a cold start 2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Guardian"]


GUARDIAN_PATH = os.path.join(os.path.dirname(__file__), "_guardian_main.py")
#: The same guardian for a perl, which starts in 2 ms of CPU where a
#: ``python -I -S`` takes 15: on a small machine the guardian's start is CPU
#: taken from the owner's first workers.  Used whenever a perl is on PATH.
PERL_GUARDIAN_PATH = os.path.join(os.path.dirname(__file__), "_guardian_main.pl")

# The guardian's script is loaded through the import system, not run as a
# script: a script is compiled from source at every start, 1.5 ms of CPU in
# a fresh interpreter (its compiler still cold), where an import loads the
# bytecode cached in __pycache__ (and checks it against the source's mtime),
# as the stdlib starts its resource tracker and forkserver (``-c "from
# multiprocessing.resource_tracker import main; main(fd)"``).  Its directory
# goes last on sys.path, so it can shadow no module the guardian imports.
# The path stays in argv: tools that list processes recognise a guardian
# by it.
_BOOT = (
    "import sys;"
    "sys.path.append(sys.argv[1].rpartition('/')[0]);"
    "from _guardian_main import main;"
    "sys.exit(main(sys.argv[1:]))"
)


def command(
    owner_pid: int, lifeline_fd: int, death_grace: float, *, perl: str | None = None
) -> list[str]:
    """The guardian's command line (see ``_guardian_main.main``): in *perl*
    if given, else in this Python."""
    args = [str(owner_pid), str(lifeline_fd), repr(float(death_grace))]
    if perl is not None:
        # -f: no sitecustomize.pl.  PERL5OPT and PERL5LIB, which could load
        # code into it, are left out of its environment (spawn_env).
        return [perl, "-f", PERL_GUARDIAN_PATH, *args]
    # -I ignores PYTHONDONTWRITEBYTECODE and PYTHONPYCACHEPREFIX: pass the
    # owner's choices on, or a read-only install with a cache prefix would
    # compile the guardian at every start.
    flags = ["-I", "-S"]
    if sys.flags.dont_write_bytecode:
        flags.append("-B")
    prefix = getattr(sys, "pycache_prefix", None)
    if prefix:
        flags += ["-X", f"pycache_prefix={prefix}"]
    return [
        sys.executable,
        *flags,
        "-c",
        _BOOT,
        GUARDIAN_PATH,
        *args,
    ]


#: Set once a perl guardian exited on its own (a perl on PATH that cannot run
#: the script): the next guardians run in this Python.
_perl_failed = False


def guardian_perl() -> str | None:
    """The perl the next guardian runs in, or None for this Python."""
    return None if _perl_failed else _platform.PERL


def spawn_env(perl: str | None) -> dict[str, str] | None:
    """The guardian's environment: the owner's, without the ``PERL*``
    variables for a perl guardian (None: inherited as is, ``-I`` keeps a
    python guardian from reading its ``PYTHON*`` ones)."""
    if perl is None:
        return None
    return {k: v for k, v in os.environ.items() if not k.startswith("PERL")}


class Guardian:
    """One running guardian process.

    Args:
        owner_pid: the process whose death the guardian watches.
        block: signals blocked while it is spawned (it ignores them before
            unblocking, so a group-wide SIGTERM never takes it down early).
        death_grace: seconds between SIGTERM and SIGKILL of the group when
            the owner dies (0: SIGKILL at once).

    Attributes:
        pgid: the guardian's pid: the guard's process group id.
        lifeline_w: the owner's end of the lifeline pipe; the guardian sees
            EOF when the owner exits or releases it.  Children close their
            inherited copy first thing.
        pidfd: the guardian's pidfd, if pidfds are available.

    Raises:
        GuardSetupError: no Python executable, the spawn failed, or the
            guardian did not become a group leader.
    """

    def __init__(
        self, owner_pid: int, block: Iterable[int], death_grace: float = 0.0
    ) -> None:
        if not sys.executable:
            msg = "cannot start the guardian: sys.executable is empty"
            raise GuardSetupError(msg, hint="mpguard needs a Python executable")
        lifeline_r, self.lifeline_w = os.pipe()  # both ends close-on-exec
        old = signal.pthread_sigmask(signal.SIG_BLOCK, block)
        try:
            # The mask survives exec: the guardian starts with the guarded
            # signals blocked and ignores them before unblocking.
            self.perl = perl = guardian_perl()
            self._proc = subprocess.Popen(
                command(owner_pid, lifeline_r, death_grace, perl=perl),
                pass_fds=(lifeline_r,),
                env=spawn_env(perl),
                stdin=subprocess.DEVNULL,
                # Never hold the parent's stdout: `app | tee` would wait on us.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **_compat.guardian_spawn_kwargs(),
            )
        except OSError as e:
            os.close(self.lifeline_w)
            msg = "could not start the guardian process"
            raise GuardSetupError(msg, errno=e.errno) from e
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            os.close(lifeline_r)
        self.pgid = self._proc.pid
        try:
            ok = os.getpgid(self.pgid) == self.pgid
        except OSError:
            ok = False
        if not ok:
            self._proc.kill()
            self._proc.wait()
            os.close(self.lifeline_w)
            msg = "the guardian did not become a process group leader"
            raise GuardSetupError(msg, pid=self.pgid, pgid=self.pgid)
        self.pidfd: int | None = None
        if _platform.CAPS.pidfd:
            self.pidfd = _platform.pidfd_open(self.pgid)
        self.lost = False

    def held(self) -> bool:
        """True while the group id is ours to signal: the leader is
        unreaped and not known to have died."""
        return self._proc.returncode is None and not self.lost

    def mark_lost(self) -> int | None:
        """The guardian died on its own: stop signalling its group, then
        reap it (in that order: once reaped its pgid may be recycled).

        A perl guardian that *exited* (no signal killed it) could not run
        its script: the next guardians run in this Python, and a warning
        says so.
        """
        global _perl_failed
        self.lost = True
        rc = self._proc.poll()
        if self.perl is not None and rc is not None and rc >= 0 and not _perl_failed:
            _perl_failed = True
            warnings.warn(
                f"mpguard: the guardian exited with status {rc} in {self.perl}; "
                f"guardians run in {sys.executable} from now on",
                GuardDegradedWarning,
                stacklevel=2,
            )
        return rc

    def release(self) -> None:
        """Let the guardian go: close the lifeline, SIGKILL it, reap it.

        The group must be empty (or no longer ours) by now: the guardian's
        SIGKILL is for itself only once the owner releases it.
        """
        try:
            os.close(self.lifeline_w)
        except OSError:
            pass
        if self._proc.returncode is None:
            self._proc.kill()
        if self.pidfd is not None:
            # Exact wake-up; Popen.wait(timeout) polls with growing sleeps.
            _platform.wait_readable(self.pidfd, 1.0)
        try:
            self._proc.wait(1.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - D state
            log.debug("guardian %d did not exit", self.pgid)
        log.debug("guardian %d released", self.pgid)

    def close_pidfd(self) -> None:
        """Close the pidfd (after the reaper stopped watching it)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
