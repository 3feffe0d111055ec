/* SPDX-License-Identifier: MIT */
/* tandem — CUDA backend internals shared by backends/cuda/, the core's later integration steps,
 * tests/test_cuda.c and bench/bench_cuda.c. Not API.
 *
 * Everything here is linked from the static CUDA runtime (cudart_static) only; NVRTC is loaded
 * with dlopen on first use (by soname, see below); the driver library is never linked (a program
 * linked to -lcuda does not start where no driver is installed). Kernels built at run time are
 * loaded with the runtime API's cudaLibraryLoadData (CUDA >= 12.0), so no driver-API call is
 * needed at all.
 */
#ifndef TANDEM_CUDA_INTERNAL_H
#define TANDEM_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sched/device.h"

/* The numbers of CUDA devices the static runtime sees: >= 0, and 0 with the reason in `why`
 * (no driver, no device) when there is none. Never fails. */
int tdm__cuda_device_count(char *why, size_t len);

/* ---- pinned host memory (cudaHostRegister) --------------------------------------------------
 * Page-locks [p, p + n) and registers it with every CUDA device (portable), so copies from and
 * to it are DMA and asynchronous. Returns 0, TDM_EINVAL (NULL or empty), TDM_ENODEV (no driver
 * or no device), TDM_EEXIST (already registered, entirely or partly), TDM_ENOMEM (the driver
 * could not lock it) or TDM_ESYS. Unregister with the same pointer p. Thread-safe. */
int tdm__cuda_host_register(void *p, size_t n);
void tdm__cuda_host_unregister(void *p);

/* ---- NVRTC (dlopen'ed) ---------------------------------------------------------------------
 * NVRTC is looked for by soname, first the one of the toolkit the library was built with, then
 * the others (tdm__cuda_nvrtc_candidates), or only as TDM_NVRTC_LIBRARY says (a path or a
 * soname) when that is set.
 * 1 when one loads and has every function used; else 0. `why` says which loaded ("NVRTC 13.0
 * (libnvrtc.so.13)") or what was tried. Thread-safe. */
int tdm__cuda_nvrtc_available(char *why, size_t len);
/* The sonames tried, in order, for a library built with CUDA `built_major`: at most max in out
 * (static strings); returns how many. Pure; thread-safe. */
int tdm__cuda_nvrtc_candidates(int built_major, const char **out, int max);
/* "13.0" style version of the loaded NVRTC in *major / *minor; TDM_ENOTFOUND without NVRTC. */
int tdm__cuda_nvrtc_version(int *major, int *minor);
/* Compiles `source` (the single-source dialect or plain CUDA C++, no includes) named `name` (for
 * the log) for compute capability `arch` (e.g. 90): to a CUBIN for sm_<arch> when `cubin` is 1,
 * else to PTX for compute_<arch> (NUL-terminated). 0 and *code (malloc'd, the caller frees) and
 * *code_len; TDM_EKERNEL with the NVRTC log in detail when the source does not compile or NVRTC
 * does not know the arch; TDM_ENOTFOUND when NVRTC cannot be loaded; TDM_ENOMEM. */
int tdm__cuda_nvrtc_compile(const char *source, const char *name, int arch, int cubin, char **code,
                            size_t *code_len, char *detail, size_t len);

/* ---- the built-ins' images (builtins.c) ------------------------------------------------------
 * The architectures the built-ins were compiled for: CMAKE_CUDA_ARCHITECTURES, comma-separated
 * ("80-real,86-real,89-real,90-real,90-virtual"). Static string. */
const char *tdm__cuda_archs_built(void);
enum {
    TDM__CUDA_BUILTIN_SASS = 1, /* a SASS image for the device's architecture */
    TDM__CUDA_BUILTIN_PTX,      /* PTX, JIT-compiled by the driver */
    TDM__CUDA_BUILTIN_NVRTC,    /* no image: the built-in source compiled with NVRTC */
    TDM__CUDA_BUILTIN_NONE      /* no image and no NVRTC: built-in maps fail (TDM_EKERNEL) */
};
/* Which image of a build for `archs` a device of compute capability `arch` (major * 10 + minor)
 * loads: TDM__CUDA_BUILTIN_SASS (*image: the sm_ it runs), _PTX (*image: the compute_ the driver
 * JIT-compiles) or, with neither, _NVRTC (*image 0). Pure; thread-safe. */
int tdm__cuda_builtin_image(const char *archs, int arch, int *image);
/* "SASS", "PTX JIT", "NVRTC", "none". */
const char *tdm__cuda_builtin_path_name(int path);

/* ---- device internals (for tests and benchmarks) ------------------------------------------- */
typedef struct tdm__cuda_pool_stats {
    uint64_t reserved_bytes; /* held from cudaMalloc: live + cached */
    uint64_t cached_bytes;   /* freed, kept for reuse */
    uint64_t live_bytes;     /* handed out (size classes, not requested bytes) */
    uint64_t cap_bytes;      /* 0 = no cap */
    uint64_t n_cuda_malloc;  /* cudaMalloc calls that succeeded */
    uint64_t n_reused;       /* allocations served from the cache */
    uint64_t n_trims;        /* times the cache was emptied to make room */
} tdm__cuda_pool_stats;

void tdm__cuda_pool_stats_get(tdm__dev *d, tdm__cuda_pool_stats *out);
/* Sets the device-memory cap (bytes, 0 = none); the cache is trimmed to fit when it can. */
void tdm__cuda_set_mem_cap(tdm__dev *d, uint64_t cap);
/* The device pointer of a buffer (its first byte). */
void *tdm__cuda_dbuf_ptr(const tdm__dbuf *b);
/* The CUDA device index and compute capability (major * 10 + minor) of an open device. */
int tdm__cuda_dev_index(const tdm__dev *d);
int tdm__cuda_dev_arch(const tdm__dev *d);
/* TDM__CUDA_BUILTIN_*: how the built-ins run on an open device. */
int tdm__cuda_dev_builtin_path(const tdm__dev *d);

#endif
