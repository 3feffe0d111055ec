/* tandem — tracing (runtime/observe/trace.c): what other areas may call. Not API. */
#ifndef TANDEM_TRACE_H
#define TANDEM_TRACE_H

#include <stdio.h>

#include "internal.h"

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

#endif
