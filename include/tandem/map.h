/* SPDX-License-Identifier: MIT */
/* tandem — batched map over tensor rows, parallel_for over items, and streaming jobs. */
#ifndef TANDEM_MAP_H
#define TANDEM_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/kernel.h"
#include "tandem/progress.h"
#include "tandem/report.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

/** Where batches may run.
 *
 *  AUTO (the default) places every batch of a map that several kinds of backend can run —
 *  CPU threads, worker processes, devices — on the one where it is expected to finish
 *  soonest: each worker learns its time per item from the batches it runs (a median, so one
 *  slow batch does not flip decisions), an uncalibrated one first runs a few exploration
 *  batches (1, 4, 16... items), and a free worker declines work that a faster one would
 *  finish sooner, so no slow device is left with the last batch. The learned times are kept
 *  per machine and kernel between runs (tdm_config.sched_model_dir), so a second run starts
 *  calibrated (except for a device stored as slower than the CPU threads by less than 3x
 *  from fewer than 32 batches: such a close call is measured again). TDM_DEBUG=sched logs
 *  each decision with its estimates; the run report gives each worker's estimated against
 *  measured time.
 *  AUTO uses devices for a map whose kernel has a device version when they are open (an
 *  earlier map opened them) or when opening them is likely to pay: the map moves at least
 *  16 MiB and the stored model says a device is more than 5% faster than the CPU threads
 *  together for the kernel (opening costs tens of milliseconds of a core), or the
 *  CPU threads need at least 1 s for it (100 ms when the machine has a GPU's device node:
 *  /dev/nvidiactl, /dev/kfd or a /dev/dri render node), counting what the runtime's earlier
 *  AUTO maps needed while they left the devices closed. A map that knows nothing of its
 *  kernel's CPU speed starts on the CPU threads and opens the devices in the background when
 *  its first batches show that much work; they join it. Never when the stored model already
 *  says no device is more than 5% faster than the CPU threads for that kernel (unless it is a
 *  close call to measure again: one unsettled, or passed over by 8 maps). One CPU budget: a
 *  device that
 *  computes on the host's cores (tdm_device_info.host_cpu, e.g. PoCL) shares them with the CPU
 *  threads, and so do worker processes when threads and processes together are more workers
 *  than the process's cores (its affinity mask): such sides take turns — each uncalibrated
 *  side is measured alone (a side other than the threads for at most about 2% of the CPU's
 *  time for the map, 3% for a host-CPU device that reads close to the threads' speed, the
 *  others left asleep
 *  meanwhile; a host-CPU device is judged on its largest batch), then
 *  only the fastest goes on (the others stand down; when the threads or the processes win
 *  with fewer workers than cores, the other CPU side keeps the cores left). Threads and
 *  processes that fit the cores together both run. With a fixed batch_size, AUTO still
 *  chooses where each batch runs. */
typedef enum tdm_policy {
    TDM_POLICY_AUTO = 0,    /**< the scheduler chooses per batch */
    TDM_POLICY_CPU = 1,     /**< CPU backends only (threads, processes) */
    TDM_POLICY_THREADS = 2, /**< the thread pool only */
    TDM_POLICY_PROCS = 3,   /**< worker processes only */
    TDM_POLICY_GPU = 4,     /**< device backends only */
    TDM_POLICY_OPENCL = 5,  /**< OpenCL devices only (a named backend) */
    TDM_POLICY_CUDA = 6,    /**< CUDA devices only (a named backend) */
    TDM_POLICY_ROUND_ROBIN = 7 /**< no model: equal batches (batch_size, or items / (16 x
                                *  workers)) dealt in turn to whichever worker — thread,
                                *  process, device — is free, whatever its speed (StarPU's
                                *  "eager"); a baseline to compare AUTO with */
} tdm_policy;

/** What a failing batch does to the run. */
typedef enum tdm_on_error {
    TDM_ON_ERROR_STOP = 0,    /**< no new batch starts; the call returns the batch's error */
    TDM_ON_ERROR_CONTINUE = 1 /**< the other batches run; the call returns the first error */
} tdm_on_error;

/** Order of a streaming job's results. */
typedef enum tdm_order {
    TDM_ORDER_SUBMISSION = 0, /**< batches come out in item order (joblib 'generator') */
    TDM_ORDER_COMPLETION = 1  /**< as they finish ('generator_unordered') */
} tdm_order;

#define TDM_MAP_OPTS_VERSION 1u

/** Options of a map / parallel_for. Start from TDM_MAP_OPTS_INIT; NULL opts = all defaults. */
typedef struct tdm_map_opts {
    uint32_t size;    /**< sizeof(tdm_map_opts) */
    uint32_t version; /**< TDM_MAP_OPTS_VERSION */
    tdm_policy policy;  /**< where batches may run (TDM_POLICY_AUTO: the scheduler decides) */
    int64_t batch_size; /**< items per batch; 0 = automatic */
    tdm_on_error on_error;      /**< stop at the first failed batch, or continue */
    tdm_progress_mode progress; /**< progress display (AUTO: only when TDM_PROGRESS asks) */
    tdm_progress_fn progress_fn; /**< with TDM_PROGRESS_CALLBACK */
    void *progress_user;         /**< passed to progress_fn */
    double progress_interval_s; /**< 0 = 0.1 s */
    const char *desc;           /**< label of the bar; NULL = kernel name */
    tdm_order order;            /**< streaming jobs only */
    int max_in_flight;          /**< streaming: batches started but not yet consumed by
                                 *  tdm_job_next(); 0 = 2 * workers; at most the job's items */
    double timeout_s;           /**< worker processes: a batch running longer than this has its
                                 *  process killed and fails with TDM_ETIMEDOUT (or is retried);
                                 *  0 = no deadline (a worker stopped by SIGSTOP then waits
                                 *  until it is continued) */
    int retries;                /**< worker processes: times a batch whose process died or timed
                                 *  out, or whose replacement process could not be started, runs
                                 *  again (on a fresh process) before it fails; 0 = never.
                                 *  At least once: a retried batch runs all its items again,
                                 *  also those the dead attempt had already run (writes must be
                                 *  idempotent); its progress is counted once. */
    int keep_on_device;         /**< policy GPU: leave the outputs in device memory (the host
                                 *  copy is fetched when tdm_tensor_data() or a CPU map needs it),
                                 *  so a chained map finds its inputs there and moves nothing */
    double share_cap[TDM_BACKEND_KIND_COUNT]; /**< AUTO: the largest fraction (0..1) of the items each backend
                                 *  kind (indexed by tdm_backend_kind) may run; 0 = no cap.
                                 *  The kinds that may run the map must together be allowed
                                 *  all of it (else TDM_EINVAL); caps that name a device kind,
                                 *  or leave the CPU kinds less than all of it, open the
                                 *  devices first if they are not open yet, so they count. */
    int no_cpu_fallback;        /**< devices: a batch whose device runs out of memory (at
                                 *  allocation, launch or completion) or is lost fails with
                                 *  TDM_ENOMEM / TDM_EDEVLOST instead of running again on the CPU;
                                 *  0 = it runs there when the kernel has a CPU implementation
                                 *  (counted in tdm_report.fallback_batches) */
} tdm_map_opts;

#define TDM_MAP_OPTS_INIT                                                                          \
    {                                                                                              \
        sizeof(tdm_map_opts), TDM_MAP_OPTS_VERSION, TDM_POLICY_AUTO, 0, TDM_ON_ERROR_STOP,         \
            TDM_PROGRESS_AUTO, NULL, NULL, 0.0, NULL, TDM_ORDER_SUBMISSION, 0, 0.0, 0, 0,          \
        {0}, 0                                                                                     \
    }

/** The context of one batch of a parallel_for, valid only during the call. */
typedef struct tdm_task tdm_task;

/** A parallel_for body: processes items [begin, end). `params` is the call's parameter block,
 *  copied by value for the run (so worker processes can read it). Returns 0 or a negative
 *  TDM_E* code (TDM_EKERNEL is the usual one) to fail the batch. */
typedef int (*tdm_range_fn)(const void *params, int64_t begin, int64_t end, tdm_task *task);

/** A running asynchronous map or parallel_for. */
typedef struct tdm_job tdm_job;

/** One finished batch, as a streaming job returns it. */
typedef struct tdm_batch_result {
    int64_t batch;          /**< batch index */
    int64_t begin;          /**< its first item */
    int64_t end;            /**< one past its last item */
    int status;             /**< 0, or the batch's error */
    int worker;             /**< the worker that ran it */
    int slot;               /**< its slot in [0, max_in_flight): see tdm_task_slot() */
    tdm_tensor *const *out; /**< for a map whose outputs were NULL: views of this batch's
                             *  rows in the job's ring buffers, valid until the next
                             *  tdm_job_next() on this job; NULL otherwise */
    int n_out;              /**< entries of out (0 when out is NULL) */
} tdm_batch_result;

TDM_BEGIN_DECLS

/** Fills *o with the defaults. Returns 0 or TDM_EINVAL. */
TDM_EXTERN int tdm_map_opts_init(tdm_map_opts *o);

/** Runs kernel `kernel` over the rows (dim 0) of the tensors and waits for it. All tensors must
 *  be contiguous and have the same number of rows (for a kernel with no inputs, the outputs
 *  give it). Outputs are written in place, each batch into its own rows. `params` (may be NULL
 *  when params_size is 0) is copied once for the run. `report` may be NULL; when given its
 *  `size` must be set (TDM_REPORT_INIT).
 *  Returns 0; TDM_EINVAL (NULL rt/kernel, bad counts, NULL tensor, bad opts, params size not
 *  the kernel's), TDM_ENOTFOUND (unknown kernel), TDM_ENODEV (no enabled backend implements it
 *  under the policy), TDM_EDTYPE / TDM_ESHAPE (arguments the kernel rejects, or row counts
 *  differ), TDM_ELAYOUT (a non-contiguous tensor), TDM_ENOMEM; or the first failing batch's
 *  code, with tdm_errmsg() naming the batch and its items. When validation fails nothing has
 *  been written. Thread-safe: several threads may run maps on one runtime at once. */
TDM_EXTERN int tdm_map(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs, int n_in,
                       tdm_tensor *const *outputs, int n_out, const void *params,
                       size_t params_size, const tdm_map_opts *opts, tdm_report *report);

/** Runs fn over items [0, n_items) in batches and waits (joblib's Parallel(delayed(f)(i) ...)
 *  in C). n_items may be 0 (nothing runs, returns 0). `params` is copied for the run;
 *  pointers inside it must stay valid for the run.
 *  Worker processes (policy PROCS only: AUTO keeps this form on threads): a batch runs in
 *  another process, which has its own copy of this process's memory as it was at
 *  tdm_runtime_open(). A pointer in `params` to memory allocated here (malloc, the stack, a
 *  global, a TDM_MEM_HOST tensor) points into the worker's private copy — or, for memory
 *  allocated after open, into nothing there: writes through it are lost (the call still
 *  returns 0) or crash the worker. Point only into TDM_MEM_SHARED tensors — or use
 *  tdm_parallel_for_tensors(), which hands each batch pointers that are valid
 *  wherever it runs. With TDM_DEBUG=map (or pool) each call checks the parameter block's
 *  pointer-sized values and logs those that point into this process's private writable memory.
 *  Returns 0; TDM_EINVAL (NULL rt/fn, negative n_items, params NULL with
 *  size > 0, bad opts), TDM_ENODEV (policy names no thread-capable backend), TDM_ENOMEM,
 *  TDM_EWORKER (policy PROCS and the worker processes are gone: their fork server died or was
 *  stopped; reopen the runtime), TDM_EFORKED (called in a child forked after open); or the
 *  first failing batch's code. Thread-safe. */
TDM_EXTERN int tdm_parallel_for(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn,
                                const void *params, size_t params_size, const tdm_map_opts *opts,
                                tdm_report *report);

/** Starts a map without waiting. Same arguments and validation as tdm_map(), except that
 *  `outputs` may be NULL (with n_out = the kernel's output count): the job then allocates
 *  max_in_flight ring slots of one batch each (the kernel must have an infer function) and
 *  each result of tdm_job_next() carries views of its batch's outputs, so memory stays flat
 *  however many rows there are. When the job is freed, the runtime keeps those slots (up to 16
 *  tensors and 64 MiB; private host memory only, so not when worker processes may run the
 *  map) for the next streaming map with slots of the same dtype and shape, which writes into
 *  them instead of new memory: a map streamed once an epoch faults its pages in once. A slot
 *  whose view the caller retained (tdm_tensor_retain()) is not reused; tdm_runtime_close()
 *  frees the rest. Under policy AUTO (and ROUND_ROBIN) a streamed map runs on the CPU
 *  workers only, and does not open the devices; policies GPU, OPENCL and CUDA stream it
 *  through a device. The caller owns *job and frees it with tdm_job_free().
 *  The tensors must stay alive until the job is freed. Thread-safe. */
TDM_EXTERN int tdm_map_async(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs,
                             int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                             size_t params_size, const tdm_map_opts *opts, tdm_job **job);

/** As tdm_map_async(), with the row count given by the caller: for a kernel whose rows no
 *  tensor carries (no inputs, or only inputs given whole, like "pi_leibniz" without its terms
 *  input) streaming into ring buffers (outputs NULL), `n_rows` items are mapped. When tensors
 *  do carry rows they must have n_rows of them. Returns as tdm_map_async(), plus TDM_EINVAL
 *  (n_rows negative) and TDM_ESHAPE (a tensor's rows differ from n_rows). Thread-safe. */
TDM_EXTERN int tdm_map_async_rows(tdm_runtime *rt, const char *kernel, int64_t n_rows,
                                  tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs,
                                  int n_out, const void *params, size_t params_size,
                                  const tdm_map_opts *opts, tdm_job **job);

/** tdm_parallel_for() over `n_tensors` (0..16) tensors the body reads and writes: each batch
 *  finds them through tdm_task_tensor_data(task, i) (and their shape through
 *  tdm_task_tensor(task, i)), pointers valid in whichever thread or worker process runs it.
 *  When every tensor is shared (TDM_MEM_SHARED, tdm_tensor_share()) AUTO may place batches in
 *  worker processes too; the body must then write only through these tensors. The tensors are
 *  retained for the call. Returns what tdm_parallel_for() does, and TDM_EINVAL for a NULL
 *  tensor, one of another runtime, n_tensors out of range, or policy PROCS with a tensor that
 *  is not shared. Thread-safe. */
TDM_EXTERN int tdm_parallel_for_tensors(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn,
                                        tdm_tensor *const *tensors, int n_tensors,
                                        const void *params, size_t params_size,
                                        const tdm_map_opts *opts, tdm_report *report);

/** Starts a parallel_for without waiting; see tdm_parallel_for() and tdm_map_async(). */
TDM_EXTERN int tdm_parallel_for_async(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn,
                                      const void *params, size_t params_size,
                                      const tdm_map_opts *opts, tdm_job **job);

/** Streams the next finished batch of a job into *r, blocking until one is ready, in the
 *  job's order. Consuming a batch frees its in-flight slot (the batch returned by the previous
 *  call is released now). Returns 0; TDM_EDONE when every batch has been returned (or, after a
 *  stop, when the batches that ran have been returned); TDM_EINVAL (NULL). A failed batch is
 *  returned with its status in r->status; the call itself still returns 0.
 *  Only one thread at a time may call it for a given job. */
TDM_EXTERN int tdm_job_next(tdm_job *job, tdm_batch_result *r);

/** Waits for the whole job (results not consumed by tdm_job_next() are dropped, which frees
 *  their slots) and fills `report` (may be NULL). Returns the job's status: 0, the first
 *  batch error, or TDM_ECANCELED. May be called once per job. */
TDM_EXTERN int tdm_job_wait(tdm_job *job, tdm_report *report);

/** Waits at most `timeout_s` seconds (0: does not wait) for the job to finish, without ending
 *  it: a caller that must do something now and then while a job runs (check for signals,
 *  draw progress) sleeps here instead of consuming every batch with tdm_job_next(). Returns 1
 *  when the job has finished (tdm_job_wait() then returns at once), 0 when the time ran out,
 *  TDM_EINVAL (NULL job, timeout negative or not a number). Like tdm_job_wait(), it drops the
 *  results tdm_job_next() has not returned yet (so that the job can go on): use one or the
 *  other on a job. May be called any number of times, also after tdm_job_wait(); one thread
 *  at a time per job, as tdm_job_next(). */
TDM_EXTERN int tdm_job_wait_for(tdm_job *job, double timeout_s);

/** Asks the job to stop: no new batch starts; running batches finish. Returns 0 or
 *  TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_job_cancel(tdm_job *job);

/** Waits for the job if still running (as tdm_job_wait() without a report), then frees it.
 *  NULL is a no-op. */
TDM_EXTERN void tdm_job_free(tdm_job *job);

/* The tdm_task_* accessors below read the `task` a parallel_for body receives; it is valid
 * only during that call. They take no lock and set no message, and each may be called from
 * the body's own thread at any point of the call. */

/** Inside a parallel_for body: the index of the worker running the batch, in the runtime's
 *  worker numbering: 0..tdm_runtime_threads(rt)-1 for the pool's threads, then
 *  tdm_runtime_threads(rt) + k for worker process k (tdm_config.procs). The same number as
 *  tdm_batch_result.worker; a body may use it to index per-worker scratch. task NULL gives
 *  -1. */
TDM_EXTERN int tdm_task_worker(const tdm_task *task);

/** Inside a parallel_for body of a streaming job (tdm_parallel_for_async()): the batch's
 *  in-flight slot, in [0, max_in_flight) (tdm_map_opts.max_in_flight, default 2 x workers).
 *  No two unconsumed batches share a slot, so a body may write its result into a user ring
 *  buffer at that slot and the consumer reads it from tdm_job_next() (tdm_batch_result.slot
 *  is the same number). -1 in a job that is not streaming (tdm_parallel_for()), and for task
 *  NULL. */
TDM_EXTERN int tdm_task_slot(const tdm_task *task);

/** Inside a body: the batch index, in [0, number of batches of the job); every batch gets its
 *  own. Indices are given as batches are claimed, so with several workers they need not
 *  follow item order. The same number as tdm_batch_result.batch and as the batch that
 *  tdm_errmsg() and tdm_report.first_error_batch name. task NULL gives -1. */
TDM_EXTERN int64_t tdm_task_batch(const tdm_task *task);

/** Inside a body: reports `n` more items done before the batch returns (for long batches, so
 *  the bar moves); the rest are counted when it returns. Never blocks. task NULL or n <= 0
 *  does nothing. */
TDM_EXTERN void tdm_task_progress(tdm_task *task, int64_t n);

/** Inside a tdm_parallel_for_tensors() body: element 0 of tensor i, valid in the process
 *  that runs the batch; NULL for i out of range, task NULL, or the other parallel_for forms.
 *  Nothing to free. */
TDM_EXTERN void *tdm_task_tensor_data(const tdm_task *task, int i);

/** Inside a tdm_parallel_for_tensors() body: a read-only description of tensor i (dtype,
 *  shape, strides through the tdm_tensor_* accessors; never retain or release it); NULL as
 *  for tdm_task_tensor_data(). */
TDM_EXTERN const tdm_tensor *tdm_task_tensor(const tdm_task *task, int i);

/** Inside a body: 1 if the job was cancelled or stopped by an error, so a long batch may
 *  return early (its return value is then ignored for the status); else 0. task NULL gives
 *  0. */
TDM_EXTERN int tdm_task_cancelled(const tdm_task *task);

TDM_END_DECLS

#endif
