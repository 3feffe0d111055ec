/* tandem — progress: counters in shared memory, a tqdm-style bar, or a callback. */
#ifndef TANDEM_PROGRESS_H
#define TANDEM_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"

/** How a map shows its progress. */
typedef enum tdm_progress_mode {
    TDM_PROGRESS_AUTO = 0,       /**< a total bar on stderr when stderr is a terminal, else off */
    TDM_PROGRESS_OFF = 1,        /**< nothing */
    TDM_PROGRESS_BAR = 2,        /**< one total bar on stderr, terminal or not */
    TDM_PROGRESS_PER_WORKER = 3, /**< one bar per worker plus the total (tqdm_batch's
                                  *  sep_progress), on stderr */
    TDM_PROGRESS_CALLBACK = 4    /**< call tdm_map_opts.progress_fn instead of drawing */
} tdm_progress_mode;

/** A snapshot handed to a progress callback. */
typedef struct tdm_progress {
    int64_t done;  /**< items finished */
    int64_t total; /**< items in the run */
    double elapsed_s;
    double rate;  /**< items per second so far */
    double eta_s; /**< estimated seconds left (-1 if unknown) */
    int n_workers;
    const int64_t *per_worker; /**< items finished by each worker; valid during the call */
    int final;                 /**< 1 for the last call of the run */
} tdm_progress;

/** Progress callback: called from the runtime's progress thread about every
 *  tdm_map_opts.progress_interval_s seconds and once at the end (final = 1). Calls for one run
 *  never overlap. Must not call back into the runtime with a blocking map. */
typedef void (*tdm_progress_fn)(const tdm_progress *p, void *user);

TDM_BEGIN_DECLS

/** Formats a tqdm-style bar line into buf: "desc  45%|█████▌      | 450/1000 [00:02<00:02,
 *  210.31it/s]" sized to `width` columns (>= 20; 0 = 80). Always NUL-terminated when
 *  buf_len > 0. Returns the bytes the full line needs, or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_progress_format(const tdm_progress *p, const char *desc, int width, char *buf,
                                   size_t buf_len);

TDM_END_DECLS

#endif
