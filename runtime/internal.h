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

#if defined(__GNUC__)
#define TDM__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define TDM__LIKELY(x) __builtin_expect(!!(x), 1)
#define TDM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define TDM__PRINTF(a, b)
#define TDM__LIKELY(x) (x)
#define TDM__UNLIKELY(x) (x)
#endif

#define TDM__CACHELINE 64
#define TDM__ERRMSG_LEN 512
#define TDM__MAX_DEVICES 64

/* ---- errors and logging (runtime/error.c) ------------------------------------------------ */

/* Records a formatted message as the last error of `rt` for the calling thread (rt may be NULL)
 * and returns `code`, so error paths read `return tdm__err(rt, TDM_EINVAL, "...", ...);`. */
int tdm__err(const tdm_runtime *rt, int code, const char *fmt, ...) TDM__PRINTF(3, 4);
/* snprintf at buf + at (when at < len; NULL/0 otherwise, so the length still counts what
 * did not fit): returns at + the formatted length, as a *_format() call returns it
 * (runtime/report.c). */
size_t tdm__appendf(char *buf, size_t len, size_t at, const char *fmt, ...) TDM__PRINTF(4, 5);
/* Clears the calling thread's last message for rt (called at the start of public entries that
 * succeed, so a stale message is not mistaken for a new one). */
void tdm__err_clear(const tdm_runtime *rt);
/* Writes a formatted message into a caller's buffer (when msg is not NULL and len > 0) and
 * returns `code`: the error paths of functions that report through (msg, len) pairs. */
int tdm__msg(char *msg, size_t len, int code, const char *fmt, ...) TDM__PRINTF(4, 5);
/* Emits a debug line when `flag` is in the runtime's debug flags (to its log_fn or stderr). */
void tdm__log(const tdm_runtime *rt, unsigned flag, const char *fmt, ...) TDM__PRINTF(3, 4);

/* ---- time (runtime/clock.c) -------------------------------------------------------------- */
uint64_t tdm__now_ns(void); /* CLOCK_MONOTONIC */

/* ---- checked arithmetic ------------------------------------------------------------------ */
static inline bool tdm__mul_ovf(int64_t a, int64_t b, int64_t *r)
{
    return __builtin_mul_overflow(a, b, r);
}
static inline bool tdm__add_ovf(int64_t a, int64_t b, int64_t *r)
{
    return __builtin_add_overflow(a, b, r);
}

/* ---- tensors and storage (runtime/tensor.c, runtime/storage.c) --------------------------- */

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
    /* Device residency (runtime/residency.c), guarded by the runtime's dev_mu: a copy of the
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

/* Bytes of one row (dims 1..ndim-1) of a contiguous tensor of this dtype and shape; the
 * element size for ndim <= 1. */
static inline size_t tdm__row_bytes(tdm_dtype dtype, int ndim, const int64_t *shape)
{
    size_t b = tdm_dtype_size(dtype);
    for (int i = 1; i < ndim; i++)
        b *= (size_t)shape[i];
    return b;
}

/* The tensor's first element in host memory, without the residency check of tdm_tensor_data(). */
static inline void *tdm__tensor_ptr(const tdm_tensor *t)
{
    return t->storage->base
               ? (char *)t->storage->base + t->offset * (int64_t)tdm_dtype_size(t->dtype)
               : NULL;
}

/* Residency (runtime/residency.c). Brings a storage's bytes back from its device copy if that
 * is newer; with `for_write`, also forgets the device copy (the host is about to change).
 * 0 or an error (message set). Thread-safe. */
int tdm__storage_sync_host(tdm__storage *s, bool for_write);
/* Frees the storage's device copy (at release). */
void tdm__storage_drop_mirror(tdm__storage *s);

/* Element count of a shape with overflow check: 0 and *n, or TDM_EOVERFLOW / TDM_EINVAL.
 * A shape is refused with TDM_EOVERFLOW when the product of its dims (0 counted as 1)
 * overflows, even if a dim is 0, since its row-major strides would overflow. */
int tdm__shape_numel(int ndim, const int64_t *shape, int64_t *n);

/* Storage (runtime/storage.c). `who` names the public function for error messages.
 * Creates storage of `bytes` as `mem` asks (TDM_MEM_SHARED / _PINNED / _STRICT, already
 * validated); s->mem says what it really got. 0 and *out with refcount 1, or an error code
 * (message set) and *out NULL. */
int tdm__storage_create(tdm_runtime *rt, size_t bytes, unsigned mem, const char *who,
                        tdm__storage **out);
/* Storage over user memory (may be NULL when bytes is 0); never freed by tandem. */
int tdm__storage_wrap(tdm_runtime *rt, void *data, size_t bytes, const char *who,
                      tdm__storage **out);
/* ---- mapped files (runtime/storage_file.c; used by runtime/io_*.c) ---- */
/* Storage over bytes [offset, offset + bytes) of the open file `fd`, mapped with `prot`
 * (PROT_READ, or PROT_READ | PROT_WRITE) and `flags` (MAP_SHARED, or MAP_PRIVATE for
 * copy-on-write). The mapping starts at the page below `offset`; s->base points at `offset`.
 * s->mem is TDM_MEM_MAPPED, s->mmapped is true; nothing is accounted against shm_limit. On
 * success the storage owns `fd`: for MAP_SHARED it stays open in s->fd (a worker process may
 * map it and sees the same bytes), for MAP_PRIVATE it is closed and s->fd is -1 (private
 * pages cannot be shared: a backend must copy). On error the caller still owns fd. */
int tdm__storage_map_file(tdm_runtime *rt, int fd, uint64_t offset, size_t bytes, int prot,
                          int flags, const char *who, tdm__storage **out);
/* A tensor over `s`, taking over the caller's reference on success, with `strides` (elements;
 * NULL = row-major) and element 0 at s->base (aligned to the dtype's size). 0 and *out, or an
 * error code (message set; s not released). */
int tdm__tensor_over_storage(tdm__storage *s, tdm_dtype dtype, int ndim, const int64_t *shape,
                             const int64_t *strides, const char *who, tdm_tensor **out);
void tdm__storage_retain(tdm__storage *s);
/* Drops a reference; the last one unlocks, unmaps/frees, closes and unaccounts. NULL no-op. */
void tdm__storage_release(tdm__storage *s);
/* Moves the bytes into a new shared mapping inside the same object (every view sees it);
 * no-op when already shared; on error s is unchanged. Not thread-safe for one storage. */
int tdm__storage_make_shared(tdm__storage *s, const char *who);

/* Memory the system can still give (MemAvailable, or less under a memory cgroup), and which of
 * the two it is; false when unknown (runtime/storage.c). */
bool tdm__memory_available(uint64_t *bytes, const char **source);

/* ---- the shared arena (runtime/arena.c) --------------------------------------------------- */

typedef struct tdm__arena tdm__arena;
/* Creates the memfd and maps it over a large reserved range (sparse: costs nothing). */
int tdm__arena_open(tdm_runtime *rt, uint64_t min_size, tdm__arena **out);
void tdm__arena_close(tdm__arena *a);
/* Takes `len` bytes (page multiple), with its pages reserved when `reserve` (else the caller
 * fills the range with tdm__arena_write at once): 0, TDM_ENOSPC or TDM_ESYS. */
int tdm__arena_alloc(tdm_runtime *rt, tdm__arena *a, uint64_t len, bool reserve, const char *who,
                     void **out);
/* Writes n bytes at dst (inside the arena) through the file: no page faults here; a page the
 * system cannot give is TDM_ENOSPC. */
int tdm__arena_write(tdm_runtime *rt, tdm__arena *a, void *dst, const void *src, uint64_t n,
                     const char *who);
/* A small block for internal use (reused from a cache when one of that size is free, zeroed),
 * given back with tdm__arena_block_put. */
int tdm__arena_block_get(tdm_runtime *rt, tdm__arena *a, uint64_t len, const char *who, void **out);
void tdm__arena_block_put(tdm__arena *a, void *p, uint64_t len);
/* Returns a range (its pages go back to the system). */
void tdm__arena_free(tdm__arena *a, void *p, uint64_t len);
/* The arena's reserved size and its largest free range (the biggest shared tensor it can still
 * place). Thread-safe. */
void tdm__arena_space(tdm__arena *a, uint64_t *size, uint64_t *largest_free);
int tdm__arena_fd(const tdm__arena *a);
/* Maps `len` bytes of file `fd` from file_off (page aligned) MAP_SHARED inside the arena's
 * address range, so worker processes can map it at the same address (they do, before their
 * next batch: tdm__arena_worker_sync). TDM_ENOSPC when the arena has no room or no free
 * entry (the caller then maps the file elsewhere). The caller keeps fd open while mapped. */
int tdm__arena_map_file(tdm_runtime *rt, tdm__arena *a, int fd, uint64_t file_off, uint64_t len,
                        int prot, const char *who, void **out);
/* Undoes tdm__arena_map_file (the arena's memory goes back over the range). */
void tdm__arena_unmap_file(tdm__arena *a, void *p, uint64_t len);
/* In a worker process: brings its file mappings up to date with the parent's. 0 or TDM_EIO
 * (detail says why). */
int tdm__arena_worker_sync(tdm__arena *a, char *detail, size_t dlen);
bool tdm__arena_contains(const tdm__arena *a, const void *p);
uint64_t tdm__arena_offset(const tdm__arena *a, const void *p);

/* ---- kernels (runtime/kernel_registry.c, kernels/builtin.c) ------------------------------ */

typedef struct tdm__kernel {
    tdm_kernel_def def; /* strings point into name_buf / source_copy */
    char name_buf[64];
    char *source_copy;
    bool builtin; /* one of the built-ins: their device programs are built once, shared */
} tdm__kernel;

/* The device launch description of a built-in kernel (kernels/builtin_dev.c), NULL if none. */
tdm_kernel_dev_fn tdm__builtin_dev_fn(const char *name);
/* Marks a registered kernel as built-in (kernel_registry.c). */
void tdm__kernel_mark_builtin(tdm_runtime *rt, const char *name);

/* Looks a kernel up; returns NULL if absent. The pointer stays valid until the runtime closes. */
const tdm__kernel *tdm__kernel_find(const tdm_runtime *rt, const char *name);
/* Registers the built-in kernels (kernels/builtin.c); called by tdm_runtime_open. */
int tdm__register_builtin_kernels(tdm_runtime *rt);
void tdm__kernel_registry_free(tdm_runtime *rt);

/* ---- backends (runtime/backend_table.c) -------------------------------------------------- */

/* One backend of the build. A NULL function means "not supported"; the core checks. */
typedef struct tdm__backend_ops {
    const char *name;
    tdm_backend_kind kind;
    int runs_kernels; /* 0: discovery only in this build */
    /* Device backends: the device layer (runtime/device.h), NULL for CPU backends. */
    const struct tdm__dev_ops *dev;
    /* Finds devices: sets *devs (malloc'd array, owned by the runtime afterwards; NULL when
     * *n is 0), *n (0 is fine: no driver or no device is not an error) and a short note. */
    int (*probe)(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t note_len);
} tdm__backend_ops;

/* The backends compiled into this build (runtime/backend_table.c); NULL-terminated. */
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
int tdm__pool_threads(const tdm__pool *pool);
/* Starts one more worker (a device driver); its index is the next one. */
int tdm__pool_add_worker(tdm__pool *pool, int *index);
/* Makes a job visible to the workers. The job must stay valid until tdm__pool_detach(). */
void tdm__pool_submit(tdm__pool *pool, struct tdm__job *job);
/* Wakes workers because a job became runnable again (streaming slot freed). */
void tdm__pool_kick(tdm__pool *pool);

/* ---- worker processes (backends/cpu_procs/) ------------------------------------------------ */

typedef struct tdm__procs tdm__procs;
/* Forks the fork server and `n` workers (call before the pool threads start). */
int tdm__procs_open(tdm_runtime *rt, int n, tdm__procs **out);
/* Stops every worker and the fork server, and reaps them. NULL is a no-op. */
void tdm__procs_close(tdm__procs *p);
/* Number of worker processes (0 for NULL). */
int tdm__procs_count(const tdm__procs *p);

/* ---- devices (runtime/devices.c) ----------------------------------------------------------- */

/* Opens every device of the enabled device backends once (lazily: the first map that may run
 * on a device), each with a driver thread in the pool. Returns the number of devices (0 is
 * fine) or an error. Thread-safe. */
int tdm__devices_ensure(tdm_runtime *rt);
/* Closes them (the pool must be stopped first). */
void tdm__devices_close(tdm_runtime *rt);
/* Number of devices opened so far, and the pool worker index of the first driver. */
int tdm__devices_count(const tdm_runtime *rt);
/* Devices not lost to a device error. */
int tdm__devices_live(const tdm_runtime *rt);
/* ... of one backend kind (kind < 0: any). */
int tdm__devices_live_kind(const tdm_runtime *rt, int kind);

/* Creates dir and its parents (mode 0700) and checks it is a readable, writable directory.
 * 0, TDM_ENOMEM or TDM_EIO (message "who: ..."). runtime/cache.c. */
int tdm__mkdir_p(tdm_runtime *rt, const char *who, const char *dir);

/* The scheduler's stored model, opened on first use (NULL only when out of memory). */
struct tdm__costmodel *tdm__runtime_costmodel(tdm_runtime *rt);

/* ---- tracing (runtime/trace.c) ----------------------------------------------------------------
 */

/* Device queues get lanes of their own: lane = (TDM__TRACE_DEVICE_BASE + worker) *
 * TDM__TRACE_QUEUES + queue, far above the CPU workers' lanes (= worker index). */
#define TDM__TRACE_QUEUES 8
#define TDM__TRACE_DEVICE_BASE 128
int tdm__trace_open(tdm_runtime *rt, const char *path);
/* Records one batch (no-op when tracing is off). */
void tdm__trace_span(tdm_runtime *rt, int lane, const char *name, int64_t batch, int64_t begin,
                     int64_t end, int status, uint64_t t_start, uint64_t t_end);
/* Writes the file (if tracing) and frees the trace. */
void tdm__trace_close(tdm_runtime *rt);
/* The lane of a rank's distributed chunks (runtime/dist_run.c). */
#define TDM__TRACE_DIST_LANE 100000
/* The merged trace of a distributed run (runtime/dist.c): the trace's file path and clock
 * origin (NULL / 0 when not tracing); the events as trace-event objects of process `pid`,
 * comma-separated (*first: none written yet), their times shifted by shift_ns; a whole file
 * written atomically (temporary + rename) around `body`; freeing the trace without writing it. */
const char *tdm__trace_path(const tdm_runtime *rt);
uint64_t tdm__trace_t0(const tdm_runtime *rt);
void tdm__trace_write_events(tdm_runtime *rt, FILE *f, int pid, const char *pname,
                             int64_t shift_ns, bool *first);
int tdm__trace_write_file(tdm_runtime *rt, const char *path, void (*body)(void *arg, FILE *f),
                          void *arg);
void tdm__trace_free(tdm_runtime *rt);

/* ---- the runtime ------------------------------------------------------------------------- */

struct tdm_runtime {
    tdm_config cfg; /* copy; cfg.backends points at backends_buf */
    char backends_buf[128];
    unsigned debug;
    int threads;

    pthread_mutex_t mu; /* guards the kernel registry and the error copy */
    tdm__kernel **kernels;
    int n_kernels, cap_kernels;

    tdm__backend_state backends[TDM_BACKEND_KIND_COUNT]; /* indexed by tdm_backend_kind */
    pthread_mutex_t probe_mu; /* serialises the lazy probe of discovery-only backends */
    atomic_int probed;        /* 1 once they have been probed */

    tdm__pool *pool;
    tdm__arena *arena;            /* every TDM_MEM_SHARED tensor lives here */
    tdm__procs *procs;            /* worker processes, NULL when config.procs is 0 */
    struct tdm__devices *devices; /* opened device backends' devices (runtime/devices.c) */
    pthread_mutex_t dev_mu;       /* guards opening them */
    struct tdm__trace *trace;     /* NULL unless tracing */
    struct tdm__costmodel *costmodel; /* opened on first use (rt->mu), saved at close */
    char sched_model_dir[1024];       /* copy of cfg.sched_model_dir ("" = default) */
    bool sched_model_set;

    atomic_long live_tensors;   /* tensors created and not yet released */
    atomic_long jobs_in_flight; /* jobs submitted and not yet freed */
    atomic_ullong shm_bytes;    /* shared bytes held */
    uint64_t shm_limit;         /* 0 = none */
};

/* Shared-memory accounting against cfg.shm_limit: 0 or TDM_ENOSPC. */
int tdm__shm_reserve(tdm_runtime *rt, size_t bytes);
void tdm__shm_unreserve(tdm_runtime *rt, size_t bytes);

#endif
