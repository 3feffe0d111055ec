/* SPDX-License-Identifier: MIT */
/* tandem — the progress display of a job (runtime/observe/progress.c). Not API. */
#ifndef TANDEM_PROGRESS_INTERNAL_H
#define TANDEM_PROGRESS_INTERNAL_H

#include "sched/job.h"

/* Starts the job's progress thread if its options ask for a bar or a callback (AUTO: a bar
 * only when tdm__progress_auto_on()). Returns 0 or TDM_ESYS. */
int tdm__progress_start(tdm__job *job);
/* Draws the final state and joins the thread; no-op if none was started. */
void tdm__progress_stop(tdm__job *job);

/* tdm__progress_render, tdm__progress_width and tdm__progress_auto_on are declared in
 * runtime/seam.h (libtandem-mpi draws its bars with them too). */

#endif
