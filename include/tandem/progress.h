/* SPDX-License-Identifier: MIT */
/* tandem — progress: counters in shared memory, a tqdm-style bar, or a callback. */
#ifndef TANDEM_PROGRESS_H
#define TANDEM_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"

/** How a map shows its progress. */
typedef enum tdm_progress_mode {
    TDM_PROGRESS_AUTO = 0,       /**< the default: nothing, unless the environment asks with
                                  *  TDM_PROGRESS (any value but 0/off/no/false: a total bar on
                                  *  stderr when stderr is a terminal; "always": even when it is
                                  *  not). The tandem command and the samples ask with
                                  *  TDM_PROGRESS_BAR when stderr is a terminal. */
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
    double elapsed_s; /**< seconds since the run started */
    double rate;  /**< items per second so far */
    double eta_s; /**< estimated seconds left (-1 if unknown) */
    int n_workers;             /**< entries of per_worker */
    const int64_t *per_worker; /**< items finished by each worker; valid during the call */
    int final;                 /**< 1 for the last call of the run */
} tdm_progress;

/** Progress callback: called about every tdm_map_opts.progress_interval_s seconds and once at
 *  the end (final = 1); for a blocking run (tdm_map, tdm_parallel_for and
 *  tdm_parallel_for_tensors) on the caller's own thread while it waits, for an asynchronous
 *  one on a progress thread of the runtime. Calls for one run never overlap. Must not call back
 *  into the runtime with a blocking map. */
typedef void (*tdm_progress_fn)(const tdm_progress *p, void *user);

TDM_BEGIN_DECLS

/** Formats a tqdm-style bar line into buf: "desc: 45%|█████▌      | 450/1000 [00:02<00:02,
 *  210.31it/s]", exactly `width` columns wide (>= 20; 0 = 80; at most 400). A long `desc` is
 *  cut to a third of the width; when the bar would be narrower than 8 cells the line is plain
 *  text without a bar ("desc: 45% 450/1000 [00:02<00:02, 210.31it/s]"), cut to `width`
 *  columns. The bar's cells are 3-byte UTF-8 characters of one column each. Always
 *  NUL-terminated when buf_len > 0 (cut at a character boundary when buf is too small).
 *  Returns the bytes of the whole line (excluding the NUL: a buffer of that + 1 holds it), or
 *  TDM_EINVAL (p NULL, buf NULL with buf_len > 0, width negative or in 1..19). Thread-safe. */
TDM_EXTERN int tdm_progress_format(const tdm_progress *p, const char *desc, int width, char *buf,
                                   size_t buf_len);

TDM_END_DECLS

#endif
