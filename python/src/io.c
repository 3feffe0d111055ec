/* SPDX-License-Identifier: MIT */
/* Tensor files: tandem.load / save / savez / load_npz / file_info (tandem/io.h). The Python
 * wrappers in tandem/__init__.py pass the runtime (the default one when none is given). */
#include <string.h>

#include "module.h"

static int mmap_parse(PyObject *o, tdm_mmap_mode *out)
{
    *out = TDM_MMAP_NONE;
    if (!o || o == Py_None)
        return 0;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (s && strcmp(s, "r") == 0)
        *out = TDM_MMAP_READ;
    else if (s && strcmp(s, "r+") == 0)
        *out = TDM_MMAP_READWRITE;
    else if (s && strcmp(s, "c") == 0)
        *out = TDM_MMAP_COPY;
    else {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "mmap=%R: expected None, 'r', 'r+' or 'c'", o);
        return -1;
    }
    return 0;
}

static int codec_parse(PyObject *o, tdm_codec *out)
{
    *out = TDM_CODEC_NONE;
    if (!o || o == Py_None)
        return 0;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (!s) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "codec: expected None or a name");
        return -1;
    }
    if (tdm_codec_from_name(s, out) < 0) {
        PyErr_Format(PyExc_ValueError, "codec=%R: expected None, 'zstd', 'lz4' or 'deflate'", o);
        return -1;
    }
    return 0;
}

static PyObject *path_bytes(PyObject *p)
{
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(p, &b))
        return NULL;
    return b;
}

static PyObject *py_load(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt", "path", "mmap", "memory", "max_bytes", NULL};
    RuntimeObject *rt;
    PyObject *path, *mmap_o = NULL, *mem_o = NULL;
    long long max_bytes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|OOL", kwlist, &RuntimeType, &rt, &path,
                                     &mmap_o, &mem_o, &max_bytes))
        return NULL;
    tdm_load_opts o;
    tdm_load_opts_init(&o);
    if (mmap_parse(mmap_o, &o.mmap) < 0 || tdm_py_mem_parse(mem_o, &o.mem) < 0)
        return NULL;
    o.max_bytes = max_bytes;
    PyObject *pb = path_bytes(path);
    if (!pb)
        return NULL;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return NULL;
    }
    tdm_tensor *t = NULL;
    int rc;
    const char *p = PyBytes_AS_STRING(pb);
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_load(rt->rt, p, &o, &t);
    Py_END_ALLOW_THREADS
    PyObject *r = rc < 0 ? tdm_py_raise(rc, rt->rt)
                         : tdm_py_ndarray_from_tensor(rt, t, o.mmap == TDM_MMAP_READ);
    tdm_py_rt_leave(rt);
    Py_DECREF(pb);
    return r;
}

static PyObject *py_save(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt", "path", "arr", "codec", "level", "fsync", NULL};
    RuntimeObject *rt;
    PyObject *path, *arr, *codec_o = NULL;
    int level = 0, fsync = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO|Oip", kwlist, &RuntimeType, &rt, &path, &arr,
                                     &codec_o, &level, &fsync))
        return NULL;
    tdm_save_opts o;
    tdm_save_opts_init(&o);
    if (codec_parse(codec_o, &o.codec) < 0)
        return NULL;
    o.level = level;
    o.fsync = fsync;
    PyObject *pb = path_bytes(path);
    if (!pb)
        return NULL;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return NULL;
    }
    PyObject *r = NULL;
    tdm_py_arg a;
    if (tdm_py_arg_get(rt, arr, 0, "save: the array", -1, &a) == 0) {
        int rc;
        const char *p = PyBytes_AS_STRING(pb);
        Py_BEGIN_ALLOW_THREADS
        rc = tdm_save(a.t, p, &o);
        Py_END_ALLOW_THREADS
        if (rc < 0)
            tdm_py_raise(rc, rt->rt);
        else
            r = Py_NewRef(Py_None);
        tdm_py_arg_release(&a);
    }
    tdm_py_rt_leave(rt);
    Py_DECREF(pb);
    return r;
}

static PyObject *py_savez(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt", "path", "arrays", "compressed", NULL};
    RuntimeObject *rt;
    PyObject *path, *arrays;
    int compressed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO!|p", kwlist, &RuntimeType, &rt, &path,
                                     &PyDict_Type, &arrays, &compressed))
        return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(arrays);
    if (n > 4096)
        return tdm_py_raise_msg(TDM_EINVAL, "savez: at most 4096 arrays");
    PyObject *pb = path_bytes(path);
    if (!pb)
        return NULL;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return NULL;
    }
    tdm_py_arg *a = PyMem_Calloc((size_t)n + 1, sizeof *a);
    const char **names = PyMem_Calloc((size_t)n + 1, sizeof *names);
    const tdm_tensor **ts = PyMem_Calloc((size_t)n + 1, sizeof *ts);
    PyObject *r = NULL;
    int got = 0;
    if (!a || !names || !ts) {
        PyErr_NoMemory();
        goto out;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(arrays, &pos, &k, &v)) {
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "savez: names must be strings");
            goto out;
        }
        names[got] = PyUnicode_AsUTF8(k);
        if (!names[got] || tdm_py_arg_get(rt, v, 0, names[got], -1, &a[got]) < 0)
            goto out;
        ts[got] = a[got].t;
        got++;
    }
    tdm_save_opts o;
    tdm_save_opts_init(&o);
    o.codec = compressed ? TDM_CODEC_DEFLATE : TDM_CODEC_NONE;
    int rc;
    const char *p = PyBytes_AS_STRING(pb);
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_npz_save(rt->rt, p, names, ts, got, &o);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        tdm_py_raise(rc, rt->rt);
    else
        r = Py_NewRef(Py_None);
out:
    for (int i = 0; i < got; i++)
        tdm_py_arg_release(&a[i]);
    PyMem_Free(a);
    PyMem_Free(names);
    PyMem_Free(ts);
    tdm_py_rt_leave(rt);
    Py_DECREF(pb);
    return r;
}

static PyObject *py_load_npz(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt", "path", "mmap", NULL};
    RuntimeObject *rt;
    PyObject *path, *mmap_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|O", kwlist, &RuntimeType, &rt, &path,
                                     &mmap_o))
        return NULL;
    tdm_load_opts o;
    tdm_load_opts_init(&o);
    if (mmap_parse(mmap_o, &o.mmap) < 0)
        return NULL;
    PyObject *pb = path_bytes(path);
    if (!pb)
        return NULL;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return NULL;
    }
    PyObject *d = NULL;
    tdm_npz *z = NULL;
    int rc;
    const char *p = PyBytes_AS_STRING(pb);
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_npz_open(rt->rt, p, &z);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        tdm_py_raise(rc, rt->rt);
        goto out;
    }
    d = PyDict_New();
    for (int i = 0; d && i < tdm_npz_count(z); i++) {
        const char *name = tdm_npz_name(z, i);
        tdm_tensor *t = NULL;
        Py_BEGIN_ALLOW_THREADS
        rc = tdm_npz_load(z, name, &o, &t);
        Py_END_ALLOW_THREADS
        PyObject *arr = rc < 0 ? tdm_py_raise(rc, rt->rt)
                               : tdm_py_ndarray_from_tensor(rt, t, o.mmap == TDM_MMAP_READ);
        if (!arr || PyDict_SetItemString(d, name, arr) < 0) {
            Py_XDECREF(arr);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(arr);
    }
    tdm_npz_close(z);
out:
    tdm_py_rt_leave(rt);
    Py_DECREF(pb);
    return d;
}

static PyObject *py_file_info(PyObject *mod, PyObject *args)
{
    RuntimeObject *rt;
    PyObject *path;
    if (!PyArg_ParseTuple(args, "O!O", &RuntimeType, &rt, &path))
        return NULL;
    PyObject *pb = path_bytes(path);
    if (!pb)
        return NULL;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return NULL;
    }
    tdm_file_info fi;
    int rc;
    const char *p = PyBytes_AS_STRING(pb);
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_file_info_get(rt->rt, p, &fi);
    Py_END_ALLOW_THREADS
    PyObject *r = NULL;
    if (rc < 0)
        tdm_py_raise(rc, rt->rt);
    else {
        PyObject *shape = PyTuple_New(fi.kind == TDM_FILE_NPZ ? 0 : fi.ndim);
        for (int i = 0; shape && fi.kind != TDM_FILE_NPZ && i < fi.ndim; i++)
            PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(fi.shape[i]));
        static const char *kinds[] = {"?", "npy", "npz", "tdz"};
        r = shape ? Py_BuildValue("{s:s,s:s,s:N,s:O,s:s,s:L,s:L,s:i}", "kind",
                                  kinds[fi.kind >= 1 && fi.kind <= 3 ? fi.kind : 0], "dtype",
                                  fi.kind == TDM_FILE_NPZ ? "" : tdm_dtype_name(fi.dtype),
                                  "shape", shape, "fortran_order",
                                  fi.fortran_order ? Py_True : Py_False, "codec",
                                  tdm_codec_name(fi.codec), "data_bytes",
                                  (long long)fi.data_bytes, "file_bytes",
                                  (long long)fi.file_bytes, "npz_members", fi.npz_members)
                  : NULL;
    }
    tdm_py_rt_leave(rt);
    Py_DECREF(pb);
    return r;
}

static PyMethodDef io_functions[] = {
    {"_load", (PyCFunction)(void (*)(void))py_load, METH_VARARGS | METH_KEYWORDS,
     "_load(rt, path, mmap=None, memory=None, max_bytes=0): tdm_load."},
    {"_save", (PyCFunction)(void (*)(void))py_save, METH_VARARGS | METH_KEYWORDS,
     "_save(rt, path, arr, codec=None, level=0, fsync=False): tdm_save."},
    {"_savez", (PyCFunction)(void (*)(void))py_savez, METH_VARARGS | METH_KEYWORDS,
     "_savez(rt, path, arrays: dict, compressed=False): tdm_npz_save."},
    {"_load_npz", (PyCFunction)(void (*)(void))py_load_npz, METH_VARARGS | METH_KEYWORDS,
     "_load_npz(rt, path, mmap=None) -> dict: every member of a .npz."},
    {"_file_info", py_file_info, METH_VARARGS, "_file_info(rt, path) -> dict: tdm_file_info_get."},
    {NULL}};

/* ---- tandem.Cache ------------------------------------------------------------------------- */

static int cache_init(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rt", "dir", "bytes_limit", "mmap", "codec", "level", "memory",
                             "verify", NULL};
    RuntimeObject *rt;
    PyObject *dir, *mmap_o = NULL, *codec_o = NULL, *mem_o = NULL;
    unsigned long long limit = 0;
    int level = 0, verify = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|KOOiOp", kwlist, &RuntimeType, &rt, &dir,
                                     &limit, &mmap_o, &codec_o, &level, &mem_o, &verify))
        return -1;
    tdm_cache_opts o;
    tdm_cache_opts_init(&o);
    if (mmap_parse(mmap_o, &o.mmap) < 0 || codec_parse(codec_o, &o.codec) < 0 ||
        tdm_py_mem_parse(mem_o, &o.mem) < 0)
        return -1;
    o.bytes_limit = limit;
    o.level = level;
    o.verify = verify;
    if (self->c)
        return tdm_py_raise_msg(TDM_EINVAL, "Cache.__init__ called twice"), -1;
    PyObject *pb = path_bytes(dir);
    if (!pb)
        return -1;
    if (tdm_py_rt_enter(rt) < 0) {
        Py_DECREF(pb);
        return -1;
    }
    int rc;
    const char *p = PyBytes_AS_STRING(pb);
    Py_BEGIN_ALLOW_THREADS
    rc = tdm_cache_open(rt->rt, p, &o, &self->c);
    Py_END_ALLOW_THREADS
    Py_DECREF(pb);
    if (rc < 0) {
        tdm_py_raise(rc, rt->rt);
        tdm_py_rt_leave(rt);
        return -1;
    }
    /* The cache counts as a call in flight until it is closed: the runtime stays open. */
    self->rt = rt;
    Py_INCREF(rt);
    self->readonly = o.mmap == TDM_MMAP_READ;
    return 0;
}

static PyObject *cache_close(CacheObject *self, PyObject *unused)
{
    if (self->c) {
        tdm_cache_close(self->c);
        self->c = NULL;
        tdm_py_rt_leave(self->rt);
    }
    Py_RETURN_NONE;
}

static void cache_dealloc(CacheObject *self)
{
    PyObject *r = cache_close(self, NULL);
    Py_XDECREF(r);
    Py_CLEAR(self->rt);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *cache_stats(CacheObject *self, PyObject *unused)
{
    if (!self->c)
        return tdm_py_raise_msg(TDM_EINVAL, "the cache is closed");
    tdm_cache_stats s;
    int rc = tdm_cache_stats_get(self->c, &s);
    if (rc < 0)
        return tdm_py_raise(rc, self->rt->rt);
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L}", "hits", (long long)s.hits, "misses",
                         (long long)s.misses, "stores", (long long)s.stores, "store_failures",
                         (long long)s.store_failures, "corrupt", (long long)s.corrupt,
                         "evictions", (long long)s.evictions);
}

static PyObject *cache_usage(CacheObject *self, PyObject *unused)
{
    if (!self->c)
        return tdm_py_raise_msg(TDM_EINVAL, "the cache is closed");
    uint64_t bytes = 0;
    int64_t entries = 0;
    int rc = tdm_cache_usage(self->c, &bytes, &entries);
    if (rc < 0)
        return tdm_py_raise(rc, self->rt->rt);
    return Py_BuildValue("(KL)", (unsigned long long)bytes, (long long)entries);
}

static PyObject *cache_clear(CacheObject *self, PyObject *unused)
{
    if (!self->c)
        return tdm_py_raise_msg(TDM_EINVAL, "the cache is closed");
    int rc = tdm_cache_clear(self->c);
    if (rc < 0)
        return tdm_py_raise(rc, self->rt->rt);
    Py_RETURN_NONE;
}

static PyObject *cache_enter(CacheObject *self, PyObject *unused)
{
    return Py_NewRef(self);
}

static PyObject *cache_exit(CacheObject *self, PyObject *args)
{
    PyObject *r = cache_close(self, NULL);
    Py_XDECREF(r);
    Py_RETURN_FALSE;
}

static PyMethodDef cache_methods[] = {
    {"map", (PyCFunction)(void (*)(void))tdm_py_cache_map, METH_VARARGS | METH_KEYWORDS,
     "map(kernel, *inputs, out=None, params=None, policy='auto', ...) -> outputs\n\n"
     "rt.map through the cache (tdm_cache_map): a hit loads (or memory-maps) the stored "
     "outputs, a miss runs the map and stores them. See last_hit and stats()."},
    {"stats", (PyCFunction)cache_stats, METH_NOARGS,
     "stats() -> dict: hits, misses, stores, store_failures, corrupt, evictions."},
    {"usage", (PyCFunction)cache_usage, METH_NOARGS, "usage() -> (bytes, entries) on disk."},
    {"clear", (PyCFunction)cache_clear, METH_NOARGS, "clear(): removes every entry."},
    {"close", (PyCFunction)cache_close, METH_NOARGS, "close(): closes the handle."},
    {"__enter__", (PyCFunction)cache_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)cache_exit, METH_VARARGS, NULL},
    {NULL}};

static PyMemberDef cache_members[] = {
    {"last_hit", T_INT, offsetof(CacheObject, last_hit), READONLY,
     "1 when the last map() was a hit, 0 for a miss."},
    {NULL}};

PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem._tandem.Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_dealloc = (destructor)cache_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "_Cache(rt, dir, bytes_limit=0, mmap=None, codec=None, level=0, memory=None, "
              "verify=True): tdm_cache_open (see tandem.Cache).",
    .tp_methods = cache_methods,
    .tp_members = cache_members,
    .tp_init = (initproc)cache_init,
    .tp_new = PyType_GenericNew,
};

int tdm_py_io_init(PyObject *m)
{
    if (PyType_Ready(&CacheType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "_Cache", (PyObject *)&CacheType) < 0)
        return -1;
    return PyModule_AddFunctions(m, io_functions);
}
