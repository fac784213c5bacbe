"""The control: a custom start method registered the naive way.

A spawn context registered under a new name that it also reports as its
own (``_name``), added to ``multiprocessing.context._concrete_contexts``
and set as the global default.  The child applies that name in
``spawn.prepare()`` (Lib/multiprocessing/spawn.py: ``set_start_method(
data["start_method"], force=True)``) before it unpickles anything, so
before anything could import the module that registers it, and fails:
"cannot find context".
"""

import multiprocessing as mp
import multiprocessing.context as mpc
import os


def child() -> None:
    pass


class NaiveSpawnProcess(mpc.SpawnProcess):
    _start_method = "naive-spawn"


class NaiveSpawn(mpc.SpawnContext):
    _name = "naive-spawn"
    Process = NaiveSpawnProcess


if __name__ == "__main__":
    mpc._concrete_contexts["naive-spawn"] = NaiveSpawn()
    mp.set_start_method("naive-spawn")
    p = mp.Process(target=child)
    p.start()
    p.join()
    with open(os.environ["REPORT"], "w") as f:
        f.write(str(p.exitcode))
