/* SPDX-License-Identifier: MIT */
/* tandem._tandem: Python callables on tandem's workers (rt.parallel, tandem.parallel).
 *
 * The C side is small: a parallel_for body that takes the GIL and hands its batch to
 * tandem.parallel._run_batch, a streaming job object over tdm_parallel_for_async, and the
 * worker-start hook (tdm_config.worker_start) that makes a forked worker process a working
 * interpreter again. Everything about pickling, shared buffers and results is Python
 * (tandem/parallel.py). */
#include <string.h>

#include "module.h"

/* ---- worker processes -------------------------------------------------------------------- */

/* Set in a worker process by the hook: the interpreter was re-initialised there. */
static int worker_ready;

/* tdm_config.worker_start for runtimes opened from Python. The runtime is opened with the GIL
 * held and the import lock taken (PyOS_BeforeFork), so the forking thread's state is current
 * in the copy: PyOS_AfterFork_Child re-creates the GIL for this, the worker's only thread, and
 * runs the os.register_at_fork child hooks. The GIL is then released; batches take it. */
void tdm_py_worker_start(void *arg, int worker)
{
    (void)arg;
    (void)worker;
    PyOS_AfterFork_Child();
    worker_ready = 1;
    (void)PyEval_SaveThread();
}

typedef struct {
    uint64_t ctrl; /* the call's description in shared memory (tandem/parallel.py) */
    uint64_t ctrl_len;
    int64_t call_id;
} pf_params;

/* The batch's items are counted when it returns (shared counters: the bar moves per batch). */
static int pf_body(const void *pv, int64_t begin, int64_t end, tdm_task *task)
{
    const pf_params *p = pv;
    int st = TDM_EKERNEL;
    PyGILState_STATE g = PyGILState_Ensure();
    /* Looked up once per process (a worker inherits the parent's if it was set before open;
     * the function lives as long as its module). Read and written with the GIL. */
    static PyObject *run_batch;
    if (!run_batch) {
        PyObject *mod = PyImport_ImportModule("tandem.parallel");
        run_batch = mod ? PyObject_GetAttrString(mod, "_run_batch") : NULL;
        Py_XDECREF(mod);
    }
    PyObject *r = NULL;
    if (run_batch)
        r = PyObject_CallFunction(run_batch, "KKLLLiii", (unsigned long long)p->ctrl,
                                  (unsigned long long)p->ctrl_len, (long long)p->call_id,
                                  (long long)begin, (long long)end, tdm_task_slot(task),
                                  tdm_task_worker(task), worker_ready);
    if (r) {
        long v = PyLong_AsLong(r);
        st = v == 0 ? 0 : TDM_EKERNEL; /* fn raised: its exception is in the batch's slot */
        Py_DECREF(r);
    }
    PyErr_Clear(); /* _run_batch records fn's errors itself; this is the last resort */
    PyGILState_Release(g);
    return st;
}

/* ---- the job ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    RuntimeObject *rt;
    tdm_job *job;
    int done, waited, status;
    tdm_report report;
} PfJobObject;

static PyTypeObject PfJobType;

static void pfjob_stop(PfJobObject *self)
{
    if (self->job) {
        tdm_job *job = self->job;
        self->job = NULL;
        Py_BEGIN_ALLOW_THREADS
        tdm_job_cancel(job);
        tdm_job_free(job);
        Py_END_ALLOW_THREADS
    }
}

static void pfjob_dealloc(PfJobObject *self)
{
    pfjob_stop(self);
    if (self->rt) {
        tdm_py_rt_leave(self->rt);
        Py_CLEAR(self->rt);
    }
    PyObject_Free(self);
}

/* next() -> (batch, begin, end, status, worker, slot), or None after the last batch. */
static PyObject *pfjob_next(PfJobObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->job || self->done)
        Py_RETURN_NONE;
    tdm_batch_result r;
    int rc;
    tdm_job *job = self->job;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_job_next(job, &r);
    Py_END_ALLOW_THREADS
    if (rc == TDM_EDONE) {
        self->done = 1;
        Py_RETURN_NONE;
    }
    if (rc < 0)
        return tdm_py_raise(rc, self->rt->rt);
    return Py_BuildValue("(LLLiii)", (long long)r.batch, (long long)r.begin, (long long)r.end,
                         r.status, r.worker, r.slot);
}

/* wait() -> (status, message, report dict): waits for the job (results not consumed are
 * dropped) once; later calls return the same. */
static PyObject *pfjob_wait(PfJobObject *self, PyObject *unused)
{
    (void)unused;
    const char *msg = "";
    if (!self->waited && self->job) {
        tdm_job *job = self->job;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = tdm_job_wait(job, &self->report);
        Py_END_ALLOW_THREADS
        self->status = rc;
        self->waited = 1;
        msg = rc < 0 ? tdm_errmsg(self->rt->rt) : "";
    }
    PyObject *rep = tdm_py_report_dict(&self->report);
    if (!rep)
        return NULL;
    return Py_BuildValue("(isN)", self->status, msg, rep);
}

static PyObject *pfjob_cancel(PfJobObject *self, PyObject *unused)
{
    (void)unused;
    if (self->job)
        tdm_job_cancel(self->job);
    Py_RETURN_NONE;
}

/* close(): cancels and frees the job (waiting for running batches). */
static PyObject *pfjob_close(PfJobObject *self, PyObject *unused)
{
    (void)unused;
    pfjob_stop(self);
    Py_RETURN_NONE;
}

static PyMethodDef pfjob_methods[] = {
    {"next", (PyCFunction)pfjob_next, METH_NOARGS,
     "next() -> (batch, begin, end, status, worker, slot) | None, the GIL released while "
     "waiting."},
    {"wait", (PyCFunction)pfjob_wait, METH_NOARGS,
     "wait() -> (status, message, report): waits for the job (once)."},
    {"cancel", (PyCFunction)pfjob_cancel, METH_NOARGS, "Stops new batches from starting."},
    {"close", (PyCFunction)pfjob_close, METH_NOARGS, "Cancels, waits and frees the job."},
    {NULL}};

static PyTypeObject PfJobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem._tandem.ParallelJob",
    .tp_basicsize = sizeof(PfJobObject),
    .tp_dealloc = (destructor)pfjob_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running parallel call (internal: see tandem.parallel).",
    .tp_methods = pfjob_methods,
};

/* _pf_start(rt, n_items, ctrl, ctrl_len, call_id, threads, batch_size, max_in_flight,
 *           unordered, timeout, retries, progress) -> ParallelJob */
static PyObject *pf_start(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *rto;
    long long n, call_id, batch;
    unsigned long long ctrl, ctrl_len;
    int threads, inflight, unordered, retries, progress;
    double timeout;
    if (!PyArg_ParseTuple(args, "O!LKKLpLiidii", &RuntimeType, &rto, &n, &ctrl, &ctrl_len,
                          &call_id, &threads, &batch, &inflight, &unordered, &timeout, &retries,
                          &progress))
        return NULL;
    RuntimeObject *rt = (RuntimeObject *)rto;
    if (tdm_py_rt_enter(rt) < 0)
        return NULL;
    PfJobObject *j = PyObject_New(PfJobObject, &PfJobType);
    if (!j) {
        tdm_py_rt_leave(rt);
        return NULL;
    }
    j->rt = rt;
    Py_INCREF(rt);
    j->job = NULL;
    j->done = j->waited = j->status = 0;
    memset(&j->report, 0, sizeof j->report);
    j->report.size = sizeof j->report;
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = threads ? TDM_POLICY_THREADS : TDM_POLICY_PROCS;
    o.batch_size = batch;
    o.max_in_flight = inflight;
    o.order = unordered ? TDM_ORDER_COMPLETION : TDM_ORDER_SUBMISSION;
    o.timeout_s = timeout;
    o.retries = retries;
    o.progress = (tdm_progress_mode)progress;
    o.desc = "parallel";
    pf_params p = {ctrl, ctrl_len, call_id};
    int rc;
    tdm_runtime *crt = rt->rt;
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_parallel_for_async(crt, n, pf_body, &p, sizeof p, &o, &j->job);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        tdm_py_raise(rc, crt);
        Py_DECREF(j);
        return NULL;
    }
    return (PyObject *)j;
}

/* Runtime.parallel: tandem.parallel.parallel(self, ...) (the logic is Python). */
PyObject *tdm_py_rt_parallel(RuntimeObject *self, PyObject *args, PyObject *kw)
{
    PyObject *mod = PyImport_ImportModule("tandem.parallel");
    if (!mod)
        return NULL;
    PyObject *f = PyObject_GetAttrString(mod, "parallel");
    Py_DECREF(mod);
    if (!f)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *a = PyTuple_New(n + 1);
    if (!a) {
        Py_DECREF(f);
        return NULL;
    }
    PyTuple_SET_ITEM(a, 0, Py_NewRef((PyObject *)self));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(a, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    PyObject *r = PyObject_Call(f, a, kw);
    Py_DECREF(a);
    Py_DECREF(f);
    return r;
}

PyObject *tdm_py_rt_get_procs(RuntimeObject *self, void *closure)
{
    (void)closure;
    /* The procs backend is one device whose compute units are its worker processes. */
    long n = 0;
    for (int i = 0; self->rt && i < tdm_runtime_device_count(self->rt); i++) {
        tdm_device_info di;
        if (tdm_runtime_device(self->rt, i, &di) == 0 && di.kind == TDM_BACKEND_CPU_PROCS)
            n += di.compute_units;
    }
    return PyLong_FromLong(n);
}

/* _mem(addr, nbytes, writable) -> memoryview over memory this process can address (a shared
 * buffer of tandem's arena); no copy. */
static PyObject *pf_mem(PyObject *mod, PyObject *args)
{
    (void)mod;
    unsigned long long addr, len;
    int writable;
    if (!PyArg_ParseTuple(args, "KKp", &addr, &len, &writable))
        return NULL;
    if (!addr && len) {
        PyErr_SetString(PyExc_ValueError, "_mem: NULL address");
        return NULL;
    }
    return PyMemoryView_FromMemory((char *)(uintptr_t)addr, (Py_ssize_t)len,
                                   writable ? PyBUF_WRITE : PyBUF_READ);
}

static PyObject *pf_in_worker(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyBool_FromLong(worker_ready);
}

static PyMethodDef pf_functions[] = {
    {"_pf_start", pf_start, METH_VARARGS, "Starts a parallel call (internal)."},
    {"_mem", pf_mem, METH_VARARGS, "memoryview over an address range (internal)."},
    {"_in_worker", pf_in_worker, METH_NOARGS,
     "True in a worker process whose interpreter the worker-start hook re-initialised."},
    {NULL}};

int tdm_py_parallel_init(PyObject *m)
{
    if (PyType_Ready(&PfJobType) < 0)
        return -1;
    return PyModule_AddFunctions(m, pf_functions);
}
