"""mpguard is imported only under ``if __name__ == "__main__"``.

A spawn or forkserver child imports this module as ``__mp_main__``, where
that block does not run: mpguard is not imported by the program in the
child, yet the parent's start method must be resolvable there.
"""

import multiprocessing as mp
import os

from defaults.common import run

if __name__ == "__main__":
    import mpguard  # noqa: F401

    mp.set_start_method(os.environ["METHOD"])
    run()
