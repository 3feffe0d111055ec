/* SPDX-License-Identifier: MIT */
/* rt.map and rt.map_async: arguments to tensors (no copy), options, the wait with the GIL
 * released, Ctrl-C and progress from the calling thread, reports as dicts, streaming jobs.
 *
 * A small map (under 8 MiB moved and 65536 rows) runs through tdm_map() with the GIL
 * released: the lowest overhead, but Ctrl-C waits for its end. A larger one, or one with
 * progress,
 * runs as tdm_map_async(): the calling thread sleeps in tdm_job_wait_for() (GIL released)
 * and, every 20 ms, takes the GIL to run signal handlers (Ctrl-C ->
 * tdm_job_cancel: no new batch starts, running ones finish) and the user's progress callback
 * with the latest snapshot, which the runtime's progress thread only copies into a struct:
 * Python never runs on a runtime thread. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "map_internal.h"

#define ASYNC_BYTES (8u << 20)
#define ASYNC_ROWS 65536

static PyTypeObject ProgressType;
PyTypeObject tdm_py_BatchType;

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
    "tandem.Progress", "A progress snapshot handed to a map's progress callback.", progress_fields,
    7};

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
    } names[] = {{"auto", TDM_POLICY_AUTO},       {"cpu", TDM_POLICY_CPU},
                 {"threads", TDM_POLICY_THREADS}, {"procs", TDM_POLICY_PROCS},
                 {"gpu", TDM_POLICY_GPU},         {"opencl", TDM_POLICY_OPENCL},
                 {"cuda", TDM_POLICY_CUDA},       {"round_robin", TDM_POLICY_ROUND_ROBIN}};
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
                                    (long long)w->items, "batches", (long long)w->batches, "busy_s",
                                    w->busy_s, "est_s", w->est_s, "bytes", (long long)w->bytes);
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
        (long long)r->bytes_from_device, "batch_size", (long long)r->batch_size, "batch_size_min",
        (long long)r->batch_size_min, "first_error", r->first_error, "first_error_batch",
        (long long)r->first_error_batch, "workers", workers);
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
    if (!c->progress_cb && !c->progress_bar && !tdm_py_force_async &&
        tdm_py_call_bytes(c) < ASYNC_BYTES && tdm_py_call_rows(c) < ASYNC_ROWS) {
        Py_BEGIN_ALLOW_THREADS rc = tdm_map(self->rt, c->kernel, c->ins, c->n_in, c->outs, c->n_out,
                                            pp, ps, &c->opts, report);
        Py_END_ALLOW_THREADS return rc;
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
    /* The calling thread sleeps in tdm_job_wait_for() and, every 20 ms, takes the GIL to run
     * signal handlers and deliver the latest progress snapshot. (It used to consume every
     * batch with tdm_job_next(): a wake-up per batch, which on a 2-core machine took ~10% from
     * the workers of a 50M-element exp_sinh map.) */
    double user_iv = c->opts.progress_interval_s > 0 ? c->opts.progress_interval_s : 0.1;
    tdm_job *job = NULL;
    int interrupted = 0;
    double next_deliver = 0;
    PyThreadState *ts = PyEval_SaveThread();
    rc = tdm_map_async(self->rt, c->kernel, c->ins, c->n_in, c->outs, c->n_out, pp, ps, &o, &job);
    if (rc == 0) {
        while (tdm_job_wait_for(job, 0.02) == 0) {
            if (interrupted)
                continue; /* drain what still runs */
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
    if (tdm_py_call_parse(self, args, kw, 0, 1, &c) < 0)
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
                Py_BEGIN_ALLOW_THREADS r2 = tdm_tensor_to_host(c.outs[i]);
                Py_END_ALLOW_THREADS if (r2 < 0)
                {
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
    tdm_py_call_release(&c);
out:
    tdm_py_rt_leave(self);
    return result;
}

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
    if (tdm_py_call_parse(rt, args, kw, 0, 0, &c) < 0)
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
    Py_BEGIN_ALLOW_THREADS rc = tdm_cache_map(self->c, c.kernel, c.ins, c.n_in, c.outs, c.n_out, pp,
                                              ps, &c.opts, c.want_report ? &rep : NULL, &hit);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
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
    tdm_py_call_release(&c);
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
    Py_BEGIN_ALLOW_THREADS clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n && rc == 0; i++)
        rc = tdm_map(rt->rt, kernel, &a.t, 1, &b.t, 1, NULL, 0, &o, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    Py_END_ALLOW_THREADS tdm_py_arg_release(&a);
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
    tdm_py_force_async = v;
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
    if (!tdm_py_BatchType.tp_name && PyStructSequence_InitType2(&tdm_py_BatchType, &batch_desc) < 0)
        return -1;
    if (PyType_Ready(&tdm_py_MapJobType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Progress", (PyObject *)&ProgressType) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&tdm_py_BatchType) < 0 ||
        PyModule_AddObjectRef(m, "MapJob", (PyObject *)&tdm_py_MapJobType) < 0)
        return -1;
    return PyModule_AddFunctions(m, map_functions);
}
