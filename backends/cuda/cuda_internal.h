/* tandem — CUDA backend internals shared by backends/cuda/, the core's later integration steps,
 * tests/test_cuda.c and bench/bench_cuda.c. Not API.
 *
 * Everything here is linked from the static CUDA runtime (cudart_static) only; NVRTC is loaded
 * with dlopen("libnvrtc.so.13") on first use; the driver library is never linked (a program
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
 * 1 when libnvrtc.so.13 loads and has every function used; else 0 and why. Thread-safe. */
int tdm__cuda_nvrtc_available(char *why, size_t len);
/* "13.0" style version of the loaded NVRTC in *major / *minor; TDM_ENOTFOUND without NVRTC. */
int tdm__cuda_nvrtc_version(int *major, int *minor);
/* Compiles `source` (the single-source dialect or plain CUDA C++, no includes) named `name` (for
 * the log) for compute capability `arch` (e.g. 90): to a CUBIN for sm_<arch> when `cubin` is 1,
 * else to PTX for compute_<arch> (NUL-terminated). 0 and *code (malloc'd, the caller frees) and
 * *code_len; TDM_EKERNEL with the NVRTC log in detail when the source does not compile or NVRTC
 * does not know the arch; TDM_ENOTFOUND when NVRTC cannot be loaded; TDM_ENOMEM. */
int tdm__cuda_nvrtc_compile(const char *source, const char *name, int arch, int cubin, char **code,
                            size_t *code_len, char *detail, size_t len);

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

#endif
