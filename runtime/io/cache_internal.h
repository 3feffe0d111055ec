/* SPDX-License-Identifier: MIT */
/* tandem — the result cache's internal pieces, shared by runtime/io/cache*.c. Not API.
 * cache.c: the handle and tdm_cache_map; cache_key.c: keys; cache_entry.c: one entry (its
 * manifest, hits, stores); cache_dir.c: the directory (paths, removal, listing, eviction). */
#ifndef TANDEM_IO_CACHE_INTERNAL_H
#define TANDEM_IO_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "io/io_internal.h"

#define TDM__CACHE_MAX_OUTPUTS 64

struct tdm_cache {
    tdm_runtime *rt;
    char *dir;
    tdm_cache_opts o;
    pthread_mutex_t mu;
    tdm_cache_stats st;
};

/* What one output is: the call's (given or inferred) or the manifest's. */
typedef struct tdm__cache_desc {
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
} tdm__cache_desc;

/* Adds n to one of c's counters (under its lock). */
void tdm__cache_count(tdm_cache *c, int64_t *field, int64_t n);

/* ---- keys (cache_key.c) ---- */

/* 1 when s is 32 lowercase hex digits. */
bool tdm__cache_is_key(const char *s);
/* Validates a call and computes its key (hex) and output descriptions; *create is set when
 * the cache is to create the outputs (all NULL). 0 or a TDM_E* code with the message set. */
int tdm__cache_make_key(tdm_cache *c, const char *who, const char *kernel,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const void *params, size_t params_size, tdm__cache_desc *descs,
                        bool *create, char hex[33]);
/* The 16 bytes of a 32-hex-digit key. */
void tdm__cache_key_bytes(const char *hex, unsigned char *b);

/* ---- one entry (cache_entry.c) ---- */

/* Tries to serve a hit: 0 (hit, outputs filled), 1 (miss), 2 (an entry of an older format: a
 * miss, to be replaced), -1 (corrupt entry: a miss too). Created outputs are released again
 * on anything but a hit. On a hit, *compute_us (may be NULL) gets what computing the entry
 * cost when it was stored (0 = not recorded). */
int tdm__cache_try_hit(tdm_cache *c, const char *key, tdm_tensor **outputs, int n_out,
                       const tdm__cache_desc *descs, bool create, uint32_t *compute_us);
/* Writes the outputs as a new entry, recording compute_us (worker-microseconds the outputs
 * took; 0 = unknown). 0 stored (or another writer's entry won), -1 failed. */
int tdm__cache_store(tdm_cache *c, const char *key, tdm_tensor *const *outs, int n_out,
                     uint32_t compute_us);
/* Worker-microseconds of a report (the seconds its workers spent in batches, summed),
 * saturated to what a manifest holds. */
uint32_t tdm__cache_compute_us(const tdm_report *r);

/* ---- the directory (cache_dir.c) ---- */

/* dir + "/" + a + (b ? "/" + b : ""); NULL when out of memory. Caller frees. */
char *tdm__cache_join(const char *dir, const char *a, const char *b);
/* prefix + 32 random hex digits into buf. */
void tdm__cache_random_name(char *buf, size_t len, const char *prefix);
/* Removes a directory's files, then the directory (one level). */
void tdm__cache_remove_tree(const char *path);
/* Takes an entry away atomically (rename into the trash), then deletes it. 0, or -1 when the
 * entry was already gone. */
int tdm__cache_remove_entry(tdm_cache *c, const char *name);
/* Evicts least recently used entries while the directory holds more than bytes_limit. */
void tdm__cache_evict(tdm_cache *c);

#endif
