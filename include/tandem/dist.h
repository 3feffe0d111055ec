/* SPDX-License-Identifier: MIT */
/* tandem — the same maps across MPI ranks (Open MPI).
 *
 * A program started with `mpirun -np N` opens its runtime as usual, then a distributed
 * runtime over it with tdm_dist_open(). Each rank runs tandem locally (threads, worker
 * processes, devices, its own scheduler); tdm_dist_map() / tdm_dist_parallel_for() split the
 * items across ranks and gather the results. Rank 0 coordinates: each rank owns a contiguous
 * range of items, sized in proportion to its measured throughput (equal on the first run of a
 * kernel), and asks rank 0 for chunks of it, two in flight so it never waits for an answer;
 * chunks shrink as the run ends (guided), and a rank whose range is empty takes the back of
 * the range of the rank with the most time left (work stealing), so a slow rank does not hold
 * up the end. Data moves only through MPI (collectives and point-to-point), never files.
 *
 * The same binary runs without mpirun, or in a build without MPI, as a single rank: the calls
 * below then run the local maps and move nothing. tandem never calls MPI_Abort and installs
 * MPI_ERRORS_RETURN on its own communicators (duplicates of MPI_COMM_WORLD, so its messages
 * never mix with the program's): an MPI failure is returned as TDM_ECOMM with MPI's text.
 *
 * Collective calls must be made by every rank, in the same order, with matching arguments
 * (the call checks: a rank whose arguments differ from rank 0's makes every rank return
 * TDM_EINVAL, naming the rank and the difference). Only one thread per rank may make
 * collective calls of one tdm_dist at a time. */
#ifndef TANDEM_DIST_H
#define TANDEM_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/map.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

/** A distributed runtime: this rank's view of all ranks. Opaque. */
typedef struct tdm_dist tdm_dist;

#define TDM_DIST_CONFIG_VERSION 1u

/** How tdm_dist_open() joins the ranks. Start from TDM_DIST_CONFIG_INIT. */
typedef struct tdm_dist_config {
    uint32_t size;    /**< sizeof(tdm_dist_config) */
    uint32_t version; /**< TDM_DIST_CONFIG_VERSION */
    int *argc;        /**< handed to MPI_Init_thread when tandem initialises MPI; may be NULL */
    char ***argv;     /**< the same for argv; may be NULL */
    int single; /**< 1: run as a single rank even under mpirun (every rank alone) */
} tdm_dist_config;

#define TDM_DIST_CONFIG_INIT                                                                       \
    {                                                                                              \
        sizeof(tdm_dist_config), TDM_DIST_CONFIG_VERSION, NULL, NULL, 0                            \
    }

/** Where a map's rows live. */
typedef enum tdm_dist_layout {
    TDM_DIST_REPLICATED = 0, /**< every rank passes all rows of every tensor (inputs made
                              *  identical, e.g. by tdm_dist_bcast()); the results are gathered
                              *  as tdm_dist_opts.gather asks */
    TDM_DIST_PARTITIONED = 1 /**< each rank passes only its own rows (e.g. from
                              *  tdm_dist_scatter()); the items are the rows of rank 0, then of
                              *  rank 1, and so on. Each rank's outputs receive the results of
                              *  its own rows, wherever they were computed: items another rank
                              *  steals travel there and their results travel back. The results
                              *  stay distributed (tdm_dist_gather() collects them). Inputs the
                              *  kernel takes whole (tdm_kernel_def.whole_inputs) are replicated. */
} tdm_dist_layout;

/** Where a replicated map's results end up. */
typedef enum tdm_dist_collect {
    TDM_DIST_GATHER_ROOT = 0, /**< rank 0's outputs hold every row (the others hold the rows
                               *  they computed) */
    TDM_DIST_GATHER_ALL = 1   /**< every rank's outputs hold every row */
} tdm_dist_collect;

#define TDM_DIST_OPTS_VERSION 1u

/** Options of a distributed map. NULL = all defaults. */
typedef struct tdm_dist_opts {
    uint32_t size;    /**< sizeof(tdm_dist_opts) */
    uint32_t version; /**< TDM_DIST_OPTS_VERSION */
    tdm_dist_layout layout;     /**< replicated or partitioned tensors (TDM_DIST_REPLICATED) */
    tdm_dist_collect gather;    /**< TDM_DIST_REPLICATED only */
    int no_steal;               /**< 1: static split in proportion to throughput, no stealing (a
                                 *  baseline to compare with) */
    int64_t min_chunk;          /**< fewest items per chunk (the tail may be smaller); 0 = those a
                                 *  rank runs in 2 ms at its measured rate, at least 1 */
    double progress_interval_s; /**< least time between a rank's progress messages to rank 0;
                                 *  0 = the map's progress_interval_s, or 0.1 s */
} tdm_dist_opts;

#define TDM_DIST_OPTS_INIT                                                                         \
    {                                                                                              \
        sizeof(tdm_dist_opts), TDM_DIST_OPTS_VERSION, TDM_DIST_REPLICATED, TDM_DIST_GATHER_ROOT,   \
            0, 0, 0.0                                                                              \
    }

/** Ranks listed one by one in a distributed report. */
#define TDM_DIST_MAX_REPORT_RANKS 256

/** Figures of one rank in a distributed run. */
typedef struct tdm_dist_rank_report {
    int64_t items;        /**< items it ran */
    int64_t chunks;       /**< chunks it ran */
    int64_t stolen_items; /**< of those, items taken from another rank's range */
    double busy_s;        /**< seconds with at least one chunk running */
    double rate;          /**< items per second while busy */
    int status;           /**< its first failing chunk's status, 0 if none */
} tdm_dist_rank_report;

/** The report of a distributed map, the same on every rank. A plain value. */
typedef struct tdm_dist_report {
    uint32_t size;       /**< sizeof(tdm_dist_report): set by the caller (TDM_DIST_REPORT_INIT) */
    char what[64];       /**< kernel name or "parallel_for" */
    int status;          /**< the call's status */
    double wall_s;       /**< the whole call, on rank 0 */
    double compute_s;    /**< until the last chunk ended, on rank 0 */
    double gather_s;     /**< moving results to rank 0 (and to all) after that */
    int64_t items;       /**< items completed */
    int64_t items_total; /**< items asked for */
    int64_t chunks;      /**< chunks granted */
    int64_t steals;      /**< times a rank took part of another's range */
    int64_t bytes_moved; /**< bytes sent between ranks (inputs of stolen items, results) */
    int n_ranks;         /**< rows used in ranks[] */
    tdm_dist_rank_report ranks[TDM_DIST_MAX_REPORT_RANKS]; /**< one row per rank */
} tdm_dist_report;

#ifdef __cplusplus
#define TDM_DIST_REPORT_INIT                                                                       \
    ([] {                                                                                          \
        tdm_dist_report tdm_v_ = tdm_dist_report();                                                \
        tdm_v_.size = sizeof(tdm_dist_report);                                                     \
        return tdm_v_;                                                                             \
    }())
#else
#define TDM_DIST_REPORT_INIT                                                                       \
    {                                                                                              \
        .size = sizeof(tdm_dist_report)                                                            \
    }
#endif

TDM_BEGIN_DECLS

/** 1 when this build of tandem has the MPI layer (TDM_WITH_MPI), else 0. */
TDM_EXTERN int tdm_dist_available(void);

/** Joins the ranks, over runtime `rt` (open it first, so that its worker processes are forked
 *  before MPI starts). Collective over MPI_COMM_WORLD. Under an MPI launcher (mpirun sets
 *  OMPI_COMM_WORLD_SIZE or PMIX_RANK) or when the program has initialised MPI itself, the
 *  distributed runtime spans MPI_COMM_WORLD: MPI is initialised here if needed
 *  (MPI_THREAD_SERIALIZED or better is required, TDM_ECOMM otherwise) and finalised by
 *  tdm_dist_close() if it was initialised here. Otherwise — no launcher, a build without MPI,
 *  or cfg->single — it is a single rank and MPI is never touched. `cfg` may be NULL.
 *  Returns 0 and *out (free with tdm_dist_close()); TDM_EINVAL (NULL rt/out, bad cfg size or
 *  version), TDM_ENOMEM, TDM_ECOMM (MPI failed to start; the message has MPI's text).
 *  The message of a failure is in tdm_errmsg(rt). */
TDM_EXTERN int tdm_dist_open(tdm_dist **out, tdm_runtime *rt, const tdm_dist_config *cfg);

/** Leaves the ranks: writes the merged trace (when the runtime traces: one file, written by
 *  rank 0 at the runtime's trace path, one process lane group per rank, after which the
 *  runtime no longer traces), frees the communicators and finalises MPI if tdm_dist_open()
 *  initialised it. Collective. The runtime stays open (close it after). NULL is a no-op
 *  returning 0. Returns 0 or TDM_ECOMM / TDM_EIO (the trace could not be written); d is freed
 *  either way. */
TDM_EXTERN int tdm_dist_close(tdm_dist *d);

/** This rank's index, 0..size-1 (0 for NULL). */
TDM_EXTERN int tdm_dist_rank(const tdm_dist *d);
/** The number of ranks (1 for a single-rank run; 0 for NULL). */
TDM_EXTERN int tdm_dist_size(const tdm_dist *d);
/** 1 when the ranks talk through MPI (size may still be 1 under `mpirun -np 1`), else 0. */
TDM_EXTERN int tdm_dist_is_mpi(const tdm_dist *d);
/** The local runtime. */
TDM_EXTERN tdm_runtime *tdm_dist_runtime(const tdm_dist *d);

/** Replicates a tensor from rank `root` on every rank (MPI_Bcast, in pieces of at most 1 GiB),
 *  like the seeds' payload sent once instead of once per item. On root, *t is the tensor
 *  (contiguous). On the others, *t NULL makes a new contiguous tensor of root's dtype and shape
 *  with storage `mem` (TDM_MEM_*: SHARED so worker processes can read it), which the caller
 *  then owns; a non-NULL *t must have root's dtype and shape and is overwritten.
 *  Collective. Returns 0; TDM_EINVAL (NULL, bad root, a non-contiguous tensor), TDM_EDTYPE /
 *  TDM_ESHAPE (a rank's tensor differs from root's), TDM_ENOMEM / TDM_ENOSPC (allocation),
 *  TDM_ECOMM. Every rank returns an error when any rank fails (the message names it), and a
 *  tensor this call made is then released and *t left NULL. */
TDM_EXTERN int tdm_dist_bcast(tdm_dist *d, tdm_tensor **t, int root, unsigned mem);

/** Partitions the rows of `global` (significant on root only; contiguous) across the ranks:
 *  rank r receives rows[r] rows (rows may be NULL: as tdm_dist_split() says for `what`, which
 *  may itself be NULL: equal parts) in a new tensor *local with storage `mem`, which the
 *  caller owns. Rows go in rank order (rank 0 first). Collective. Returns 0; TDM_EINVAL (NULL,
 *  bad root, rows not summing to the row count, a 0-dim tensor), TDM_ENOMEM / TDM_ENOSPC,
 *  TDM_ECOMM; on error on any rank every rank fails and *local is NULL. `rows` (when given)
 *  must be the same on every rank; only root's is used. */
TDM_EXTERN int tdm_dist_scatter(tdm_dist *d, tdm_tensor *global, const int64_t *rows,
                                const char *what, int root, unsigned mem, tdm_tensor **local);

/** Collects every rank's `local` rows (contiguous; same dtype and row shape everywhere, row
 *  counts free) into one new tensor of all rows, in rank order, on rank `root` — or on every
 *  rank when root is -1. The caller owns *global where one is made (*global is NULL on the
 *  other ranks). Collective. Returns 0; TDM_EINVAL, TDM_EDTYPE / TDM_ESHAPE (row shapes
 *  differ), TDM_ENOMEM / TDM_ENOSPC, TDM_ECOMM; on any rank's error every rank fails. */
TDM_EXTERN int tdm_dist_gather(tdm_dist *d, tdm_tensor *local, int root, unsigned mem,
                               tdm_tensor **global);

/** Splits n_rows into rows[0..size-1] in proportion to each rank's measured throughput for
 *  `what` (a kernel name, or the desc of a parallel_for), as learned by earlier distributed
 *  maps of this tdm_dist; equal parts when nothing was measured or `what` is NULL. The same on
 *  every rank (the rates are shared after each map). Not collective. Returns 0 or TDM_EINVAL
 *  (NULL, negative n_rows). */
TDM_EXTERN int tdm_dist_split(const tdm_dist *d, int64_t n_rows, const char *what, int64_t *rows);

/** tdm_map() over all ranks: same arguments as tdm_map() (the map options apply to every
 *  rank's local runs; progress is drawn by rank 0 only, from every rank's counters: one bar, or
 *  one per rank with TDM_PROGRESS_PER_WORKER; with TDM_PROGRESS_CALLBACK rank 0's progress_fn
 *  gets per_worker = items per rank), plus `dopts` (NULL = defaults) and `report` (may be
 *  NULL; its size set), filled identically on every rank. Collective. Returns 0; the errors of
 *  tdm_map(), checked on every rank (any rank's failure fails the call on all, and the message
 *  names the rank); TDM_EINVAL also when ranks' calls differ (kernel, counts, row counts in
 *  REPLICATED layout, dtypes, row shapes, params, options); the first failing chunk's code,
 *  with tdm_errmsg() on every rank naming the rank, the chunk and its items (with
 *  TDM_ON_ERROR_STOP no new chunk starts after it; with CONTINUE the others run and results of
 *  the failed chunks are not gathered); TDM_ECOMM. */
TDM_EXTERN int tdm_dist_map(tdm_dist *d, const char *kernel, tdm_tensor *const *inputs, int n_in,
                            tdm_tensor *const *outputs, int n_out, const void *params,
                            size_t params_size, const tdm_map_opts *opts,
                            const tdm_dist_opts *dopts, tdm_dist_report *report);

/** tdm_parallel_for() over all ranks: items [0, n_items) (the same on every rank), fn called
 *  with global item indices. Layout must be TDM_DIST_REPLICATED; nothing is gathered (fn
 *  writes where it likes). The split's rates are learned per opts->desc (NULL:
 *  "parallel_for"). Collective. Returns as tdm_dist_map(). */
TDM_EXTERN int tdm_dist_parallel_for(tdm_dist *d, int64_t n_items, tdm_range_fn fn,
                                     const void *params, size_t params_size,
                                     const tdm_map_opts *opts, const tdm_dist_opts *dopts,
                                     tdm_dist_report *report);

/** Formats a distributed report as text (a line per rank: items, share, chunks, stolen, busy,
 *  rate) into buf (NUL-terminated when buf_len > 0). Returns the length the whole text needs
 *  (like snprintf) or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_dist_report_format(const tdm_dist_report *r, char *buf, size_t buf_len);

TDM_END_DECLS

#endif
