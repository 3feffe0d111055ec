/* SPDX-License-Identifier: MIT */
/* tandem.Tensor (the handle that owns a tdm_tensor and exports its bytes) and the conversions
 * between NumPy-side objects and tensors: dtypes, shapes, storage names, map arguments. */
#include <string.h>

#include "module.h"

/* ---- dtypes ---------------------------------------------------------------------------- */

/* Buffer formats as NumPy writes and reads them, by tdm_dtype value. bf16 has no NumPy dtype:
 * exported as raw uint16 words. */
static const char *const formats[TDM_DTYPE_COUNT] = {
    [TDM_U8] = "B",  [TDM_I32] = "i",  [TDM_I64] = "l",  [TDM_F32] = "f", [TDM_F64] = "d",
    [TDM_F16] = "e", [TDM_BF16] = "H", [TDM_BOOL] = "?", [TDM_I8] = "b",  [TDM_I16] = "h",
    [TDM_U16] = "H", [TDM_U32] = "I",  [TDM_U64] = "L"};

const char *tdm_py_dtype_format(tdm_dtype d)
{
    return (unsigned)d < TDM_DTYPE_COUNT ? formats[d] : NULL;
}

int tdm_py_dtype_from_format(const char *fmt, Py_ssize_t itemsize, tdm_dtype *out)
{
    if (!fmt)
        fmt = "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<')
        fmt++;
    else if (*fmt == '>' || *fmt == '!')
        return -1; /* big-endian: not on this machine */
    if (!fmt[0] || fmt[1])
        return -1;
    switch (fmt[0]) {
    case 'B':
        *out = TDM_U8;
        return 0;
    case '?':
        *out = TDM_BOOL;
        return 0;
    case 'b':
        *out = TDM_I8;
        return 0;
    case 'h':
        *out = TDM_I16;
        return 0;
    case 'H':
        *out = TDM_U16;
        return 0;
    case 'I':
    case 'L':
    case 'Q':
        if (itemsize == 4) {
            *out = TDM_U32;
            return 0;
        }
        if (itemsize == 8) {
            *out = TDM_U64;
            return 0;
        }
        return -1;
    case 'i':
    case 'l':
    case 'q':
        if (itemsize == 4) {
            *out = TDM_I32;
            return 0;
        }
        if (itemsize == 8) {
            *out = TDM_I64;
            return 0;
        }
        return -1;
    case 'f':
        *out = TDM_F32;
        return 0;
    case 'd':
        *out = TDM_F64;
        return 0;
    case 'e':
        *out = TDM_F16;
        return 0;
    default:
        return -1;
    }
}

int tdm_py_dtype_parse(PyObject *obj, tdm_dtype *out)
{
    if (PyUnicode_Check(obj)) {
        const char *s = PyUnicode_AsUTF8(obj);
        if (!s)
            return -1;
        /* tandem's short names count bits ("u8" is uint8, as in tandem's C API), NumPy's count
         * bytes ("i8" is int64): the new dtypes are named here only by their NumPy names, so
         * "i8", "u2"... keep NumPy's meaning (numpy.dtype() below). */
        static const struct {
            const char *name;
            tdm_dtype d;
            /* tandem's short names count bits ("u8" is uint8, as in tandem's C API), NumPy's count
             * bytes ("i8" is int64): the new dtypes are named here only by their NumPy names, so
             * "i8", "u2"... keep NumPy's meaning (numpy.dtype() below). */
        } names[] = {
            {"u8", TDM_U8},     {"uint8", TDM_U8},      {"i32", TDM_I32},    {"int32", TDM_I32},
            {"i64", TDM_I64},   {"int64", TDM_I64},     {"f32", TDM_F32},    {"float32", TDM_F32},
            {"f64", TDM_F64},   {"float64", TDM_F64},   {"f16", TDM_F16},    {"float16", TDM_F16},
            {"bf16", TDM_BF16}, {"bfloat16", TDM_BF16}, {"bool", TDM_BOOL},  {"int8", TDM_I8},
            {"int16", TDM_I16}, {"uint16", TDM_U16},    {"uint32", TDM_U32}, {"uint64", TDM_U64}};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(s, names[i].name) == 0) {
                *out = names[i].d;
                return 0;
            }
    }
    /* Anything else through numpy.dtype(obj).str ("<f8", "|u1"). */
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np)
        return -1;
    PyObject *dt = PyObject_CallMethod(np, "dtype", "O", obj);
    Py_DECREF(np);
    if (!dt) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "data type %R not understood", obj);
        return -1;
    }
    PyObject *kind = PyObject_GetAttrString(dt, "kind");
    PyObject *isz = PyObject_GetAttrString(dt, "itemsize");
    PyObject *bo = PyObject_GetAttrString(dt, "byteorder");
    int rc = -1;
    if (kind && isz && bo) {
        const char *k = PyUnicode_AsUTF8(kind), *b = PyUnicode_AsUTF8(bo);
        long n = PyLong_AsLong(isz);
        if (k && b && *b != '>') {
            rc = 0;
            if (k[0] == 'u' && n == 1)
                *out = TDM_U8;
            else if (k[0] == 'b' && n == 1)
                *out = TDM_BOOL;
            else if (k[0] == 'i' && n == 1)
                *out = TDM_I8;
            else if (k[0] == 'i' && n == 2)
                *out = TDM_I16;
            else if (k[0] == 'u' && n == 2)
                *out = TDM_U16;
            else if (k[0] == 'u' && n == 4)
                *out = TDM_U32;
            else if (k[0] == 'u' && n == 8)
                *out = TDM_U64;
            else if (k[0] == 'i' && n == 4)
                *out = TDM_I32;
            else if (k[0] == 'i' && n == 8)
                *out = TDM_I64;
            else if (k[0] == 'f' && n == 4)
                *out = TDM_F32;
            else if (k[0] == 'f' && n == 8)
                *out = TDM_F64;
            else if (k[0] == 'f' && n == 2)
                *out = TDM_F16;
            else
                rc = -1;
        }
        if (rc < 0 && !PyErr_Occurred()) {
            PyObject *str = PyObject_Str(dt);
            tdm_py_raise_msg(TDM_EDTYPE,
                             "dtype %s is not one of tandem's (bool, int8, int16, int32, int64, "
                             "uint8, uint16, uint32, uint64, float16, float32, float64, "
                             "bfloat16)",
                             str ? PyUnicode_AsUTF8(str) : "?");
            Py_XDECREF(str);
        }
    }
    Py_XDECREF(kind);
    Py_XDECREF(isz);
    Py_XDECREF(bo);
    Py_DECREF(dt);
    return rc;
}

int tdm_py_shape_parse(PyObject *obj, int64_t shape[TDM_MAX_DIMS])
{
    if (PyLong_Check(obj)) {
        long long v = PyLong_AsLongLong(obj);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v < 0) {
            PyErr_SetString(PyExc_ValueError, "negative dimensions are not allowed");
            return -1;
        }
        shape[0] = v;
        return 1;
    }
    PyObject *seq = PySequence_Fast(obj, "shape must be an int or a sequence of ints");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > TDM_MAX_DIMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d dimensions (tandem), got %zd", TDM_MAX_DIMS, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "negative dimensions are not allowed");
            return -1;
        }
        shape[i] = v;
    }
    Py_DECREF(seq);
    return (int)n;
}

int tdm_py_mem_parse(PyObject *obj, unsigned *out)
{
    if (!obj || obj == Py_None) {
        *out = TDM_MEM_HOST;
        return 0;
    }
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (!s) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "memory must be a string");
        return -1;
    }
    if (strcmp(s, "host") == 0)
        *out = TDM_MEM_HOST;
    else if (strcmp(s, "shared") == 0)
        *out = TDM_MEM_SHARED;
    else if (strcmp(s, "pinned") == 0)
        *out = TDM_MEM_PINNED;
    else if (strcmp(s, "shared+pinned") == 0 || strcmp(s, "pinned+shared") == 0)
        *out = TDM_MEM_SHARED | TDM_MEM_PINNED;
    else {
        PyErr_Format(PyExc_ValueError,
                     "memory=%R: expected 'host', 'shared', 'pinned' or 'shared+pinned'", obj);
        return -1;
    }
    return 0;
}

/* ---- tandem.Tensor ---------------------------------------------------------------------- */

PyObject *tdm_py_tensor_new(RuntimeObject *rt, tdm_tensor *t, int readonly)
{
    TensorObject *self = PyObject_GC_New(TensorObject, &TensorType);
    if (!self) {
        tdm_tensor_release(t);
        return NULL;
    }
    self->t = t;
    self->rt = rt;
    Py_INCREF(rt);
    self->readonly = readonly;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

PyObject *tdm_py_ndarray_from_tensor(RuntimeObject *rt, tdm_tensor *t, int readonly)
{
    PyObject *h = tdm_py_tensor_new(rt, t, readonly);
    if (!h)
        return NULL;
    PyObject *arr = PyObject_CallOneArg(tdm_py_np_asarray, h);
    Py_DECREF(h);
    return arr;
}

static void tensor_dealloc(TensorObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    tdm_tensor_release(self->t);
    self->t = NULL;
    Py_CLEAR(self->rt);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int tensor_traverse(TensorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rt);
    return 0;
}

static int tensor_getbuffer(TensorObject *self, Py_buffer *view, int flags)
{
    tdm_tensor *t = self->t;
    if ((flags & PyBUF_WRITABLE) && self->readonly) {
        PyErr_SetString(PyExc_BufferError, "tandem tensor is read-only (file mapped with 'r')");
        view->obj = NULL;
        return -1;
    }
    int nd = tdm_tensor_ndim(t);
    tdm_dtype d = tdm_tensor_dtype(t);
    Py_ssize_t isz = (Py_ssize_t)tdm_dtype_size(d);
    /* shape and strides (bytes) live in view->internal: one allocation per export. */
    Py_ssize_t *dims = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (nd ? nd : 1));
    if (!dims) {
        PyErr_NoMemory();
        view->obj = NULL;
        return -1;
    }
    const int64_t *sh = tdm_tensor_shape(t), *st = tdm_tensor_strides(t);
    for (int i = 0; i < nd; i++) {
        dims[i] = (Py_ssize_t)sh[i];
        dims[nd + i] = (Py_ssize_t)st[i] * isz;
    }
    void *data = tdm_tensor_data(t);
    static char dummy[8];
    view->buf = data ? data : dummy; /* an empty tensor may have no memory */
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->len = (Py_ssize_t)tdm_tensor_numel(t) * isz;
    view->itemsize = isz;
    view->readonly = self->readonly;
    view->ndim = nd;
    view->format = (flags & PyBUF_FORMAT) ? (char *)tdm_py_dtype_format(d) : NULL;
    view->shape = (flags & PyBUF_ND) ? dims : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? dims + nd : NULL;
    view->suboffsets = NULL;
    view->internal = dims;
    if (!(flags & PyBUF_STRIDES) && !tdm_tensor_is_contiguous(t)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_BufferError, "tandem tensor is not C-contiguous");
        return -1;
    }
    return 0;
}

static void tensor_releasebuffer(TensorObject *self, Py_buffer *view)
{
    PyMem_Free(view->internal);
}

static PyBufferProcs tensor_as_buffer = {(getbufferproc)tensor_getbuffer,
                                         (releasebufferproc)tensor_releasebuffer};

static PyObject *tensor_get_ptr(TensorObject *self, void *c)
{
    return PyLong_FromVoidPtr(tdm_tensor_data(self->t));
}

static PyObject *tensor_get_memory(TensorObject *self, void *c)
{
    unsigned m = tdm_tensor_mem(self->t);
    PyObject *l = PyList_New(0);
    if (!l)
        return NULL;
    static const struct {
        unsigned bit;
        const char *name;
    } bits[] = {{TDM_MEM_SHARED, "shared"},
                {TDM_MEM_PINNED, "pinned"},
                {TDM_MEM_WRAPPED, "wrapped"},
                {TDM_MEM_MAPPED, "mapped"}};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        if (m & bits[i].bit) {
            PyObject *s = PyUnicode_FromString(bits[i].name);
            if (!s || PyList_Append(l, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(l);
                return NULL;
            }
            Py_DECREF(s);
        }
    if (PyList_GET_SIZE(l) == 0) {
        Py_DECREF(l);
        return PyUnicode_FromString("host");
    }
    PyObject *sep = PyUnicode_FromString("+");
    PyObject *r = sep ? PyUnicode_Join(sep, l) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(l);
    return r;
}

static PyObject *tensor_get_dtype(TensorObject *self, void *c)
{
    return PyUnicode_FromString(tdm_dtype_name(tdm_tensor_dtype(self->t)));
}

static PyObject *tensor_get_shape(TensorObject *self, void *c)
{
    int nd = tdm_tensor_ndim(self->t);
    PyObject *tup = PyTuple_New(nd);
    for (int i = 0; tup && i < nd; i++) {
        PyObject *v = PyLong_FromLongLong(tdm_tensor_dim(self->t, i));
        if (!v) {
            Py_CLEAR(tup);
            break;
        }
        PyTuple_SET_ITEM(tup, i, v);
    }
    return tup;
}

static PyObject *tensor_get_on_device(TensorObject *self, void *c)
{
    return PyBool_FromLong(tdm_tensor_on_device(self->t));
}

static PyObject *tensor_numpy(TensorObject *self, PyObject *unused)
{
    return PyObject_CallOneArg(tdm_py_np_asarray, (PyObject *)self);
}

static PyObject *tensor_repr(TensorObject *self)
{
    PyObject *shape = tensor_get_shape(self, NULL);
    PyObject *mem = tensor_get_memory(self, NULL);
    PyObject *r = NULL;
    if (shape && mem)
        r = PyUnicode_FromFormat("tandem.Tensor(shape=%R, dtype='%s', memory=%R)", shape,
                                 tdm_dtype_name(tdm_tensor_dtype(self->t)), mem);
    Py_XDECREF(shape);
    Py_XDECREF(mem);
    return r;
}

static PyGetSetDef tensor_getset[] = {
    {"data_ptr", (getter)tensor_get_ptr, NULL, "Address of element 0 (tdm_tensor_data).", NULL},
    {"memory", (getter)tensor_get_memory, NULL,
     "The storage the tensor really has: 'host', 'shared', 'pinned', 'shared+pinned', "
     "'mapped'...",
     NULL},
    {"dtype", (getter)tensor_get_dtype, NULL, "tandem's dtype name ('f64').", NULL},
    {"shape", (getter)tensor_get_shape, NULL, "The shape, a tuple.", NULL},
    {"on_device", (getter)tensor_get_on_device, NULL,
     "True when the storage has a copy in device memory (keep_on_device).", NULL},
    {NULL}};

static PyMethodDef tensor_methods[] = {
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS,
     "numpy.ndarray over the tensor's memory (no copy; the array keeps the tensor alive)."},
    {"__dlpack__", (PyCFunction)(void (*)(void))tdm_py_tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None): a DLPack "
     "capsule over the tensor's memory (versioned when max_version >= (1, 0))."},
    {"__dlpack_device__", (PyCFunction)tdm_py_tensor_dlpack_device, METH_NOARGS,
     "(device_type, device_id): (1, 0) kDLCPU, or (3, 0) kDLCUDAHost for pinned memory."},
    {NULL}};

PyTypeObject TensorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem.Tensor",
    .tp_basicsize = sizeof(TensorObject),
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_repr = (reprfunc)tensor_repr,
    .tp_as_buffer = &tensor_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A tandem tensor: owns tandem storage and exports it through the buffer protocol "
              "and DLPack. numpy arrays made by tandem have a memoryview of one as their base "
              "(see tandem.tensor_of).",
    .tp_traverse = (traverseproc)tensor_traverse,
    .tp_weaklistoffset = offsetof(TensorObject, weakreflist),
    .tp_methods = tensor_methods,
    .tp_getset = tensor_getset,
};

/* ---- finding the tensor behind an ndarray ------------------------------------------------ */

TensorObject *tdm_py_owner_of(PyObject *obj)
{
    /* ndarray.base chains end at the memoryview numpy made from our buffer. At most a few
     * steps: numpy collapses view chains onto the owner. */
    for (int depth = 0; obj && depth < 8; depth++) {
        if (Py_TYPE(obj) == &TensorType)
            return (TensorObject *)obj;
        if (PyMemoryView_Check(obj)) {
            obj = PyMemoryView_GET_BUFFER(obj)->obj;
            continue;
        }
        static PyObject *base_str;
        if (!base_str && !(base_str = PyUnicode_InternFromString("base"))) {
            PyErr_Clear();
            return NULL;
        }
        PyObject *base = PyObject_GetAttr(obj, base_str);
        if (!base) {
            PyErr_Clear();
            return NULL;
        }
        Py_DECREF(base); /* kept alive by obj */
        if (base == Py_None)
            return NULL;
        obj = base;
    }
    return NULL;
}

/* ---- map arguments ----------------------------------------------------------------------- */

void tdm_py_arg_release(tdm_py_arg *arg)
{
    tdm_tensor_release(arg->t);
    arg->t = NULL;
    if (arg->has_view)
        PyBuffer_Release(&arg->view);
    arg->has_view = 0;
}

/* The argument's name for messages: "input 2" is formatted only when an error needs it. */
static const char *arg_name(const char *what, int index, char *buf, size_t len)
{
    if (index < 0)
        return what;
    snprintf(buf, len, "%s %d", what, index);
    return buf;
}

int tdm_py_arg_get(RuntimeObject *rt, PyObject *obj, int writable, const char *what_, int index,
                   tdm_py_arg *arg)
{
    char wbuf[64];
#define what arg_name(what_, index, wbuf, sizeof wbuf)
    arg->t = NULL;
    arg->has_view = 0;
    if (Py_TYPE(obj) == &TensorType) {
        TensorObject *h = (TensorObject *)obj;
        if (writable && h->readonly) {
            tdm_py_raise_msg(TDM_EINVAL, "%s is read-only", what);
            return -1;
        }
        arg->t = tdm_tensor_retain(h->t);
        return 0;
    }
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &arg->view, flags) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError) && writable && PyObject_CheckBuffer(obj)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s is read-only", what);
        } else if (!PyObject_CheckBuffer(obj)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s: expected a numpy array or a buffer-protocol object, got %.100s", what,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    arg->has_view = 1;
    Py_buffer *v = &arg->view;
    tdm_dtype dt;
    if (tdm_py_dtype_from_format(v->format, v->itemsize, &dt) < 0) {
        tdm_py_raise_msg(TDM_EDTYPE,
                         "%s: buffer format '%s' is not one of tandem's dtypes (uint8, int32, "
                         "int64, float16, float32, float64)",
                         what, v->format ? v->format : "B");
        goto fail;
    }
    if (!PyBuffer_IsContiguous(v, 'C')) {
        tdm_py_raise_msg(TDM_ELAYOUT,
                         "%s is not C-contiguous: tandem maps rows in place, pass "
                         "numpy.ascontiguousarray(x) (one copy)",
                         what);
        goto fail;
    }
    if (v->ndim > TDM_MAX_DIMS) {
        tdm_py_raise_msg(TDM_ESHAPE, "%s has %d dimensions, tandem takes at most %d", what, v->ndim,
                         TDM_MAX_DIMS);
        goto fail;
    }
    int64_t shape[TDM_MAX_DIMS];
    for (int i = 0; i < v->ndim; i++)
        shape[i] = v->shape ? v->shape[i] : v->len / v->itemsize;
    int nd = v->ndim;

    /* A tandem array, or rows of one: use the tensor itself (shared storage stays visible to
     * the worker processes, device copies stay valid). */
    TensorObject *own = tdm_py_owner_of(v->obj);
    if (own && own->rt == rt && tdm_tensor_is_contiguous(own->t) &&
        tdm_tensor_dtype(own->t) == dt && tdm_tensor_ndim(own->t) == nd && nd > 0) {
        const int64_t *osh = tdm_tensor_shape(own->t);
        int same_rows = 1;
        for (int i = 1; i < nd; i++)
            same_rows &= osh[i] == shape[i];
        char *base = tdm_tensor_data(own->t);
        int64_t rowb = (int64_t)tdm_dtype_size(dt);
        for (int i = 1; i < nd; i++)
            rowb *= shape[i];
        if (same_rows && base && rowb > 0) {
            ptrdiff_t off = (char *)v->buf - base;
            if (off >= 0 && off % rowb == 0 && off / rowb + shape[0] <= osh[0]) {
                int64_t r0 = off / rowb;
                if (r0 == 0 && shape[0] == osh[0]) {
                    arg->t = tdm_tensor_retain(own->t);
                    return 0;
                }
                int rc = tdm_tensor_view_rows(own->t, r0, r0 + shape[0], &arg->t);
                if (rc == 0)
                    return 0;
            }
        }
    }
    int rc = tdm_tensor_wrap(rt->rt, dt, nd, shape, NULL, v->len ? v->buf : NULL, &arg->t);
    if (rc < 0) {
        tdm_py_raise(rc, rt->rt);
        goto fail;
    }
    return 0;
fail:
    tdm_py_arg_release(arg);
    return -1;
#undef what
}

int tdm_py_array_init(PyObject *m)
{
    if (PyType_Ready(&TensorType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "Tensor", (PyObject *)&TensorType);
}
