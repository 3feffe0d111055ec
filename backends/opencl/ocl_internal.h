/* tandem — OpenCL backend, shared between its files. Not API. */
#ifndef TANDEM_OCL_INTERNAL_H
#define TANDEM_OCL_INTERNAL_H

#include <CL/cl.h>

/* The symbolic name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or "CL_ERROR" for a code
 * outside the table (the caller prints the number next to it). Static string; thread-safe. */
const char *tdm__cl_errname(cl_int code);

#endif
