/* SPDX-License-Identifier: MIT */
/* tandem — status codes.
 *
 * Every function of the library that can fail returns an int: 0 (TDM_OK) on success or one of
 * the negative TDM_E* codes below. One X-macro, TDM_STATUS_MAP, makes the enum, the names and
 * the descriptions, so they never drift apart. A runtime also keeps a detailed message of the
 * last error (tdm_errmsg() in tandem/runtime.h).
 */
#ifndef TANDEM_STATUS_H
#define TANDEM_STATUS_H

#include "tandem/export.h"

/* X(name, value, description) */
#define TDM_STATUS_MAP(X)                                                                          \
    X(OK, 0, "success")                                                                            \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(ENOSPC, -3, "shared memory exhausted or over its limit")                                     \
    X(EBUSY, -4, "work still in flight")                                                           \
    X(ENOTFOUND, -5, "no such kernel, backend or device")                                          \
    X(ENODEV, -6, "no enabled backend can run this kernel")                                        \
    X(EDTYPE, -7, "dtype mismatch")                                                                \
    X(ESHAPE, -8, "shape mismatch")                                                                \
    X(EOVERFLOW, -9, "size arithmetic overflows")                                                  \
    X(EKERNEL, -10, "a batch's function returned an error")                                        \
    X(ECANCELED, -11, "the job was cancelled")                                                     \
    X(EDONE, -12, "no more results")                                                               \
    X(ESYS, -13, "a system call failed")                                                           \
    X(EPERM, -14, "not permitted by the system (limit or privilege)")                              \
    X(ELAYOUT, -16, "tensor layout not supported here (not contiguous)")                           \
    X(EEXIST, -17, "already exists")                                                               \
    X(EIO, -18, "a file could not be opened, read or written")                                     \
    X(EFORMAT, -19, "not a valid file of the expected format (magic, header, truncation)")         \
    X(ECORRUPT, -20, "checksum mismatch: the data is corrupted")                                   \
    X(ETIMEDOUT, -30, "a batch overran its deadline (its worker was killed)")                      \
    X(EWORKER, -31, "a worker process died while running the batch")                               \
    X(ECOMM, -32, "communication between ranks failed (MPI)")                                      \
    X(EFORKED, -33, "the runtime was opened by the parent process: a forked child cannot use it")  \
    X(EDEVLOST, -34, "the device was lost (a driver error or a dead context)")

/** Status codes. TDM_OK is 0, every error is negative. */
typedef enum tdm_status {
#define TDM__STATUS_ENUM(name, value, desc) TDM_##name = (value),
    TDM_STATUS_MAP(TDM__STATUS_ENUM)
#undef TDM__STATUS_ENUM
} tdm_status;

TDM_BEGIN_DECLS

/** A one-line English description of a status code ("invalid argument"). Unknown codes give
 *  "unknown status". Returns a static string: never NULL, never to be freed. Thread-safe. */
TDM_EXTERN const char *tdm_strerror(int status);

/** The symbolic name of a status code ("TDM_EINVAL"); "TDM_UNKNOWN" for unknown codes.
 *  Returns a static string: never NULL, never to be freed. Thread-safe. */
TDM_EXTERN const char *tdm_status_name(int status);

TDM_END_DECLS

#endif
