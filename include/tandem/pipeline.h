/* SPDX-License-Identifier: MIT */
/* tandem — pipelines: stages chained batch by batch (a DataLoader / DALI pipeline in C).
 *
 * A pipeline runs n_items rows through stages in batches of batch_rows rows. Stage s+1 of
 * batch k starts as soon as stage s of batch k is done — not when the whole stage is — and
 * each stage of each batch is a map of its own, placed by the scheduler (threads, worker
 * processes, devices, as the stage's policy allows). At most `depth` batches are in flight;
 * every stage writes into a ring of `depth` reusable slot tensors allocated at open (shared
 * memory when worker processes may run a stage, page-locked too when a device is open), so the
 * steady state allocates no batch memory. The consumer takes finished batches in order with
 * tdm_pipeline_next().
 *
 * Rows fail one by one: a stage function may mark a row failed (a corrupt file) with a reason;
 * a row whose sub-batch died with its worker process, timed out or returned an error is
 * failed too. Later stages skip failed rows, the batch is delivered with a per-row mask and
 * the reasons, and the pipeline goes on. */
#ifndef TANDEM_PIPELINE_H
#define TANDEM_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/map.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

typedef struct tdm_pipeline tdm_pipeline;

/** What a stage function sees for one pipeline batch. Plain data that lives in shared memory
 *  when the stage runs in worker processes: everything it points to is valid there. */
typedef struct tdm_stage_io {
    int64_t batch;         /**< pipeline batch index (0, 1, ...) */
    int64_t item0;         /**< index of the batch's first row among the pipeline's items */
    int64_t rows;          /**< rows in this batch (the last batch may be short) */
    const uint8_t *in;     /**< the previous stage's output rows of this batch (row r at
                            *  in + r * in_row_bytes); NULL for the first stage */
    int64_t in_row_bytes;  /**< bytes of one input row (0 for the first stage) */
    uint8_t *out;          /**< this stage's output rows of this batch */
    int64_t out_row_bytes; /**< bytes of one output row */
    const void *params;    /**< the stage's parameter block (copied at open) */
    uint64_t seed;         /**< the pipeline's seed mixed with the batch index: the same batch
                            *  gets the same randomness whichever backend runs it */
    char stage[48];        /**< the stage's name */
    uint8_t *row_state;    /**< internal (per-row state): use tdm_stage_fail_row() */
    char *row_reason;      /**< internal */
} tdm_stage_io;

/** A host stage: processes rows [begin, end) of io->batch (batch-relative), reading io->in and
 *  writing io->out. Returns 0, or a negative TDM_E* code that fails rows [begin, end). Runs
 *  on pool threads or in worker processes (then it must only touch what io points to, shared
 *  memory and its own locals). */
typedef int (*tdm_stage_fn)(const tdm_stage_io *io, int64_t begin, int64_t end, tdm_task *task);

/** Inside a stage function: marks batch-relative `row` failed with a short reason (copied
 *  after the stage's name, at most 255 bytes in all); later stages skip it and the consumer sees it in the batch's mask. Safe in
 *  worker processes and from several threads (each row has its own slot). */
TDM_EXTERN void tdm_stage_fail_row(const tdm_stage_io *io, int64_t row, const char *reason);

/** One stage. Exactly one of `fn` (a host function) and `kernel` (a registered kernel with one
 *  input — the previous stage's rows — and one output, which may run on devices) is given. */
typedef struct tdm_stage {
    const char *name;       /**< label in reports and errors (NULL: the kernel's name or
                             *  "stage N") */
    tdm_stage_fn fn;        /**< host stage, or NULL */
    const char *kernel;     /**< kernel stage, or NULL; not for the first stage */
    const void *params;     /**< copied at open (may be NULL when params_size is 0) */
    size_t params_size;     /**< bytes of params (0: none) */
    tdm_dtype dtype;        /**< output element type */
    int row_ndim;           /**< dims of one output row (0..TDM_MAX_DIMS-1) */
    int64_t row_shape[TDM_MAX_DIMS - 1]; /**< shape of one output row (row_ndim entries) */
    tdm_policy policy;      /**< where its batches may run (AUTO: the scheduler decides) */
    int64_t sub_batch;      /**< rows per scheduled sub-batch; 0 = automatic */
} tdm_stage;

#define TDM_PIPELINE_OPTS_VERSION 1u

/** Options of a pipeline. Start from TDM_PIPELINE_OPTS_INIT. */
typedef struct tdm_pipeline_opts {
    uint32_t size;      /**< sizeof(tdm_pipeline_opts) */
    uint32_t version;   /**< TDM_PIPELINE_OPTS_VERSION */
    int64_t batch_rows; /**< rows per batch; 0 = 64 */
    int depth;          /**< batches in flight (ring slots per stage); 0 = 4 */
    uint64_t seed;      /**< base of every batch's io->seed */
    double timeout_s;   /**< worker processes: a sub-batch running longer fails its rows */
    int retries;        /**< worker processes: reruns of a sub-batch whose process died */
} tdm_pipeline_opts;

#define TDM_PIPELINE_OPTS_INIT                                                                     \
    {                                                                                              \
        sizeof(tdm_pipeline_opts), TDM_PIPELINE_OPTS_VERSION, 0, 0, 0, 0.0, 0                      \
    }

/** A finished batch, as tdm_pipeline_next() returns it. */
typedef struct tdm_pipeline_batch {
    int64_t batch;         /**< batch index */
    int64_t item0;         /**< its first row among the pipeline's items */
    int64_t rows;          /**< rows in it */
    tdm_tensor *out;       /**< view of the last stage's slot: rows x row_shape; owned by the
                            *  pipeline, valid until the next tdm_pipeline_next() or close */
    int64_t failed_rows;   /**< rows that failed in some stage (their bytes are unspecified) */
    const uint8_t *row_ok; /**< [rows]: 1 ok, 0 failed; valid as long as `out` */
} tdm_pipeline_batch;

TDM_BEGIN_DECLS

/** Fills *o with the defaults. Returns 0 or TDM_EINVAL. */
TDM_EXTERN int tdm_pipeline_opts_init(tdm_pipeline_opts *o);

/** Opens a pipeline of n_stages (1..16) stages over n_items (>= 0) rows and starts it: the
 *  first batches begin at once. Returns 0 and sets *out (the caller closes it with
 *  tdm_pipeline_close()); TDM_EINVAL (NULL, bad counts or options, a stage with both or
 *  neither of fn and kernel, a kernel stage first, a bad row shape or dtype, params NULL with
 *  a size), TDM_ENOTFOUND (unknown kernel), TDM_ENODEV (no backend for a stage's policy),
 *  TDM_ENOSPC / TDM_ENOMEM (slot memory). A kernel stage's input and output shapes are checked
 *  against the kernel when its first batch runs (an error then fails that batch's rows).
 *  Thread-safe with respect to other calls on the runtime. */
TDM_EXTERN int tdm_pipeline_open(tdm_runtime *rt, const tdm_stage *stages, int n_stages,
                                 int64_t n_items, const tdm_pipeline_opts *opts,
                                 tdm_pipeline **out);

/** Waits for the next batch in order and fills *b; the batch returned by the previous call is
 *  released first (its slots go back to the ring). Returns 0; TDM_EDONE when every batch has
 *  been returned; TDM_EINVAL (NULL). A batch whose rows failed is still returned, with
 *  b->failed_rows and b->row_ok telling which. One consumer thread per pipeline. */
TDM_EXTERN int tdm_pipeline_next(tdm_pipeline *p, tdm_pipeline_batch *b);

/** Why batch-relative `row` of the batch last returned failed ("" when it did not, or out of
 *  range): the stage's name and the reason it gave, or the worker's fate. Valid until the next
 *  tdm_pipeline_next(). */
TDM_EXTERN const char *tdm_pipeline_row_reason(const tdm_pipeline *p, int64_t row);

/** Totals so far. */
typedef struct tdm_pipeline_stats {
    int64_t batches_done; /**< batches delivered */
    int64_t rows_done;    /**< rows delivered (ok or failed) */
    int64_t rows_failed;  /**< of those, rows that failed */
    int64_t stage_maps;   /**< stage maps run (batches x stages) */
    int64_t slot_bytes;   /**< bytes of ring slots, allocated once at open */
} tdm_pipeline_stats;

/** Fills *s. Returns 0 or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_pipeline_stats_get(const tdm_pipeline *p, tdm_pipeline_stats *s);

/** Stops the pipeline (batches in flight are cancelled and waited for) and frees it with its
 *  slots. NULL is a no-op. Returns 0. */
TDM_EXTERN int tdm_pipeline_close(tdm_pipeline *p);

TDM_END_DECLS

#endif
