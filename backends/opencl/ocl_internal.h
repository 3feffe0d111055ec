/* tandem — OpenCL backend, shared between its files. Not API. */
#ifndef TANDEM_OCL_INTERNAL_H
#define TANDEM_OCL_INTERNAL_H

#include <CL/cl.h>

/* The symbolic name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or "CL_ERROR" for a code
 * outside the table (the caller prints the number next to it). Static string; thread-safe. */
const char *tdm__cl_errname(cl_int code);

/* NULL once the ICD loader is loaded (backends/opencl/cl_dlopen.c: libOpenCL.so.1, or env
 * TDM_OPENCL_LIBRARY, loaded on first use), else why it could not be. Thread-safe. */
const char *tdm__cl_load_error(void);

#endif
