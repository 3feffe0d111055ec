/* SPDX-License-Identifier: MIT */
/* tandem.Runtime: one tdm_runtime, its devices and kernels, and tandem-backed arrays.
 *
 * Lifetime: every array over tandem storage holds its tandem.Tensor, which holds the Runtime
 * object, so the C runtime is never closed under a live array. close() (and leaving a `with`
 * block) stops new work at once and closes the C runtime when no array is left — at once when
 * none is alive, else when the last one is freed. */
#include <string.h>

#include "module.h"

int tdm_py_rt_enter(RuntimeObject *self)
{
    if (!self->rt || atomic_load(&self->closing)) {
        tdm_py_raise_msg(TDM_EINVAL, "the runtime is closed");
        return -1;
    }
    atomic_fetch_add(&self->busy, 1);
    return 0;
}

void tdm_py_rt_leave(RuntimeObject *self)
{
    atomic_fetch_sub(&self->busy, 1);
}

static int opt_int(PyObject *o, const char *name, int *out)
{
    if (!o || o == Py_None)
        return 0;
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 1 << 20) {
        PyErr_Format(PyExc_ValueError, "%s=%ld: expected a count >= 0", name, v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int opt_str(PyObject *o, const char *name, const char **out)
{
    if (!o || o == Py_None)
        return 0;
    if (PyList_Check(o) || PyTuple_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a string (comma-separated)", name);
        return -1;
    }
    *out = PyUnicode_AsUTF8(o);
    return *out ? 0 : -1;
}

static int runtime_init(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"threads",        "procs",          "backends",
                             "trace",          "debug",          "shm_limit",
                             "device_mem_cap", "sched_model_dir", "use_env",
                             NULL};
    PyObject *threads = NULL, *procs = NULL, *backends = NULL, *trace = NULL, *debug = NULL,
             *model = NULL;
    unsigned long long shm_limit = 0, dev_cap = 0;
    int use_env = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO$OOOKKOp", kwlist, &threads, &procs, &backends,
                                     &trace, &debug, &shm_limit, &dev_cap, &model, &use_env))
        return -1;
    if (self->rt) {
        PyErr_SetString(PyExc_RuntimeError, "Runtime.__init__ called twice");
        return -1;
    }
    tdm_config cfg = TDM_CONFIG_INIT;
    PyObject *bstr = NULL;
    if (opt_int(threads, "threads", &cfg.threads) < 0 || opt_int(procs, "procs", &cfg.procs) < 0)
        return -1;
    if (backends && (PyList_Check(backends) || PyTuple_Check(backends))) {
        PyObject *sep = PyUnicode_FromString(",");
        bstr = sep ? PyUnicode_Join(sep, backends) : NULL;
        Py_XDECREF(sep);
        if (!bstr)
            return -1;
        backends = bstr;
    }
    int rc = -1;
    if (opt_str(backends, "backends", &cfg.backends) < 0 ||
        opt_str(trace, "trace", &cfg.trace_path) < 0 ||
        opt_str(model, "sched_model_dir", &cfg.sched_model_dir) < 0)
        goto out;
    if (debug && debug != Py_None) {
        if (debug == Py_True)
            cfg.debug = TDM_DEBUG_ALL;
        else if (PyLong_Check(debug))
            cfg.debug = (unsigned)PyLong_AsUnsignedLong(debug);
        else {
            PyErr_SetString(PyExc_TypeError, "debug: expected True or TDM_DEBUG_* flags (int)");
            goto out;
        }
        if (PyErr_Occurred())
            goto out;
    }
    cfg.shm_limit = shm_limit;
    cfg.device_mem_cap = dev_cap;
    cfg.use_env = use_env;
    tdm_runtime *rt = NULL;
    int st;
    /* Worker processes run Python (rt.parallel): they are forked inside open with the GIL
     * held and the import lock taken, as os.fork() does, and re-initialise the interpreter
     * in tdm_py_worker_start (parallel.c). */
    cfg.worker_start = tdm_py_worker_start;
    if (cfg.procs > 0 || (cfg.use_env && getenv("TDM_NUM_PROCS"))) {
        PyOS_BeforeFork();
        st = tdm_runtime_open(&rt, &cfg);
        PyOS_AfterFork_Parent();
    } else {
        Py_BEGIN_ALLOW_THREADS
        st = tdm_runtime_open(&rt, &cfg);
        Py_END_ALLOW_THREADS
    }
    if (st < 0) {
        tdm_py_raise(st, NULL);
        goto out;
    }
    self->rt = rt;
    self->open_seq = atomic_fetch_add(&tdm_py_seq, 1) + 1;
    for (int i = 0; i < tdm_backend_count(); i++) {
        tdm_backend_info bi;
        if (tdm_runtime_backend(rt, i, &bi) == 0 && bi.kind == TDM_BACKEND_CPU_PROCS &&
            bi.enabled)
            self->procs = bi.n_devices;
    }
    self->kernels = PyDict_New();
    if (!self->kernels)
        goto out;
    rc = 0;
out:
    Py_XDECREF(bstr);
    return rc;
}

static void runtime_dealloc(RuntimeObject *self)
{
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->rt) {
        /* No array is left (each holds this object). A job still running cannot be: maps
         * hold a reference for their whole call. */
        Py_BEGIN_ALLOW_THREADS
        tdm_runtime_close(self->rt);
        Py_END_ALLOW_THREADS
        self->rt = NULL;
    }
    Py_CLEAR(self->kernels);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *runtime_close(RuntimeObject *self, PyObject *unused)
{
    if (!self->rt)
        Py_RETURN_NONE;
    atomic_store(&self->closing, 1);
    if (atomic_load(&self->busy) > 0) /* a call, a job or a cache: closed in dealloc */
        Py_RETURN_NONE;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_runtime_close(self->rt);
    Py_END_ALLOW_THREADS
    if (rc == 0)
        self->rt = NULL;
    else if (rc != TDM_EBUSY)
        return tdm_py_raise(rc, self->rt);
    /* EBUSY: arrays over its memory are alive; closed when the last one goes. */
    Py_RETURN_NONE;
}

static PyObject *runtime_enter(RuntimeObject *self, PyObject *unused)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    tdm_py_rt_leave(self);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *runtime_exit(RuntimeObject *self, PyObject *args)
{
    PyObject *r = runtime_close(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *runtime_get_closed(RuntimeObject *self, void *c)
{
    return PyBool_FromLong(!self->rt || atomic_load(&self->closing));
}

static PyObject *runtime_get_threads(RuntimeObject *self, void *c)
{
    return PyLong_FromLong(tdm_runtime_threads(self->rt));
}

static PyObject *runtime_devices(RuntimeObject *self, PyObject *unused)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    PyObject *l = NULL;
    int n = tdm_runtime_device_count(self->rt);
    if (n < 0) {
        tdm_py_raise(n, self->rt);
        goto out;
    }
    l = PyList_New(n);
    for (int i = 0; l && i < n; i++) {
        tdm_device_info di;
        int rc = tdm_runtime_device(self->rt, i, &di);
        PyObject *d = rc < 0 ? tdm_py_raise(rc, self->rt)
                             : Py_BuildValue("{s:s,s:i,s:s,s:s,s:i,s:K,s:O,s:O}", "backend",
                                             di.backend, "index", di.index, "name", di.name,
                                             "vendor", di.vendor, "compute_units",
                                             di.compute_units, "memory_bytes",
                                             (unsigned long long)di.memory_bytes, "pinned",
                                             di.pinned ? Py_True : Py_False, "host_cpu",
                                             di.host_cpu ? Py_True : Py_False);
        if (!d) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, d);
    }
out:
    tdm_py_rt_leave(self);
    return l;
}

static PyObject *runtime_backends(RuntimeObject *self, PyObject *unused)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    int n = tdm_backend_count();
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) {
        tdm_backend_info bi;
        int rc = tdm_runtime_backend(self->rt, i, &bi);
        PyObject *d = rc < 0 ? tdm_py_raise(rc, self->rt)
                             : Py_BuildValue("{s:s,s:O,s:O,s:O,s:i,s:s}", "name", bi.name,
                                             "built", bi.built ? Py_True : Py_False, "enabled",
                                             bi.enabled ? Py_True : Py_False, "runs_kernels",
                                             bi.runs_kernels ? Py_True : Py_False, "devices",
                                             bi.n_devices, "note", bi.note);
        if (!d) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, d);
    }
    tdm_py_rt_leave(self);
    return l;
}

static PyObject *runtime_kernels(RuntimeObject *self, PyObject *unused)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    int n = tdm_kernel_count(self->rt);
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) {
        const char *name = tdm_kernel_name(self->rt, i);
        PyObject *s = PyUnicode_FromString(name ? name : "");
        if (!s) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, s);
    }
    tdm_py_rt_leave(self);
    return l;
}

static PyObject *runtime_shm_info(RuntimeObject *self, PyObject *unused)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    tdm_shm_info si;
    int rc = tdm_runtime_shm_info(self->rt, &si);
    PyObject *d = rc < 0 ? tdm_py_raise(rc, self->rt)
                         : Py_BuildValue("{s:K,s:s,s:K,s:K,s:K,s:K}", "allowed_bytes",
                                         (unsigned long long)si.allowed_bytes, "bound", si.bound,
                                         "limit_bytes", (unsigned long long)si.limit_bytes,
                                         "held_bytes", (unsigned long long)si.held_bytes,
                                         "arena_bytes", (unsigned long long)si.arena_bytes,
                                         "arena_free_bytes",
                                         (unsigned long long)si.arena_free_bytes);
    tdm_py_rt_leave(self);
    return d;
}

static PyObject *make_array(RuntimeObject *self, PyObject *args, PyObject *kw, int zero)
{
    static char *kwlist[] = {"shape", "dtype", "memory", "strict", NULL};
    PyObject *shape_o, *dtype_o = NULL, *mem_o = NULL;
    int strict = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO$p", kwlist, &shape_o, &dtype_o, &mem_o,
                                     &strict))
        return NULL;
    int64_t shape[TDM_MAX_DIMS];
    int nd = tdm_py_shape_parse(shape_o, shape);
    tdm_dtype dt = TDM_F64;
    unsigned mem;
    if (nd < 0 || (dtype_o && dtype_o != Py_None && tdm_py_dtype_parse(dtype_o, &dt) < 0) ||
        tdm_py_mem_parse(mem_o, &mem) < 0)
        return NULL;
    if (strict)
        mem |= TDM_MEM_STRICT;
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    tdm_tensor *t = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = zero ? tdm_tensor_zeros(self->rt, dt, nd, shape, mem, &t)
              : tdm_tensor_empty(self->rt, dt, nd, shape, mem, &t);
    Py_END_ALLOW_THREADS
    PyObject *r = rc < 0 ? tdm_py_raise(rc, self->rt) : tdm_py_ndarray_from_tensor(self, t, 0);
    tdm_py_rt_leave(self);
    return r;
}

static PyObject *runtime_empty(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    return make_array(self, args, kw, 0);
}

static PyObject *runtime_zeros(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    return make_array(self, args, kw, 1);
}

static PyObject *runtime_share(RuntimeObject *self, PyObject *obj)
{
    /* Already in this runtime's shared memory, whole: returned as it is. */
    TensorObject *own = tdm_py_owner_of(obj);
    if (own && own->rt == self && (tdm_tensor_mem(own->t) & TDM_MEM_SHARED)) {
        Py_buffer v;
        if (PyObject_GetBuffer(obj, &v, PyBUF_STRIDES) < 0)
            return NULL;
        int whole = v.buf == tdm_tensor_data(own->t) &&
                    v.len == (Py_ssize_t)tdm_tensor_nbytes(own->t) &&
                    PyBuffer_IsContiguous(&v, 'C');
        PyBuffer_Release(&v);
        if (whole) {
            Py_INCREF(obj);
            return obj;
        }
    }
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    tdm_py_arg a;
    if (tdm_py_arg_get(self, obj, 0, "rt.share: the array", -1, &a) < 0)
        goto out;
    tdm_tensor *t = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_tensor_empty(self->rt, tdm_tensor_dtype(a.t), tdm_tensor_ndim(a.t),
                          tdm_tensor_shape(a.t), TDM_MEM_SHARED, &t);
    if (rc == 0 && tdm_tensor_nbytes(t))
        memcpy(tdm_tensor_data(t), tdm_tensor_data(a.t), tdm_tensor_nbytes(t));
    Py_END_ALLOW_THREADS
    tdm_py_arg_release(&a);
    r = rc < 0 ? tdm_py_raise(rc, self->rt) : tdm_py_ndarray_from_tensor(self, t, 0);
out:
    tdm_py_rt_leave(self);
    return r;
}

static PyObject *runtime_repr(RuntimeObject *self)
{
    if (!self->rt || atomic_load(&self->closing))
        return PyUnicode_FromString("tandem.Runtime(closed)");
    return PyUnicode_FromFormat("tandem.Runtime(threads=%d, devices=%d)",
                                tdm_runtime_threads(self->rt),
                                tdm_runtime_device_count(self->rt));
}

static PyMethodDef runtime_methods[] = {
    {"close", (PyCFunction)runtime_close, METH_NOARGS,
     "close()\n\nStops new work on the runtime and closes it (threads, worker processes, "
     "devices) once no array, job or cache of it is left."},
    {"__enter__", (PyCFunction)runtime_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)runtime_exit, METH_VARARGS, NULL},
    {"devices", (PyCFunction)runtime_devices, METH_NOARGS,
     "devices() -> list of dict\n\nThe devices of the enabled backends (the CPU pool counts as "
     "one): backend, index, name, vendor, compute_units, memory_bytes, pinned, host_cpu."},
    {"backends", (PyCFunction)runtime_backends, METH_NOARGS,
     "backends() -> list of dict\n\nThe build's backend table: name, built, enabled, "
     "runs_kernels, devices, note."},
    {"kernels", (PyCFunction)runtime_kernels, METH_NOARGS,
     "kernels() -> list of str\n\nNames of the kernels registered (built-in first)."},
    {"shm_info", (PyCFunction)runtime_shm_info, METH_NOARGS,
     "shm_info() -> dict\n\nWhat shared arrays may still take (tdm_runtime_shm_info)."},
    {"empty", (PyCFunction)(void (*)(void))runtime_empty, METH_VARARGS | METH_KEYWORDS,
     "empty(shape, dtype='f64', memory='host', *, strict=False) -> numpy.ndarray\n\n"
     "An uninitialised array over tandem storage: memory is 'host', 'shared' (the runtime's "
     "shared arena: worker processes see it without a copy), 'pinned' (page-locked; "
     "strict=True fails instead of falling back to unlocked memory) or 'shared+pinned'. The "
     "array keeps the storage alive (no copy: its data pointer is the tensor's)."},
    {"zeros", (PyCFunction)(void (*)(void))runtime_zeros, METH_VARARGS | METH_KEYWORDS,
     "zeros(shape, dtype='f64', memory='host', *, strict=False) -> numpy.ndarray\n\nAs "
     "empty(), zero-filled."},
    {"share", (PyCFunction)runtime_share, METH_O,
     "share(array) -> numpy.ndarray\n\nThe array in this runtime's shared memory (torch's "
     "share_memory_()): the same array when it is already there, else a shared copy (one "
     "copy). Unlike torch the original is not changed in place: NumPy arrays cannot move."},
    {"map", (PyCFunction)(void (*)(void))tdm_py_rt_map, METH_VARARGS | METH_KEYWORDS,
     "map(kernel, *inputs, out=None, params=None, policy='auto', batch_size=None, "
     "progress=None, progress_interval=0.1, keep_on_device=False, on_error='stop', "
     "timeout=None, retries=0, rows=None, report=False)\n\n"
     "Runs `kernel` over the rows (dim 0) of the inputs, with the GIL released for the whole "
     "call. Inputs are any C-contiguous arrays or buffers (no copy). `out` is an array or a "
     "tuple of arrays written in place; None allocates them from the kernel's output "
     "description. Returns the output (a tuple when the kernel has several), or (outputs, "
     "report) with report=True. `params` is a dict of the kernel's parameters or a bytes-like "
     "parameter block. policy: 'auto', 'cpu', 'threads', 'procs', 'gpu', 'opencl', 'cuda', "
     "'round_robin'. progress: True (a bar on stderr), 'per_worker', or a callable receiving "
     "a tandem.Progress in this thread, with the GIL, at most every progress_interval seconds "
     "as batches finish. A map moving 8 MiB or more (or of 65,536 rows or more, or with "
     "progress) can be interrupted: Ctrl-C cancels the job (running batches finish) and "
     "raises KeyboardInterrupt; smaller ones run to their end first. Errors raise "
     "tandem.Error subclasses (ShapeError, DTypeError, ...)."},
    {"parallel", (PyCFunction)(void (*)(void))tdm_py_rt_parallel, METH_VARARGS | METH_KEYWORDS,
     "parallel(fn, items, *args, batch_size='auto', return_as='list', max_in_flight=None, "
     "timeout=None, retries=0, progress=None, backend='procs', max_nbytes='1M')\n\nCalls "
     "fn(item, *args) for each item on the worker processes (see tandem.parallel)."},
    {"map_async", (PyCFunction)(void (*)(void))tdm_py_rt_map_async,
     METH_VARARGS | METH_KEYWORDS,
     "map_async(kernel, *inputs, out=None, params=None, policy='auto', batch_size=None, "
     "order='submission', window=None, ...) -> tandem.MapJob\n\n"
     "Starts a map and returns an iterator over its finished batches (tandem.Batch: index, "
     "begin, end, worker, status, outputs as views of the rows), in submission or completion "
     "order, with at most `window` batches run ahead of the consumer. job.result() waits "
     "and returns the outputs; job.cancel() stops it."},
    {NULL}};

static PyGetSetDef runtime_getset[] = {
    {"closed", (getter)runtime_get_closed, NULL, "True once close() was called.", NULL},
    {"threads", (getter)runtime_get_threads, NULL, "CPU worker threads of the pool.", NULL},
    {"procs", (getter)tdm_py_rt_get_procs, NULL, "Worker processes running (0: none).", NULL},
    {NULL}};

PyTypeObject RuntimeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem.Runtime",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_dealloc = (destructor)runtime_dealloc,
    .tp_repr = (reprfunc)runtime_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Runtime(threads=None, procs=0, *, backends=None, trace=None, debug=None, "
              "shm_limit=0, device_mem_cap=0, sched_model_dir=None, use_env=True)\n\n"
              "A tandem runtime (tdm_config): `threads` CPU worker threads (None = one per "
              "core), `procs` worker processes, `backends` a comma list or list of names "
              "('cpu', 'procs', 'opencl', 'cuda'), `trace` a Chrome trace file written at "
              "close. The TDM_* environment variables override the arguments unless "
              "use_env=False. A context manager: leaving the block closes it (once no "
              "array over its memory is left).",
    .tp_weaklistoffset = offsetof(RuntimeObject, weakreflist),
    .tp_methods = runtime_methods,
    .tp_getset = runtime_getset,
    .tp_init = (initproc)runtime_init,
    .tp_new = PyType_GenericNew,
};

int tdm_py_runtime_init(PyObject *m)
{
    if (PyType_Ready(&RuntimeType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "Runtime", (PyObject *)&RuntimeType);
}
