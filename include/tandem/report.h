/* SPDX-License-Identifier: MIT */
/* tandem — run reports: what ran where, for how long. */
#ifndef TANDEM_REPORT_H
#define TANDEM_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "tandem/export.h"
#include "tandem/runtime.h"

/** Workers listed one by one in a report; more are folded into the last row. */
#define TDM_REPORT_MAX_WORKERS 256

/** Figures of one worker (a thread of the pool, later a process or a device stream). */
typedef struct tdm_report_worker {
    tdm_backend_kind kind; /**< the worker's backend */
    int index;       /**< worker index within its backend */
    int64_t items;   /**< items (rows) of its batches that succeeded */
    int64_t batches; /**< batches it ran */
    double busy_s;   /**< seconds inside batch functions */
    double est_s;    /**< AUTO across backends: the scheduler's estimate of its batches'
                      *  time (compare with busy_s); 0 when no estimate was made */
    int64_t bytes;   /**< bytes it moved between host and device */
} tdm_report_worker;

/** The report of one map / parallel_for. A plain value: nothing inside needs freeing. */
typedef struct tdm_report {
    uint32_t size;             /**< sizeof(tdm_report): set by the caller (TDM_REPORT_INIT) */
    char what[64];             /**< kernel name or "parallel_for" */
    int status;                /**< the call's status */
    double wall_s;             /**< submission to completion */
    int64_t items;             /**< items of the batches that succeeded (a failed batch's items are
                                    not counted, even those its function ran) */
    int64_t items_total;       /**< items asked for */
    int64_t batches;           /**< batches completed (successfully or not) */
    int64_t failed_batches;    /**< batches whose function returned an error */
    int64_t fallback_batches;  /**< device batches that ran on the CPU (no device memory) */
    int64_t bytes_to_device;   /**< bytes copied host -> device by this run */
    int64_t bytes_from_device; /**< bytes copied device -> host by this run */
    int64_t batch_size;        /**< fixed size, or the largest auto batch */
    int64_t batch_size_min;    /**< smallest batch (auto) */
    int first_error;           /**< status of the first failed batch (0 if none) */
    int64_t first_error_batch; /**< its batch index (-1 if none) */
    int64_t first_error_begin; /**< its first item (-1 if none) */
    int64_t first_error_end;   /**< one past its last item */
    int n_workers;             /**< rows used in workers[] */
    tdm_report_worker workers[TDM_REPORT_MAX_WORKERS]; /**< one row per worker */
} tdm_report;

#ifdef __cplusplus
#define TDM_REPORT_INIT                                                                            \
    ([] {                                                                                          \
        tdm_report tdm_v_ = tdm_report();                                                          \
        tdm_v_.size = sizeof(tdm_report);                                                          \
        return tdm_v_;                                                                             \
    }())
#else
#define TDM_REPORT_INIT                                                                            \
    {                                                                                              \
        .size = sizeof(tdm_report)                                                                 \
    }
#endif

TDM_BEGIN_DECLS

/** Writes a human-readable table of the report into buf (always NUL-terminated when
 *  buf_len > 0). Returns the length the full text needs (like snprintf), or TDM_EINVAL
 *  (NULL report, or buf NULL with buf_len > 0). Thread-safe. */
TDM_EXTERN int tdm_report_format(const tdm_report *r, char *buf, size_t buf_len);

/** Prints tdm_report_format()'s text to `f`. Returns 0, TDM_EINVAL (NULL), TDM_ESYS (write
 *  error). Called by the user: the library itself never prints. */
TDM_EXTERN int tdm_report_print(const tdm_report *r, FILE *f);

TDM_END_DECLS

#endif
