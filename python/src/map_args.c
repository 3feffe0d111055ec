/* SPDX-License-Identifier: MIT */
/* The arguments of rt.map, rt.map_async and Cache.map: the kernel, inputs and outputs as
 * tensors over the caller's buffers (no copy), outputs allocated from the kernel's
 * description, parameters, options. */
#include <string.h>

#include "map_internal.h"

void tdm_py_call_release(call *c)
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
int tdm_py_call_parse(RuntimeObject *self, PyObject *args, PyObject *kw, int async, int alloc,
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
             *interval = NULL, *keep = NULL, *on_error = NULL, *timeout = NULL, *retries = NULL,
             *rows = NULL, *report = NULL, *order = NULL, *window = NULL, *desc = NULL;
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
            KW(out)
            KW(params) KW(policy) KW(progress) KW(keep) KW(on_error) KW(timeout) KW(retries)
                KW(rows) KW(report) KW(desc)
#undef KW
                    if (strcmp(n, "batch_size") == 0)
            {
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
            c->params =
                pack ? PyObject_CallFunctionObjArgs(pack, c->kernel_name, params, NULL) : NULL;
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
        PyObject *descs =
            PyObject_CallFunctionObjArgs(describe, c->kernel_name, specs, params ? params : Py_None,
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
    tdm_py_call_release(c);
    return -1;
}

int tdm_py_force_async; /* tandem._tandem._set_async(True): every map takes the async path */

int64_t tdm_py_call_rows(const call *c)
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

size_t tdm_py_call_bytes(const call *c)
{
    size_t b = 0;
    for (int i = 0; i < c->n_in; i++)
        b += tdm_tensor_nbytes(c->ins[i]);
    for (int i = 0; i < c->n_out; i++)
        b += tdm_tensor_nbytes(c->outs[i]);
    return b;
}
