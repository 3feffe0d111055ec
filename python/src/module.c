/* SPDX-License-Identifier: MIT */
/* tandem._tandem: module definition (multi-phase init; free-threading ready), system facts,
 * and the lookup of the package's Python helpers. */
#include <string.h>

#include "module.h"

PyObject *tdm_py_np_asarray;

PyObject *tdm_py_helper(const char *name)
{
    /* tandem._kernels is imported by tandem/__init__.py before anything can call a map; its
     * two helpers are looked up once (a module's functions live as long as it). */
    static PyObject *describe, *pack;
    PyObject **slot = strcmp(name, "describe_outputs") == 0 ? &describe
                      : strcmp(name, "pack_params") == 0    ? &pack
                                                            : NULL;
    if (slot && *slot)
        return *slot;
    PyObject *mod = PyImport_ImportModule("tandem._kernels");
    if (!mod)
        return NULL;
    PyObject *f = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (f && slot)
        *slot = f; /* kept: one reference for the process's life */
    else if (f)
        Py_DECREF(f); /* the module keeps it alive */
    return f;
}

static PyObject *py_system_info(PyObject *mod, PyObject *unused)
{
    tdm_system_info si;
    int rc = tdm_system_info_get(&si);
    if (rc < 0)
        return tdm_py_raise(rc, NULL);
    return Py_BuildValue("{s:i,s:i,s:K,s:K,s:K,s:K,s:K}", "online_cores", si.online_cores,
                         "usable_cores", si.usable_cores, "memory_bytes",
                         (unsigned long long)si.memory_bytes, "memory_available_bytes",
                         (unsigned long long)si.memory_available_bytes, "shm_total_bytes",
                         (unsigned long long)si.shm_total_bytes, "shm_free_bytes",
                         (unsigned long long)si.shm_free_bytes, "memlock_limit_bytes",
                         (unsigned long long)si.memlock_limit_bytes);
}

static PyObject *py_strerror(PyObject *mod, PyObject *arg)
{
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(ss)", tdm_status_name((int)c), tdm_strerror((int)c));
}

static PyObject *py_tensor_of(PyObject *mod, PyObject *arr)
{
    TensorObject *t = tdm_py_owner_of(arr);
    if (!t)
        Py_RETURN_NONE;
    return Py_NewRef((PyObject *)t);
}

static PyMethodDef module_functions[] = {
    {"system_info", py_system_info, METH_NOARGS,
     "system_info() -> dict: cores, memory, /dev/shm, RLIMIT_MEMLOCK (tdm_system_info_get)."},
    {"strerror", py_strerror, METH_O,
     "strerror(code) -> (name, description) of a TDM_E* status code."},
    {"tensor_of", py_tensor_of, METH_O,
     "tensor_of(array) -> tandem.Tensor | None\n\nThe tandem tensor whose memory `array` "
     "(a numpy array made by tandem, or a view of one) is over; None for other arrays."},
    {NULL}};

static int module_exec(PyObject *m)
{
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np)
        return -1;
    PyObject *asarray = PyObject_GetAttrString(np, "asarray");
    Py_DECREF(np);
    if (!asarray)
        return -1;
    Py_XSETREF(tdm_py_np_asarray, asarray);
    if (tdm_py_errors_init(m) < 0 || tdm_py_array_init(m) < 0 || tdm_py_runtime_init(m) < 0 ||
        tdm_py_map_init(m) < 0 || tdm_py_io_init(m) < 0 || tdm_py_dlpack_init(m) < 0 ||
        tdm_py_kernel_init(m) < 0 || tdm_py_parallel_init(m) < 0)
        return -1;
    if (PyModule_AddStringConstant(m, "__version__", TDM_VERSION_STRING) < 0 ||
        PyModule_AddIntConstant(m, "HAVE_CUDA", TDM_PY_HAVE_CUDA) < 0 ||
        PyModule_AddIntConstant(m, "HAVE_OPENCL", TDM_PY_HAVE_OPENCL) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DIMS", TDM_MAX_DIMS) < 0)
        return -1;
    return PyModule_AddFunctions(m, module_functions);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_GIL_DISABLED
    /* The module's state is set once at exec; tandem's C API is thread-safe; the extension's
     * objects use atomics where threads meet (a Runtime's call count). */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tandem._tandem",
    .m_doc = "tandem's C extension: runtimes, tandem-backed NumPy arrays, maps with the GIL "
             "released, tensor files, the result cache, DLPack. Use the `tandem` package.",
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__tandem(void)
{
    return PyModuleDef_Init(&module_def);
}
