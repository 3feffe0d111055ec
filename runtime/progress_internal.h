/* tandem — the progress display of a job (runtime/progress.c). Not API. */
#ifndef TANDEM_PROGRESS_INTERNAL_H
#define TANDEM_PROGRESS_INTERNAL_H

#include "job.h"

/* Starts the job's progress thread if its options ask for a bar or a callback (AUTO: a bar
 * when stderr is a terminal). Returns 0 or TDM_ESYS. */
int tdm__progress_start(tdm__job *job);
/* Draws the final state and joins the thread; no-op if none was started. */
void tdm__progress_stop(tdm__job *job);

#endif
