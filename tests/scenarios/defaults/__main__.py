"""``python -m defaults``: the default is set in the package's __main__."""

import multiprocessing as mp
import os

from defaults.common import run

if __name__ == "__main__":
    import mpguard  # noqa: F401

    mp.set_start_method(os.environ["METHOD"])
    run()
