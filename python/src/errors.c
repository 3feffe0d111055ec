/* SPDX-License-Identifier: MIT */
/* tandem.Error and one subclass per TDM_E* code. Each subclass also derives from the built-in
 * exception a Python user would catch for that failure (ShapeError is a ValueError, DTypeError
 * a TypeError, IOError_ an OSError...), so `except ValueError` works as with NumPy. Every
 * instance carries .code (the negative TDM_E* value) and .status ("TDM_ESHAPE"). */
#include <stdarg.h>

#include "module.h"

typedef struct {
    int code;
    const char *name; /* the class name in tandem */
    const char *doc;
    PyObject **base;  /* the built-in it also derives from, or NULL */
} tdm_py_errdef;

static PyObject *Error;
static PyObject *by_code[64]; /* index -code */

static const tdm_py_errdef defs[] = {
    {TDM_EINVAL, "InvalidArgument", "TDM_EINVAL: an argument tandem rejects.", &PyExc_ValueError},
    {TDM_ENOMEM, "OutOfMemory", "TDM_ENOMEM.", &PyExc_MemoryError},
    {TDM_ENOSPC, "NoSharedMemory", "TDM_ENOSPC: shared memory exhausted or over the limit.",
     &PyExc_MemoryError},
    {TDM_EBUSY, "BusyError", "TDM_EBUSY: work still in flight.", NULL},
    {TDM_ENOTFOUND, "NotFoundError", "TDM_ENOTFOUND: no such kernel, backend, device or member.",
     &PyExc_LookupError},
    {TDM_ENODEV, "NoDeviceError", "TDM_ENODEV: no enabled backend can run this kernel.", NULL},
    {TDM_EDTYPE, "DTypeError", "TDM_EDTYPE: dtype mismatch.", &PyExc_TypeError},
    {TDM_ESHAPE, "ShapeError", "TDM_ESHAPE: shape mismatch.", &PyExc_ValueError},
    {TDM_EOVERFLOW, "SizeOverflowError", "TDM_EOVERFLOW: size arithmetic overflows.",
     &PyExc_OverflowError},
    {TDM_EKERNEL, "KernelError", "TDM_EKERNEL: a batch's function returned an error.", NULL},
    {TDM_ECANCELED, "CancelledError", "TDM_ECANCELED: the job was cancelled.", NULL},
    {TDM_EDONE, "DoneError", "TDM_EDONE: no more results.", NULL},
    {TDM_ESYS, "SystemCallError", "TDM_ESYS: a system call failed.", &PyExc_OSError},
    {TDM_EPERM, "PermissionError_", "TDM_EPERM: not permitted by the system.",
     &PyExc_PermissionError},
    {TDM_ELAYOUT, "LayoutError", "TDM_ELAYOUT: the layout is not supported (not C-contiguous).",
     &PyExc_ValueError},
    {TDM_EEXIST, "ExistsError", "TDM_EEXIST: already exists.", &PyExc_ValueError},
    {TDM_EIO, "IOError_", "TDM_EIO: a file could not be opened, read or written.",
     &PyExc_OSError},
    {TDM_EFORMAT, "FormatError", "TDM_EFORMAT: not a valid file of the expected format.",
     &PyExc_ValueError},
    {TDM_ECORRUPT, "CorruptError", "TDM_ECORRUPT: checksum mismatch.", &PyExc_ValueError},
    {TDM_ETIMEDOUT, "TimeoutError_", "TDM_ETIMEDOUT: a batch overran its deadline.",
     &PyExc_TimeoutError},
    {TDM_EWORKER, "WorkerError", "TDM_EWORKER: a worker process died while running a batch.",
     NULL},
    {TDM_ECOMM, "CommError", "TDM_ECOMM: communication between ranks failed.", NULL},
};

int tdm_py_errors_init(PyObject *m)
{
    if (!Error) {
        Error = PyErr_NewExceptionWithDoc(
            "tandem.Error",
            "Base of tandem's errors: .code is the TDM_E* value, .status its name; the message "
            "is tdm_errmsg()'s text.",
            NULL, NULL);
        if (!Error)
            return -1;
        for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
            char qual[96];
            snprintf(qual, sizeof qual, "tandem.%s", defs[i].name);
            PyObject *bases = defs[i].base ? PyTuple_Pack(2, Error, *defs[i].base)
                                           : PyTuple_Pack(1, Error);
            if (!bases)
                return -1;
            PyObject *cls = PyErr_NewExceptionWithDoc(qual, defs[i].doc, bases, NULL);
            Py_DECREF(bases);
            if (!cls)
                return -1;
            by_code[-defs[i].code] = cls;
        }
    }
    if (PyModule_AddObjectRef(m, "Error", Error) < 0)
        return -1;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (PyModule_AddObjectRef(m, defs[i].name, by_code[-defs[i].code]) < 0)
            return -1;
    return 0;
}

static PyObject *raise_text(int rc, const char *text)
{
    PyObject *cls = (rc < 0 && rc > -64 && by_code[-rc]) ? by_code[-rc] : Error;
    PyObject *exc = PyObject_CallFunction(cls, "s", text);
    if (!exc)
        return NULL;
    PyObject *code = PyLong_FromLong(rc);
    PyObject *status = PyUnicode_FromString(tdm_status_name(rc));
    if (code && status && PyObject_SetAttrString(exc, "code", code) == 0 &&
        PyObject_SetAttrString(exc, "status", status) == 0)
        PyErr_SetObject(cls, exc);
    Py_XDECREF(code);
    Py_XDECREF(status);
    Py_DECREF(exc);
    return NULL;
}

PyObject *tdm_py_raise(int rc, const tdm_runtime *rt)
{
    const char *msg = tdm_errmsg(rt);
    if (!msg || !*msg)
        msg = tdm_strerror(rc);
    return raise_text(rc, msg);
}

PyObject *tdm_py_raise_msg(int rc, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return raise_text(rc, buf);
}
