/* SPDX-License-Identifier: MIT */
/* tandem — internal declarations shared by runtime/, backends/ and kernels/. Not API. */
#ifndef TANDEM_INTERNAL_H
#define TANDEM_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem.h"

#include "seam.h" /* errors, logging, time, row bytes: shared with libtandem-mpi */

#if defined(__GNUC__)
#define TDM__LIKELY(x) __builtin_expect(!!(x), 1)
#define TDM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define TDM__LIKELY(x) (x)
#define TDM__UNLIKELY(x) (x)
#endif

#define TDM__CACHELINE 64
#define TDM__ERRMSG_LEN 512
#define TDM__MAX_DEVICES 64

/* ---- errors (runtime/core/error.c; tdm__err, tdm__log, tdm__now_ns... are in seam.h) ---- */

/* Writes a formatted message into a caller's buffer (when msg is not NULL and len > 0) and
 * returns `code`: the error paths of functions that report through (msg, len) pairs. */
int tdm__msg(char *msg, size_t len, int code, const char *fmt, ...) TDM__PRINTF(4, 5);

/* ---- checked arithmetic ------------------------------------------------------------------ */
static inline bool tdm__mul_ovf(int64_t a, int64_t b, int64_t *r)
{
    return __builtin_mul_overflow(a, b, r);
}
static inline bool tdm__add_ovf(int64_t a, int64_t b, int64_t *r)
{
    return __builtin_add_overflow(a, b, r);
}

/* ---- tensors and storage (runtime/core/tensor.c, runtime/core/storage.c) --------------------------- */

typedef struct tdm__storage {
    atomic_long refs;
    tdm_runtime *rt;
    unsigned mem;     /* TDM_MEM_* flags it really has */
    void *base;       /* first byte of the data (64-byte aligned unless wrapped) */
    size_t bytes;     /* usable bytes */
    void *map_base;   /* what to munmap/free (NULL for wrapped) */
    size_t map_bytes; /* length of the mapping, for munmap / munlock */
    bool mmapped;     /* map_base came from mmap (so it is zero-filled when new); else malloc */
    bool in_arena;    /* a range of the runtime's shared arena (visible to worker processes) */
    bool arena_file;  /* in_arena, but a file mapped there (tdm__arena_map_file) */
    int fd;           /* a descriptor the storage owns (e.g. an imported tensor's), or -1 */
    /* Device residency (runtime/sched/residency.c), guarded by the runtime's dev_mu: a copy of the
     * whole storage on one device, and which side holds the newest bytes. */
    struct tdm__mirror *mirror;
    bool host_stale;                 /* the device copy is newer: read it back before host use */
    struct tdm__devslot *registered; /* the device it is registered with (pinned), or NULL */
    uint64_t fd_offset;              /* where map_base starts in fd */
} tdm__storage;

struct tdm_tensor {
    atomic_long refs;
    tdm__storage *storage;
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
    int64_t strides[TDM_MAX_DIMS]; /* in elements */
    int64_t offset;                /* in elements from storage->base */
};

/* A tensor object over storage `s`, taking over the caller's reference to it (NULL when out of
 * memory: the reference then stays the caller's). Counted in the runtime's live tensors. */
tdm_tensor *tdm__tensor_new(tdm__storage *s, tdm_dtype dtype, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t offset);

/* The tensor's first element in host memory, without the residency check of tdm_tensor_data(). */
static inline void *tdm__tensor_ptr(const tdm_tensor *t)
{
    return t->storage->base
               ? (char *)t->storage->base + t->offset * (int64_t)tdm_dtype_size(t->dtype)
               : NULL;
}

/* Element count of a shape with overflow check: 0 and *n, or TDM_EOVERFLOW / TDM_EINVAL.
 * A shape is refused with TDM_EOVERFLOW when the product of its dims (0 counted as 1)
 * overflows, even if a dim is 0, since its row-major strides would overflow. */
int tdm__shape_numel(int ndim, const int64_t *shape, int64_t *n);

/* ---- kernels (runtime/core/kernel_registry.c, kernels/builtin.c) ------------------------------ */

typedef struct tdm__kernel {
    tdm_kernel_def def; /* strings point into name_buf / source_copy */
    char name_buf[64];
    char *source_copy;
    bool builtin; /* one of the built-ins: their device programs are built once, shared */
} tdm__kernel;

/* Looks a kernel up; returns NULL if absent. The pointer stays valid until the runtime closes. */
const tdm__kernel *tdm__kernel_find(const tdm_runtime *rt, const char *name);
/* ---- backends (runtime/core/backend_table.c) -------------------------------------------------- */

/* One backend of the build. A NULL function means "not supported"; the core checks. */
typedef struct tdm__backend_ops {
    const char *name;
    tdm_backend_kind kind;
    int runs_kernels; /* 0: discovery only in this build */
    /* Device backends: the device layer (runtime/sched/device.h), NULL for CPU backends. */
    const struct tdm__dev_ops *dev;
    /* Finds devices: sets *devs (malloc'd array, owned by the runtime afterwards; NULL when
     * *n is 0), *n (0 is fine: no driver or no device is not an error) and a short note. */
    int (*probe)(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t note_len);
} tdm__backend_ops;

/* The backends compiled into this build (runtime/core/backend_table.c); NULL-terminated. */
extern const tdm__backend_ops *const tdm__backend_table[];

typedef struct tdm__backend_state {
    const tdm__backend_ops *ops; /* NULL: not built */
    bool enabled;
    bool probed;
    int n_devices;
    tdm_device_info *devices;
    char note[160];
} tdm__backend_state;

/* ---- the thread pool (backends/cpu_threads/pool.c) --------------------------------------- */

typedef struct tdm__pool tdm__pool;
struct tdm__job;
int tdm__pool_create(tdm_runtime *rt, int n_threads, tdm__pool **out);
void tdm__pool_destroy(tdm__pool *pool);
int tdm__pool_threads(tdm__pool *pool);
/* Starts one more worker (a device driver); its index is the next one. */
int tdm__pool_add_worker(tdm__pool *pool, int *index);
/* Makes a job visible to the workers. The job must stay valid until tdm__pool_detach(). */
void tdm__pool_submit(tdm__pool *pool, struct tdm__job *job);
/* Wakes workers because a job became runnable again (streaming slot freed). */
void tdm__pool_kick(tdm__pool *pool);
/* Like tdm__pool_kick, and offers every job again to the workers that declined it (what they
 * declined for may have changed: the devices opened). Called with the pool mutex held. */
void tdm__pool_reoffer(tdm__pool *pool);

/* ---- worker processes (backends/cpu_procs/) ------------------------------------------------ */

typedef struct tdm__procs tdm__procs;
/* Forks the fork server and `n` workers (call before the pool threads start). */
int tdm__procs_open(tdm_runtime *rt, int n, tdm__procs **out);
/* Stops every worker and the fork server, and reaps them. NULL is a no-op. */
void tdm__procs_close(tdm__procs *p);
/* Number of worker processes (0 for NULL). */
int tdm__procs_count(const tdm__procs *p);
/* True once the fork server is gone or stopped: no batch can run in a process any more. */
bool tdm__procs_broken(const tdm__procs *p);
/* Writes why into buf; returns TDM_EWORKER. */
int tdm__procs_why_broken(tdm__procs *p, char *buf, size_t len);

/* Creates dir and its parents (mode 0700) and checks it is a readable, writable directory.
 * 0, TDM_ENOMEM or TDM_EIO (message "who: ..."). runtime/io/cache.c. */
int tdm__mkdir_p(tdm_runtime *rt, const char *who, const char *dir);

/* The scheduler's stored model, opened on first use (NULL only when out of memory). */
struct tdm__costmodel *tdm__runtime_costmodel(tdm_runtime *rt);

typedef struct tdm__arena tdm__arena; /* runtime/core/arena.c (core/core.h) */

/* ---- the runtime ------------------------------------------------------------------------- */

/* ring slots the runtime keeps, in all (sched/ring_cache.c) */
#define TDM__RINGS_MAX 16
#define TDM__RINGS_BYTES ((size_t)64 << 20)

struct tdm_runtime {
    tdm_config cfg; /* copy; cfg.backends points at backends_buf */
    char backends_buf[128];
    unsigned debug;
    int threads;

    pthread_mutex_t mu; /* guards the kernel registry and the error copy */
    tdm__kernel **kernels;
    int n_kernels, cap_kernels;
    /* ring slots of finished streaming maps, kept for the next (sched/ring_cache.c) */
    pthread_mutex_t ring_mu;
    struct tdm_tensor *rings[TDM__RINGS_MAX];
    int n_rings;
    size_t ring_bytes;

    tdm__backend_state backends[TDM_BACKEND_KIND_COUNT]; /* indexed by tdm_backend_kind */
    pthread_mutex_t probe_mu; /* serialises the lazy probe of discovery-only backends */
    atomic_int probed;        /* 1 once they have been probed */

    tdm__pool *pool;
    tdm__arena *arena;                /* every TDM_MEM_SHARED tensor lives here */
    tdm__procs *procs;                /* worker processes, NULL when config.procs is 0 */
    /* Opened device backends' devices (runtime/sched/devices.c): NULL until opened, then
     * published once, whole (atomic: a map running on the CPU may see them arrive). */
    struct tdm__devices *_Atomic devices;
    pthread_mutex_t dev_mu;           /* guards opening them */
    /* A background open (tdm__devices_open_async): 0 none, 1 being started, 2 running or
     * done (dev_bg_thread to join), 3 joined. */
    atomic_int dev_bg;
    pthread_t dev_bg_thread;
    atomic_int dev_opening; /* 1 while the background open runs (a map's CPU threads leave it
                             * a core: see tdm__jsched_want) */
    /* What the CPU threads needed (ns, estimated) for the maps that left the devices closed as
     * too short to pay for their set-up: the devices open once that and a map's own come to
     * the bar (tdm__device_open_bar, runtime/sched/job_sched.h). */
    _Atomic long long closed_cpu_ns;
    bool gpu_nodes;                   /* a GPU's device node is there (tdm__gpu_nodes, at open) */
    struct tdm__trace *trace;         /* NULL unless tracing */
    struct tdm__costmodel *costmodel; /* opened on first use (rt->mu), saved at close */
    char sched_model_dir[1024];       /* copy of cfg.sched_model_dir ("" = default) */
    bool sched_model_set;

    atomic_long live_tensors;   /* tensors created and not yet released */
    atomic_long jobs_in_flight; /* jobs submitted and not yet freed */
    atomic_ullong shm_bytes;    /* shared bytes held */
    uint64_t shm_limit;         /* 0 = none */
    unsigned fork_gen;          /* tdm__fork_gen() at open: differs in a child forked since */
};

/* Counts forks of this process image (a pthread_atfork child handler bumps it in the child):
 * a runtime opened before a fork is unusable in the child (no pool threads, the worker
 * processes are the parent's). runtime/core/runtime.c. */
unsigned tdm__fork_gen(void);
/* TDM_EFORKED (message "fn: ...") when called in a child forked after rt was opened, else 0. */
int tdm__check_fork(tdm_runtime *rt, const char *fn);

/* The ring slots of finished streaming maps, kept by the runtime for the next map of the same
 * shapes (ring_cache.c): at most TDM__RINGS_MAX tensors and TDM__RINGS_BYTES, private host
 * memory only; thread-safe. take: a kept slot of exactly that dtype and shape, now the
 * caller's reference (NULL: none). give: keeps the caller's reference to a slot nothing else
 * holds, or releases it. drop: releases them all (tdm_runtime_close, before it counts the live
 * tensors). */
void tdm__rings_init(tdm_runtime *rt);
tdm_tensor *tdm__ring_take(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape);
void tdm__ring_give(tdm_runtime *rt, tdm_tensor *t);
void tdm__rings_drop(tdm_runtime *rt);
void tdm__rings_destroy(tdm_runtime *rt);

#endif
