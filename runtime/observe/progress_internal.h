/* tandem — the progress display of a job (runtime/progress.c). Not API. */
#ifndef TANDEM_PROGRESS_INTERNAL_H
#define TANDEM_PROGRESS_INTERNAL_H

#include "sched/job.h"

/* Starts the job's progress thread if its options ask for a bar or a callback (AUTO: a bar
 * only when tdm__progress_auto_on()). Returns 0 or TDM_ESYS. */
int tdm__progress_start(tdm__job *job);
/* Draws the final state and joins the thread; no-op if none was started. */
void tdm__progress_stop(tdm__job *job);

/* Draws a bar (and, with per_lane, one bar per lane of p->per_worker, labelled "<lane> i") on
 * stderr, redrawing over the `*lines_drawn` lines of the previous frame (0 at first), and
 * ending with a newline when p->final. Every line is at most width - 1 columns (no wrap):
 * below 21 columns a plain line without a bar. Pass tdm__progress_width() at each frame.
 * Used by jobs and by distributed maps (mpi/). */
void tdm__progress_render(const tdm_progress *p, const char *desc, bool per_lane,
                          const char *lane, int width, int *lines_drawn);
/* The terminal's width in columns now (80 when stderr is not a terminal), at most 400. */
int tdm__progress_width(void);
/* What TDM_PROGRESS_AUTO means: true when env TDM_PROGRESS asks for progress ("1", "on", any
 * value but "0"/"off"/"no"/"false") and stderr is a terminal, or TDM_PROGRESS=always. Unset:
 * false (a library prints nothing unless asked). */
bool tdm__progress_auto_on(void);

#endif
