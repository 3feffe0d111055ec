/* SPDX-License-Identifier: MIT */
/* tandem — a result cache for maps (joblib's Memory for tandem's kernels).
 *
 * A map run through the cache is keyed by the kernel's name and kernel_version, its code, its
 * parameter block, the dtype/shape of its outputs and the dtype, shape and bytes of its inputs
 * (xxh3-128 over all of them). A hit loads — or memory-maps — the stored outputs instead of
 * computing; a miss runs the map and stores its outputs.
 *
 * The kernel's code, as joblib's Memory hashes a function's: the device source text of a kernel
 * that has one (tdm_kernel_def.source, which for a built-in kernel is the single-source text its
 * CPU version is compiled from too, so a new tandem whose built-in kernels changed misses), and
 * tdm_kernel_def.code_hash, a value the user gives for a CPU implementation (C code cannot be
 * read back at run time: a build can pass a hash of the file). A changed body is then a miss,
 * never a stale hit. A CPU-only kernel with code_hash 0 is keyed by its name and kernel_version
 * alone: bump kernel_version when its results change.
 *
 * On disk: `dir/` (created 0700 when absent) holds one directory per entry named by the key's
 * 32 hex digits — never by anything the caller chose, so no key becomes a path outside `dir` —
 * with one file per output (.npy, or a compressed tensor file) and a manifest carrying the
 * key, the sizes and an xxh3 checksum of every output's bytes. An entry is built in a private
 * temporary directory and renamed into place, so several threads or processes can share one
 * cache directory: no reader ever sees a torn entry, and when two writers race, one entry
 * wins and the other is dropped. A corrupted or truncated entry fails its checksum or its
 * size check and is treated as a miss (then replaced), never returned. With a bytes_limit,
 * least recently used entries (last hit or store) are evicted after each store.
 */
#ifndef TANDEM_CACHE_H
#define TANDEM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/io.h"
#include "tandem/map.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

/** A cache directory opened by one runtime. Opaque. */
typedef struct tdm_cache tdm_cache;

#define TDM_CACHE_OPTS_VERSION 1u

/** Options of tdm_cache_open(). NULL = all defaults. */
typedef struct tdm_cache_opts {
    uint32_t size;        /**< sizeof(tdm_cache_opts) */
    uint32_t version;     /**< TDM_CACHE_OPTS_VERSION */
    uint64_t bytes_limit; /**< evict least recently used entries above this; 0 = no limit */
    tdm_mmap_mode mmap;   /**< how hits come back when the cache creates the outputs:
                           *   TDM_MMAP_NONE (read into memory), READ or COPY (mapped; needs
                           *   codec NONE). READWRITE is refused: it would change the entry. */
    tdm_codec codec;      /**< how outputs are stored: NONE (.npy, mappable), ZSTD, LZ4,
                           *   DEFLATE (joblib's compress=('zstd', 3)) */
    int level;            /**< codec level, 0 = default */
    unsigned mem;         /**< storage of outputs the cache creates (TDM_MEM_HOST, SHARED...) */
    int verify;           /**< 1 (default): each hit also checks every output's element data
                           *   against its xxh3 checksum (one pass over the data; a mapped
                           *   hit reads all its pages). 0: that pass is skipped, so damage
                           *   to the element data of an uncompressed (.npy) entry - a flipped
                           *   or overwritten byte - is NOT detected and is returned as a
                           *   hit. Checked either way: the manifest (its own checksum), each
                           *   file's size, the .npy header bytes (checksummed: dtype, order,
                           *   shape, byte order), the loaded tensor's dtype, shape and C
                           *   order against the manifest, and, for compressed entries, the
                           *   codec's per-chunk checksums. 0 suits trusted directories: a
                           *   mapped hit then reads only the header, not the data. */
    int fsync;            /**< 1: entries are fsync'ed before they appear (durable across a
                           *   power loss); 0 (default): atomic, not durable */
} tdm_cache_opts;

#define TDM_CACHE_OPTS_INIT                                                                        \
    {                                                                                              \
        sizeof(tdm_cache_opts), TDM_CACHE_OPTS_VERSION, 0, TDM_MMAP_NONE, TDM_CODEC_NONE, 0,       \
            TDM_MEM_HOST, 1, 0                                                                     \
    }

/** Counters of one tdm_cache handle (this process's calls through it). */
typedef struct tdm_cache_stats {
    int64_t hits;           /**< lookups answered from the cache */
    int64_t misses;         /**< lookups that computed (and stored) the outputs */
    int64_t stores;         /**< entries written */
    int64_t store_failures; /**< results computed but not stored (disk full, I/O error...) */
    int64_t corrupt;        /**< entries found corrupted or truncated (treated as misses) */
    int64_t evictions;      /**< entries removed to respect bytes_limit */
} tdm_cache_stats;

/** What one tdm_cache_map_groups() call did. A plain value. */
typedef struct tdm_cache_groups_report {
    uint32_t size;           /**< sizeof(tdm_cache_groups_report): set by the caller
                              *   (TDM_CACHE_GROUPS_REPORT_INIT) */
    int64_t groups;          /**< groups in the call */
    int64_t hits;            /**< groups served from the cache */
    int64_t misses;          /**< groups computed (corrupt entries included) */
    int64_t corrupt;         /**< of the misses: entries found damaged, then replaced */
    int64_t stores;          /**< computed groups stored (or found stored by another writer) */
    int64_t store_failures;  /**< computed groups that could not be stored (full disk...) */
    uint64_t bytes_loaded;   /**< output bytes the hits filled */
    uint64_t bytes_computed; /**< output bytes the misses computed */
    double compute_s;        /**< worker-seconds the misses took (time inside the kernel,
                              *   summed over the workers) */
    double saved_s;          /**< worker-seconds the hits did not spend: what each entry
                              *   recorded when it was computed (0 for entries that predate
                              *   the record) */
    double wall_s;           /**< the whole call */
} tdm_cache_groups_report;

#define TDM_CACHE_GROUPS_REPORT_INIT                                                               \
    {                                                                                              \
        sizeof(tdm_cache_groups_report), 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0                     \
    }

TDM_BEGIN_DECLS

/** Fills *o with the defaults. Returns 0 or TDM_EINVAL. */
TDM_EXTERN int tdm_cache_opts_init(tdm_cache_opts *o);

/** Opens (creating it 0700 when absent, parents too) the cache directory `dir`. The caller
 *  closes *out with tdm_cache_close() before closing the runtime.
 *  Returns 0; TDM_EINVAL (NULL, bad opts: unknown mmap mode, READWRITE, a mmap mode with a
 *  codec, bad codec level); TDM_EIO (cannot create or open the directory, or it is not a
 *  directory); TDM_ENOMEM. Thread-safe. */
TDM_EXTERN int tdm_cache_open(tdm_runtime *rt, const char *dir, const tdm_cache_opts *opts,
                              tdm_cache **out);

/** Closes the handle (the directory and its entries stay). NULL is a no-op. */
TDM_EXTERN void tdm_cache_close(tdm_cache *c);

/** tdm_map() through the cache. Arguments as tdm_map(), except `outputs`, an array of n_out
 *  tensor pointers, either all non-NULL (results are written into them, hit or miss) or all
 *  NULL (the cache creates them: on a hit loaded or mapped from the entry as opts->mmap says,
 *  on a miss allocated from the kernel's infer function, which it then needs; the caller
 *  releases them). `hit` (may be NULL) is set to 1 for a hit, 0 for a miss. On a miss the
 *  map runs with `opts` and fills `report` (may be NULL; untouched on a hit).
 *  A result that cannot be stored (full disk, I/O error) is still returned with 0, and counted
 *  in tdm_cache_stats.store_failures.
 *  Returns 0; TDM_EINVAL (NULL cache/kernel, outputs mixing NULL and non-NULL, n_out not the
 *  kernel's, NULL outputs for a kernel without infer); TDM_ENOTFOUND (unknown kernel);
 *  TDM_ELAYOUT (a non-contiguous input: its bytes are hashed as stored); every code of
 *  tdm_map(). On error, outputs the cache created are released and set back to NULL.
 *  Thread-safe: several threads (and processes) may use one cache at once. */
TDM_EXTERN int tdm_cache_map(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                             tdm_tensor **outputs, int n_out, const void *params,
                             size_t params_size, const tdm_map_opts *opts, tdm_report *report,
                             int *hit);

/** A map cached group by group (joblib's Parallel over memory.cache'd calls): the rows of the
 *  map are cut into n_groups groups - [bounds[g], bounds[g + 1]) when `bounds` is given
 *  (n_groups + 1 increasing row indices from 0 to the row count: a column, a file, an item
 *  range each), else n_groups groups of equal size (the last may be shorter) - and each group
 *  is its own entry, keyed exactly as tdm_cache_map() keys a map of those rows alone (row
 *  views of the inputs and outputs; inputs the kernel takes whole are whole in every group),
 *  so either call hits the other's entries. Every group is looked up first; hits are loaded
 *  into their rows of `outputs`, and the misses are all started at once (at most 2 x the
 *  runtime's threads in flight) as maps with `opts` on whatever backends that allows, each
 *  stored as soon as it finishes: a second process running the same groups meanwhile finds
 *  them, and two writers of one group leave one whole entry.
 *  `outputs`: all n_out given (results are written into them; the cache does not create
 *  them here). `report` (may be NULL) says what was hit, computed, loaded and saved.
 *  Returns 0 when every group is in `outputs` (a group that could not be stored is still
 *  returned, and counted in store_failures); TDM_EINVAL (NULL cache/kernel/outputs, n_out 0
 *  or not the kernel's, n_groups < 0, bounds not increasing from 0 to the row count, a group
 *  count larger than the rows, report size too small); TDM_ENOTFOUND; TDM_ELAYOUT; every code
 *  of tdm_map() - a group that fails stops the groups not yet started, those running finish
 *  (and are stored), and the first failure is returned with its message. Thread-safe. */
TDM_EXTERN int tdm_cache_map_groups(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs,
                                    int n_in, tdm_tensor *const *outputs, int n_out,
                                    const void *params, size_t params_size,
                                    const int64_t *bounds, int64_t n_groups,
                                    const tdm_map_opts *opts, tdm_cache_groups_report *report);

/** A running tdm_cache_map_groups_async(). Opaque. */
typedef struct tdm_cache_job tdm_cache_job;

/** One settled group of a tdm_cache_map_groups_async() job. */
typedef struct tdm_cache_group_result {
    int64_t group;      /**< its index */
    int64_t begin;      /**< its first row */
    int64_t end;        /**< one past its last row */
    int hit;            /**< 1: loaded from the cache; 0: computed (then stored) */
    int status;         /**< 0, or the error its map failed with */
} tdm_cache_group_result;

/** tdm_cache_map_groups() without waiting: the lookups, maps and stores run on a thread of the
 *  job's own, and tdm_cache_job_next() hands out each group as it is settled - hits as they
 *  are found, computed groups as their maps finish - so a consumer sees cached and computed
 *  groups alike, in the order they became ready. Same arguments and validation as
 *  tdm_cache_map_groups(); params, bounds and opts are copied, the tensors must stay alive
 *  until tdm_cache_job_finish(). Returns 0 and *job (end it with tdm_cache_job_finish());
 *  the errors of tdm_cache_map_groups() found before anything starts; TDM_ESYS (no thread).
 *  On error *job is NULL. Thread-safe. */
TDM_EXTERN int tdm_cache_map_groups_async(tdm_cache *c, const char *kernel,
                                          tdm_tensor *const *inputs, int n_in,
                                          tdm_tensor *const *outputs, int n_out,
                                          const void *params, size_t params_size,
                                          const int64_t *bounds, int64_t n_groups,
                                          const tdm_map_opts *opts, tdm_cache_job **job);

/** Blocks until the job settles another group and gives it in *r (its rows of the outputs are
 *  then final). Returns 0; TDM_EDONE when every group that will be settled has been given (all
 *  of them, unless a group failed or the job was cancelled: the groups not started then are
 *  never given); TDM_EINVAL (NULL). Only one thread at a time may call it for a given job. */
TDM_EXTERN int tdm_cache_job_next(tdm_cache_job *job, tdm_cache_group_result *r);

/** Asks the job to start no more groups; the maps running finish (and are stored). Returns 0
 *  or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_cache_job_cancel(tdm_cache_job *job);

/** Waits for the job to end (every group, unless cancelled or failed), fills `report` (may be
 *  NULL) and frees the job. Returns the call's status as tdm_cache_map_groups() would, or
 *  TDM_EINVAL (NULL job - a no-op -, report size too small: the job is still freed). */
TDM_EXTERN int tdm_cache_job_finish(tdm_cache_job *job, tdm_cache_groups_report *report);

/** The key a tdm_cache_map() call with these arguments has: 32 lowercase hex digits and a NUL
 *  written into key_hex (33 bytes). `outputs` as for tdm_cache_map() (their dtype/shape count
 *  when given). Returns 0, or the validation errors of tdm_cache_map(). Thread-safe. */
TDM_EXTERN int tdm_cache_key(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                             tdm_tensor *const *outputs, int n_out, const void *params,
                             size_t params_size, char key_hex[33]);

/** 1 when an entry for key_hex exists (not checked for corruption), 0 when not; TDM_EINVAL for a
 *  NULL cache or a key that is not 32 hex digits. Thread-safe. */
TDM_EXTERN int tdm_cache_contains(tdm_cache *c, const char *key_hex);

/** Removes every entry (and stale temporary files) from the directory. Entries being written
 *  by others at that moment may survive. Returns 0, TDM_EINVAL, TDM_EIO. Thread-safe. */
TDM_EXTERN int tdm_cache_clear(tdm_cache *c);

/** Bytes held by the entries in the directory now and their number (either pointer may be
 *  NULL). Returns 0, TDM_EINVAL, TDM_EIO. Thread-safe. */
TDM_EXTERN int tdm_cache_usage(tdm_cache *c, uint64_t *bytes, int64_t *entries);

/** Copies the handle's counters. Returns 0 or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_cache_stats_get(tdm_cache *c, tdm_cache_stats *stats);

TDM_END_DECLS

#endif
