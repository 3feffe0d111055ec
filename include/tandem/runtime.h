/* SPDX-License-Identifier: MIT */
/* tandem — runtime: open/close, configuration, backends and devices, last-error message. */
#ifndef TANDEM_RUNTIME_H
#define TANDEM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"

/** An open runtime: the thread pool, the backends and devices found, the kernel registry.
 *  Opaque; created by tdm_runtime_open(), destroyed by tdm_runtime_close(). */
typedef struct tdm_runtime tdm_runtime;

/** Kinds of backend. The table of backends is fixed at build time; each may find zero devices
 *  at run time, which is never an error. */
typedef enum tdm_backend_kind {
    TDM_BACKEND_CPU_THREADS = 0, /**< the runtime's pthread pool (always present) */
    TDM_BACKEND_CPU_PROCS = 1,   /**< forked worker processes over shared memory */
    TDM_BACKEND_OPENCL = 2,      /**< OpenCL devices through the ICD loader */
    TDM_BACKEND_CUDA = 3,        /**< CUDA GPUs */
    TDM_BACKEND_SIM = 4,         /**< simulated devices on a virtual clock */
    TDM_BACKEND_KIND_COUNT
} tdm_backend_kind;

/** Debug flags (tdm_config.debug, or TDM_DEBUG=all|runtime|pool|map|sched, comma-separated). */
enum {
    TDM_DEBUG_RUNTIME = 1u << 0,
    TDM_DEBUG_POOL = 1u << 1,
    TDM_DEBUG_MAP = 1u << 2,
    TDM_DEBUG_SCHED = 1u << 3,
    TDM_DEBUG_ALL = 0xffffu
};

/** Receives the runtime's debug lines when debug flags are set. Called from any thread,
 *  possibly concurrently; `line` has no trailing newline and is valid only during the call. */
typedef void (*tdm_log_fn)(void *user, unsigned flag, const char *line);

#define TDM_CONFIG_VERSION 1u

/** A worker-process start hook (tdm_config.worker_start): called once in each worker process
 *  (tdm_config.procs), the first ones and every replacement, right after it is forked and
 *  before its first batch, with tdm_config.worker_start_arg and the worker's index k
 *  (0..procs-1, as tdm_task_worker() numbers it minus tdm_runtime_threads()). It runs on the
 *  worker's only thread, which later runs its batches; the process is a fork of the program as
 *  it was at tdm_runtime_open() (signal dispositions reset, see tdm_runtime_open()). Use it to
 *  re-initialise what a fork breaks: an embedded interpreter (CPython's PyOS_AfterFork_Child()
 *  and GIL), per-process seeds, thread pools. It must not call the runtime's functions (the
 *  worker has none of its threads). If it does not return (exit, a crash), the worker is lost
 *  as after a crash: tdm_runtime_open() fails with TDM_ESYS naming the worker when it sees
 *  the death, else the batches that need the worker fail with TDM_EWORKER (or are retried).
 *  Never called in the calling process nor in the fork server. Thread safety: the workers
 *  call it in parallel, each in its own process; within a worker nothing else runs then. */
typedef void (*tdm_worker_start_fn)(void *arg, int worker);

/** Runtime configuration. Start from TDM_CONFIG_INIT (or tdm_config_init()): every field then
 *  has a usable default, and `size`/`version` let later releases grow the struct without
 *  breaking callers built against this one. */
typedef struct tdm_config {
    uint32_t size;    /**< sizeof(tdm_config) as the caller compiled it */
    uint32_t version; /**< TDM_CONFIG_VERSION */
    int threads;      /**< CPU worker threads; 0 = one per online core. Env TDM_NUM_THREADS. */
    int procs;        /**< CPU worker processes (backends/cpu_procs), forked at open; 0 = none.
                       *  Env TDM_NUM_PROCS. Each gets OMP_NUM_THREADS=1 and the BLAS
                       *  equivalents (N with env TDM_PROC_THREADS=N; "keep" leaves the
                       *  environment as it is). */
    const char *backends; /**< comma list of backends to enable ("cpu,procs,opencl,cuda");
                           *  NULL = all that are built. Env TDM_BACKENDS. Copied at open. */
    unsigned debug;       /**< TDM_DEBUG_* flags; env TDM_DEBUG adds to them */
    tdm_log_fn log_fn;  /**< where debug lines go; NULL = stderr (only when debug flags are set) */
    void *log_user;     /**< passed to log_fn */
    uint64_t shm_limit; /**< cap on shared-memory bytes this runtime may hold; 0 = what the
                         *  system has. Exceeding it is TDM_ENOSPC at tensor creation. */
    int use_env;        /**< 1 (default): environment variables override the fields above */
    uint64_t device_mem_cap; /**< device memory tandem may hold per device, bytes; 0 = what the
                              *  device has. Beyond it a batch gets TDM_ENOMEM (and runs on the
                              *  CPU instead). Env TDM_DEVICE_MEM_CAP ("64M", "2G"). */
    const char *trace_path;  /**< write a Chrome trace-event file (Perfetto, chrome://tracing)
                              *  of every batch here when the runtime closes (and on
                              *  tdm_trace_flush()); NULL = no trace. Env TDM_TRACE. Copied. */
    const char *sched_model_dir; /**< where the scheduler keeps its learned times per item
                                  *  between runs (one file per machine); NULL =
                                  *  $XDG_CACHE_HOME/tandem (else ~/.cache/tandem); "off" =
                                  *  learn in memory only. Env TDM_SCHED_MODEL. Copied. */
    tdm_worker_start_fn worker_start; /**< called in each worker process after its fork, before
                                       *  its first batch (see tdm_worker_start_fn); NULL = none.
                                       *  Appended: a config built before it (smaller `size`)
                                       *  opens with no hook. */
    void *worker_start_arg;           /**< passed to worker_start; the worker reads its own copy
                                       *  of what it points to, as it was at open */
} tdm_config;

#define TDM_CONFIG_INIT                                                                            \
    {                                                                                              \
        sizeof(tdm_config), TDM_CONFIG_VERSION, 0, 0, NULL, 0u, NULL, NULL, 0u, 1, 0u, NULL, NULL, \
            NULL, NULL                                                                             \
    }

TDM_BEGIN_DECLS

/** Name of a backend kind ("cpu", "procs", "opencl", "cuda", "sim"); "unknown" otherwise.
 *  Static string. Thread-safe. */
TDM_EXTERN const char *tdm_backend_kind_name(tdm_backend_kind kind);

/** Fills *cfg with the defaults (same as TDM_CONFIG_INIT). Returns TDM_EINVAL if cfg is NULL. */
TDM_EXTERN int tdm_config_init(tdm_config *cfg);

/** Opens a runtime. `cfg` may be NULL for all defaults. The thread pool is started here and the
 *  backends are probed; a backend whose driver or device is missing contributes zero devices,
 *  which is not an error.
 *  Returns 0 and sets *out; TDM_EINVAL (out NULL, cfg->size too small or unknown version,
 *  negative counts, a malformed TDM_NUM_THREADS / TDM_BACKENDS value or an unknown backend
 *  name), TDM_ENOMEM, TDM_ESYS (thread creation failed; the shared arena cannot be reserved:
 *  the message names TDM_SHM_REGION_GB and the limit; with procs > 0, a worker process could
 *  not be started, or the kernel lacks pidfd_open, Linux < 5.3). On error *out is set to NULL
 *  and nothing is leaked. The caller owns the runtime and frees it with tdm_runtime_close().
 *
 *  Worker processes (cfg.procs > 0). Open flushes the program's stdio buffers (fflush(NULL))
 *  and forks a fork server, which forks the workers and, later, their replacements: each is
 *  a copy of the program as it was at open. In the server and the workers every signal
 *  disposition is reset to its default and the signal mask emptied, whatever the program set
 *  (SIGCHLD is never ignored there, so deaths are seen), except SIGINT, SIGQUIT, SIGTSTP,
 *  SIGTTIN and SIGTTOU, which they ignore: a Ctrl-C or Ctrl-Z at the terminal is the
 *  program's to handle; if it dies, its workers die with it. A body's exit() ends only its
 *  worker (reported as a failed batch): the program's atexit handlers do not run there. The
 *  runtime signals only its own processes (through pidfds; never kill() with a pid that could
 *  have been reused, never a process group). If the fork server dies or is stopped (SIGSTOP),
 *  the worker processes are lost for this runtime: every pending and later batch that needs
 *  them fails with TDM_EWORKER saying so (AUTO goes on with threads); reopen the runtime.
 *  Fork after open: a child forked from the program after open cannot use the runtime (it has
 *  none of its threads, and its shared memory and workers are the parent's). Its calls that
 *  would need them — maps, parallel_fors, job waits, shared tensors, close — return
 *  TDM_EFORKED (detected with pthread_atfork); open a new runtime in the child, or exec. */
TDM_EXTERN int tdm_runtime_open(tdm_runtime **out, const tdm_config *cfg);

/** Closes a runtime: stops the pool and frees everything it owns. Tensors created from it must
 *  have been released (a tensor still alive keeps the runtime's memory accounting alive: it
 *  is an error, TDM_EBUSY). Returns 0 (also for rt == NULL), or TDM_EBUSY if a job is still in
 *  flight or tensors are still alive; the runtime then stays open and usable; TDM_EFORKED in
 *  a child forked after open (nothing is freed there: the child's copy goes when it exits).
 *  A fork server that does not exit at once (stopped) is killed after 2 s.
 *  Must not be called concurrently with other calls on the same runtime. */
TDM_EXTERN int tdm_runtime_close(tdm_runtime *rt);

/** The detailed message of the last error that a call on `rt` returned to the calling thread
 *  (e.g. "tdm_map: input 1 has dtype f32, kernel exp_sinh expects f64 like input 0").
 *  Returns "" when there is none. The string is owned by the library and valid until the next
 *  call on `rt` from this thread. `rt` NULL gives the last message of a call that had no
 *  runtime to report to. Thread-safe. */
TDM_EXTERN const char *tdm_errmsg(const tdm_runtime *rt);

/** Number of CPU worker threads of the runtime's pool: >= 1 for an open runtime. rt NULL
 *  gives 0 (no pool), never a negative code, so the result can be used as a count as is.
 *  Thread-safe. */
TDM_EXTERN int tdm_runtime_threads(const tdm_runtime *rt);

/** The debug flags in force (config | TDM_DEBUG), TDM_DEBUG_* bits. rt NULL gives 0u (no
 *  flags). Thread-safe. */
TDM_EXTERN unsigned tdm_runtime_debug(const tdm_runtime *rt);

/** What one backend of the build's table looks like in this runtime. */
typedef struct tdm_backend_info {
    tdm_backend_kind kind; /**< which backend */
    const char *name; /**< static: "cpu", "procs", "opencl", "cuda", "sim" */
    int built;        /**< compiled into this library */
    int enabled;      /**< enabled by config / TDM_BACKENDS */
    int runs_kernels; /**< can execute batches in this build (0: discovery only) */
    int n_devices;    /**< devices found (0 when absent: not an error) */
    char note[160];   /**< why zero devices, or a short description */
} tdm_backend_info;

/** Number of entries of the backend table (same for every runtime of this build). */
TDM_EXTERN int tdm_backend_count(void);

/** Fills *info for backend table entry `index` (0 <= index < tdm_backend_count()).
 *  Returns 0, TDM_EINVAL (NULL rt/info) or TDM_ENOTFOUND (index out of range). Thread-safe. */
TDM_EXTERN int tdm_runtime_backend(const tdm_runtime *rt, int index, tdm_backend_info *info);

/** A device one of the backends found. */
typedef struct tdm_device_info {
    tdm_backend_kind kind; /**< its backend's kind */
    const char *backend; /**< static backend name */
    int index;           /**< index among the devices of its backend */
    char name[128];      /**< e.g. "CPU threads", "pthread-Intel(R) Xeon(R) ..." */
    char vendor[64];       /**< as the driver reports it ("host" for CPU threads) */
    int compute_units;     /**< cores, compute units or SMs */
    uint64_t memory_bytes; /**< device memory (host memory for CPU devices) */
    int pinned;            /**< device backends: page-locked (TDM_MEM_PINNED) host memory is
                            *  registered with the device so its copies are DMA (CUDA); 0 where
                            *  the driver copies from host pointers itself (OpenCL here) */
    int host_cpu;          /**< 1: the device computes on the host's CPU cores (an OpenCL CPU
                            *  device such as PoCL), so it shares them with the CPU threads:
                            *  AUTO runs a map on the faster of the two, not on both */
} tdm_device_info;

/** Number of devices of all enabled backends (the CPU pool counts as one device). Thread-safe.
 *  Returns the count (>= 1) or TDM_EINVAL for a NULL runtime. */
TDM_EXTERN int tdm_runtime_device_count(const tdm_runtime *rt);

/** Fills *info for device `index` (0 <= index < tdm_runtime_device_count(rt)). Returns 0,
 *  TDM_EINVAL (NULL argument) or TDM_ENOTFOUND (index out of range). Thread-safe. */
TDM_EXTERN int tdm_runtime_device(const tdm_runtime *rt, int index, tdm_device_info *info);

/** Measures the copy bandwidth between host memory (pageable) and device `index` (as numbered
 *  by tdm_runtime_device(); it must be an OpenCL or CUDA device) with `bytes`-sized transfers
 *  (0 = 64 MiB), the median of a few. Opens the devices if they are not open yet. Returns 0 and
 *  GB/s in *h2d and *d2h; TDM_EINVAL (NULL, bytes too large), TDM_ENOTFOUND (no such device or
 *  not a device backend), TDM_ENOMEM, or the device's error. Not to be called while a map runs
 *  on that device. */
TDM_EXTERN int tdm_device_bandwidth(tdm_runtime *rt, int index, uint64_t bytes, double *h2d,
                                    double *d2h);

/** Writes the trace collected so far (config.trace_path / TDM_TRACE) as a Chrome trace-event
 *  JSON file: one lane per CPU worker thread, worker process and device queue, one span per
 *  batch (device spans run from the batch's copy-in to its copy-out). The file is replaced
 *  atomically; the events stay, so a later flush or the close writes them again with more.
 *  Returns 0 (also when tracing is off), TDM_EINVAL (NULL), TDM_EIO (the file cannot be
 *  written). Thread-safe. */
TDM_EXTERN int tdm_trace_flush(tdm_runtime *rt);

/** Facts about the machine, for `tandem info` and for sizing runs. */
typedef struct tdm_system_info {
    int online_cores;                /**< sysconf(_SC_NPROCESSORS_ONLN) */
    int usable_cores;                /**< CPUs in this process's affinity mask */
    uint64_t memory_bytes;           /**< physical memory */
    uint64_t memory_available_bytes; /**< MemAvailable from /proc/meminfo (0 if unknown) */
    uint64_t shm_total_bytes;        /**< size of /dev/shm (0 if absent) */
    uint64_t shm_free_bytes;         /**< free space in /dev/shm */
    uint64_t memlock_limit_bytes;    /**< RLIMIT_MEMLOCK soft limit; UINT64_MAX = unlimited */
} tdm_system_info;

/** Fills *info. Returns 0 or TDM_EINVAL (NULL). Never fails on a missing /dev/shm (zeros).
 *  Thread-safe. */
TDM_EXTERN int tdm_system_info_get(tdm_system_info *info);

/** What shared tensors (TDM_MEM_SHARED, tdm_tensor_share()) of one runtime may still take, and
 *  which bound decides it. Shared tensors are pages of the runtime's memfd arena: they come
 *  from memory and are charged to the process's memory cgroup; /dev/shm (tdm_system_info's
 *  shm_* fields) does not bound them. A snapshot, not a reservation: other processes may take
 *  the memory in the meantime. */
typedef struct tdm_shm_info {
    uint64_t allowed_bytes;       /**< the largest shared tensor a creation can get now (a page
                                   *  multiple): the least of the bounds below that apply */
    const char *bound;            /**< static string naming that bound: "memory available",
                                   *  "memory cgroup", "shm_limit" or "arena address space" */
    uint64_t mem_available_bytes; /**< MemAvailable from /proc/meminfo; 0 = unknown (then
                                   *  neither it nor the cgroup is checked at creation) */
    uint64_t cgroup_free_bytes;   /**< room left under this process's memory cgroup limit;
                                   *  UINT64_MAX = no limit found */
    uint64_t limit_bytes;         /**< the runtime's cap, config.shm_limit; 0 = none */
    uint64_t held_bytes;          /**< shared bytes its tensors hold now (counted against the
                                   *  cap; imported and memory-mapped tensors are not) */
    uint64_t arena_bytes;         /**< address space reserved for the arena at open
                                   *  (TDM_SHM_REGION_GB, else twice physical memory within
                                   *  16 GiB..1 TiB, at least shm_limit); costs no memory */
    uint64_t arena_free_bytes;    /**< its largest free range: the biggest tensor it can place */
} tdm_shm_info;

/** Fills *info for `rt` from the same checks that shared-tensor creation makes (so a request
 *  of at most allowed_bytes passes them, unless memory is taken meanwhile). Reads /proc and
 *  /sys/fs/cgroup. Returns 0, or TDM_EINVAL (rt or info NULL; *info is then zeroed when not
 *  NULL). Nothing to free. Thread-safe. */
TDM_EXTERN int tdm_runtime_shm_info(const tdm_runtime *rt, tdm_shm_info *info);

TDM_END_DECLS

#endif
