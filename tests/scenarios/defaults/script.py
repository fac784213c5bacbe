"""``python script.py``: mpguard imported at the top of the script."""

import multiprocessing as mp
import os

import mpguard  # noqa: F401 - registers the guarded methods
from defaults.common import run

if __name__ == "__main__":
    mp.set_start_method(os.environ["METHOD"])
    run()
