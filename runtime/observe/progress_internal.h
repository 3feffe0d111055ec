/* SPDX-License-Identifier: MIT */
/* tandem — the progress display of a job (runtime/observe/progress.c). Not API. */
#ifndef TANDEM_PROGRESS_INTERNAL_H
#define TANDEM_PROGRESS_INTERNAL_H

#include "sched/job.h"

/* Starts the job's progress display if its options ask for a bar or a callback (AUTO: a bar
 * only when tdm__progress_auto_on()): a thread, or for a job with progress_inline its state
 * only (tdm__progress_wait_locked draws it). Returns 0, TDM_ENOMEM or TDM_ESYS. */
int tdm__progress_start(tdm__job *job);
/* A job drawn inline: waits for it to finish (wait: the job's wait, until a CLOCK_MONOTONIC
 * time, true once finished; the pool mutex held), drawing every interval without the mutex.
 * False (nothing done) for a job not drawn inline. */
bool tdm__progress_wait_locked(tdm__job *job,
                               bool (*wait)(tdm__job *job, const struct timespec *until));
/* Draws the final state and joins the thread, or frees the inline state; no-op if neither. */
void tdm__progress_stop(tdm__job *job);

/* tdm__progress_render, tdm__progress_width and tdm__progress_auto_on are declared in
 * runtime/seam.h (libtandem-mpi draws its bars with them too). */

#endif
