/* SPDX-License-Identifier: MIT */
/* tandem — the seam between libtandem and libtandem-mpi (mpi/). Not API.
 *
 * libtandem-mpi is built on the public API (include/tandem.h) plus exactly what this header
 * declares. These functions are exported from libtandem.so with default visibility under
 * internal tdm__ names: they are not API, may change in any release, and libtandem-mpi must
 * come from the same build as libtandem (the CMake package and tandem-mpi.pc pin the version).
 * Nothing else outside libtandem may use them. Inside libtandem, runtime/internal.h includes
 * this header, so the library and the MPI layer see one declaration of each. */
#ifndef TANDEM_SEAM_H
#define TANDEM_SEAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tandem.h"

#if defined(__GNUC__)
#define TDM__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define TDM__SEAM __attribute__((visibility("default")))
#else
#define TDM__PRINTF(a, b)
#define TDM__SEAM
#endif

/* ---- errors and logging (runtime/core/error.c) --------------------------------------------- */

/* Records a formatted message as the last error of `rt` for the calling thread (rt may be NULL)
 * and returns `code`, so error paths read `return tdm__err(rt, TDM_EINVAL, "...", ...);`. */
TDM__SEAM int tdm__err(const tdm_runtime *rt, int code, const char *fmt, ...) TDM__PRINTF(3, 4);
/* snprintf at buf + at (when at < len; NULL/0 otherwise, so the length still counts what
 * did not fit): returns at + the formatted length, as a *_format() call returns it
 * (runtime/observe/report.c). */
TDM__SEAM size_t tdm__appendf(char *buf, size_t len, size_t at, const char *fmt, ...)
    TDM__PRINTF(4, 5);
/* Clears the calling thread's last message for rt (called at the start of public entries that
 * succeed, so a stale message is not mistaken for a new one). */
TDM__SEAM void tdm__err_clear(const tdm_runtime *rt);
/* Emits a debug line when `flag` is in the runtime's debug flags (to its log_fn or stderr). */
TDM__SEAM void tdm__log(const tdm_runtime *rt, unsigned flag, const char *fmt, ...)
    TDM__PRINTF(3, 4);
/* CLOCK_MONOTONIC in nanoseconds. */
TDM__SEAM uint64_t tdm__now_ns(void);

/* ---- tensors and kernels ------------------------------------------------------------------- */

/* Bytes of one row (dims 1..ndim-1) of a contiguous tensor of this dtype and shape; the
 * element size for ndim <= 1. */
static inline size_t tdm__row_bytes(tdm_dtype dtype, int ndim, const int64_t *shape)
{
    size_t b = tdm_dtype_size(dtype);
    for (int i = 1; i < ndim; i++)
        b *= (size_t)shape[i];
    return b;
}
/* The tensor's first element in host memory, without the residency check of tdm_tensor_data()
 * (runtime/core/tensor.c). */
TDM__SEAM void *tdm__tensor_host(const tdm_tensor *t);
/* The definition of a registered kernel, NULL if absent; valid until the runtime closes
 * (runtime/core/kernel_registry.c). */
TDM__SEAM const tdm_kernel_def *tdm__kernel_def(const tdm_runtime *rt, const char *name);
/* Number of the runtime's worker processes (runtime/core/runtime.c). */
TDM__SEAM int tdm__runtime_procs(const tdm_runtime *rt);

/* ---- jobs with a finish hook (runtime/sched/map.c, job.c) ---------------------------------- */

typedef struct tdm__job tdm__job;
/* Asynchronous map / parallel_for with a finish hook (may be NULL) set before the job is
 * submitted: the pipeline's way to hear of finished stages without polling, and the
 * distributed runtime's way to run a chunk. Unlike tdm_map_async() the job does not stream
 * (it may run on devices, and needs no consumer); `fn` names the caller in messages. Same
 * arguments and results as the public calls otherwise. The job is a tdm_job for
 * tdm_job_wait / tdm_job_cancel / tdm_job_free. */
TDM__SEAM int tdm__map_async_hook(tdm_runtime *rt, const char *fn, const char *kernel,
                                  tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs,
                                  int n_out, const void *params, size_t params_size,
                                  const tdm_map_opts *opts, void (*hook)(void *), void *hook_arg,
                                  tdm__job **job);
TDM__SEAM int tdm__pfor_async_hook(tdm_runtime *rt, const char *name, int64_t n_items,
                                   tdm_range_fn fn, const void *params, size_t params_size,
                                   const tdm_map_opts *opts, void (*hook)(void *), void *hook_arg,
                                   tdm__job **job);
/* Items of the job's finished batches so far. Thread-safe. */
TDM__SEAM int64_t tdm__job_items_done(tdm__job *job);
/* True once the job has finished (its hook has run or is running). Thread-safe, no lock. */
TDM__SEAM bool tdm__job_finished(const tdm__job *job);

/* ---- progress and trace (runtime/observe/) ------------------------------------------------- */

/* Draws a bar (and, with per_lane, one bar per lane of p->per_worker, labelled "<lane> i" with
 * i = lane_ids[k], or k when lane_ids is NULL) on stderr, redrawing over the `*lines_drawn`
 * lines of the previous frame (0 at first), and ending with a newline when p->final. Every
 * line is at most width - 1 columns (no wrap): below 21 columns a plain line without a bar.
 * Pass tdm__progress_width() at each frame. Used by jobs and by distributed maps (mpi/). */
TDM__SEAM void tdm__progress_render(const tdm_progress *p, const char *desc, bool per_lane,
                                    const char *lane, const int *lane_ids, int width,
                                    int *lines_drawn);
/* The terminal's width in columns now (80 when stderr is not a terminal), at most 400. */
TDM__SEAM int tdm__progress_width(void);
/* What TDM_PROGRESS_AUTO means: true when env TDM_PROGRESS asks for progress ("1", "on", any
 * value but "0"/"off"/"no"/"false") and stderr is a terminal, or TDM_PROGRESS=always. Unset:
 * false (a library prints nothing unless asked). */
TDM__SEAM bool tdm__progress_auto_on(void);

/* The lane of a rank's distributed chunks (mpi/dist_run.c). */
#define TDM__TRACE_DIST_LANE 100000
/* Records one span (no-op when tracing is off). */
TDM__SEAM void tdm__trace_span(tdm_runtime *rt, int lane, const char *name, int64_t batch,
                               int64_t begin, int64_t end, int status, uint64_t t_start,
                               uint64_t t_end);
/* The merged trace of a distributed run (mpi/dist.c): the trace's file path and clock
 * origin (NULL / 0 when not tracing); the events as trace-event objects of process `pid`,
 * comma-separated (*first: none written yet), their times shifted by shift_ns; a whole file
 * written atomically (temporary + rename) around `body`; freeing the trace without writing it. */
TDM__SEAM const char *tdm__trace_path(const tdm_runtime *rt);
TDM__SEAM uint64_t tdm__trace_t0(const tdm_runtime *rt);
TDM__SEAM void tdm__trace_write_events(tdm_runtime *rt, FILE *f, int pid, const char *pname,
                                       int64_t shift_ns, bool *first);
TDM__SEAM int tdm__trace_write_file(tdm_runtime *rt, const char *path,
                                    void (*body)(void *arg, FILE *f), void *arg);
TDM__SEAM void tdm__trace_free(tdm_runtime *rt);

#endif
