"""Atomic JSON reports from one process to another."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Union

# A str | PathLike alias that Python 3.9 can evaluate.
StrPath = Union[str, "os.PathLike[str]"]


def publish(path: StrPath, /, **data: Any) -> None:
    """Write *data* as a JSON object to *path*, atomically.

    The JSON goes to a temporary file next to *path* that is then renamed
    over it (:func:`os.replace`, atomic on POSIX within one file system), so
    a reader polling for *path* never sees half a report.  The temporary
    name includes the pid and the thread, so processes and threads may
    publish to the same path concurrently: the last rename wins.

    Safe to call from a forked child.  *data* must be JSON-serializable;
    if it is not, :class:`TypeError` is raised and nothing is left behind.

    Example (in a scenario script)::

        publish(report_path, pid=os.getpid(), workers=[w.pid for w in pool._pool])
    """
    target = os.fspath(path)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
