/* SPDX-License-Identifier: MIT */
/* DLPack 1.1 both ways.
 *
 * Export: tandem.Tensor.__dlpack__ / __dlpack_device__ hand out the tensor's host memory
 * (kDLCPU, or kDLCUDAHost for pinned memory registered with a CUDA device), versioned
 * ("dltensor_versioned") when the consumer passes max_version >= (1, 0), else legacy
 * ("dltensor"). The capsule holds a reference to the Tensor until the consumer's deleter runs.
 * (numpy arrays made by tandem are plain ndarrays: numpy's own __dlpack__ exports them too.)
 *
 * Import: tandem.from_dlpack(obj) takes a producer (anything with __dlpack__) or a capsule and
 * returns a numpy.ndarray over the producer's memory without copying (the array owns the
 * managed tensor and calls its deleter when freed). Host-accessible memory only: kDLCPU,
 * kDLCUDAHost, kDLCUDAManaged; device memory raises BufferError (copy it to the host with the
 * producer first). copy=True copies, copy=False never does. */
#include <string.h>

#include "dlpack.h"
#include "module.h"

/* ---- export -------------------------------------------------------------------------------- */

typedef struct {
    union {
        DLManagedTensor legacy;
        DLManagedTensorVersioned v;
    } m;
    int64_t shape[TDM_MAX_DIMS], strides[TDM_MAX_DIMS];
} export_block;

static void ctx_release(void *ctx)
{
    if (!ctx)
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)ctx);
    PyGILState_Release(g);
}

static void legacy_deleter(DLManagedTensor *self)
{
    ctx_release(self->manager_ctx);
    PyMem_RawFree(self);
}

static void versioned_deleter(DLManagedTensorVersioned *self)
{
    ctx_release(self->manager_ctx);
    PyMem_RawFree(self);
}

static void capsule_legacy_destructor(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, "dltensor")) { /* never consumed */
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        if (m && m->deleter)
            m->deleter(m);
    }
}

static void capsule_versioned_destructor(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
        if (m && m->deleter)
            m->deleter(m);
    }
}

static int dl_dtype(tdm_dtype d, DLDataType *out)
{
    static const DLDataType map[TDM_DTYPE_COUNT] = {
        [TDM_U8] = {kDLUInt, 8, 1},      [TDM_I32] = {kDLInt, 32, 1},
        [TDM_I64] = {kDLInt, 64, 1},     [TDM_F32] = {kDLFloat, 32, 1},
        [TDM_F64] = {kDLFloat, 64, 1},   [TDM_F16] = {kDLFloat, 16, 1},
        [TDM_BF16] = {kDLBfloat, 16, 1}, [TDM_BOOL] = {kDLBool, 8, 1},
        [TDM_I8] = {kDLInt, 8, 1},       [TDM_I16] = {kDLInt, 16, 1},
        [TDM_U16] = {kDLUInt, 16, 1},    [TDM_U32] = {kDLUInt, 32, 1},
        [TDM_U64] = {kDLUInt, 64, 1}};
    if ((unsigned)d >= TDM_DTYPE_COUNT)
        return -1;
    *out = map[d];
    return 0;
}

static DLDevice tensor_device(TensorObject *self)
{
    DLDevice dev = {kDLCPU, 0};
    if (tdm_tensor_mem(self->t) & TDM_MEM_PINNED) {
        /* Pinned memory counts as CUDA host memory only when a CUDA device registered it. */
        tdm_runtime *rt = self->rt->rt;
        int n = rt ? tdm_runtime_device_count(rt) : 0;
        for (int i = 0; i < n; i++) {
            tdm_device_info di;
            if (tdm_runtime_device(rt, i, &di) == 0 && di.kind == TDM_BACKEND_CUDA && di.pinned) {
                dev.device_type = kDLCUDAHost;
                break;
            }
        }
    }
    return dev;
}

PyObject *tdm_py_tensor_dlpack_device(TensorObject *self, PyObject *unused)
{
    DLDevice d = tensor_device(self);
    return Py_BuildValue("(ii)", d.device_type, d.device_id);
}

PyObject *tdm_py_tensor_dlpack(TensorObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOO", kwlist, &stream, &max_version, &dl_device,
                                     &copy))
        return NULL;
    DLDevice dev = tensor_device(self);
    if (stream != Py_None && dev.device_type == kDLCPU) {
        PyErr_SetString(PyExc_BufferError, "__dlpack__: stream must be None for kDLCPU memory");
        return NULL;
    }
    if (dl_device != Py_None) {
        int dt, di;
        if (!PyArg_ParseTuple(dl_device, "ii", &dt, &di))
            return NULL;
        if (dt != dev.device_type && !(dt == kDLCPU && dev.device_type == kDLCUDAHost)) {
            PyErr_Format(PyExc_BufferError,
                         "__dlpack__: cannot export to device (%d, %d): the tensor is in host "
                         "memory",
                         dt, di);
            return NULL;
        }
        dev.device_type = dt;
        dev.device_id = di;
    }
    int versioned = 0;
    if (max_version != Py_None) {
        unsigned major, minor;
        if (!PyArg_ParseTuple(max_version, "II", &major, &minor))
            return NULL;
        versioned = major >= 1;
    }
    int do_copy = copy == Py_True;
    if (copy != Py_None && copy != Py_True && copy != Py_False) {
        PyErr_SetString(PyExc_TypeError, "__dlpack__: copy must be None, True or False");
        return NULL;
    }
    TensorObject *src = self;
    PyObject *copied = NULL;
    if (do_copy) {
        tdm_tensor *t = NULL;
        int rc = tdm_tensor_empty(self->rt->rt, tdm_tensor_dtype(self->t), tdm_tensor_ndim(self->t),
                                  tdm_tensor_shape(self->t), TDM_MEM_HOST, &t);
        if (rc < 0)
            return tdm_py_raise(rc, self->rt->rt);
        if (!tdm_tensor_is_contiguous(self->t)) {
            tdm_tensor_release(t);
            return tdm_py_raise_msg(TDM_ELAYOUT, "__dlpack__(copy=True): not contiguous");
        }
        if (tdm_tensor_nbytes(t))
            memcpy(tdm_tensor_data(t), tdm_tensor_data(self->t), tdm_tensor_nbytes(t));
        copied = tdm_py_tensor_new(self->rt, t, 0);
        if (!copied)
            return NULL;
        src = (TensorObject *)copied;
    } else if (self->readonly && !versioned) {
        PyErr_SetString(PyExc_BufferError,
                        "__dlpack__: a read-only tensor cannot be exported as a legacy "
                        "(unversioned) capsule; ask for max_version=(1, 0) or copy=True");
        return NULL;
    }
    export_block *b = PyMem_RawCalloc(1, sizeof *b);
    if (!b) {
        Py_XDECREF(copied);
        return PyErr_NoMemory();
    }
    DLTensor *dl = versioned ? &b->m.v.dl_tensor : &b->m.legacy.dl_tensor;
    int nd = tdm_tensor_ndim(src->t);
    const int64_t *sh = tdm_tensor_shape(src->t), *st = tdm_tensor_strides(src->t);
    for (int i = 0; i < nd; i++) {
        b->shape[i] = sh[i];
        b->strides[i] = st[i];
    }
    dl->data = tdm_tensor_data(src->t); /* copies a newer device copy back first */
    dl->device = dev;
    dl->ndim = nd;
    dl_dtype(tdm_tensor_dtype(src->t), &dl->dtype);
    dl->shape = b->shape;
    dl->strides = b->strides;
    dl->byte_offset = 0;
    /* The capsule (and whoever consumes it) holds the Tensor until the deleter runs. */
    PyObject *ctx = copied ? copied : Py_NewRef((PyObject *)self);
    PyObject *cap;
    if (versioned) {
        b->m.v.version.major = DLPACK_MAJOR_VERSION;
        b->m.v.version.minor = DLPACK_MINOR_VERSION;
        b->m.v.manager_ctx = ctx;
        b->m.v.deleter = versioned_deleter;
        b->m.v.flags = (src->readonly ? DLPACK_FLAG_BITMASK_READ_ONLY : 0) |
                       (copied ? DLPACK_FLAG_BITMASK_IS_COPIED : 0);
        cap = PyCapsule_New(&b->m.v, "dltensor_versioned", capsule_versioned_destructor);
    } else {
        b->m.legacy.manager_ctx = ctx;
        b->m.legacy.deleter = legacy_deleter;
        cap = PyCapsule_New(&b->m.legacy, "dltensor", capsule_legacy_destructor);
    }
    if (!cap) {
        Py_DECREF(ctx);
        PyMem_RawFree(b);
    }
    return cap;
}

/* ---- import --------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD DLManagedTensor *legacy;
    DLManagedTensorVersioned *versioned;
    DLTensor *dl;
    int readonly;
    char format[4];
    Py_ssize_t shape[64], strides[64];
} ImportObject;

static void import_dealloc(ImportObject *self)
{
    if (self->legacy && self->legacy->deleter)
        self->legacy->deleter(self->legacy);
    if (self->versioned && self->versioned->deleter)
        self->versioned->deleter(self->versioned);
    PyObject_Free(self);
}

static int import_getbuffer(ImportObject *self, Py_buffer *view, int flags)
{
    if ((flags & PyBUF_WRITABLE) && self->readonly) {
        PyErr_SetString(PyExc_BufferError, "the DLPack tensor is read-only");
        view->obj = NULL;
        return -1;
    }
    DLTensor *dl = self->dl;
    Py_ssize_t isz = dl->dtype.bits / 8, n = 1;
    for (int i = 0; i < dl->ndim; i++)
        n *= (Py_ssize_t)dl->shape[i];
    static char dummy[16];
    char *data = (char *)dl->data + dl->byte_offset;
    view->buf = n && dl->data ? data : dummy;
    view->obj = Py_NewRef((PyObject *)self);
    view->len = n * isz;
    view->itemsize = isz;
    view->readonly = self->readonly;
    view->ndim = dl->ndim;
    view->format = (flags & PyBUF_FORMAT) ? self->format : NULL;
    view->shape = self->shape;
    view->strides = self->strides;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static PyBufferProcs import_as_buffer = {(getbufferproc)import_getbuffer, NULL};

static PyTypeObject ImportType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tandem._tandem.DLPackImport",
    .tp_basicsize = sizeof(ImportObject),
    .tp_dealloc = (destructor)import_dealloc,
    .tp_as_buffer = &import_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Owns an imported DLPack tensor (calls its deleter when freed).",
};

static const char *import_format(DLDataType t)
{
    if (t.lanes != 1)
        return NULL;
    switch (t.code) {
    case kDLUInt:
        return t.bits == 8    ? "B"
               : t.bits == 16 ? "H"
               : t.bits == 32 ? "I"
               : t.bits == 64 ? "L"
                              : NULL;
    case kDLInt:
        return t.bits == 8    ? "b"
               : t.bits == 16 ? "h"
               : t.bits == 32 ? "i"
               : t.bits == 64 ? "l"
                              : NULL;
    case kDLFloat:
        return t.bits == 16 ? "e" : t.bits == 32 ? "f" : t.bits == 64 ? "d" : NULL;
    case kDLBool:
        return t.bits == 8 ? "?" : NULL;
    case kDLComplex:
        return t.bits == 64 ? "Zf" : t.bits == 128 ? "Zd" : NULL;
    case kDLBfloat:
        return t.bits == 16 ? "H" : NULL; /* raw words, as tandem's bf16 arrays */
    default:
        return NULL;
    }
}

/* Wraps a capsule (consuming it). Returns a new ImportObject or NULL. */
static PyObject *import_capsule(PyObject *cap)
{
    ImportObject *o = PyObject_New(ImportObject, &ImportType);
    if (!o)
        return NULL;
    o->legacy = NULL;
    o->versioned = NULL;
    o->readonly = 0;
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
        if (m->version.major != DLPACK_MAJOR_VERSION) {
            PyErr_Format(PyExc_BufferError, "from_dlpack: DLPack major version %u unsupported",
                         m->version.major);
            Py_DECREF(o);
            return NULL;
        }
        o->versioned = m;
        o->dl = &m->dl_tensor;
        o->readonly = (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
        PyCapsule_SetName(cap, "used_dltensor_versioned");
    } else if (PyCapsule_IsValid(cap, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        o->legacy = m;
        o->dl = &m->dl_tensor;
        PyCapsule_SetName(cap, "used_dltensor");
    } else {
        Py_DECREF(o);
        PyErr_SetString(PyExc_ValueError,
                        "from_dlpack: not an unconsumed 'dltensor' / 'dltensor_versioned' capsule");
        return NULL;
    }
    /* From here the object owns the managed tensor: errors free it through dealloc. */
    DLTensor *dl = o->dl;
    int dt = dl->device.device_type;
    if (dt != kDLCPU && dt != kDLCUDAHost && dt != kDLCUDAManaged) {
        PyErr_Format(PyExc_BufferError,
                     "from_dlpack: the tensor is in device memory (device type %d): tandem "
                     "imports host-accessible memory only; copy it to the host first",
                     dt);
        goto fail;
    }
    const char *f = import_format(dl->dtype);
    if (!f) {
        tdm_py_raise_msg(TDM_EDTYPE,
                         "from_dlpack: unsupported DLPack dtype (code %d, %d bits, "
                         "%d lanes)",
                         dl->dtype.code, dl->dtype.bits, dl->dtype.lanes);
        goto fail;
    }
    strcpy(o->format, f);
    if (dl->ndim < 0 || dl->ndim > 64) {
        PyErr_SetString(PyExc_BufferError, "from_dlpack: ndim out of range");
        goto fail;
    }
    Py_ssize_t isz = dl->dtype.bits / 8, st = isz;
    for (int i = dl->ndim - 1; i >= 0; i--) {
        o->shape[i] = (Py_ssize_t)dl->shape[i];
        o->strides[i] = dl->strides ? (Py_ssize_t)dl->strides[i] * isz : st;
        st *= (Py_ssize_t)dl->shape[i];
    }
    return (PyObject *)o;
fail:
    Py_DECREF(o);
    return NULL;
}

static PyObject *py_from_dlpack(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"x", "device", "copy", NULL};
    PyObject *x, *device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$OO", kwlist, &x, &device, &copy))
        return NULL;
    if (copy != Py_None && copy != Py_True && copy != Py_False) {
        PyErr_SetString(PyExc_TypeError, "from_dlpack: copy must be None, True or False");
        return NULL;
    }
    if (device != Py_None) {
        int dt, di;
        if (!PyArg_ParseTuple(device, "ii", &dt, &di))
            return NULL;
        if (dt != kDLCPU) {
            PyErr_SetString(PyExc_ValueError, "from_dlpack: device must be None or (1, 0) (CPU)");
            return NULL;
        }
    }
    PyObject *cap = NULL;
    int copied_by_producer = 0;
    if (PyCapsule_CheckExact(x)) {
        cap = Py_NewRef(x);
    } else {
        PyObject *meth = PyObject_GetAttrString(x, "__dlpack__");
        if (!meth) {
            PyErr_Clear();
            return PyErr_Format(PyExc_TypeError,
                                "from_dlpack: %.100s does not support DLPack (no __dlpack__)",
                                Py_TYPE(x)->tp_name);
        }
        PyObject *devt = PyObject_CallMethod(x, "__dlpack_device__", NULL);
        if (!devt) {
            Py_DECREF(meth);
            return NULL;
        }
        int dt = 0, di = 0;
        int ok = PyArg_ParseTuple(devt, "ii", &dt, &di);
        Py_DECREF(devt);
        if (!ok) {
            Py_DECREF(meth);
            return NULL;
        }
        if (dt != kDLCPU && dt != kDLCUDAHost && dt != kDLCUDAManaged) {
            Py_DECREF(meth);
            return PyErr_Format(PyExc_BufferError,
                                "from_dlpack: the tensor is in device memory (device type %d): "
                                "tandem imports host-accessible memory only",
                                dt);
        }
        PyObject *kwargs = Py_BuildValue("{s:(ii),s:O}", "max_version", DLPACK_MAJOR_VERSION,
                                         DLPACK_MINOR_VERSION, "copy", copy);
        PyObject *empty = PyTuple_New(0);
        cap = kwargs && empty ? PyObject_Call(meth, empty, kwargs) : NULL;
        Py_XDECREF(kwargs);
        if (!cap && PyErr_ExceptionMatches(PyExc_TypeError)) {
            /* A producer from before DLPack 1.0 (numpy < 2.1): the legacy call. */
            PyErr_Clear();
            cap = PyObject_CallNoArgs(meth);
            copied_by_producer = -1; /* copy=True is done here */
        }
        Py_XDECREF(empty);
        Py_DECREF(meth);
        if (!cap)
            return NULL;
    }
    PyObject *imp = import_capsule(cap);
    Py_DECREF(cap);
    if (!imp)
        return NULL;
    PyObject *arr;
    ImportObject *io = (ImportObject *)imp;
    int was_copied = io->versioned && (io->versioned->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
    if (copy == Py_True && (copied_by_producer == -1 || PyCapsule_CheckExact(x)) && !was_copied) {
        PyObject *np = PyImport_ImportModule("numpy");
        arr = np ? PyObject_CallMethod(np, "array", "O", imp) : NULL;
        Py_XDECREF(np);
    } else {
        arr = PyObject_CallOneArg(tdm_py_np_asarray, imp);
    }
    Py_DECREF(imp);
    return arr;
}

static PyMethodDef dlpack_functions[] = {
    {"from_dlpack", (PyCFunction)(void (*)(void))py_from_dlpack, METH_VARARGS | METH_KEYWORDS,
     "from_dlpack(x, /, *, device=None, copy=None) -> numpy.ndarray\n\n"
     "Imports a DLPack producer (anything with __dlpack__: torch, CuPy, JAX, numpy, "
     "tandem.Tensor) or a 'dltensor' / 'dltensor_versioned' capsule without copying: the "
     "array's memory is the producer's (kept alive until the array is freed). Asks for a "
     "versioned capsule (max_version=(1, 1)) and falls back to the legacy protocol. Only "
     "host-accessible memory (kDLCPU, kDLCUDAHost, kDLCUDAManaged) is imported; device "
     "memory raises BufferError. copy=True always copies, copy=False never does."},
    {NULL}};

int tdm_py_dlpack_init(PyObject *m)
{
    if (PyType_Ready(&ImportType) < 0)
        return -1;
    return PyModule_AddFunctions(m, dlpack_functions);
}
