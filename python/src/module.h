/* SPDX-License-Identifier: MIT */
/* tandem._tandem — what the extension's files share. Written against tandem's public C API
 * (tandem.h) and the CPython C API only; NumPy is reached through the buffer protocol and by
 * calling numpy.asarray, so the build needs no NumPy headers. */
#ifndef TDM_PY_MODULE_H
#define TDM_PY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <structmember.h>
#include <tandem.h>

/* ---- errors.c -------------------------------------------------------------------------- */
/* Creates tandem.Error and its subclasses and adds them to the module. */
int tdm_py_errors_init(PyObject *m);
/* Raises the tandem.Error subclass for `rc` with tdm_errmsg(rt)'s text (or tdm_strerror's).
 * Returns NULL so callers can `return tdm_py_raise(...)`. */
PyObject *tdm_py_raise(int rc, const tdm_runtime *rt);
/* Raises the subclass for `rc` with a message of the caller's. */
PyObject *tdm_py_raise_msg(int rc, const char *fmt, ...);

/* ---- runtime.c ------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    tdm_runtime *rt;
    atomic_int busy;    /* calls running on rt without the GIL (maps, loads) */
    atomic_int closing; /* close() asked: no new calls; closed when the last array goes */
    PyObject *kernels;  /* dict name -> tandem.Kernel registered here (user kernels) */
    int procs;          /* worker processes running (outputs then go to shared memory) */
    long open_seq;      /* tdm_py_seq when it opened (user kernels loaded later: no procs) */
    PyObject *weakreflist;
} RuntimeObject;

extern PyTypeObject RuntimeType;
int tdm_py_runtime_init(PyObject *m);
/* Checks that the runtime is open and counts a call in flight (release with rt_leave). */
int tdm_py_rt_enter(RuntimeObject *self);
void tdm_py_rt_leave(RuntimeObject *self);

/* ---- array.c --------------------------------------------------------------------------- */
/* tandem.Tensor: owns one reference to a tdm_tensor and exports its bytes (buffer protocol,
 * DLPack). numpy arrays over tandem storage have a memoryview of one as their base. */
typedef struct {
    PyObject_HEAD
    tdm_tensor *t;
    RuntimeObject *rt; /* strong: the runtime outlives its tensors */
    int readonly;      /* a file mapped read-only */
    PyObject *weakreflist;
} TensorObject;

extern PyTypeObject TensorType;
int tdm_py_array_init(PyObject *m);
/* Takes ownership of `t` (one reference): a new tandem.Tensor. NULL (t released) on error. */
PyObject *tdm_py_tensor_new(RuntimeObject *rt, tdm_tensor *t, int readonly);
/* numpy.asarray over a tensor (zero copy; the array keeps the handle alive). Steals `t`. */
PyObject *tdm_py_ndarray_from_tensor(RuntimeObject *rt, tdm_tensor *t, int readonly);
/* The tandem.Tensor an ndarray's memory belongs to (walking .base), or NULL (no error set). */
TensorObject *tdm_py_owner_of(PyObject *obj);

/* One argument of a map: a buffer held for the call and the tensor over it. */
typedef struct {
    Py_buffer view;
    int has_view;
    tdm_tensor *t; /* owned reference */
} tdm_py_arg;

/* Turns any buffer-protocol object (C-contiguous) into a tensor of `rt` without copying: the
 * tensor itself when the buffer is a tandem array (or a row range of one), else a tensor
 * wrapping the buffer's memory. `what` (and `index` when >= 0: "input 0") names the argument
 * in messages. Returns 0,
 * or -1 with an exception set (TypeError, DTypeError, LayoutError...). */
int tdm_py_arg_get(RuntimeObject *rt, PyObject *obj, int writable, const char *what, int index,
                   tdm_py_arg *arg);
void tdm_py_arg_release(tdm_py_arg *arg);

/* dtype <-> buffer format and NumPy names. */
int tdm_py_dtype_from_format(const char *fmt, Py_ssize_t itemsize, tdm_dtype *out);
const char *tdm_py_dtype_format(tdm_dtype d);
/* Parses a dtype given as a string ("f64", "float64", "<f8"), a numpy dtype or type (through
 * numpy.dtype(x).str). Returns 0 or -1 with an exception. */
int tdm_py_dtype_parse(PyObject *obj, tdm_dtype *out);
/* Parses a shape (int or sequence of ints). Returns ndim or -1 with an exception. */
int tdm_py_shape_parse(PyObject *obj, int64_t shape[TDM_MAX_DIMS]);
int tdm_py_mem_parse(PyObject *obj, unsigned *out);

/* ---- map.c ----------------------------------------------------------------------------- */
int tdm_py_map_init(PyObject *m);
PyObject *tdm_py_rt_map(RuntimeObject *self, PyObject *args, PyObject *kw);
PyObject *tdm_py_rt_map_async(RuntimeObject *self, PyObject *args, PyObject *kw);
/* The run report as a dict (workers as a list of dicts). */
PyObject *tdm_py_report_dict(const tdm_report *r);
/* "auto", "cpu", "threads"... -> tdm_policy. Returns 0 or -1 with ValueError. */
int tdm_py_policy_parse(PyObject *obj, tdm_policy *out);

/* ---- io.c ------------------------------------------------------------------------------ */
int tdm_py_io_init(PyObject *m);
typedef struct {
    PyObject_HEAD
    tdm_cache *c;
    RuntimeObject *rt;
    int readonly; /* hits come back mapped read-only */
    int last_hit;
} CacheObject;
extern PyTypeObject CacheType;
/* Cache.map (map.c, which owns the argument parsing). */
PyObject *tdm_py_cache_map(CacheObject *self, PyObject *args, PyObject *kw);

/* ---- dlpack.c -------------------------------------------------------------------------- */
int tdm_py_dlpack_init(PyObject *m);
PyObject *tdm_py_tensor_dlpack(TensorObject *self, PyObject *args, PyObject *kw);
PyObject *tdm_py_tensor_dlpack_device(TensorObject *self, PyObject *unused);

/* ---- kernel.c -------------------------------------------------------------------------- */
/* A counter of runtime opens and user-kernel loads: a kernel loaded after a runtime with
 * worker processes opened cannot run on them (they are forked at open). */
extern atomic_long tdm_py_seq;
int tdm_py_kernel_init(PyObject *m);

/* ---- parallel.c ------------------------------------------------------------------------ */
/* Python callables on the workers: Runtime.parallel, the worker-start hook it needs. */
int tdm_py_parallel_init(PyObject *m);
PyObject *tdm_py_rt_parallel(RuntimeObject *self, PyObject *args, PyObject *kw);
void tdm_py_worker_start(void *arg, int worker);
PyObject *tdm_py_rt_get_procs(RuntimeObject *self, void *closure);

/* ---- module.c -------------------------------------------------------------------------- */
/* numpy.asarray, imported once at module exec. */
extern PyObject *tdm_py_np_asarray;
/* tandem._kernels.describe_outputs / pack_params (the Python helpers), looked up once.
 * Borrowed; NULL with an exception if not importable. */
PyObject *tdm_py_helper(const char *name);

#endif
