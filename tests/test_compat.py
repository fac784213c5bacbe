"""The private CPython (and billiard) internals ``mpguard._compat`` reads.

Run on every supported Python by tox and CI: a stdlib change to any of
them shows up here by name, not as a scenario that hangs.  Each check runs
in a fresh interpreter, since some change process-wide state.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECKS = {
    "interpreter_flags": (
        "from mpguard import _compat\n"
        "flags = _compat.interpreter_flags()\n"
        "assert isinstance(flags, list) and '-B' in flags, flags\n"
    ),
    "forkserver_preload": (
        "import multiprocessing as mp\n"
        "from mpguard import _compat\n"
        "assert _compat.forkserver_preload() == ['__main__']\n"
        "mp.set_forkserver_preload(['json'])\n"
        "assert _compat.forkserver_preload() == ['json']\n"
    ),
    "forkserver_supported": (
        "import sys\n"
        "from mpguard import _compat\n"
        "assert _compat.FORKSERVER_SUPPORTED == (sys.version_info < (3, 16))\n"
        "from mpguard._compat import _forkserver\n"
        "assert _forkserver.FORKSERVER_AUTHKEY == (sys.version_info >= (3, 14))\n"
        "from multiprocessing import forkserver\n"
        "fs = forkserver.ForkServer()\n"
        "names = ['_lock', '_forkserver_pid', '_forkserver_alive_fd',\n"
        "         '_forkserver_address', '_preload_modules']\n"
        "if _forkserver.FORKSERVER_AUTHKEY:\n"
        "    names.append('_forkserver_authkey')\n"
        "for name in names:\n"
        "    assert hasattr(fs, name), name\n"
    ),
    "default_context_if_set": (
        "import multiprocessing as mp, mpguard\n"
        "from mpguard import _compat\n"
        "assert _compat.default_context_if_set() is None\n"
        "assert mp.get_start_method(allow_none=True) is None  # not pinned\n"
        "mp.set_start_method('guarded-spawn')\n"
        "assert _compat.default_context_if_set() is mp.get_context('guarded-spawn')\n"
    ),
    "pool_quick_put_get_swap": (
        # PoolBase._setup_queues hands the task and result handlers the
        # functions _mpguard_channels returns, and the Process factory.
        # It makes no SimpleQueue (no semaphore): inqueue is None, outqueue
        # a pipe whose put() reaches ctrl, and the stdlib's __init__ makes
        # its change notifier through the context it wraps for that call
        # (and then puts back), a pipe too.
        "import multiprocessing as mp\n"
        "from multiprocessing import synchronize\n"
        "from mpguard import _compat\n"
        "seen, made = [], []\n"
        "init = synchronize.SemLock.__init__\n"
        "def counted(self, *a, **k):\n"
        "    made.append(1); init(self, *a, **k)\n"
        "synchronize.SemLock.__init__ = counted\n"
        "class P(_compat.PoolBase):\n"
        "    def _mpguard_channels(self, method, ctrl):\n"
        "        seen.append((method, ctrl is self._outqueue._reader))\n"
        "        return 'put', 'get', 'factory'\n"
        "    def _repopulate_pool(self):\n"
        "        raise SystemExit(self)\n"
        "ctx = mp.get_context('fork')\n"
        "try:\n"
        "    P(1, context=ctx)\n"
        "except SystemExit as e:\n"
        "    p = e.code\n"
        "assert seen == [('fork', True)], seen\n"
        "assert p._inqueue is None\n"
        "assert p._quick_put == 'put' and p._quick_get == 'get'\n"
        "assert p.Process == 'factory'\n"
        "assert made == [], made\n"
        "assert p._ctx is ctx, p._ctx\n"
        "for q in (p._outqueue, p._change_notifier):\n"
        "    assert q.empty()\n"
        "    q.put(None)\n"
        "    assert not q.empty() and q._reader.recv() is None and q.empty()\n"
        "    q.put(None)\n"
        "    assert q.get() is None\n"
        # Lock-free, so that it cannot deadlock; hence sentinels only.
        "    assert not hasattr(q, '_wlock')\n"
        "    try:\n"
        "        q.put(list(range(1000)))\n"
        "    except ValueError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError('a big put went through')\n"
        "    assert q.empty()\n"
        "assert p._change_notifier is not p._outqueue\n"
        "assert p._cache.notifier is p._change_notifier\n"
        # The stdlib's own terminator, if it ever runs (a KeyboardInterrupt
        # before GuardedPool replaces it), has no inqueue to drain.
        "P._help_stuff_finish(None, None, 1)\n"
    ),
    "pool_internals": (
        # map_chunksize, submit_apply, fail_pending, replace_pool_terminator,
        # stop_pool_respawn and the PoolBase accessors on a real stdlib Pool.
        "import multiprocessing as mp, threading\n"
        "from multiprocessing import pool as mpool\n"
        "from mpguard import _compat\n"
        "class P(_compat.PoolBase, mpool.Pool):\n"
        "    def _setup_queues(self):\n"
        "        mpool.Pool._setup_queues(self)\n"
        "p = P(2, context=mp.get_context('fork'))\n"
        "assert _compat.map_chunksize(p, range(17)) == (range(17), 3)\n"
        "items, n = _compat.map_chunksize(p, iter(range(8)))\n"
        "assert items == list(range(8)) and n == 1\n"
        "jobs = []\n"
        "r = _compat.submit_apply(p, abs, (-4,), {}, None, None, jobs.append)\n"
        "assert r.get(10) == 4 and len(jobs) == 1\n"
        "assert len(p._mpguard_workers()) == 2 and not p._mpguard_terminated()\n"
        "threads = p._mpguard_threads()\n"
        "assert all(isinstance(t, threading.Thread) for t in threads)\n"
        "chunk = _compat.task_items(mpool.mapstar, ((abs, [1, 2]),))\n"
        "assert chunk == (abs, [1, 2], False)\n"
        "assert _compat.task_items(abs, (1,)) is None\n"
        "calls = []\n"
        "def kill(workers, grace):\n"
        "    calls.append(('kill', len(workers), grace))\n"
        "    for w in workers:\n"
        "        w.kill(); w.join()\n"
        "stop = lambda: calls.append('stop')\n"
        "finish = lambda cache: calls.append(('finish', len(cache)))\n"
        "_compat.replace_pool_terminator(p, kill, 0.1, stop, finish)\n"
        "pending = mpool.ApplyResult(p, None, None)\n"
        "p.terminate()\n"
        "assert calls[0] == 'stop' and calls[1] == ('kill', 2, 0.1), calls\n"
        "assert calls[2][0] == 'finish', calls\n"
        "assert p._mpguard_terminated()\n"
        "cache = {pending._job: pending}\n"
        "assert _compat.fail_pending(cache, lambda: ValueError('x')) == 1\n"
        "assert not cache and not pending.successful()\n"
        "q = mp.get_context('fork').Pool(1)\n"
        "_compat.stop_pool_respawn(q)\n"
        "assert q._state == mpool.TERMINATE\n"
        "assert q._worker_handler._state == mpool.TERMINATE\n"
        "q.terminate()\n"
    ),
    "process_and_popen_internals": (
        "import io, os, sys, multiprocessing as mp\n"
        "from mpguard import _compat\n"
        "ctx = mp.get_context('spawn')\n"
        "_compat.check_available(ctx)\n"
        "p = ctx.Process(target=abs, args=(1,))\n"
        "assert _compat.process_popen(p) is None\n"
        "from multiprocessing import reduction\n"
        "class FakePopen:\n"
        "    def __init__(self):\n"
        "        self._fds = []\n"
        "    def duplicate_for_child(self, fd):\n"
        "        self._fds.append(fd)\n"
        "        return fd\n"
        "    class DupFd:\n"
        "        def __init__(self, fd):\n"
        "            self.fd = fd\n"
        "class Holder:\n"
        "    def __init__(self, fd):\n"
        "        self.fd = fd\n"
        "    def __reduce__(self):\n"
        "        reduction.DupFd(self.fd)  # asks the spawning Popen\n"
        "        return (abs, (0,))\n"
        "fp = FakePopen()\n"
        "r, w = os.pipe()\n"
        "p2 = ctx.Process(target=abs, args=(Holder(r),))\n"
        "buf = _compat.pickle_for_child(fp, p2)\n"
        "assert isinstance(buf, io.BytesIO) and buf.getbuffer().nbytes > 0\n"
        "assert _compat.popen_fds(fp) == fp._fds and len(fp._fds) == 1\n"
        "_compat.close_fds(r, w)\n"
        "p.start(); p.join()\n"
        "assert _compat.process_popen(p) is not None\n"
        "class Boot:\n"
        "    def _bootstrap(self, parent_sentinel=None):\n"
        "        return 7 if parent_sentinel is None else parent_sentinel\n"
        "assert _compat.run_process(Boot(), None) == 7\n"
        "assert _compat.run_process(Boot(), 5) == 5\n"
        "kw = _compat.guardian_spawn_kwargs()\n"
        "assert kw == ({'process_group': 0} if sys.version_info >= (3, 11)\n"
        "              else {'preexec_fn': os.setpgrp})\n"
        "assert _compat.register_context('fork', object()) is mp.get_context('fork')\n"
    ),
    "fork_keeps_tracker": (
        # gh-146313's flag, where the Python has it.
        "from multiprocessing import resource_tracker as rt\n"
        "from mpguard import _compat\n"
        "_compat.fork_keeps_tracker(True)\n"
        "intent = getattr(rt, '_fork_intent', None)\n"
        "assert intent is None or intent.preserve_fd is True\n"
        "_compat.fork_keeps_tracker(False)\n"
        "assert intent is None or intent.preserve_fd is False\n"
    ),
    "forkserver_state": (
        "import os, sys\n"
        "from multiprocessing import forkserver\n"
        "from mpguard import _compat\n"
        "if not _compat.FORKSERVER_SUPPORTED:\n"
        "    print('ok'); sys.exit()\n"
        "fs = forkserver.ForkServer()\n"
        "assert _compat.forkserver_pid(fs) is None and _compat.forkserver_poll(fs)\n"
        "assert _compat.forkserver_detach(fs) is None\n"
        "fs.ensure_running()\n"
        "pid = _compat.forkserver_pid(fs)\n"
        "assert pid and not _compat.forkserver_poll(fs)\n"
        "got = _compat.forkserver_detach(fs)\n"
        "assert got is not None and got[0] == pid\n"
        "assert _compat.forkserver_pid(fs) is None\n"
        "os.close(got[1]); os.waitpid(pid, 0)\n"
        "r, w = os.pipe()\n"
        "forkserver.write_signed(w, -42)\n"
        "assert _compat.read_signed(r) == -42\n"
    ),
    "child_atexit": (
        # 3.13's popen_fork clears atexit in the child and runs the child's
        # own callbacks at exit; the guarded fork does the same there.
        "import atexit, sys\n"
        "from multiprocessing import util\n"
        "from mpguard import _compat\n"
        "assert _compat.CHILD_RUNS_ATEXIT == (sys.version_info >= (3, 13))\n"
        "if _compat.CHILD_RUNS_ATEXIT:\n"
        "    ran = []\n"
        "    atexit.register(ran.append, 'parent')\n"
        "    _compat.child_atexit_begin()\n"
        "    atexit.register(ran.append, 'child')\n"
        "    _compat.child_atexit_end()\n"
        "    assert ran == ['child'], ran\n"
        "    assert callable(util._exit_function)\n"
    ),
    "billiard": (
        "import threading, billiard, billiard.pool, mpguard.billiard\n"
        "from mpguard import _compat\n"
        "ctx = billiard.get_context('guarded')\n"
        "assert _compat.register_billiard_context('guarded', object()) is ctx\n"
        "pool = ctx.Pool(1)\n"
        "_compat.stop_billiard_respawn()\n"
        "assert pool._state == billiard.pool.TERMINATE\n"
        "assert pool._worker_handler._state == billiard.pool.TERMINATE\n"
        "pool.terminate()\n"
    ),
    "billiard_overrides": (
        # The methods mpguard overrides exist upstream (an override of a
        # renamed method would silently do nothing), and the accessors read
        # what billiard's own terminate_job writes.
        "import billiard, billiard.pool, billiard.queues, inspect\n"
        "import mpguard.billiard\n"
        "from mpguard import _compat\n"
        "P = billiard.pool.Pool\n"
        "for name in ('_help_stuff_finish', '_set_result_sentinel',\n"
        "             '_process_by_pid', 'terminate_job', 'TimeoutHandler',\n"
        "             'create_result_handler', 'process_flush_queues'):\n"
        "    assert hasattr(P, name), name\n"
        "assert hasattr(billiard.pool.TimeoutHandler, '_trywaitkill')\n"
        "assert hasattr(billiard.pool.Worker, '_make_child_methods')\n"
        "src = inspect.getsource(billiard.pool.Worker._make_child_methods)\n"
        "assert 'self.wait_for_job' in src, src\n"
        "q = billiard.get_context('fork').SimpleQueue()\n"
        "assert q._rlock is not None and q._reader is not None\n"
        "assert q._wlock is not None\n"
        "ctx = billiard.get_context('guarded')\n"
        "pool = ctx.Pool(1)\n"
        "assert isinstance(pool, mpguard.billiard.GuardedBilliardPool)\n"
        "assert pool._state == _compat.billiard_pool_state(pool)\n"
        "pid = pool._pool[0].pid\n"
        "proc = _compat.billiard_worker_by_pid(pool, pid)\n"
        "assert _compat.billiard_popen(proc).pid == pid\n"
        # The result handler dispatches DEATH through its state_handlers
        # dict, where the guarded pool put its own answer.
        "h = pool._result_handler.state_handlers[billiard.pool.DEATH]\n"
        "assert h.__qualname__.endswith('on_death'), h\n"
        "src = inspect.getsource(billiard.pool.ResultHandler._make_methods)\n"
        "assert 'state_handlers[state]' in src, src\n"
        "assert pool._outqueue._wlock is not None\n"
        "_compat.mark_job_terminated(proc)\n"
        "assert proc._controlled_termination and proc._job_terminated\n"
        "pool.terminate()\n"
    ),
    "sigmask": (
        # _signal.pthread_sigmask: the C call under signal.pthread_sigmask,
        # plain ints in and out (3.9-3.15).
        "import signal\n"
        "from mpguard import _compat\n"
        "old = _compat.sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "assert all(type(s) is int for s in old), old\n"
        "now = _compat.sigmask(signal.SIG_SETMASK, old)\n"
        "assert int(signal.SIGUSR1) in now and type(next(iter(now))) is int\n"
        "assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == old\n"
    ),
    "repopulate_pool": (
        # PoolBase._repopulate_pool: the stdlib's loop (target pool.worker,
        # its six arguments, the PoolWorker name, daemon) with every worker
        # created before the first starts (3.9-3.15).
        "import multiprocessing as mp\n"
        "from multiprocessing import pool as mpool\n"
        "from mpguard import _compat\n"
        "seen = []\n"
        "class P(_compat.PoolBase, mpool.Pool):\n"
        "    def _setup_queues(self):\n"
        "        mpool.Pool._setup_queues(self)\n"
        "    def _mpguard_start_workers(self, workers, pool):\n"
        "        seen.append([(w.name, w.daemon, w.pid) for w in workers])\n"
        "        assert pool is self._pool and not pool\n"
        "        super()._mpguard_start_workers(workers, pool)\n"
        "p = P(3, context=mp.get_context('fork'))\n"
        "[ws] = seen\n"
        "assert len(ws) == 3 and all(d and pid is None for _, d, pid in ws), ws\n"
        "assert all('PoolWorker' in name for name, _, _ in ws), ws\n"
        "assert p.map(abs, [-1, -2, -3]) == [1, 2, 3]\n"
        "assert len(p._pool) == 3 and all(w.pid for w in p._pool)\n"
        "p.close(); p.join()\n"
    ),
    "may_start": (
        # BaseProcess.start's own checks: _closed, _popen, _parent_pid and
        # the current process's _config['daemon'] (3.9-3.15).
        "import multiprocessing as mp, os\n"
        "from mpguard import _compat\n"
        "ctx = mp.get_context('fork')\n"
        "p = ctx.Process(target=abs, args=(1,))\n"
        "assert _compat.may_start(p)\n"
        "p._parent_pid = -1\n"
        "assert not _compat.may_start(p)\n"
        "p = ctx.Process(target=abs, args=(1,))\n"
        "p.start(); p.join()\n"
        "assert not _compat.may_start(p)\n"
        "p.close()\n"
        "assert not _compat.may_start(p)\n"
        "q = ctx.Process(target=abs, args=(1,))\n"
        "mp.current_process()._config['daemon'] = True\n"
        "assert not _compat.may_start(q)\n"
    ),
    "raw_handlers": (
        # _signal.signal and _signal.pthread_sigmask, the C functions under
        # the signal module's wrappers: SIG_DFL/SIG_IGN as _signal's own int
        # objects, plain ints out (3.9-3.15); and BaseProcess._bootstrap
        # taking the parent sentinel as its first argument (3.8+).
        "import multiprocessing as mp, signal\n"
        "from mpguard import _compat\n"
        "for h in (signal.SIG_IGN, signal.SIG_DFL):\n"
        "    _compat.set_raw_handler(signal.SIGUSR1, _compat.raw_handler(h))\n"
        "    assert signal.getsignal(signal.SIGUSR1) == h\n"
        "h = _compat.raw_handler(signal.default_int_handler)\n"
        "_compat.set_raw_handler(signal.SIGINT, h)\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "try:\n"
        "    _compat.set_raw_handler(signal.SIGUSR1, signal.SIG_IGN)\n"
        "except TypeError:\n"
        "    pass  # the enum member is refused: hence raw_handler\n"
        "else:\n"
        "    raise AssertionError('_signal.signal took an enum member')\n"
        "p = mp.get_context('fork').Process(target=abs, args=(1,))\n"
        "import inspect\n"
        "params = list(inspect.signature(_compat.bootstrap_of(p)).parameters)\n"
        "assert params == ['parent_sentinel'], params\n"
    ),
    "flush_std_streams": (
        # util._flush_std_streams: what popen_fork calls before its fork.
        "import sys\n"
        "from mpguard import _compat\n"
        "class Out:\n"
        "    flushed = 0\n"
        "    def flush(self):\n"
        "        self.flushed += 1\n"
        "real, sys.stdout, sys.stderr = sys.stdout, Out(), Out()\n"
        "_compat.flush_std_streams()\n"
        "flushed = (sys.stdout.flushed, sys.stderr.flushed)\n"
        "sys.stdout = sys.stderr = real\n"
        "assert flushed == (1, 1), flushed\n"
    ),
    "dropped_popens": (
        # subprocess keeps dropped, running Popens in _active and reaps them
        # in _cleanup() (3.9-3.15).
        "import subprocess, time\n"
        "from mpguard import _compat\n"
        "subprocess.Popen(['sleep', '0.1'])\n"
        "assert len(subprocess._active) == 1\n"
        "time.sleep(0.3)\n"
        "_compat.reap_dropped_popens()\n"
        "assert subprocess._active == []\n"
    ),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_compat(name):
    if name.startswith("billiard"):
        pytest.importorskip("billiard")
    out = subprocess.run(
        [sys.executable, "-B", "-c", CHECKS[name] + "print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert out.stdout.strip() == "ok", out.stderr
