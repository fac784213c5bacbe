"""mpguard: process pools that are safe to kill.

``import mpguard`` registers the ``"guarded"`` start method and does nothing
else::

    import multiprocessing as mp
    import mpguard

    with mp.get_context("guarded").Pool(4) as pool:   # or mpguard.GuardedPool(4)
        pool.map(work, items)

However the parent ends (return, exception, SIGTERM, SIGINT, SIGHUP,
SIGKILL, the OOM killer) no worker outlives it, nor anything a worker
started; no zombie piles up; and no process the program did not start is
ever signalled.
"""

from __future__ import annotations

import sys

from . import _lazy
from ._errors import EscalationWarning as EscalationWarning
from ._errors import GuardClosedError as GuardClosedError
from ._errors import GuardDegradedWarning as GuardDegradedWarning
from ._errors import GuardSetupError as GuardSetupError
from ._errors import MPGuardError as MPGuardError
from ._errors import PoolTerminatedError as PoolTerminatedError
from ._errors import TaskError as TaskError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import UnsupportedPlatformError as UnsupportedPlatformError
from ._errors import WorkerLostError as WorkerLostError
from ._start import START_METHOD as START_METHOD
from ._start import START_METHODS as START_METHODS
from ._start import GuardedContext as GuardedContext
from ._start import GuardedForkContext as GuardedForkContext
from ._start import GuardedForkServerContext as GuardedForkServerContext
from ._start import GuardedForkServerProcess as GuardedForkServerProcess
from ._start import GuardedProcess as GuardedProcess
from ._start import GuardedSpawnContext as GuardedSpawnContext
from ._start import GuardedSpawnProcess as GuardedSpawnProcess
from ._start import get_context as get_context
from ._start import register as register
from ._start import set_pool_class as _set_pool_class

# ``import mpguard`` loads only what registration needs (the contexts and
# the errors): a short script, a CLI and every spawn or forkserver worker
# import mpguard again, and pay for it on each run.  The rest loads on
# first use (PEP 562); the type checker reads the imports below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._config import GuardPolicy as GuardPolicy
    from ._config import configure as configure
    from ._config import get_policy as get_policy
    from ._detach import spawn_detached as spawn_detached
    from ._group import install_handlers as install_handlers
    from ._group import shutdown as shutdown
    from ._platform import Capabilities as Capabilities
    from ._pool import GuardedPool as GuardedPool
    from ._subprocess import Popen as Popen
    from ._subprocess import call as call
    from ._subprocess import check_call as check_call
    from ._subprocess import check_output as check_output
    from ._subprocess import run as run

#: The module that defines each name loaded on first use.
_LAZY = {
    "GuardPolicy": "_config",
    "configure": "_config",
    "get_policy": "_config",
    "spawn_detached": "_detach",
    "install_handlers": "_group",
    "shutdown": "_group",
    "Capabilities": "_platform",
    "GuardedPool": "_pool",
    "Popen": "_subprocess",
    "call": "_subprocess",
    "check_call": "_subprocess",
    "check_output": "_subprocess",
    "run": "_subprocess",
}

if not TYPE_CHECKING:
    __getattr__ = _lazy.loader(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def capabilities() -> Capabilities:
    """What this machine offers mpguard (pidfds, pidfd group signals,
    subreaper, cgroup v2 and ``cgroup.kill``, memfd, SEQPACKET, kernel and
    Python versions), probed once, on first use."""
    from ._platform import CAPS  # noqa: PLC0415 - on first use

    return CAPS


def _new_pool(*args: Any, **kwargs: Any) -> GuardedPool:
    # ``ctx.Pool()`` before ``mpguard.GuardedPool`` was ever touched: load
    # the pool layer, which then registers GuardedPool itself.
    from ._pool import GuardedPool  # noqa: PLC0415 - on first use

    return GuardedPool(*args, **kwargs)


__version__ = "0.1.0"

__all__ = [
    "START_METHOD",
    "START_METHODS",
    "Capabilities",
    "EscalationWarning",
    "GuardClosedError",
    "GuardDegradedWarning",
    "GuardPolicy",
    "GuardSetupError",
    "GuardedContext",
    "GuardedForkContext",
    "GuardedForkServerContext",
    "GuardedForkServerProcess",
    "GuardedPool",
    "GuardedProcess",
    "GuardedSpawnContext",
    "GuardedSpawnProcess",
    "MPGuardError",
    "PoolTerminatedError",
    "Popen",
    "TaskError",
    "TaskTimeoutError",
    "UnsupportedPlatformError",
    "WorkerLostError",
    "__version__",
    "call",
    "capabilities",
    "check_call",
    "check_output",
    "configure",
    "get_context",
    "get_policy",
    "install_handlers",
    "register",
    "run",
    "shutdown",
    "spawn_detached",
]

_set_pool_class(_new_pool)
register()

if "billiard" in sys.modules:  # otherwise: import mpguard.billiard
    from . import billiard as _billiard  # noqa: F401 - registers "guarded"
