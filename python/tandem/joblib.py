# SPDX-License-Identifier: MIT
"""A joblib backend on tandem's worker processes: ``import tandem.joblib`` registers "tandem".

    import tandem.joblib
    from joblib import Parallel, delayed, parallel_backend
    with parallel_backend("tandem", n_jobs=2):
        out = Parallel()(delayed(f)(i, payload) for i in range(1000))

Each batch joblib forms runs as one :func:`tandem.parallel.parallel` call on a runtime with
``n_jobs`` worker processes (kept for the process's life, as loky's pool is). Arrays in the
tasks travel as there: tandem shared arrays by handle, other arrays over ``max_nbytes``
(default 1 MB) moved into shared memory **once per Parallel call** (not per task or batch),
the rest pickled. ``parallel_backend("tandem", n_jobs=2, rt=my_runtime)`` uses a runtime of
yours (with procs > 0); ``timeout`` and ``retries`` go to tandem (a worker killed by a signal
raises tandem.WorkerError; retries re-run the batch, at least once)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import joblib
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from . import parallel as _par

__all__ = ["TandemBackend"]


def _run_tasks(tasks):
    return [f(*a, **kw) for f, a, kw in tasks]


class _Result:
    def __init__(self, fut):
        self._fut = fut

    def get(self, timeout=None):
        return self._fut.result(timeout)


class TandemBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ParallelBackendBase over tandem's worker processes."""

    supports_timeout = True
    supports_sharedmem = False

    def __init__(self, rt=None, max_nbytes="1M", retries=0, task_timeout=None, **kwargs):
        super().__init__(**kwargs)
        self._rt_given, self._max_nbytes = rt, max_nbytes
        self._retries, self._task_timeout = retries, task_timeout
        self._pool = None
        self._moved: dict = {}
        self._rt = None

    def effective_n_jobs(self, n_jobs):
        if self._rt_given is not None:
            return self._rt_given.procs
        return _par._n_jobs(n_jobs)

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_args):
        if require == "sharedmem":
            raise ValueError("the tandem backend runs tasks in other processes: "
                             "require='sharedmem' needs a thread backend")
        n = self._pool_n = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        self._rt = self._rt_given or _par._runtime_for(n)
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tandem-joblib")
        return n

    def _run(self, tasks):
        return _par.parallel(self._rt, _run_tasks, [tasks], batch_size=1,
                             max_nbytes=self._max_nbytes, retries=self._retries,
                             timeout=self._task_timeout, _moved=self._moved)[0]

    def apply_async(self, func, callback=None):
        tasks = getattr(func, "items", None)
        if tasks is None:  # not a BatchedCalls: one task
            tasks = [(func, (), {})]
        fut = self._pool.submit(self._run, list(tasks))
        if callback is not None:
            def done(f):
                if not f.cancelled() and f.exception() is None:
                    callback(f.result())
            fut.add_done_callback(done)
        return _Result(fut)

    # joblib >= 1.3 calls submit(); its results come through the future's get().
    def submit(self, func, callback=None):
        return self.apply_async(func, callback)

    def retrieve_result_callback(self, out):
        return out.result() if hasattr(out, "result") else out

    def terminate(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._moved.clear()  # the shared copies of this Parallel call go

    def abort_everything(self, ensure_ready=True):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._moved.clear()
        if ensure_ready:
            self.configure(n_jobs=getattr(self, "_pool_n", 1), parallel=self.parallel)


joblib.register_parallel_backend("tandem", TandemBackend)
