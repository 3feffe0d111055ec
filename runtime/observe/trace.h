/* SPDX-License-Identifier: MIT */
/* tandem — tracing (runtime/observe/trace.c): what other areas may call (the spans and the
 * distributed run's calls are in seam.h). Not API. */
#ifndef TANDEM_TRACE_H
#define TANDEM_TRACE_H

#include <stdio.h>

#include "internal.h"

/* Device queues get lanes of their own: lane = (TDM__TRACE_DEVICE_BASE + worker) *
 * TDM__TRACE_QUEUES + queue, far above the CPU workers' lanes (= worker index). */
#define TDM__TRACE_QUEUES 8
#define TDM__TRACE_DEVICE_BASE 128
int tdm__trace_open(tdm_runtime *rt, const char *path);
/* Writes the file (if tracing) and frees the trace. */
void tdm__trace_close(tdm_runtime *rt);
#endif
