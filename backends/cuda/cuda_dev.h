/* SPDX-License-Identifier: MIT */
/* tandem — CUDA backend, shared between its files (device.c: open/close, errors, finish, host
 * registration; copy.c: copies; pool.c: device memory; launch.c: kernels; nvrtc.c: NVRTC).
 * Not API; tests and benchmarks use cuda_internal.h. */
#ifndef TANDEM_CUDA_DEV_H
#define TANDEM_CUDA_DEV_H

#include <pthread.h>
#include <stdbool.h>

#include <cuda_runtime_api.h>

#include "cuda_internal.h"
#include "sched/device.h"

#define TDM__CUDA_QUEUES 3
#define TDM__CUDA_BLOCK 256
#define TDM__CUDA_BLOCKS_PER_SM 32
#define TDM__CUDA_GRID_CAP 65535u /* blocks per dimension of a 2-D launch (gridDim.y's limit) */
#define TDM__CUDA_STAGE_CHUNK ((size_t)4 << 20)
#define TDM__CUDA_STAGE_SLOTS 2
#define TDM__CUDA_MAX_ARGS 32
#define TDM__CUDA_MIN_CLASS ((size_t)512)
#define TDM__CUDA_N_CLASSES 256

#define TDM__CUDA_N_BUILTINS 21 /* entries of launch.c's table (checked there) */

/* ---- errors (device.c) ------------------------------------------------------------------------
 */

void tdm__cuda_set_detail(char *detail, size_t len, const char *fmt, ...) TDM__PRINTF(3, 4);
/* The TDM code of a CUDA error. */
int tdm__cuda_map_error(cudaError_t e);
/* Maps a failed call to a TDM code with "what: cudaErrorX (description)" in detail, and clears
 * the runtime's last error so a non-sticky one does not resurface on a later call. */
int tdm__cuda_fail(cudaError_t e, const char *what, char *detail, size_t len);

/* Whether e leaves the context dead (a kernel fault: every later call fails the same way) or
 * the device gone. */
bool tdm__cuda_error_is_sticky(cudaError_t e);
/* As tdm__cuda_fail, for a call on device d: an error that is not the call's own fault (sticky,
 * or any other driver failure) marks d lost and is TDM_EDEVLOST. */
int tdm__cuda_dev_fail(tdm__dev *d, cudaError_t e, const char *what, char *detail, size_t len);

#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return tdm__cuda_dev_fail(d, e_, what, detail, len);                                   \
    } while (0)

/* ---- device state ---------------------------------------------------------------------------- */

/* What a kernel's parameter list looks like, learned once with cudaFuncGetParamInfo. */
typedef struct kinfo {
    const void *fn; /* host stub, or a cudaKernel_t cast to a pointer */
    int n_params;   /* -1: not asked yet; -2: the driver cannot tell (no check) */
    uint16_t psize[TDM__CUDA_MAX_ARGS];
} kinfo;

typedef struct ukernel { /* an entry of a program built at run time */
    struct ukernel *next;
    char *name;
    kinfo ki;
} ukernel;

typedef struct program { /* a program built at run time, cached under its key */
    struct program *next;
    char *key;
    cudaLibrary_t lib; /* NULL when the build failed: then rc and log say why */
    int rc;
    char *log;
    ukernel *kernels;
} program;

struct tdm__dbuf {
    struct tdm__dbuf *next; /* on a free list */
    void *ptr;
    size_t bytes; /* requested */
    size_t cls_bytes;
    int cls;
    unsigned used_queues;             /* queues that enqueued work on it since it was handed out */
    unsigned pending;                 /* freed: queues whose event below must complete first */
    cudaEvent_t ev[TDM__CUDA_QUEUES]; /* created on first need */
};

typedef struct stage_slot {
    void *host;     /* pinned, TDM__CUDA_STAGE_CHUNK bytes */
    cudaEvent_t ev; /* recorded after the slot's last use on the stream */
    bool recorded;
} stage_slot;

/* A staged D2H chunk to copy out of its slot, by a host function in stream order. Kept on its
 * queue's list until the queue's finish() (or close()): after a fault the host function never
 * runs, so it cannot be what frees it. */
typedef struct copy_out {
    struct copy_out *next;
    void *dst;
    const void *src;
    size_t n;
} copy_out;

typedef struct queue {
    cudaStream_t stream;
    copy_out *outs; /* since the last finish() */
    stage_slot slot[TDM__CUDA_STAGE_SLOTS];
    int next_slot;
} queue;

struct tdm__dev {
    tdm_runtime *rt;
    int index;
    int arch; /* major * 10 + minor */
    int sms;
    uint64_t total_mem; /* cudaMemGetInfo's total at open */
    queue q[TDM__CUDA_QUEUES];

    pthread_mutex_t mu; /* the pool and the program cache */
    tdm__dbuf *free_list[TDM__CUDA_N_CLASSES];
    tdm__cuda_pool_stats st;

    kinfo builtin[TDM__CUDA_N_BUILTINS];
    int builtin_path; /* TDM__CUDA_BUILTIN_*: how the built-ins run here (found at open) */
    program *programs;
    tdm__devhealth health; /* lost once for good; TDM_DEVICE_FAULT injection */
};

/* cudaSetDevice(d->index), or the error (the device is then lost: TDM_EDEVLOST) (device.c). */
int tdm__cuda_set_device(tdm__dev *d, char *detail, size_t len);
/* TDM_EINVAL unless 0 <= q < TDM__CUDA_QUEUES (copy.c). */
int tdm__cuda_check_queue(const tdm__dev *d, int q, char *detail, size_t len);

/* ---- device memory (pool.c) ------------------------------------------------------------------ */
int tdm__cuda_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len);
void tdm__cuda_free(tdm__dev *d, tdm__dbuf *b);
/* Empties the cache (caller holds d->mu). */
void tdm__cuda_pool_trim(tdm__dev *d);
/* Gives back a large cache when the device is idle (tdm__dev_ops.idle). */
void tdm__cuda_pool_idle(tdm__dev *d);

/* ---- copies (copy.c) ------------------------------------------------------------------------- */
int tdm__cuda_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                    char *detail, size_t len);
int tdm__cuda_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                   char *detail, size_t len);

/* ---- the built-ins (builtins.c) -------------------------------------------------------------- */
/* Fills d->builtin with the built-ins' handles (at open). */
void tdm__cuda_builtins_init(tdm__dev *d);
/* Index of the built-in entry, or -1. */
int tdm__cuda_builtin_find(const char *entry);
/* At open (the device current): which path the built-ins take on d (d->builtin_path), found by
 * loading them; a line for the log in note. 0, or the error of a device that fails there. */
int tdm__cuda_builtins_check(tdm__dev *d, char *note, size_t len);

/* ---- kernels (launch.c) ---------------------------------------------------------------------- */
void tdm__cuda_program_free(program *p);
int tdm__cuda_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len);
int tdm__cuda_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                        const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                        size_t len);

/* ---- NVRTC (nvrtc.c) ------------------------------------------------------------------------- */
/* The arch to build for on a device of compute capability `arch` (see nvrtc.c); 0: none. NVRTC
 * must have been loaded (tdm__cuda_nvrtc_available). */
int tdm__cuda_nvrtc_pick_arch(int arch, int *cubin);

#endif
