/* SPDX-License-Identifier: MIT */
/* User kernels from Python (tandem.kernel): the shared object tandem/_kernels.py compiled from
 * the dialect source exports <name>_cpu, <name>_infer and <name>_dev (tandem/kernel.h's
 * function types); this file loads it and registers the kernel with a runtime. The shared
 * object stays loaded for the process's life (kernels are never unregistered). */
#include <dlfcn.h>
#include <string.h>

#include "module.h"

atomic_long tdm_py_seq;

/* Mirrored in tandem/_kernels.py's generated C (struct tdm_py_kernel_api). */
typedef struct {
    tdm_dtype (*dtype)(const tdm_tensor *);
    int (*ndim)(const tdm_tensor *);
    const int64_t *(*shape)(const tdm_tensor *);
    int64_t (*numel)(const tdm_tensor *);
} tdm_py_kernel_api;

static PyObject *py_register_kernel(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt",     "so_path",     "name",   "n_in", "n_out",
                             "params_size", "source", "whole_inputs", NULL};
    RuntimeObject *rt;
    const char *so_path, *name, *source = NULL;
    int n_in, n_out;
    Py_ssize_t params_size;
    unsigned int whole = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!ssiin|zI", kwlist, &RuntimeType, &rt, &so_path,
                                     &name, &n_in, &n_out, &params_size, &source, &whole))
        return NULL;
    if (strlen(name) > 50)
        return tdm_py_raise_msg(TDM_EINVAL, "kernel name too long (at most 50 characters)");
    void *h = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return tdm_py_raise_msg(TDM_EIO, "cannot load %s: %s", so_path, e ? e : "?");
    }
    char sym[96];
    snprintf(sym, sizeof sym, "%s_cpu", name);
    tdm_kernel_cpu_fn cpu = (tdm_kernel_cpu_fn)dlsym(h, sym);
    snprintf(sym, sizeof sym, "%s_infer", name);
    tdm_kernel_infer_fn infer = (tdm_kernel_infer_fn)dlsym(h, sym);
    snprintf(sym, sizeof sym, "%s_dev", name);
    tdm_kernel_dev_fn dev = (tdm_kernel_dev_fn)dlsym(h, sym);
    snprintf(sym, sizeof sym, "%s_work", name); /* (optional: tandem.kernel(work=...)) */
    tdm_kernel_work_fn work = (tdm_kernel_work_fn)dlsym(h, sym);
    snprintf(sym, sizeof sym, "%s_bind", name);
    void (*bind)(const tdm_py_kernel_api *) = (void (*)(const tdm_py_kernel_api *))dlsym(h, sym);
    if (!cpu || !infer || !bind)
        return tdm_py_raise_msg(TDM_EINVAL, "%s lacks %s_cpu, %s_infer or %s_bind", so_path, name,
                                name, name);
    /* The extension links libtandem statically and hides its symbols: the kernel's infer and
     * dev functions reach the tensor accessors through this table. */
    static const tdm_py_kernel_api api = {tdm_tensor_dtype, tdm_tensor_ndim, tdm_tensor_shape,
                                          tdm_tensor_numel};
    bind(&api);
    if (tdm_py_rt_enter(rt) < 0)
        return NULL;
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = name;
    def.n_in_min = def.n_in_max = n_in;
    def.n_out = n_out;
    def.params_size = (size_t)params_size;
    def.infer = infer;
    def.cpu = cpu;
    def.source = source && dev ? source : NULL;
    def.dev = source ? dev : NULL;
    def.whole_inputs = whole;
    def.work = work;
    int rc = tdm_kernel_register(rt->rt, &def);
    PyObject *r = rc < 0 ? tdm_py_raise(rc, rt->rt) : Py_NewRef(Py_None);
    tdm_py_rt_leave(rt);
    return r;
}

static PyObject *py_open_seq(PyObject *mod, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &RuntimeType))
        return PyErr_Format(PyExc_TypeError, "expected a tandem.Runtime");
    RuntimeObject *rt = (RuntimeObject *)arg;
    return Py_BuildValue("(li)", rt->open_seq, rt->procs);
}

static PyObject *py_kernel_exists(PyObject *mod, PyObject *args)
{
    RuntimeObject *rt;
    const char *name;
    if (!PyArg_ParseTuple(args, "O!s", &RuntimeType, &rt, &name))
        return NULL;
    return PyBool_FromLong(rt->rt && tdm_kernel_exists(rt->rt, name));
}

/* Loads the shared object now (tandem.kernel() calls it at definition): a runtime opened
 * afterwards forks its worker processes with the code already mapped at the same address. */
static PyObject *py_load_kernel(PyObject *mod, PyObject *arg)
{
    PyObject *pb = NULL;
    if (!PyUnicode_FSConverter(arg, &pb))
        return NULL;
    void *h = dlopen(PyBytes_AS_STRING(pb), RTLD_NOW | RTLD_LOCAL);
    Py_DECREF(pb);
    if (!h) {
        const char *e = dlerror();
        return tdm_py_raise_msg(TDM_EIO, "cannot load the kernel: %s", e ? e : "?");
    }
    /* never closed: kernels are never unregistered. The sequence number tells which
     * runtimes were opened (their worker processes forked) before the code was loaded. */
    return PyLong_FromLong(atomic_fetch_add(&tdm_py_seq, 1) + 1);
}

static PyMethodDef kernel_functions[] = {
    {"_load_kernel", py_load_kernel, METH_O, "_load_kernel(so_path): dlopen it for good."},
    {"_register_kernel", (PyCFunction)(void (*)(void))py_register_kernel,
     METH_VARARGS | METH_KEYWORDS,
     "_register_kernel(rt, so_path, name, n_in, n_out, params_size, source=None): loads a "
     "compiled user kernel and registers it (tdm_kernel_register)."},
    {"_open_seq", py_open_seq, METH_O,
     "_open_seq(rt) -> (sequence number at open, worker processes)"},
    {"_kernel_exists", py_kernel_exists, METH_VARARGS, "_kernel_exists(rt, name) -> bool"},
    {NULL}};

int tdm_py_kernel_init(PyObject *m)
{
    return PyModule_AddFunctions(m, kernel_functions);
}
