/* tandem — a job: one map or parallel_for in flight. Shared by runtime/map.c (creation,
 * validation, results) and backends/cpu_threads/pool.c (execution). Not API. */
#ifndef TANDEM_JOB_H
#define TANDEM_JOB_H

#include "internal.h"

/* Per-worker figures of a job. Written only by that worker, except `progress`, which the
 * progress thread reads while the job runs; padded so workers never share a cache line. */
typedef struct tdm__wstat {
    _Alignas(TDM__CACHELINE) atomic_llong progress; /* items reported done */
    int64_t items;
    int64_t batches;
    uint64_t busy_ns;
    int64_t bs_min, bs_max;
} tdm__wstat;

/* A finished batch waiting to be streamed to the consumer. */
typedef struct tdm__done {
    int64_t batch, begin, end;
    int status, worker, slot;
} tdm__done;

typedef enum { TDM__JOB_MAP, TDM__JOB_PFOR } tdm__job_kind;

struct tdm_task {
    struct tdm__job *job;
    int worker;
    int slot;
    int64_t batch;
    int64_t reported; /* items reported through tdm_task_progress() */
};

typedef struct tdm__job {
    tdm_runtime *rt;
    tdm__job_kind kind;
    char what[64];

    /* the work */
    tdm_range_fn fn;           /* PFOR */
    const tdm__kernel *kernel; /* MAP */
    int n_in, n_out;
    tdm_tensor *tin[16], *tout[16]; /* retained for the job's life */
    uint8_t *in_base[16], *out_base[16];
    int64_t in_row_bytes[16], out_row_bytes[16];
    int64_t in_row_elems[16], out_row_elems[16];
    void *params; /* private copy */
    size_t params_size;
    int64_t n_items;
    int64_t fixed_bs; /* 0 = auto */
    int64_t max_bs;   /* cap on any batch (ring slot rows), INT64_MAX if none */
    tdm_map_opts opts;

    /* claiming (lock-free) */
    _Alignas(TDM__CACHELINE) atomic_llong cursor; /* next unclaimed item */
    atomic_llong next_batch;
    atomic_int stop; /* 1: error stop, 2: cancelled */
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
    atomic_llong failed_batches;
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

    /* progress */
    pthread_t progress_thread;
    bool progress_running;

    /* figures */
    int n_workers;
    tdm__wstat *ws; /* [n_workers] */
    uint64_t t_start, t_end;
} tdm__job;

/* The pool's side: run batches of `job` as worker `w` until none can be claimed. Called with
 * no lock held. */
void tdm__job_run(tdm__job *job, int w);
/* true once no new batch can start (all claimed, or stopped). */
static inline bool tdm__job_exhausted(tdm__job *job)
{
    return atomic_load_explicit(&job->stop, memory_order_relaxed) != 0 ||
           atomic_load_explicit(&job->cursor, memory_order_relaxed) >= job->n_items;
}
/* Streaming: true when a worker could claim (a slot is free). Pool mutex held. */
static inline bool tdm__job_runnable(tdm__job *job)
{
    return !tdm__job_exhausted(job) && (!job->streaming || job->n_free > 0);
}

/* Waits for the job to finish (dropping unconsumed streamed results), stops its progress
 * display, fills the report; returns the job's status with its message recorded. */
int tdm__job_wait(tdm__job *job, tdm_report *report);
/* Items finished so far (sum of the workers' progress counters). */
int64_t tdm__job_items_done(tdm__job *job);
/* Frees a finished job and everything it holds (runtime/map.c). */
void tdm__job_destroy(tdm__job *job);

/* Pool functions that need the job layout. */
pthread_mutex_t *tdm__pool_mutex(tdm__pool *pool);
/* Marks the job finished if nothing runs it anymore and it can make no progress; pool mutex
 * held. Returns true if it is (now) finished. */
bool tdm__pool_try_finish_locked(tdm__pool *pool, tdm__job *job);

#endif
