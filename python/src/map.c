/* SPDX-License-Identifier: MIT */
/* rt.map and rt.map_async: arguments to tensors (no copy), options, the wait with the GIL
 * released, Ctrl-C and progress from the calling thread, reports as dicts, streaming jobs.
 *
 * A small map (under 8 MiB moved and 65536 rows) runs through tdm_map() with the GIL
 * released: the lowest overhead, but Ctrl-C waits for its end. A larger one, or one with
 * progress,
 * runs as tdm_map_async(): the calling thread consumes its batches as they finish (GIL
 * released) and, every 20 ms at most, takes the GIL to run signal handlers (Ctrl-C ->
 * tdm_job_cancel: no new batch starts, running ones finish) and the user's progress callback
 * with the latest snapshot, which the runtime's progress thread only copies into a struct:
 * Python never runs on a runtime thread. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "module.h"

#define ASYNC_BYTES (8u << 20)
#define ASYNC_ROWS 65536
#define MAX_ARGS 16

static PyTypeObject ProgressType, BatchType, MapJobType;

static PyStructSequence_Field progress_fields[] = {
    {"done", "items finished"},
    {"total", "items in the run"},
    {"elapsed", "seconds since the start"},
    {"rate", "items per second"},
    {"eta", "estimated seconds left (-1 if unknown)"},
    {"per_worker", "items finished by each worker (tuple)"},
    {"final", "True for the last call of the run"},
    {NULL}};
static PyStructSequence_Desc progress_desc = {
    "tandem.Progress", "A progress snapshot handed to a map's progress callback.",
    progress_fields, 7};

static PyStructSequence_Field batch_fields[] = {
    {"index", "batch index"},
    {"begin", "first row"},
    {"end", "one past the last row"},
    {"worker", "the worker that ran it"},
    {"status", "0, or the batch's TDM_E* error"},
    {"outputs", "views of the batch's rows of each output (tuple of arrays)"},
    {NULL}};
static PyStructSequence_Desc batch_desc = {"tandem.Batch", "One finished batch of a MapJob.",
                                           batch_fields, 6};

int tdm_py_policy_parse(PyObject *obj, tdm_policy *out)
{
    static const struct {
        const char *name;
        tdm_policy p;
    } names[] = {{"auto", TDM_POLICY_AUTO},     {"cpu", TDM_POLICY_CPU},
                 {"threads", TDM_POLICY_THREADS}, {"procs", TDM_POLICY_PROCS},
                 {"gpu", TDM_POLICY_GPU},       {"opencl", TDM_POLICY_OPENCL},
                 {"cuda", TDM_POLICY_CUDA},     {"round_robin", TDM_POLICY_ROUND_ROBIN}};
    if (!obj || obj == Py_None) {
        *out = TDM_POLICY_AUTO;
        return 0;
    }
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (s)
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(s, names[i].name) == 0) {
                *out = names[i].p;
                return 0;
            }
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_ValueError,
                     "policy=%R: expected 'auto', 'cpu', 'threads', 'procs', 'gpu', 'opencl', "
                     "'cuda' or 'round_robin'",
                     obj);
    return -1;
}

PyObject *tdm_py_report_dict(const tdm_report *r)
{
    int nw = r->n_workers < TDM_REPORT_MAX_WORKERS ? r->n_workers : TDM_REPORT_MAX_WORKERS;
    PyObject *workers = PyList_New(nw);
    if (!workers)
        return NULL;
    for (int i = 0; i < nw; i++) {
        const tdm_report_worker *w = &r->workers[i];
        PyObject *d = Py_BuildValue("{s:s,s:i,s:L,s:L,s:d,s:d,s:L}", "backend",
                                    tdm_backend_kind_name(w->kind), "index", w->index, "items",
                                    (long long)w->items, "batches", (long long)w->batches,
                                    "busy_s", w->busy_s, "est_s", w->est_s, "bytes",
                                    (long long)w->bytes);
        if (!d) {
            Py_DECREF(workers);
            return NULL;
        }
        PyList_SET_ITEM(workers, i, d);
    }
    return Py_BuildValue(
        "{s:s,s:i,s:d,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:i,s:L,s:N}", "kernel", r->what,
        "status", r->status, "wall_s", r->wall_s, "items", (long long)r->items, "items_total",
        (long long)r->items_total, "batches", (long long)r->batches, "failed_batches",
        (long long)r->failed_batches, "fallback_batches", (long long)r->fallback_batches,
        "bytes_to_device", (long long)r->bytes_to_device, "bytes_from_device",
        (long long)r->bytes_from_device, "batch_size", (long long)r->batch_size,
        "batch_size_min", (long long)r->batch_size_min, "first_error", r->first_error,
        "first_error_batch", (long long)r->first_error_batch, "workers", workers);
}

/* ---- a call's arguments ------------------------------------------------------------------ */

typedef struct {
    const char *kernel;
    PyObject *kernel_name; /* owned str */
    tdm_tensor *ins[MAX_ARGS], *outs[MAX_ARGS];
    int n_in, n_out;
    PyObject *out_arrays; /* tuple of ndarrays (created or given), owned */
    int out_given;
    PyObject *out_obj; /* the out= argument as given (borrowed from the call's kwargs) */
    PyObject *params; /* owned bytes, or NULL */
    tdm_map_opts opts;
    PyObject *progress_cb; /* borrowed callable, or NULL */
    int progress_bar;
    int want_report;
    /* Last: only the first n_in / n_out entries are ever set (not zeroed per call). */
    tdm_py_arg in[MAX_ARGS], out[MAX_ARGS];
} call;

static void call_release(call *c)
{
    for (int i = 0; i < c->n_in; i++)
        tdm_py_arg_release(&c->in[i]);
    for (int i = 0; i < c->n_out; i++)
        tdm_py_arg_release(&c->out[i]);
    c->n_in = c->n_out = 0;
    Py_CLEAR(c->out_arrays);
    Py_CLEAR(c->params);
    Py_CLEAR(c->kernel_name);
}

static int opt_int64(PyObject *o, const char *name, int64_t *out)
{
    if (!o || o == Py_None)
        return 0;
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses map's arguments (positional: kernel, *inputs) into *c. `async` accepts order= and
 * window=. Returns 0 or -1 with an exception (everything acquired is released). */
static int call_parse(RuntimeObject *self, PyObject *args, PyObject *kw, int async, int alloc,
                      call *c)
{
    memset(c, 0, offsetof(call, in));
    tdm_map_opts_init(&c->opts);
    c->opts.progress = TDM_PROGRESS_OFF;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "map() missing the kernel argument");
        return -1;
    }
    PyObject *kernel = PyTuple_GET_ITEM(args, 0);
    if (PyUnicode_Check(kernel)) {
        c->kernel_name = kernel;
        Py_INCREF(kernel);
    } else {
        /* A tandem.Kernel (user kernel): registered with this runtime on first use. */
        PyObject *policy_o = kw ? PyDict_GetItemString(kw, "policy") : NULL;
        c->kernel_name = PyObject_CallMethod(kernel, "_ensure", "OO", (PyObject *)self,
                                             policy_o ? policy_o : Py_None);
        if (!c->kernel_name) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "kernel: expected a name or a tandem.Kernel, got %.100s",
                             Py_TYPE(kernel)->tp_name);
            }
            return -1;
        }
    }
    c->kernel = PyUnicode_AsUTF8(c->kernel_name);
    if (!c->kernel)
        goto fail;
    if (nargs - 1 > MAX_ARGS) {
        PyErr_Format(PyExc_TypeError, "map: at most %d inputs", MAX_ARGS);
        goto fail;
    }

    PyObject *out = NULL, *params = NULL, *policy = NULL, *batch = NULL, *progress = NULL,
             *interval = NULL, *keep = NULL, *on_error = NULL, *timeout = NULL,
             *retries = NULL, *rows = NULL, *report = NULL, *order = NULL, *window = NULL,
             *desc = NULL;
    if (kw) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kw, &pos, &k, &v)) {
            const char *n = PyUnicode_AsUTF8(k);
            if (!n)
                goto fail;
#define KW(name)                                                                                   \
    if (strcmp(n, #name) == 0) {                                                                   \
        name = v;                                                                                  \
        continue;                                                                                  \
    }
            KW(out) KW(params) KW(policy) KW(progress) KW(keep) KW(on_error) KW(timeout)
            KW(retries) KW(rows) KW(report) KW(desc)
#undef KW
            if (strcmp(n, "batch_size") == 0) {
                batch = v;
                continue;
            }
            if (strcmp(n, "progress_interval") == 0) {
                interval = v;
                continue;
            }
            if (strcmp(n, "keep_on_device") == 0) {
                keep = v;
                continue;
            }
            if (async && strcmp(n, "order") == 0) {
                order = v;
                continue;
            }
            if (async && strcmp(n, "window") == 0) {
                window = v;
                continue;
            }
            PyErr_Format(PyExc_TypeError, "map() got an unexpected keyword argument '%s'", n);
            goto fail;
        }
    }
    if (tdm_py_policy_parse(policy, &c->opts.policy) < 0 ||
        opt_int64(batch, "batch_size", &c->opts.batch_size) < 0)
        goto fail;
    if (interval && interval != Py_None) {
        c->opts.progress_interval_s = PyFloat_AsDouble(interval);
        if (PyErr_Occurred())
            goto fail;
        if (!(c->opts.progress_interval_s > 0)) {
            PyErr_SetString(PyExc_ValueError, "progress_interval must be > 0");
            goto fail;
        }
    }
    if (progress && progress != Py_None && progress != Py_False) {
        if (progress == Py_True)
            c->progress_bar = 1;
        else if (PyUnicode_Check(progress) &&
                 PyUnicode_CompareWithASCIIString(progress, "per_worker") == 0)
            c->progress_bar = 2;
        else if (PyCallable_Check(progress))
            c->progress_cb = progress;
        else {
            PyErr_SetString(PyExc_TypeError,
                            "progress: expected None, True, 'per_worker' or a callable");
            goto fail;
        }
    }
    if (keep && (c->opts.keep_on_device = PyObject_IsTrue(keep)) < 0)
        goto fail;
    if (async && c->opts.keep_on_device) {
        PyErr_SetString(PyExc_ValueError, "map_async: keep_on_device is not supported");
        goto fail;
    }
    if (report && (c->want_report = PyObject_IsTrue(report)) < 0)
        goto fail;
    if (on_error && on_error != Py_None) {
        if (PyUnicode_Check(on_error) && PyUnicode_CompareWithASCIIString(on_error, "stop") == 0)
            c->opts.on_error = TDM_ON_ERROR_STOP;
        else if (PyUnicode_Check(on_error) &&
                 PyUnicode_CompareWithASCIIString(on_error, "continue") == 0)
            c->opts.on_error = TDM_ON_ERROR_CONTINUE;
        else {
            PyErr_SetString(PyExc_ValueError, "on_error: expected 'stop' or 'continue'");
            goto fail;
        }
    }
    if (timeout && timeout != Py_None) {
        c->opts.timeout_s = PyFloat_AsDouble(timeout);
        if (PyErr_Occurred())
            goto fail;
    }
    if (retries && retries != Py_None) {
        int64_t r = 0;
        if (opt_int64(retries, "retries", &r) < 0)
            goto fail;
        c->opts.retries = (int)r;
    }
    if (order && order != Py_None) {
        if (PyUnicode_Check(order) && PyUnicode_CompareWithASCIIString(order, "submission") == 0)
            c->opts.order = TDM_ORDER_SUBMISSION;
        else if (PyUnicode_Check(order) &&
                 PyUnicode_CompareWithASCIIString(order, "completion") == 0)
            c->opts.order = TDM_ORDER_COMPLETION;
        else {
            PyErr_SetString(PyExc_ValueError, "order: expected 'submission' or 'completion'");
            goto fail;
        }
    }
    if (window && window != Py_None) {
        int64_t w = 0;
        if (opt_int64(window, "window", &w) < 0)
            goto fail;
        c->opts.max_in_flight = (int)w;
    }
    if (desc && desc != Py_None && !(c->opts.desc = PyUnicode_AsUTF8(desc)))
        goto fail;

    /* params: a bytes-like block as is, or a dict packed by tandem._kernels.pack_params. */
    if (params && params != Py_None) {
        if (PyBytes_Check(params)) {
            c->params = params;
            Py_INCREF(params);
        } else if (PyObject_CheckBuffer(params)) {
            c->params = PyBytes_FromObject(params);
        } else {
            PyObject *pack = tdm_py_helper("pack_params");
            c->params = pack ? PyObject_CallFunctionObjArgs(pack, c->kernel_name, params, NULL)
                             : NULL;
        }
        if (!c->params)
            goto fail;
    }

    for (Py_ssize_t i = 1; i < nargs; i++) {
        if (tdm_py_arg_get(self, PyTuple_GET_ITEM(args, i), 0, "input", (int)(i - 1),
                           &c->in[c->n_in]) < 0)
            goto fail;
        c->ins[c->n_in] = c->in[c->n_in].t;
        c->n_in++;
    }

    if (out && out != Py_None) {
        c->out_given = 1;
        c->out_obj = out;
        PyObject *seq = (PyTuple_Check(out) || PyList_Check(out)) ? PySequence_Tuple(out)
                                                                   : PyTuple_Pack(1, out);
        if (!seq)
            goto fail;
        c->out_arrays = seq;
        if (PyTuple_GET_SIZE(seq) > MAX_ARGS) {
            PyErr_Format(PyExc_TypeError, "map: at most %d outputs", MAX_ARGS);
            goto fail;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(seq); i++) {
            if (tdm_py_arg_get(self, PyTuple_GET_ITEM(seq, i), 1, "output", (int)i,
                               &c->out[c->n_out]) < 0)
                goto fail;
            c->outs[c->n_out] = c->out[c->n_out].t;
            c->n_out++;
        }
        if (out != c->out_arrays && !PyTuple_Check(out) && !PyList_Check(out)) {
            /* a single array: returned as it was given */
        }
    } else {
        /* Outputs from the kernel's description: in C for the elementwise built-ins (an output
         * like input 0), else tandem._kernels.describe_outputs. */
        if (alloc && c->n_in >= 1 &&
            (strcmp(c->kernel, "exp_sinh") == 0 || strcmp(c->kernel, "scale_shift") == 0 ||
             strcmp(c->kernel, "axpy") == 0)) {
            tdm_tensor *in0 = c->ins[0], *t = NULL;
            unsigned mem = self->procs > 0 ? TDM_MEM_SHARED : TDM_MEM_HOST;
            int rc = tdm_tensor_empty(self->rt, tdm_tensor_dtype(in0), tdm_tensor_ndim(in0),
                                      tdm_tensor_shape(in0), mem, &t);
            if (rc < 0) {
                tdm_py_raise(rc, self->rt);
                goto fail;
            }
            PyObject *arr = c->opts.keep_on_device
                                ? tdm_py_tensor_new(self, tdm_tensor_retain(t), 0)
                                : tdm_py_ndarray_from_tensor(self, tdm_tensor_retain(t), 0);
            c->out[0].t = t;
            c->out[0].has_view = 0;
            c->outs[0] = t;
            c->n_out = 1;
            c->out_arrays = arr ? PyTuple_Pack(1, arr) : NULL;
            Py_XDECREF(arr);
            if (!c->out_arrays)
                goto fail;
            return 0;
        }
        PyObject *describe = tdm_py_helper("describe_outputs");
        if (!describe)
            goto fail;
        PyObject *specs = PyList_New(c->n_in);
        if (!specs)
            goto fail;
        for (int i = 0; i < c->n_in; i++) {
            tdm_tensor *t = c->ins[i];
            int nd = tdm_tensor_ndim(t);
            PyObject *shape = PyTuple_New(nd);
            for (int d = 0; shape && d < nd; d++)
                PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(tdm_tensor_dim(t, d)));
            PyObject *spec =
                shape ? Py_BuildValue("(sN)", tdm_dtype_name(tdm_tensor_dtype(t)), shape) : NULL;
            if (!spec) {
                Py_DECREF(specs);
                goto fail;
            }
            PyList_SET_ITEM(specs, i, spec);
        }
        PyObject *descs = PyObject_CallFunctionObjArgs(describe, c->kernel_name, specs,
                                                       params ? params : Py_None,
                                                       rows ? rows : Py_None, NULL);
        Py_DECREF(specs);
        if (!descs)
            goto fail;
        PyObject *seq = PySequence_Fast(descs, "describe_outputs must return a sequence");
        Py_DECREF(descs);
        if (!seq)
            goto fail;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        if (!alloc) { /* the cache creates them: only the count matters */
            Py_DECREF(seq);
            if (n > MAX_ARGS) {
                PyErr_Format(PyExc_TypeError, "map: at most %d outputs", MAX_ARGS);
                goto fail;
            }
            for (int i = 0; i < (int)n; i++) {
                c->out[i].t = NULL;
                c->out[i].has_view = 0;
            }
            c->n_out = (int)n;
            return 0;
        }
        c->out_arrays = PyTuple_New(n);
        if (!c->out_arrays || n > MAX_ARGS) {
            Py_DECREF(seq);
            goto fail;
        }
        unsigned mem = self->procs > 0 ? TDM_MEM_SHARED : TDM_MEM_HOST;
        for (Py_ssize_t i = 0; i < n; i++) {
            const char *dn;
            PyObject *shape_o;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "sO", &dn, &shape_o)) {
                Py_DECREF(seq);
                goto fail;
            }
            PyObject *dno = PyUnicode_FromString(dn);
            tdm_dtype dt;
            int64_t shape[TDM_MAX_DIMS];
            int nd = tdm_py_shape_parse(shape_o, shape);
            int bad = !dno || nd < 0 || tdm_py_dtype_parse(dno, &dt) < 0;
            Py_XDECREF(dno);
            if (bad) {
                Py_DECREF(seq);
                goto fail;
            }
            tdm_tensor *t = NULL;
            int rc = tdm_tensor_empty(self->rt, dt, nd, shape, mem, &t);
            if (rc < 0) {
                Py_DECREF(seq);
                tdm_py_raise(rc, self->rt);
                goto fail;
            }
            /* keep_on_device: tandem.Tensor handles (an ndarray would hold a host pointer the
             * device copy makes stale; a Tensor fetches the bytes when exported). */
            PyObject *arr = c->opts.keep_on_device
                                ? tdm_py_tensor_new(self, tdm_tensor_retain(t), 0)
                                : tdm_py_ndarray_from_tensor(self, tdm_tensor_retain(t), 0);
            if (!arr) {
                tdm_tensor_release(t);
                Py_DECREF(seq);
                goto fail;
            }
            PyTuple_SET_ITEM(c->out_arrays, i, arr);
            c->out[c->n_out].t = t;
            c->out[c->n_out].has_view = 0;
            c->outs[c->n_out] = t;
            c->n_out++;
        }
        Py_DECREF(seq);
    }
    return 0;
fail:
    call_release(c);
    return -1;
}

static int force_async; /* tandem._tandem._set_async(True): every map takes the async path */

static int64_t call_rows(const call *c)
{
    int64_t r = 0;
    for (int i = 0; i < c->n_in; i++)
        if (tdm_tensor_ndim(c->ins[i]) > 0 && tdm_tensor_dim(c->ins[i], 0) > r)
            r = tdm_tensor_dim(c->ins[i], 0);
    for (int i = 0; i < c->n_out; i++)
        if (tdm_tensor_ndim(c->outs[i]) > 0 && tdm_tensor_dim(c->outs[i], 0) > r)
            r = tdm_tensor_dim(c->outs[i], 0);
    return r;
}

static size_t call_bytes(const call *c)
{
    size_t b = 0;
    for (int i = 0; i < c->n_in; i++)
        b += tdm_tensor_nbytes(c->ins[i]);
    for (int i = 0; i < c->n_out; i++)
        b += tdm_tensor_nbytes(c->outs[i]);
    return b;
}

/* ---- waiting with the GIL released ------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    int fresh, final;
    tdm_progress p;
    int64_t per_worker[TDM_REPORT_MAX_WORKERS];
} beat;

static void beat_fn(const tdm_progress *p, void *user)
{
    beat *b = user;
    pthread_mutex_lock(&b->mu);
    b->p = *p;
    int nw = p->n_workers < TDM_REPORT_MAX_WORKERS ? p->n_workers : TDM_REPORT_MAX_WORKERS;
    if (p->per_worker && nw > 0)
        memcpy(b->per_worker, p->per_worker, sizeof(int64_t) * (size_t)nw);
    b->p.n_workers = nw;
    b->p.per_worker = b->per_worker;
    b->fresh = 1;
    if (p->final)
        b->final = 1;
    pthread_mutex_unlock(&b->mu);
}

static PyObject *progress_obj(const tdm_progress *p)
{
    PyObject *o = PyStructSequence_New(&ProgressType);
    PyObject *pw = PyTuple_New(p->n_workers);
    if (!o || !pw) {
        Py_XDECREF(o);
        Py_XDECREF(pw);
        return NULL;
    }
    for (int i = 0; i < p->n_workers; i++)
        PyTuple_SET_ITEM(pw, i, PyLong_FromLongLong(p->per_worker[i]));
    PyStructSequence_SET_ITEM(o, 0, PyLong_FromLongLong(p->done));
    PyStructSequence_SET_ITEM(o, 1, PyLong_FromLongLong(p->total));
    PyStructSequence_SET_ITEM(o, 2, PyFloat_FromDouble(p->elapsed_s));
    PyStructSequence_SET_ITEM(o, 3, PyFloat_FromDouble(p->rate));
    PyStructSequence_SET_ITEM(o, 4, PyFloat_FromDouble(p->eta_s));
    PyStructSequence_SET_ITEM(o, 5, pw);
    PyStructSequence_SET_ITEM(o, 6, PyBool_FromLong(p->final));
    if (PyErr_Occurred()) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

static void draw_bar(const tdm_progress *p, const char *desc)
{
    char line[512];
    int n = tdm_progress_format(p, desc, 0, line, sizeof line);
    if (n < 0)
        return;
    char out[600];
    int len = snprintf(out, sizeof out, "\r%s%s", line, p->final ? "\n" : "");
    if (len > 0) {
        ssize_t w = write(2, out, (size_t)(len < (int)sizeof out ? len : (int)sizeof out - 1));
        (void)w;
    }
}

/* Delivers one snapshot to Python (GIL held). Returns -1 when the callback raised. */
static int deliver(call *c, const tdm_progress *p)
{
    if (c->progress_bar) {
        draw_bar(p, c->opts.desc ? c->opts.desc : c->kernel);
        return 0;
    }
    if (!c->progress_cb)
        return 0;
    PyObject *o = progress_obj(p);
    PyObject *r = o ? PyObject_CallOneArg(c->progress_cb, o) : NULL;
    Py_XDECREF(o);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Runs the call to the end. Returns the status (0 or TDM_E*), or 1 when a Python exception
 * (Ctrl-C, the progress callback) cancelled it; GIL held on entry and exit. */
static int call_run(RuntimeObject *self, call *c, tdm_report *report)
{
    const void *pp = c->params ? PyBytes_AS_STRING(c->params) : NULL;
    size_t ps = c->params ? (size_t)PyBytes_GET_SIZE(c->params) : 0;
    int rc;
    if (!c->progress_cb && !c->progress_bar && !force_async && call_bytes(c) < ASYNC_BYTES &&
        call_rows(c) < ASYNC_ROWS) {
        Py_BEGIN_ALLOW_THREADS
        rc = tdm_map(self->rt, c->kernel, c->ins, c->n_in, c->outs, c->n_out, pp, ps, &c->opts,
                     report);
        Py_END_ALLOW_THREADS
        return rc;
    }
    beat b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    tdm_map_opts o = c->opts;
    if (c->progress_cb || c->progress_bar) {
        o.progress = TDM_PROGRESS_CALLBACK;
        o.progress_fn = beat_fn;
        o.progress_user = &b;
    }
    /* The calling thread consumes the batches as they finish (a job holds at most
     * max_in_flight unconsumed ones) and, every 20 ms at most, takes the GIL to run signal
     * handlers and deliver the latest progress snapshot. */
    o.order = TDM_ORDER_COMPLETION;
    /* Workers must not wait for this thread (descheduled on a busy machine, or running a
     * progress callback) to free in-flight slots: a deep window, slots are only counters. */
    o.max_in_flight = 1024;
    double user_iv = c->opts.progress_interval_s > 0 ? c->opts.progress_interval_s : 0.1;
    tdm_job *job = NULL;
    int interrupted = 0;
    double next_deliver = 0;
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    PyThreadState *ts = PyEval_SaveThread();
    rc = tdm_map_async(self->rt, c->kernel, c->ins, c->n_in, c->outs, c->n_out, pp, ps, &o,
                       &job);
    if (rc == 0) {
        tdm_batch_result br;
        while (tdm_job_next(job, &br) == 0) {
            if (interrupted)
                continue; /* drain what still runs */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((double)(now.tv_sec - last.tv_sec) + (double)(now.tv_nsec - last.tv_nsec) * 1e-9 <
                0.02)
                continue;
            last = now;
            pthread_mutex_lock(&b.mu);
            tdm_progress snap = b.p;
            int64_t pw[TDM_REPORT_MAX_WORKERS];
            if (snap.n_workers > 0)
                memcpy(pw, b.per_worker, sizeof(int64_t) * (size_t)snap.n_workers);
            snap.per_worker = pw;
            int fresh = b.fresh && !b.final && snap.elapsed_s >= next_deliver;
            if (fresh)
                b.fresh = 0;
            pthread_mutex_unlock(&b.mu);
            PyEval_RestoreThread(ts);
            if (PyErr_CheckSignals() < 0 || (fresh && deliver(c, &snap) < 0)) {
                interrupted = 1;
                tdm_job_cancel(job);
            }
            if (fresh)
                next_deliver = snap.elapsed_s + user_iv * 0.999;
            ts = PyEval_SaveThread();
        }
        rc = tdm_job_wait(job, report);
        tdm_job_free(job);
    }
    PyEval_RestoreThread(ts);
    if (!interrupted && b.final && (c->progress_cb || c->progress_bar)) {
        b.p.per_worker = b.per_worker;
        if (deliver(c, &b.p) < 0)
            interrupted = 1;
    }
    pthread_mutex_destroy(&b.mu);
    return interrupted ? 1 : rc;
}

static PyObject *outputs_result(call *c, PyObject *given_out)
{
    if (c->out_given && !PyTuple_Check(given_out) && !PyList_Check(given_out)) {
        Py_INCREF(given_out);
        return given_out;
    }
    if (c->out_given) {
        Py_INCREF(given_out);
        return given_out;
    }
    if (PyTuple_GET_SIZE(c->out_arrays) == 1) {
        PyObject *a = PyTuple_GET_ITEM(c->out_arrays, 0);
        Py_INCREF(a);
        return a;
    }
    Py_INCREF(c->out_arrays);
    return c->out_arrays;
}

PyObject *tdm_py_rt_map(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    PyObject *result = NULL;
    call c;
    if (call_parse(self, args, kw, 0, 1, &c) < 0)
        goto out;
    tdm_report rep; /* 14 KiB: zeroed only when asked for */
    if (c.want_report) {
        memset(&rep, 0, sizeof rep);
        rep.size = sizeof rep;
    }
    int rc = call_run(self, &c, c.want_report ? &rep : NULL);
    if (rc == 1)
        goto done; /* the Python exception stands (KeyboardInterrupt...) */
    if (rc < 0) {
        tdm_py_raise(rc, self->rt);
        goto done;
    }
    if (c.out_given && c.opts.keep_on_device) {
        /* Arrays given as out hold host pointers: bring newer device bytes back. */
        for (int i = 0; i < c.n_out; i++)
            if (c.out[i].has_view && tdm_tensor_on_device(c.outs[i])) {
                int r2;
                Py_BEGIN_ALLOW_THREADS
                r2 = tdm_tensor_to_host(c.outs[i]);
                Py_END_ALLOW_THREADS
                if (r2 < 0) {
                    tdm_py_raise(r2, self->rt);
                    goto done;
                }
            }
    }
    PyObject *outs = outputs_result(&c, c.out_obj);
    if (outs && c.want_report) {
        PyObject *r = tdm_py_report_dict(&rep);
        result = r ? PyTuple_Pack(2, outs, r) : NULL;
        Py_XDECREF(r);
        Py_DECREF(outs);
    } else
        result = outs;
done:
    call_release(&c);
out:
    tdm_py_rt_leave(self);
    return result;
}

/* ---- map_async: tandem.MapJob ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    RuntimeObject *rt;
    call c;
    tdm_job *job;
    int done, waited, status;
    atomic_int busy; /* a thread is in tdm_job_next / tdm_job_wait (one at a time) */
    tdm_report report;
} MapJobObject;

PyObject *tdm_py_rt_map_async(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    if (tdm_py_rt_enter(self) < 0)
        return NULL;
    MapJobObject *j = PyObject_New(MapJobObject, &MapJobType);
    if (!j) {
        tdm_py_rt_leave(self);
        return NULL;
    }
    j->rt = self;
    Py_INCREF(self);
    j->job = NULL;
    j->done = j->waited = j->status = 0;
    atomic_init(&j->busy, 0);
    memset(&j->report, 0, sizeof j->report);
    j->report.size = sizeof j->report;
    if (call_parse(self, args, kw, 1, 1, &j->c) < 0) {
        memset(&j->c, 0, sizeof j->c);
        Py_DECREF(j);
        return NULL; /* dealloc leaves the runtime */
    }
    const void *pp = j->c.params ? PyBytes_AS_STRING(j->c.params) : NULL;
    size_t ps = j->c.params ? (size_t)PyBytes_GET_SIZE(j->c.params) : 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_map_async(self->rt, j->c.kernel, j->c.ins, j->c.n_in, j->c.outs, j->c.n_out, pp, ps,
                       &j->c.opts, &j->job);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        tdm_py_raise(rc, self->rt);
        Py_DECREF(j);
        return NULL;
    }
    return (PyObject *)j;
}

static void mapjob_dealloc(MapJobObject *self)
{
    if (self->job) {
        tdm_job *job = self->job;
        self->job = NULL;
        Py_BEGIN_ALLOW_THREADS
        tdm_job_cancel(job);
        tdm_job_free(job);
        Py_END_ALLOW_THREADS
    }
    call_release(&self->c);
    if (self->rt) {
        tdm_py_rt_leave(self->rt);
        Py_CLEAR(self->rt);
    }
    PyObject_Free(self);
}

static PyObject *mapjob_next(MapJobObject *self)
{
    if (!self->job || self->done)
        return NULL;
    tdm_batch_result r;
    int rc, idle = 0;
    tdm_job *job = self->job;
    if (!atomic_compare_exchange_strong(&self->busy, &idle, 1)) {
        PyErr_SetString(PyExc_RuntimeError, "MapJob: another thread is iterating this job");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_job_next(job, &r);
    Py_END_ALLOW_THREADS
    atomic_store(&self->busy, 0);
    if (rc == TDM_EDONE) {
        self->done = 1;
        return NULL;
    }
    if (rc < 0)
        return tdm_py_raise(rc, self->rt->rt);
    PyObject *views = PyTuple_New(PyTuple_GET_SIZE(self->c.out_arrays));
    if (!views)
        return NULL;
    PyObject *lo = PyLong_FromLongLong(r.begin), *hi = PyLong_FromLongLong(r.end);
    PyObject *slice = lo && hi ? PySlice_New(lo, hi, NULL) : NULL;
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    for (Py_ssize_t i = 0; slice && i < PyTuple_GET_SIZE(self->c.out_arrays); i++) {
        PyObject *v = PyObject_GetItem(PyTuple_GET_ITEM(self->c.out_arrays, i), slice);
        if (!v) {
            Py_CLEAR(views);
            break;
        }
        PyTuple_SET_ITEM(views, i, v);
    }
    Py_XDECREF(slice);
    if (!views)
        return NULL;
    PyObject *b = PyStructSequence_New(&BatchType);
    if (!b) {
        Py_DECREF(views);
        return NULL;
    }
    PyStructSequence_SET_ITEM(b, 0, PyLong_FromLongLong(r.batch));
    PyStructSequence_SET_ITEM(b, 1, PyLong_FromLongLong(r.begin));
    PyStructSequence_SET_ITEM(b, 2, PyLong_FromLongLong(r.end));
    PyStructSequence_SET_ITEM(b, 3, PyLong_FromLong(r.worker));
    PyStructSequence_SET_ITEM(b, 4, PyLong_FromLong(r.status));
    PyStructSequence_SET_ITEM(b, 5, views);
    return b;
}

/* Waits once; returns the job's status, or 1 with RuntimeError when another thread is in
 * the job. */
static int mapjob_wait(MapJobObject *self)
{
    if (!self->waited && self->job) {
        int idle = 0;
        if (!atomic_compare_exchange_strong(&self->busy, &idle, 1)) {
            PyErr_SetString(PyExc_RuntimeError, "MapJob: another thread is iterating this job");
            return 1;
        }
        tdm_job *job = self->job;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = tdm_job_wait(job, &self->report);
        Py_END_ALLOW_THREADS
        self->status = rc;
        self->waited = 1;
        atomic_store(&self->busy, 0);
    }
    return self->status;
}

static PyObject *mapjob_result(MapJobObject *self, PyObject *unused)
{
    int rc = mapjob_wait(self);
    if (rc == 1)
        return NULL;
    if (rc < 0)
        return tdm_py_raise_msg(rc, "map_async(%s): %s", self->c.kernel,
                                self->report.first_error ? tdm_strerror(self->report.first_error)
                                                         : tdm_strerror(rc));
    if (PyTuple_GET_SIZE(self->c.out_arrays) == 1) {
        PyObject *a = PyTuple_GET_ITEM(self->c.out_arrays, 0);
        Py_INCREF(a);
        return a;
    }
    Py_INCREF(self->c.out_arrays);
    return self->c.out_arrays;
}

static PyObject *mapjob_cancel(MapJobObject *self, PyObject *unused)
{
    if (self->job)
        tdm_job_cancel(self->job);
    Py_RETURN_NONE;
}

static PyObject *mapjob_get_report(MapJobObject *self, PyObject *unused)
{
    if (mapjob_wait(self) == 1)
        return NULL;
    return tdm_py_report_dict(&self->report);
}

static PyObject *mapjob_enter(MapJobObject *self, PyObject *unused)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *mapjob_exit(MapJobObject *self, PyObject *args)
{
    if (self->job && !self->waited)
        tdm_job_cancel(self->job);
    if (mapjob_wait(self) == 1)
        return NULL;
    Py_RETURN_FALSE;
}

static PyMethodDef mapjob_methods[] = {
    {"result", (PyCFunction)mapjob_result, METH_NOARGS,
     "result() -> outputs\n\nWaits for the job (unconsumed batches are dropped) and returns "
     "the outputs; raises the job's error (CancelledError after cancel())."},
    {"cancel", (PyCFunction)mapjob_cancel, METH_NOARGS,
     "cancel()\n\nNo new batch starts; running ones finish."},
    {"report", (PyCFunction)mapjob_get_report, METH_NOARGS,
     "report() -> dict\n\nWaits for the job and returns its run report."},
    {"__enter__", (PyCFunction)mapjob_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)mapjob_exit, METH_VARARGS, NULL},
    {NULL}};

static PyTypeObject MapJobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem.MapJob",
    .tp_basicsize = sizeof(MapJobObject),
    .tp_dealloc = (destructor)mapjob_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running map (rt.map_async): iterate for its finished batches (tandem.Batch).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)mapjob_next,
    .tp_methods = mapjob_methods,
};

/* ---- Cache.map ------------------------------------------------------------------------------ */

PyObject *tdm_py_cache_map(CacheObject *self, PyObject *args, PyObject *kw)
{
    if (!self->c)
        return tdm_py_raise_msg(TDM_EINVAL, "the cache is closed");
    RuntimeObject *rt = self->rt;
    if (tdm_py_rt_enter(rt) < 0)
        return NULL;
    PyObject *result = NULL;
    call c;
    if (call_parse(rt, args, kw, 0, 0, &c) < 0)
        goto out;
    if (c.progress_cb || c.progress_bar) {
        PyErr_SetString(PyExc_TypeError, "Cache.map: progress is not supported");
        goto done;
    }
    const void *pp = c.params ? PyBytes_AS_STRING(c.params) : NULL;
    size_t ps = c.params ? (size_t)PyBytes_GET_SIZE(c.params) : 0;
    tdm_report rep;
    if (c.want_report) {
        memset(&rep, 0, sizeof rep);
        rep.size = sizeof rep;
    }
    int rc, hit = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_cache_map(self->c, c.kernel, c.ins, c.n_in, c.outs, c.n_out, pp, ps, &c.opts,
                       c.want_report ? &rep : NULL, &hit);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        tdm_py_raise(rc, rt->rt);
        goto done;
    }
    self->last_hit = hit;
    PyObject *outs;
    if (c.out_given) {
        outs = outputs_result(&c, c.out_obj);
    } else {
        outs = PyTuple_New(c.n_out);
        for (int i = 0; i < c.n_out; i++) {
            tdm_tensor *t = c.outs[i];
            c.outs[i] = NULL;
            PyObject *a = outs ? tdm_py_ndarray_from_tensor(rt, t, hit && self->readonly) : NULL;
            if (!a) {
                for (int k = i + 1; k < c.n_out; k++)
                    tdm_tensor_release(c.outs[k]);
                Py_CLEAR(outs);
                break;
            }
            PyTuple_SET_ITEM(outs, i, a);
        }
        if (outs && c.n_out == 1) {
            PyObject *a = Py_NewRef(PyTuple_GET_ITEM(outs, 0));
            Py_DECREF(outs);
            outs = a;
        }
    }
    if (outs && c.want_report) {
        PyObject *r = hit ? Py_NewRef(Py_None) : tdm_py_report_dict(&rep);
        result = r ? PyTuple_Pack(2, outs, r) : NULL;
        Py_XDECREF(r);
        Py_DECREF(outs);
    } else
        result = outs;
done:
    call_release(&c);
out:
    tdm_py_rt_leave(rt);
    return result;
}

/* ---- a C baseline for bench/python: n calls of tdm_map on the same tensors ----------------- */

static PyObject *bench_c_map(PyObject *mod, PyObject *args)
{
    RuntimeObject *rt;
    const char *kernel;
    PyObject *x, *y;
    long n;
    const char *policy_s = "auto";
    if (!PyArg_ParseTuple(args, "O!sOOl|s", &RuntimeType, &rt, &kernel, &x, &y, &n, &policy_s))
        return NULL;
    PyObject *pol = PyUnicode_FromString(policy_s);
    tdm_map_opts o;
    tdm_map_opts_init(&o);
    o.progress = TDM_PROGRESS_OFF;
    int bad = !pol || tdm_py_policy_parse(pol, &o.policy) < 0;
    Py_XDECREF(pol);
    if (bad || tdm_py_rt_enter(rt) < 0)
        return NULL;
    tdm_py_arg a, b;
    PyObject *res = NULL;
    if (tdm_py_arg_get(rt, x, 0, "x", -1, &a) < 0)
        goto out;
    if (tdm_py_arg_get(rt, y, 1, "y", -1, &b) < 0) {
        tdm_py_arg_release(&a);
        goto out;
    }
    struct timespec t0, t1;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n && rc == 0; i++)
        rc = tdm_map(rt->rt, kernel, &a.t, 1, &b.t, 1, NULL, 0, &o, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    Py_END_ALLOW_THREADS
    tdm_py_arg_release(&a);
    tdm_py_arg_release(&b);
    res = rc < 0 ? tdm_py_raise(rc, rt->rt)
                 : PyFloat_FromDouble((double)(t1.tv_sec - t0.tv_sec) +
                                      (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
out:
    tdm_py_rt_leave(rt);
    return res;
}

static PyObject *set_async(PyObject *mod, PyObject *arg)
{
    int v = PyObject_IsTrue(arg);
    if (v < 0)
        return NULL;
    force_async = v;
    Py_RETURN_NONE;
}

static PyMethodDef map_functions[] = {
    {"_set_async", set_async, METH_O,
     "_set_async(flag): every map takes the interruptible path (tests, benchmarks)."},
    {"_bench_c_map", bench_c_map, METH_VARARGS,
     "_bench_c_map(rt, kernel, x, y, n, policy='auto') -> seconds for n tdm_map calls made "
     "from C on the same tensors (the baseline of bench/python/bench_map.py)."},
    {NULL}};

int tdm_py_map_init(PyObject *m)
{
    if (!ProgressType.tp_name && PyStructSequence_InitType2(&ProgressType, &progress_desc) < 0)
        return -1;
    if (!BatchType.tp_name && PyStructSequence_InitType2(&BatchType, &batch_desc) < 0)
        return -1;
    if (PyType_Ready(&MapJobType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Progress", (PyObject *)&ProgressType) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddObjectRef(m, "MapJob", (PyObject *)&MapJobType) < 0)
        return -1;
    return PyModule_AddFunctions(m, map_functions);
}
