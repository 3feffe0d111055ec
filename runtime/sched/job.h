/* SPDX-License-Identifier: MIT */
/* tandem — a job: one map or parallel_for in flight. Shared by runtime/sched/map.c (creation,
 * validation, results) and backends/cpu_threads/pool.c (execution). Not API. */
#ifndef TANDEM_JOB_H
#define TANDEM_JOB_H

#include "internal.h"
#include "sched/costmodel.h"

/* Per-worker figures of a job. Written only by that worker, except `progress`, which the
 * progress thread reads while the job runs; padded so workers never share a cache line. */
typedef struct tdm__wstat {
    _Alignas(TDM__CACHELINE) atomic_llong progress; /* items reported done */
    int64_t items;
    int64_t batches;
    uint64_t busy_ns;
    int64_t bs_min, bs_max;
    int64_t bytes;   /* bytes this worker moved to and from a device */
    double tpi;      /* its last estimate of ns per item (auto batching), 0 if none */
    /* A device driver in a job without a scheduler (the devices alone): its time per item
     * and fixed cost per batch over its batches (groups of its queues' completions, as the
     * scheduler measures them) and their time in all, for the stored model
     * (tdm__job_destroy); 0 when not learned. */
    double learn_tpi, learn_lat, learn_ns;
} tdm__wstat;

/* A finished batch waiting to be streamed to the consumer. */
typedef struct tdm__done {
    int64_t batch, begin, end;
    int status, worker, slot;
} tdm__done;

typedef enum { TDM__JOB_MAP, TDM__JOB_PFOR } tdm__job_kind;

/* Everything a batch needs in order to run, and nothing else. Pool threads read it; when the
 * job may run in worker processes it lives in the shared arena together with everything it
 * points to (parameter block, tensor descriptions, counters), at the same address in every
 * process, so a forked worker runs a batch from it exactly as a thread does. */
typedef struct tdm__jdesc {
    tdm__job_kind kind;
    int n_in, n_out;
    int n_workers;          /* size of ws[] */
    unsigned whole;         /* bit k: input k is given whole to every batch */
    unsigned shared_out;    /* bit k: output k is in the shared arena (memfd): prefaulted */
    tdm_range_fn fn;        /* PFOR */
    tdm_kernel_cpu_fn kcpu; /* MAP */
    const void *params;
    size_t params_size;
    uint8_t *in_base[16], *out_base[16];
    int64_t in_row_bytes[16], out_row_bytes[16];
    int64_t in_row_elems[16], out_row_elems[16];
    const tdm_tensor *tin[16], *tout[16];
    uint8_t **ring_base;       /* [slots * n_out] data of each ring slot's outputs, or NULL */
    const tdm_tensor **ring_t; /* [slots * n_out] their tensors */
    _Alignas(TDM__CACHELINE) atomic_int stop; /* 1: error stop, 2: cancelled */
    tdm__wstat *ws;                           /* [n_workers] */
} tdm__jdesc;

struct tdm_task {
    const tdm__jdesc *d;
    int worker;
    int slot;
    int64_t batch;
    int64_t reported; /* items reported through tdm_task_progress() */
};

/* Runs one batch from a descriptor (in a pool thread or a worker process). */
int tdm__run_batch(const tdm__jdesc *d, int64_t begin, int64_t end, tdm_task *task);

/* Which kinds of worker may run a job's batches. */
enum { TDM__ON_THREADS = 1, TDM__ON_PROCS = 2, TDM__ON_DEVICES = 4 };

/* A job's completions offer it again to the workers that declined it at most this often. */
#define TDM__REOFFER_NS 5000000u

typedef struct tdm__job {
    tdm_runtime *rt;
    char what[64];

    /* the work */
    const tdm__kernel *kernel;      /* MAP */
    char model_key[TDM__CM_KEY_LEN]; /* MAP: its key in the stored model (tdm__cm_map_key) */
    tdm_tensor *tin[16], *tout[16]; /* retained for the job's life */
    tdm__jdesc dl;                  /* built here during set-up */
    tdm__jdesc *d;                  /* the one workers read: &dl, or its copy in the arena */
    void *block;                    /* arena block holding *d and its data, or NULL */
    uint64_t block_bytes;
    void *params_heap;   /* private copy of the params when not in the arena */
    tdm__wstat *ws_heap; /* counters when not in the arena */
    void *ring_heap;     /* ring_base + ring_t arrays when not in the arena */
    unsigned on;         /* TDM__ON_* */
    int64_t n_items;
    int64_t fixed_bs; /* 0 = auto */
    int64_t max_bs;   /* cap on any batch (ring slot rows), INT64_MAX if none */
    tdm_map_opts opts;

    /* claiming (lock-free) */
    _Alignas(TDM__CACHELINE) atomic_llong cursor; /* next unclaimed item */
    atomic_llong next_batch;
    int n_eligible; /* workers that may claim (for the guided share) */
    _Alignas(TDM__CACHELINE) atomic_int first_error;

    /* guarded by the pool's mutex */
    int active;           /* workers inside the job */
    bool in_list;         /* visible to workers */
    bool finished;        /* no worker will touch it again */
    atomic_int done_flag; /* = finished, readable without the mutex (the waiter spins on it) */
    pthread_cond_t cv;    /* signalled (with the pool mutex) on finish and on each streamed batch */
    struct tdm__job *next;

    /* first error (set once through first_error) */
    int64_t err_batch, err_begin, err_end;
    int err_worker;
    char err_detail[256]; /* e.g. which worker process died and how */
    atomic_llong failed_batches;
    atomic_llong fallback_batches; /* device batches that ran on the host (no device memory) */
    int wait_status;
    bool wait_status_valid;

    /* streaming (guarded by the pool's mutex) */
    bool streaming;
    int max_in_flight;
    int *free_slots, n_free; /* stack of free slot ids */
    tdm__done *done;         /* finished, not yet returned; capacity max_in_flight */
    int n_done;
    int64_t next_begin;    /* ordered mode: the item the next result starts at */
    int held_slot;         /* slot of the result last returned, -1 if none */
    tdm_tensor **ring;     /* [max_in_flight * n_out] slot tensors (outputs NULL) */
    tdm_tensor *views[16]; /* views handed out by the last tdm_job_next */
    bool waited;

    /* progress: a thread of its own, or (progress_inline: a blocking map, whose caller waits
     * from the start) drawn by the thread that waits, in tdm__job_wait */
    pthread_t progress_thread;
    bool progress_running;
    bool progress_inline;
    void *progress_pg; /* the display's state while drawn inline (observe/progress.c) */

    /* figures */
    int n_workers; /* pool workers when the job was made: threads, process and device drivers */
    int n_threads; /* workers [0, n_threads) are threads, */
    int n_procs;   /* the next n_procs drive worker processes, the rest drive devices */

    /* devices */
    tdm_dev_launch launch;  /* how the kernel's entry point is launched */
    char dev_key[80];       /* program cache key: "builtin", or name + version */
    const char *dev_source; /* the kernel's dialect source */
    bool resident;          /* batches run on device copies of whole tensors (residency) */
    int only_worker;        /* >= 0: only this worker may run the job (the resident device) */
    bool devices_skipped;   /* AUTO left the devices closed: the stored model says they lose */
    bool lazy_devices;      /* devices still closed at creation may join (workers past the pool's
                             * kept for their drivers; see tdm__map_job_lazy_devices) */
    bool lazy_open_now;     /* ...and its first CPU decision opens them (the stored model, or a
                             * map of 1 GiB, asks: wants_devices in map.c) */
    atomic_llong bytes_to_device, bytes_from_device;
    tdm__wstat *ws; /* = d->ws */
    uint64_t t_start, t_end;

    /* called (pool mutex held) when the job finishes: it may only note it and signal */
    void (*on_finish)(void *arg);
    void *on_finish_arg;

    /* scheduling */
    struct tdm__jsched *sched; /* per-batch decisions (runtime/sched/job_sched.c), or NULL */
    bool capped;               /* its scheduler caps a kind's share (tdm__jsched_cap_left) */
    /* A worker that declines leaves the job (so the pool can give it another job: a worker
     * waiting inside one job for a lane busy in another could wait forever) and is not given
     * it again until one of its batches completes: declined_gen[w] == done_gen. A worker
     * asleep is woken for it by a completion at most every TDM__REOFFER_NS (job.c), or at
     * once by the scheduler (offer_again in job_sched.c) and when the job is exhausted. */
    _Alignas(TDM__CACHELINE) atomic_uint done_gen;
    atomic_int n_declined;
    _Atomic uint64_t reoffered_ns; /* when a completion last offered it to them (job.c) */
    atomic_int reoffers;           /* how many times completions did (TDM_DEBUG=sched) */
    unsigned *declined_gen; /* [n_workers], UINT_MAX: not declined */
    int dev_kind;              /* >= 0: only devices of this backend kind (named policy) */
} tdm__job;

/* The pool's side: run batches of `job` as worker `w` until none can be claimed. Called with
 * no lock held. */
void tdm__job_run(tdm__job *job, int w);
/* Whether the job ended well, for what it teaches the stored model: no batch failed and it
 * was neither stopped nor cancelled (its stop flag is in its descriptor: the shared arena's
 * copy when the job may run in worker processes). */
static inline bool tdm__job_whole(tdm__job *job)
{
    return atomic_load(&job->first_error) == 0 && job->d && atomic_load(&job->d->stop) == 0;
}
/* true once no new batch can start (all claimed, or stopped). */
static inline bool tdm__job_exhausted(tdm__job *job)
{
    return atomic_load_explicit(&job->d->stop, memory_order_relaxed) != 0 ||
           atomic_load_explicit(&job->cursor, memory_order_relaxed) >= job->n_items;
}
/* True when worker `w` could claim a batch (its kind may run the job, and for a streaming
 * job a slot is free). Pool mutex held. */
static inline unsigned tdm__worker_kind(const tdm__job *job, int w)
{
    return w < job->n_threads                  ? TDM__ON_THREADS
           : w < job->n_threads + job->n_procs ? TDM__ON_PROCS
                                               : TDM__ON_DEVICES;
}
/* Whether device driver w may take the job's batches: its device is of the kind the policy
 * names, and not lost (unless the job is bound to it). runtime/sched/job_device.c. */
bool tdm__job_device_ok(tdm__job *job, int w);
/* Whether worker w's kind may still take items of a job with share caps (job_sched.c): one
 * whose cap is used up is not offered the job, or it came back, declined and was offered it
 * again without end while the kind that could take the rest was kept in other jobs (an outside
 * test: 8 threads running maps with CPU 0.5 + OpenCL 0.5 at once hung). */
bool tdm__jsched_cap_left(const tdm__job *job, int w);
static inline bool tdm__job_runnable(tdm__job *job, int w)
{
    /* A driver started after the job was made has no counters in it. */
    unsigned kind = w < job->n_workers ? tdm__worker_kind(job, w) : 0u;
    return w < job->n_workers && (job->only_worker < 0 || w == job->only_worker) &&
           (job->on & kind) && !tdm__job_exhausted(job) && (!job->streaming || job->n_free > 0) &&
           (kind != TDM__ON_DEVICES || tdm__job_device_ok(job, w)) &&
           (!job->capped || tdm__jsched_cap_left(job, w)) &&
           (!job->declined_gen ||
            job->declined_gen[w] != atomic_load_explicit(&job->done_gen, memory_order_acquire));
}
/* Worker w declines the job for now (the scheduler's decision): it leaves, and is offered the
 * job again once a batch of it completes (woken for it at most every TDM__REOFFER_NS). */
void tdm__job_decline(tdm__job *job, int w);

/* Waits for the job to finish (dropping unconsumed streamed results), stops its progress
 * display, fills the report; returns the job's status with its message recorded. */
int tdm__job_wait(tdm__job *job, tdm_report *report);
/* The job's workers that took part: n_workers, less a lazy job's lanes kept for devices that
 * did not join it (not opened, or opened too late). Reports and progress bars show these. */
int tdm__job_workers(tdm__job *job);
/* Items finished so far (sum of the workers' progress counters). */
int64_t tdm__job_items_done(tdm__job *job);
/* Asynchronous map / parallel_for with a finish hook (may be NULL) set before the job is
 * submitted: the pipeline's way to hear of finished stages without polling, and the
 * distributed runtime's way to run a chunk. Unlike tdm_map_async() the job does not stream
 * (it may run on devices, and needs no consumer); `fn` names the caller in messages. Same
 * arguments and results as the public calls otherwise. */
int tdm__map_async_hook(tdm_runtime *rt, const char *fn, const char *kernel,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const void *params, size_t params_size, const tdm_map_opts *opts,
                        void (*hook)(void *), void *hook_arg, tdm__job **job);
int tdm__pfor_async_hook(tdm_runtime *rt, const char *name, int64_t n_items, tdm_range_fn fn,
                         const void *params, size_t params_size, const tdm_map_opts *opts,
                         void (*hook)(void *), void *hook_arg, tdm__job **job);
/* Frees a finished job and everything it holds (runtime/sched/map.c). */
void tdm__job_destroy(tdm__job *job);

/* Accounts a finished batch of worker w: counters, progress (the items the task did not report
 * itself), the first error, and for a streaming job the result record. */
void tdm__job_batch_done(tdm__job *job, int w, const tdm_task *task, int64_t begin, int64_t end,
                         int rc, const char *detail);
/* Claims up to `want` items (guided by what is left); false when none are left or it stopped. */
bool tdm__job_claim(tdm__job *job, int64_t want, int64_t *begin, int64_t *end);
/* Claims `want` items (fewer at the end), as the scheduler decided; false when none are left
 * or it stopped. */
bool tdm__job_claim_exact(tdm__job *job, int64_t want, int64_t *begin, int64_t *end);

/* Devices (runtime/sched/job_device.c): runs batches of `job` on the device driven by worker w,
 * pipelined over the device's queues, until none can be claimed. */
void tdm__job_run_device(tdm__job *job, int w);
/* How many of the device's queues its driver uses: the batches in flight at once, and in a
 * scheduled job the batches of one group measured together (the lane's estimate learns from
 * groups). */
int tdm__device_queues(const struct tdm__devslot *ds);

/* Worker processes (backends/cpu_procs/): runs one batch of `job` in worker process `k`
 * (retrying after a crash or a timeout as the job's options say); fills `detail` with what
 * happened to a process that died or hung. Called by the pool thread that drives process k. */
int tdm__procs_run_batch(tdm__job *job, int k, int64_t begin, int64_t end, tdm_task *task,
                         char *detail, size_t detail_len);

/* Pool functions that need the job layout. */
pthread_mutex_t *tdm__pool_mutex(tdm__pool *pool);
/* Marks the job finished if nothing runs it anymore and it can make no progress; pool mutex
 * held. Returns true if it is (now) finished. */
bool tdm__pool_try_finish_locked(tdm__pool *pool, tdm__job *job);

#endif
