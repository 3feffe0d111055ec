/* SPDX-License-Identifier: MIT */
/* The result cache (joblib's Memory): maps keyed by kernel, version, parameters, output
 * descriptions and input bytes (xxh3-128), entries stored as directories renamed into place.
 *
 * Entry layout: dir/<32 hex>/manifest and dir/<32 hex>/out<k>.npy (or .tdz). The manifest:
 *   "TDMCACH1" | u32 2 | u32 n_out | key (16 bytes) | u32 codec | u32 compute_us |
 *   n_out x { u32 dtype | u32 ndim | i64 shape[8] | u64 file bytes | u64 xxh3(data) |
 *             u64 xxh3(head) } |
 *   u64 xxh3(everything before)
 * compute_us: the worker-microseconds computing the entry took (saturated; 0 = unknown, as in
 * entries written before it was recorded, where this word was 0), for the time a hit saves.
 * "head" is every byte of an output file that is not element data: for a .npy, the header
 * (the file's first file_bytes - numel * dtype size bytes), so that data hash + head hash
 * cover the whole file; for a compressed file, nothing (0 bytes: its header, index and
 * chunks carry their own xxh3 checksums, checked by the loader on every read).
 * A hit checks, in order: the manifest (checksum, key, descriptions equal to the call's),
 * each file's size, each .npy head's hash (a few hundred bytes: mapped hits stay O(1)), then
 * after loading that the tensor has the manifest's dtype, shape and C order, and - with
 * opts.verify - the data's hash. Anything else is a corrupt entry: a miss, then replaced.
 * Manifests of version 1 (before the head hash) are not served: such an entry is a plain
 * miss (not counted as corrupt), removed and replaced by a version-2 one.
 * Its mtime is the entry's last use (set on store and on each hit): eviction removes the
 * oldest first. Entries are built in dir/.tmp-<random>/ and renamed to dir/<key>: rename of a
 * directory onto a non-empty one fails, so the first writer wins and a reader sees an entry
 * whole or not at all. Removal renames the entry to dir/.trash-<random>/ first, then deletes:
 * a concurrent reader either has its files open (still readable once unlinked) or finds the
 * entry gone (a miss). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "io/cache_internal.h"

uint32_t tdm__cache_compute_us(const tdm_report *r)
{
    double s = 0;
    for (int w = 0; w < r->n_workers && w < TDM_REPORT_MAX_WORKERS; w++)
        s += r->workers[w].busy_s;
    double us = s * 1e6;
    return us >= (double)UINT32_MAX ? UINT32_MAX : us > 0 ? (uint32_t)us : 0;
}

void tdm__cache_count(tdm_cache *c, int64_t *field, int64_t n)
{
    pthread_mutex_lock(&c->mu);
    *field += n;
    pthread_mutex_unlock(&c->mu);
}

/* ---- open / close -------------------------------------------------------------------------- */

int tdm_cache_opts_init(tdm_cache_opts *o)
{
    if (!o)
        return TDM_EINVAL;
    *o = (tdm_cache_opts)TDM_CACHE_OPTS_INIT;
    return 0;
}

int tdm_cache_open(tdm_runtime *rt, const char *dir, const tdm_cache_opts *opts, tdm_cache **out)
{
    static const char who[] = "tdm_cache_open";
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!dir || !*dir)
        return tdm__err(rt, TDM_EINVAL, "%s: dir is NULL or empty", who);
    tdm__err_clear(rt);
    tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
    if (opts) {
        if (opts->size < sizeof o || opts->version != TDM_CACHE_OPTS_VERSION)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: opts size %u / version %u: start from TDM_CACHE_OPTS_INIT", who,
                            opts->size, opts->version);
        o = *opts;
    }
    if ((unsigned)o.mmap > TDM_MMAP_COPY || o.mmap == TDM_MMAP_READWRITE)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: mmap mode %d: NONE, READ or COPY (READWRITE would alter the entry)",
                        who, (int)o.mmap);
    if (o.mmap != TDM_MMAP_NONE && o.codec != TDM_CODEC_NONE)
        return tdm__err(rt, TDM_EINVAL, "%s: compressed entries (%s) cannot be memory-mapped", who,
                        tdm_codec_name(o.codec));
    tdm_save_opts so = TDM_SAVE_OPTS_INIT, chk;
    so.codec = o.codec;
    so.level = o.level;
    int rc = tdm__io_save_opts(rt, who, &so, &chk);
    if (rc != 0)
        return rc;
    if (o.mem & ~(unsigned)(TDM_MEM_SHARED | TDM_MEM_PINNED | TDM_MEM_STRICT))
        return tdm__err(rt, TDM_EINVAL, "%s: unknown mem flags 0x%x", who, o.mem);
    if (strlen(dir) > 3900)
        return tdm__err(rt, TDM_EINVAL, "%s: dir path too long", who);
    rc = tdm__mkdir_p(rt, who, dir);
    if (rc != 0)
        return rc;
    tdm_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    c->rt = rt;
    c->o = o;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void tdm_cache_close(tdm_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->dir);
    free(c);
}

int tdm_cache_stats_get(tdm_cache *c, tdm_cache_stats *s)
{
    if (!c || !s)
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL, "tdm_cache_stats_get: NULL argument");
    pthread_mutex_lock(&c->mu);
    *s = c->st;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* ---- keys ---------------------------------------------------------------------------------- */
int tdm_cache_key(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                  tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
                  char key_hex[33])
{
    static const char who[] = "tdm_cache_key";
    if (!c || !key_hex)
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL, "%s: NULL cache or key_hex", who);
    tdm__err_clear(c->rt);
    tdm__cache_desc d[TDM__CACHE_MAX_OUTPUTS];
    bool create;
    return tdm__cache_make_key(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size, d,
                               &create, key_hex);
}

int tdm_cache_contains(tdm_cache *c, const char *key_hex)
{
    if (!c || !key_hex || !tdm__cache_is_key(key_hex))
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL,
                        "tdm_cache_contains: NULL cache or a key that is not 32 hex digits");
    char *p = tdm__cache_join(c->dir, key_hex, "manifest");
    if (!p)
        return tdm__err(c->rt, TDM_ENOMEM, "tdm_cache_contains: out of memory");
    int r = access(p, F_OK) == 0;
    free(p);
    return r;
}
int tdm_cache_map(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                  tdm_tensor **outputs, int n_out, const void *params, size_t params_size,
                  const tdm_map_opts *opts, tdm_report *report, int *hit)
{
    static const char who[] = "tdm_cache_map";
    if (hit)
        *hit = 0;
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm_runtime *rt = c->rt;
    tdm__err_clear(rt);
    tdm__cache_desc descs[TDM__CACHE_MAX_OUTPUTS];
    bool create;
    char key[33];
    int rc = tdm__cache_make_key(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size,
                                 descs, &create, key);
    if (rc != 0)
        return rc;
    int r = tdm__cache_try_hit(c, key, outputs, n_out, descs, create, NULL);
    if (r == 0) {
        tdm__cache_count(c, &c->st.hits, 1);
        if (hit)
            *hit = 1;
        tdm__err_clear(rt);
        return 0;
    }
    if (r < 0)
        tdm__cache_count(c, &c->st.corrupt, 1);
    if (r < 0 || r == 2)
        tdm__cache_remove_entry(
            c, key); /* corrupt, or of an older format: the store below replaces it */
    tdm__cache_count(c, &c->st.misses, 1);
    if (create) {
        for (int i = 0; i < n_out; i++) {
            rc = tdm_tensor_empty(rt, descs[i].dtype, descs[i].ndim, descs[i].shape, c->o.mem,
                                  &outputs[i]);
            if (rc != 0) {
                rc = tdm__io_reerr(rt, rc, who);
                goto fail;
            }
        }
    }
    tdm__err_clear(rt);
    tdm_report local = TDM_REPORT_INIT;
    tdm_report *rep = report ? report : &local;
    rc = tdm_map(rt, kernel, inputs, n_in, outputs, n_out, params, params_size, opts, rep);
    if (rc != 0)
        goto fail;
    if (tdm__cache_store(c, key, outputs, n_out, tdm__cache_compute_us(rep)) != 0)
        tdm__cache_count(c, &c->st.store_failures, 1);
    else
        tdm__cache_evict(c);
    tdm__err_clear(rt);
    return 0;
fail:
    if (create)
        for (int i = 0; i < n_out; i++) {
            tdm_tensor_release(outputs[i]);
            outputs[i] = NULL;
        }
    return rc;
}

/* ---- clear / usage ------------------------------------------------------------------------- */
