/* SPDX-License-Identifier: MIT */
/* rt.map_async: tandem.MapJob, an iterator over a streaming map's finished batches with a
 * bounded window, waited on with the GIL released. */
#include <stdatomic.h>
#include <string.h>

#include "map_internal.h"

/* ---- map_async: tandem.MapJob ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD RuntimeObject *rt;
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
    MapJobObject *j = PyObject_New(MapJobObject, &tdm_py_MapJobType);
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
    if (tdm_py_call_parse(self, args, kw, 1, 1, &j->c) < 0) {
        memset(&j->c, 0, sizeof j->c);
        Py_DECREF(j);
        return NULL; /* dealloc leaves the runtime */
    }
    const void *pp = j->c.params ? PyBytes_AS_STRING(j->c.params) : NULL;
    size_t ps = j->c.params ? (size_t)PyBytes_GET_SIZE(j->c.params) : 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = tdm_map_async(self->rt, j->c.kernel, j->c.ins, j->c.n_in, j->c.outs,
                                              j->c.n_out, pp, ps, &j->c.opts, &j->job);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
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
        Py_BEGIN_ALLOW_THREADS tdm_job_cancel(job);
        tdm_job_free(job);
        Py_END_ALLOW_THREADS
    }
    tdm_py_call_release(&self->c);
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
    Py_BEGIN_ALLOW_THREADS rc = tdm_job_next(job, &r);
    Py_END_ALLOW_THREADS atomic_store(&self->busy, 0);
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
    PyObject *b = PyStructSequence_New(&tdm_py_BatchType);
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
        Py_BEGIN_ALLOW_THREADS rc = tdm_job_wait(job, &self->report);
        Py_END_ALLOW_THREADS self->status = rc;
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

PyTypeObject tdm_py_MapJobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem.MapJob",
    .tp_basicsize = sizeof(MapJobObject),
    .tp_dealloc = (destructor)mapjob_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running map (rt.map_async): iterate for its finished batches (tandem.Batch).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)mapjob_next,
    .tp_methods = mapjob_methods,
};
