# SPDX-License-Identifier: MIT
"""Python callables on tandem's workers: ``rt.parallel(fn, items, *args, ...)``.

How a call travels (nothing is sent per item):

* ``fn`` and ``args`` are pickled **once per call** into a buffer of tandem's shared arena (by
  reference with :mod:`pickle`; by value with cloudpickle — the package, else joblib's vendored
  copy — when ``fn`` is a lambda or closure). Each worker process unpickles them once per call.
* NumPy arrays whose memory is tandem shared storage (``rt.empty(..., memory="shared")``,
  ``rt.share(a)``, views of those) are pickled **by handle**: the worker maps the same bytes,
  no copy. Other arrays larger than ``max_nbytes`` (default 1 MB, as joblib's) are copied into
  shared memory once per call and then passed by handle too.
* Items go to the workers in one shared buffer per call (each item pickled once; an int, a
  ``range`` or an ndarray of items needs no pickling at all: a worker computes or views its
  items). Results come back per **batch** through a ring of ``max_in_flight`` shared slots;
  a batch whose pickled results do not fit its slot goes through one file in /dev/shm.
* The batches are tandem's (``tdm_parallel_for_async``): sized automatically from measured
  durations unless ``batch_size`` is given, run in the worker processes' persistent pool,
  progress counted in shared memory. The parent waits with the GIL released.

Faults: an exception raised by ``fn`` is re-raised in the caller as the same type, with the
remote traceback as its ``__cause__`` (:class:`RemoteTraceback`) and a note naming the item;
a worker that dies (signal, ``os._exit``, OOM kill) raises :class:`tandem.WorkerError`
carrying ``batch``, ``begin``, ``end``, ``pid`` and ``signal``; with ``timeout`` a batch that
runs longer has only its worker killed (:class:`tandem.TimeoutError_`); ``retries`` runs a
batch whose worker died or timed out again on a fresh worker — **at least once**: items of a
retried batch may run twice, so ``fn`` should be idempotent. ``fn``'s exceptions are not
retried.
"""
from __future__ import annotations

import io
import itertools
import os
import pickle
import re
import struct
import tempfile
import threading
import weakref
import traceback
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from . import _tandem

__all__ = ["parallel", "RemoteTraceback", "Parallel", "delayed"]

_HDR = 64  # slot header: kind, length, count (int64 each), padding
_OK, _OK_FILE, _ERR, _ERR_FILE = 1, 2, 3, 4
_ids = itertools.count(1)
# call id -> _Call, in the calling process (backend="threads"); weak: a call dropped unread
# goes, and its batches still running then fail (its job is being cancelled anyway)
_live = weakref.WeakValueDictionary()
_cache: dict = {}  # in a worker process: call id -> _Remote (the current call only)


class RemoteTraceback(Exception):
    """The traceback of an exception raised by ``fn`` in a worker (its text is str(self))."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


def _nbytes(v: Any) -> int:
    if isinstance(v, int):
        return v
    s = str(v).strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


# ---- arrays by handle ------------------------------------------------------------------------

def _addr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _attach(addr: int, span_lo: int, span: int, dtype: str, shape: tuple, strides: tuple,
            writable: bool) -> np.ndarray:
    """In a worker: an ndarray over shared memory at the parent's address (same mapping)."""
    mv = _tandem._mem(addr - span_lo, span, writable)
    a = np.ndarray(shape, dtype=np.dtype(dtype), buffer=mv, offset=span_lo, strides=strides)
    return a


def _span(a: np.ndarray):
    """(low offset from element 0, byte span) of the memory an array touches."""
    lo = hi = 0
    for n, s in zip(a.shape, a.strides):
        if n == 0:
            return 0, 0
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return -lo, hi - lo + a.itemsize


def _is_shared(a: np.ndarray) -> bool:
    t = _tandem.tensor_of(a)
    return t is not None and "shared" in str(t.memory)


def _array_reduce(call: "_Call", obj):
    """Pickles tandem shared arrays by handle; moves other large arrays into shared memory
    (once per call, or per joblib Parallel call: the call keeps them alive)."""
    if type(obj) is not np.ndarray or obj.dtype.hasobject or obj.size == 0:
        return NotImplemented
    if not _is_shared(obj):
        if obj.nbytes <= call.max_nbytes or call.rt is None:
            return NotImplemented
        with _move_lock:  # the cache may serve several calls at once (the joblib backend)
            hit = call.moved.get(id(obj))
            if hit is None or hit[0] is not obj:
                hit = (obj, call.rt.share(np.ascontiguousarray(obj)))
                call.moved[id(obj)] = hit  # keeps obj alive: its id stays its own
        call.keep.append(hit[1])  # alive until this call ends, whatever the cache does
        obj = hit[1]
    lo, span = _span(obj)
    return _attach, (_addr(obj), lo, span, obj.dtype.str, obj.shape, obj.strides,
                     bool(obj.flags.writeable))


def _cloud_pickler():
    try:
        import cloudpickle  # type: ignore
        return cloudpickle.Pickler
    except ImportError:
        pass
    try:
        from joblib.externals import cloudpickle  # type: ignore
        return cloudpickle.Pickler
    except ImportError:
        return None


_classes: dict = {}
_move_lock = threading.Lock()


def _pickler_class():
    """A Pickler with the array reducer over cloudpickle's (which sends functions of __main__,
    which a worker forked at open may lack, and lambdas by value, importable functions by
    reference) when there is one, else over pickle's."""
    base = _cloud_pickler() or pickle.Pickler
    cls = _classes.get(base)
    if cls is None:
        sup = getattr(base, "reducer_override", None)

        class P(base):  # type: ignore[misc, valid-type]
            def __init__(self, f, call):
                base.__init__(self, f, protocol=pickle.HIGHEST_PROTOCOL)
                self._tdm_call = call

            def reducer_override(self, obj):
                r = _array_reduce(self._tdm_call, obj)
                if r is NotImplemented and sup is not None:
                    return sup(self, obj)
                return r

        cls = _classes[base] = P
    return cls


def _dumps(obj: Any, call: "_Call") -> bytes:
    f = io.BytesIO()
    try:
        _pickler_class()(f, call).dump(obj)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise TypeError(
            f"tandem.parallel: cannot send {obj!r} to the worker processes ({e}); a lambda or "
            "closure needs cloudpickle (pip install cloudpickle; joblib's copy is used too), "
            "or use backend='threads'") from e
    return f.getvalue()


# ---- one call --------------------------------------------------------------------------------

class _Call:
    """The calling side of one rt.parallel call: its shared buffers and live objects."""

    def __init__(self, rt, fn, items, args, max_nbytes, threads, n_slots, slot_cap,
                 moved=None):
        self.rt = rt
        self.fn, self.args = fn, args
        self.max_nbytes = max_nbytes
        self.moved: dict = {} if moved is None else moved  # id(array) -> (array, shared copy)
        self.keep: list = []
        self.id = next(_ids)
        self.local: dict = {}
        self.job = None
        self.n_slots, self.slot_cap = n_slots, slot_cap
        if isinstance(items, int):
            items = range(items)
        if isinstance(items, range):
            self.items, desc, self.n = items, ("range", items.start, items.step), len(items)
        elif isinstance(items, np.ndarray):
            self.items, desc, self.n = items, None, len(items)
        else:
            if not isinstance(items, (list, tuple)):
                items = list(items)  # an iterator is materialised once
            self.items, desc, self.n = items, None, len(items)
        self.threads = threads
        self.ring = None
        if threads:
            self.ctrl = None
            return
        if desc is None:
            if isinstance(items, np.ndarray):
                desc = ("array", items)
            else:
                f = io.BytesIO()
                p = _pickler_class()(f, self)
                offs = [0]
                for it in items:
                    p.dump(it)
                    p.clear_memo()
                    offs.append(f.tell())
                blob = f.getvalue()
                buf = rt.empty(max(1, len(blob)), "u8", memory="shared")
                buf[: len(blob)] = np.frombuffer(blob, dtype=np.uint8)
                off = rt.empty(len(offs), "i8", memory="shared")
                off[:] = offs
                self.keep += [buf, off]
                desc = ("pickled", _addr(buf), _addr(off), len(offs) - 1)
        self.ring = rt.zeros(n_slots * (_HDR + slot_cap), "u8", memory="shared")
        # a plain header (where results go) then the pickle: a worker that cannot unpickle
        # the call (a module it cannot import) still reports why through its slot
        ctrl = struct.pack("QQQ", _addr(self.ring), n_slots, slot_cap) + \
            _dumps((fn, args, desc), self)
        self.ctrl = rt.empty(len(ctrl), "u8", memory="shared")
        self.ctrl[:] = np.frombuffer(ctrl, dtype=np.uint8)

    # the calling side reads a finished batch
    def take(self, slot: int):
        if self.threads:
            return self.local.pop(slot)
        base = slot * (_HDR + self.slot_cap)
        kind, length, _ = struct.unpack_from("qqq", self.ring, base)
        if kind not in (_OK, _OK_FILE, _ERR, _ERR_FILE):
            raise LookupError("no result in the slot")  # the worker died before writing it
        struct.pack_into("qqq", self.ring, base, 0, 0, 0)  # read once: never stale
        data = self.ring[base + _HDR: base + _HDR + length]
        if kind in (_OK_FILE, _ERR_FILE):
            path = bytes(data).decode()
            with open(path, "rb") as f:
                payload = f.read()
            os.unlink(path)
        else:
            payload = data
        return (kind in (_OK, _OK_FILE)), pickle.loads(payload)

    def close(self) -> None:
        """Ends the call: stops and frees its job (waiting for running batches), removes the
        result files of batches nobody read, forgets the live objects. Idempotent; also run
        when the call is freed (a generator dropped before it was exhausted, or never
        started)."""
        job, self.job = getattr(self, "job", None), None
        if job is not None:
            job.close()
        _live.pop(self.id, None)
        ring, self.ring = getattr(self, "ring", None), None
        if ring is None:
            return
        for slot in range(self.n_slots):
            base = slot * (_HDR + self.slot_cap)
            kind, length, _ = struct.unpack_from("qqq", ring, base)
            if kind in (_OK_FILE, _ERR_FILE):
                try:
                    os.unlink(bytes(ring[base + _HDR: base + _HDR + length]).decode())
                except OSError:
                    pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (at interpreter exit: nothing to report to)
            pass

    def run_local(self, begin: int, end: int, slot: int) -> int:
        ok, val = _run_items(self.fn, self.args, (self.items[i] for i in range(begin, end)),
                             begin)
        self.local[slot] = (ok, val)
        return 0 if ok else -1


def _run_items(fn, args, items: Iterable, begin: int):
    out = []
    i = begin
    try:
        for it in items:
            out.append(fn(it, *args))
            i += 1
    except BaseException as e:  # noqa: BLE001 (the caller re-raises it)
        return False, (i, e, traceback.format_exc(), os.getpid())
    return True, out


class _Remote:
    """A worker's view of one call, unpickled once per call."""

    def __init__(self, ctrl: int, ctrl_len: int):
        ring, n_slots, cap = struct.unpack_from("QQQ", _tandem._mem(ctrl, 24, False))
        self.ring = _tandem._mem(ring, n_slots * (_HDR + cap), True)
        self.cap = cap
        self.fn = None
        try:
            fn, args, desc = pickle.loads(_tandem._mem(ctrl + 24, ctrl_len - 24, False))
        except BaseException as e:  # noqa: BLE001  (reported to the caller by run())
            self.load_error = (e, traceback.format_exc())
            return
        self.load_error = None
        self.fn, self.args, self.desc = fn, args, desc
        if desc[0] == "pickled":
            _, buf, off, n = desc
            self.offs = np.frombuffer(_tandem._mem(off, 8 * (n + 1), False), dtype=np.int64)
            self.blob = _tandem._mem(buf, int(self.offs[-1]), False)

    def items(self, begin: int, end: int):
        d = self.desc
        if d[0] == "range":
            return (d[1] + i * d[2] for i in range(begin, end))
        if d[0] == "array":
            return (d[1][i] for i in range(begin, end))
        return (pickle.loads(self.blob[self.offs[i]: self.offs[i + 1]])
                for i in range(begin, end))

    def run(self, begin: int, end: int, slot: int) -> int:
        if self.load_error is not None:
            e, tb = self.load_error
            ok, val = False, (begin, e, "while unpickling the call's function and arguments "
                              "in the worker:\n" + tb, os.getpid())
        else:
            ok, val = _run_items(self.fn, self.args, self.items(begin, end), begin)
        if not ok:
            i, e, tb, pid = val
            try:
                payload = pickle.dumps((i, e, tb, pid), protocol=pickle.HIGHEST_PROTOCOL)
                pickle.loads(payload)  # an exception that cannot be rebuilt: send its text
            except Exception:  # noqa: BLE001
                payload = pickle.dumps((i, RuntimeError(f"{type(e).__name__}: {e}"), tb, pid))
        else:
            payload = pickle.dumps(val, protocol=pickle.HIGHEST_PROTOCOL)
        base = slot * (_HDR + self.cap)
        kind = _OK if ok else _ERR
        if len(payload) > self.cap:  # too big for the slot: one file in /dev/shm
            d = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, path = tempfile.mkstemp(prefix="tandem-result-", dir=d)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            payload = path.encode()
            kind += 1
        self.ring[base + _HDR: base + _HDR + len(payload)] = payload
        struct.pack_into("qqq", self.ring, base, kind, len(payload), 0)
        return 0 if ok else -1


def _run_batch(ctrl, ctrl_len, call_id, begin, end, slot, worker, in_worker) -> int:
    """Called by the C body (parallel.c) for each batch, with the GIL."""
    if not in_worker:
        return _live[call_id].run_local(begin, end, slot)
    r = _cache.get(call_id)
    if r is None:
        _cache.clear()
        r = _cache[call_id] = _Remote(ctrl, ctrl_len)
    return r.run(begin, end, slot)


# ---- errors ----------------------------------------------------------------------------------

def _remote_error(val, batch, begin, end):
    i, e, tb, pid = val
    e.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    note = f"tandem.parallel: raised by fn on item {i} (batch {batch}, items {begin}..{end - 1}" \
           f", worker pid {pid})"
    if hasattr(e, "add_note"):
        e.add_note(note)
    e.tandem_item = i
    return e


def _worker_error(status: int, msg: str, batch, begin, end):
    name = _tandem.strerror(status)[0]
    cls = _tandem.TimeoutError_ if name == "TDM_ETIMEDOUT" else _tandem.WorkerError
    text = msg or f"batch {batch} (items {begin}..{end - 1}) failed: {name}"
    e = cls(text)
    e.code, e.status = status, name
    e.batch, e.begin, e.end = batch, begin, end
    m = re.search(r"pid (\d+)", text)
    e.pid = int(m.group(1)) if m else None
    m = re.search(r"signal (\d+)", text)
    e.signal = int(m.group(1)) if m else None
    m = None if e.signal else re.search(r"by (SIG[A-Z0-9]+)", text)
    if m:
        import signal as _signal
        e.signal = getattr(_signal, m.group(1), None)
    m = re.search(r"exited with status (\d+)", text)
    e.exit_status = int(m.group(1)) if m else None
    # the cgroup's OOM-kill count, read at the death (None: not a SIGKILL, or unreadable)
    e.oom = True if "killed for memory" in text else \
        False if "no OOM kill recorded" in text else None
    return e


# ---- the call --------------------------------------------------------------------------------

def _batches(call: _Call, job) -> Iterator:
    """Yields (begin, results) per finished batch, in the job's order; raises on failure."""
    while True:
        t = job.next()
        if t is None:
            break
        batch, b, e, status, worker, slot = t
        if status == 0:
            ok, val = call.take(slot)
            yield b, val
            continue
        ok, val = True, None
        if _tandem.strerror(status)[0] == "TDM_EKERNEL":  # fn raised (else: the worker died)
            try:
                ok, val = call.take(slot)
            except LookupError:
                ok, val = True, None
        job.cancel()
        if not ok:
            job.close()
            raise _remote_error(val, batch, b, e)
        st, msg, _ = job.wait()
        raise _worker_error(status if status < 0 else st, msg, batch, b, e)
    st, msg, _ = job.wait()
    if st < 0:
        raise _worker_error(st, msg, None, 0, 0)


def _gen(call: _Call):
    try:
        for _, val in _batches(call, call.job):
            yield from val
    finally:
        call.close()


def parallel(rt, fn, items, *args, batch_size="auto", return_as="list",
             max_in_flight: Optional[int] = None, timeout: Optional[float] = None,
             retries: int = 0, progress=None, backend: str = "procs",
             max_nbytes="1M", slot_bytes="1M", _moved=None):
    """Calls ``fn(item, *args)`` for each item (an iterable, a ``range`` or an int n meaning
    ``range(n)``) on the runtime's worker processes (``backend="procs"``, the default; the
    runtime needs ``procs > 0``) or threads (``backend="threads"``, for functions that release
    the GIL), and returns the results: a list in item order (``return_as="list"``), or a
    generator in item order (``"generator"``) or in completion order of batches
    (``"generator_unordered"``) keeping at most ``max_in_flight`` batches of results alive
    (default: 2 per worker).

    ``batch_size``: ``"auto"`` (tandem sizes batches from measured durations) or an int.
    ``timeout``: seconds a batch may run before its worker is killed (TimeoutError_).
    ``retries``: times a batch whose worker died or timed out runs again on a fresh worker
    (at least once: its items may run twice). ``progress``: None (the TDM_PROGRESS
    environment decides), True (a bar on stderr), "per_worker" (a bar per worker and the
    total) or False; counted per batch in shared memory. ``max_nbytes``: arrays larger than
    this (not already in tandem shared memory) are moved to shared memory once per call.
    ``slot_bytes``: bytes of shared memory per in-flight batch for its pickled results.

    Raises what ``fn`` raised (same type; ``__cause__`` holds the remote traceback),
    tandem.WorkerError (a worker died: ``.batch``, ``.begin``, ``.end``, ``.pid``,
    ``.signal``, ``.exit_status``, ``.oom``: True when its cgroup recorded an OOM kill), tandem.TimeoutError_, TypeError (``fn`` cannot be pickled and cloudpickle is
    missing), ValueError (bad options). The GIL is released while waiting. Ctrl-C in the
    caller raises KeyboardInterrupt when the next batch finishes; the call then starts no new
    batch, waits for the running ones and returns (a generator: when it is closed or freed)."""
    if backend not in ("procs", "threads"):
        raise ValueError(f"backend={backend!r}: expected 'procs' or 'threads'")
    if return_as not in ("list", "generator", "generator_unordered"):
        raise ValueError(f"return_as={return_as!r}: expected 'list', 'generator' or "
                         "'generator_unordered'")
    threads = backend == "threads"
    if not threads and getattr(rt, "procs", 0) <= 0:
        raise ValueError("backend='procs' needs a runtime with worker processes "
                         "(tandem.Runtime(procs=N)); or use backend='threads'")
    if batch_size == "auto" or batch_size is None:
        bs = 0
    else:
        bs = int(batch_size)
        if bs <= 0:
            raise ValueError(f"batch_size={batch_size!r}: expected 'auto' or an int > 0")
    workers = rt.threads if threads else rt.procs
    n_slots = int(max_in_flight) if max_in_flight else 2 * max(1, workers)
    if n_slots <= 0:
        raise ValueError("max_in_flight must be > 0")
    if retries < 0 or (timeout is not None and timeout < 0):
        raise ValueError("retries and timeout must be >= 0")
    if progress == "per_worker":
        prog = 3  # TDM_PROGRESS_PER_WORKER: a bar per worker and the total
    else:
        prog = 0 if progress is None else (2 if progress else 1)
    call = _Call(rt, fn, items, args, _nbytes(max_nbytes), threads, n_slots,
                 _nbytes(slot_bytes), _moved)
    ctrl = call.ctrl
    if threads:
        _live[call.id] = call
    try:
        job = _tandem._pf_start(rt, call.n, _addr(ctrl) if ctrl is not None else 0,
                                len(ctrl) if ctrl is not None else 0, call.id, threads, bs,
                                n_slots, return_as == "generator_unordered",
                                float(timeout or 0.0), int(retries), prog)
    except BaseException:
        _live.pop(call.id, None)
        raise
    call.job = job
    g = _gen(call)
    if return_as == "list":
        return list(g)
    return g


# ---- joblib's call shape ---------------------------------------------------------------------

_runtimes: dict = {}


def _runtime_for(n_jobs: int):
    """A runtime with n_jobs worker processes, opened once per process and kept (a persistent
    pool, as loky's); closed at exit."""
    r = _runtimes.get(n_jobs)
    if r is None or r.closed:
        from . import Runtime
        r = _runtimes[n_jobs] = Runtime(threads=1, procs=n_jobs, backends="cpu,procs")
    return r


def _close_runtimes() -> None:
    for r in _runtimes.values():
        try:
            r.close()
        except Exception:  # noqa: BLE001  (at exit: nothing to report to)
            pass
    _runtimes.clear()


import atexit  # noqa: E402

atexit.register(_close_runtimes)


def _n_jobs(n_jobs) -> int:
    cpus = os.cpu_count() or 1
    if n_jobs is None:
        return cpus
    n = int(n_jobs)
    if n == 0:
        raise ValueError("n_jobs == 0 has no meaning")
    return max(cpus + 1 + n, 1) if n < 0 else n


def _call_one(task):
    f, a, kw = task
    return f(*a, **kw)


def delayed(function):
    """``delayed(f)(*args, **kwargs)`` -> the task ``(f, args, kwargs)``, as joblib's."""
    def delayed_function(*args, **kwargs):
        return function, args, kwargs
    try:
        import functools
        delayed_function = functools.wraps(function)(delayed_function)
    except AttributeError:
        pass
    return delayed_function


class Parallel:
    """joblib.Parallel's call shape on tandem: ``Parallel(n_jobs=2)(delayed(f)(i, payload)
    for i in ...)``. The tasks run on a runtime with ``n_jobs`` worker processes (``rt`` to
    give one; ``backend="threads"`` for functions that release the GIL). Shared and large
    arrays in the tasks travel as in :func:`parallel` (by handle; large private ones moved to
    shared memory once per call). ``return_as``, ``batch_size``, ``timeout``, ``retries``,
    ``progress``, ``max_nbytes`` as for :func:`parallel`."""

    def __init__(self, n_jobs=None, backend="procs", return_as="list", batch_size="auto",
                 timeout=None, retries=0, progress=None, max_nbytes="1M", rt=None):
        self.n_jobs, self.backend, self.return_as = n_jobs, backend, return_as
        self.batch_size, self.timeout, self.retries = batch_size, timeout, retries
        self.progress, self.max_nbytes, self.rt = progress, max_nbytes, rt

    def __call__(self, iterable):
        tasks = list(iterable)
        rt = self.rt
        if rt is None:
            if self.backend == "threads":
                from . import default_runtime
                rt = default_runtime()
            else:
                rt = _runtime_for(_n_jobs(self.n_jobs))
        return parallel(rt, _call_one, tasks, batch_size=self.batch_size,
                        return_as=self.return_as, timeout=self.timeout, retries=self.retries,
                        progress=self.progress, backend=self.backend,
                        max_nbytes=self.max_nbytes)
