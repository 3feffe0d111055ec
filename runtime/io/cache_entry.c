/* SPDX-License-Identifier: MIT */
/* The result cache: one entry - its manifest, the checks a hit passes, and the store of a new
 * entry (built in a temporary directory, renamed into place). Layout in cache.c. */
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

#define MANIFEST_MAGIC "TDMCACH1"
#define MANIFEST_VERSION 2u
#define MANIFEST_HEAD 40u
#define MANIFEST_PER_OUT 96u

/* ---- manifest ------------------------------------------------------------------------------ */

static const char *ext_of(tdm_codec codec)
{
    return codec == TDM_CODEC_NONE ? "npy" : "tdz";
}

typedef struct manifest {
    int n_out;
    tdm_codec codec;
    tdm__cache_desc d[TDM__CACHE_MAX_OUTPUTS];
    uint64_t file_bytes[TDM__CACHE_MAX_OUTPUTS];
    uint64_t hash[TDM__CACHE_MAX_OUTPUTS];
    uint64_t head_hash[TDM__CACHE_MAX_OUTPUTS];
    uint32_t compute_us; /* what computing the entry cost (worker-microseconds); 0 = unknown */
} manifest;

/* Bytes of element data an output of this description holds. */
static uint64_t desc_data_bytes(const tdm__cache_desc *d)
{
    uint64_t n = tdm_dtype_size(d->dtype);
    for (int k = 0; k < d->ndim; k++)
        n *= (uint64_t)d->shape[k];
    return n;
}

/* Length of the head (bytes of the file that are not element data) of an output file; -1
 * when the sizes cannot belong to a file tandem wrote. */
static int64_t head_len(tdm_codec codec, uint64_t file_bytes, const tdm__cache_desc *d)
{
    if (codec != TDM_CODEC_NONE)
        return 0;
    uint64_t data = desc_data_bytes(d);
    if (file_bytes < data || file_bytes - data < 10 || file_bytes - data > TDM__NPY_PREFIX_MAX)
        return -1;
    return (int64_t)(file_bytes - data);
}

/* xxh3 of the first `len` bytes of an open file: 0, or -1 (short or failed read). */
static int hash_head(int fd, int64_t len, uint64_t *out)
{
    if (len == 0) {
        *out = XXH3_64bits("", 0);
        return 0;
    }
    unsigned char *b = malloc((size_t)len);
    if (!b)
        return -1;
    int64_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, b + got, (size_t)(len - got), (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += r;
    }
    if (got == len)
        *out = XXH3_64bits(b, (size_t)len);
    free(b);
    return got == len ? 0 : -1;
}

/* Reads and checks a manifest: 0, 1 (absent: a plain miss), 2 (an older format: a miss, the
 * entry to be replaced), or -1 (corrupt). */
static int read_manifest(tdm_cache *c, const char *key, int n_out, const tdm__cache_desc *want,
                         manifest *m)
{
    char *p = tdm__cache_join(c->dir, key, "manifest");
    if (!p)
        return 1;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? 1 : -1;
    size_t len = MANIFEST_HEAD + (size_t)n_out * MANIFEST_PER_OUT + 8;
    unsigned char buf[MANIFEST_HEAD + TDM__CACHE_MAX_OUTPUTS * MANIFEST_PER_OUT + 8 + 1];
    ssize_t r = read(fd, buf, len + 1);
    close(fd);
    if (r >= 12 && memcmp(buf, MANIFEST_MAGIC, 8) == 0 && tdm__get_u32(buf + 8) == 1)
        return 2; /* written before the head hash existed: never served */
    if (r != (ssize_t)len || memcmp(buf, MANIFEST_MAGIC, 8) != 0 ||
        tdm__get_u32(buf + 8) != MANIFEST_VERSION || tdm__get_u32(buf + 12) != (uint32_t)n_out ||
        tdm__get_u64(buf + len - 8) != XXH3_64bits(buf, len - 8))
        return -1;
    unsigned char key16[16];
    tdm__cache_key_bytes(key, key16);
    if (memcmp(buf + 16, key16, 16) != 0)
        return -1;
    m->n_out = n_out;
    m->codec = (tdm_codec)tdm__get_u32(buf + 32);
    m->compute_us = tdm__get_u32(buf + 36);
    if (m->codec > TDM_CODEC_DEFLATE)
        return -1;
    for (int i = 0; i < n_out; i++) {
        const unsigned char *e = buf + MANIFEST_HEAD + (size_t)i * MANIFEST_PER_OUT;
        tdm__cache_desc *d = &m->d[i];
        memset(d, 0, sizeof *d);
        d->dtype = (tdm_dtype)tdm__get_u32(e);
        d->ndim = (int)tdm__get_u32(e + 4);
        if (d->ndim != want[i].ndim || d->dtype != want[i].dtype)
            return -1;
        for (int k = 0; k < TDM_MAX_DIMS; k++)
            d->shape[k] = (int64_t)tdm__get_u64(e + 8 + 8 * k);
        if (memcmp(d->shape, want[i].shape, sizeof d->shape) != 0)
            return -1;
        m->file_bytes[i] = tdm__get_u64(e + 72);
        m->hash[i] = tdm__get_u64(e + 80);
        m->head_hash[i] = tdm__get_u64(e + 88);
    }
    return 0;
}

static int write_manifest(const char *path, const unsigned char *key16, tdm_codec codec, int n_out,
                          tdm_tensor *const *outs, const uint64_t *file_bytes, const uint64_t *hash,
                          const uint64_t *head_hash, uint32_t compute_us, bool sync)
{
    unsigned char buf[MANIFEST_HEAD + TDM__CACHE_MAX_OUTPUTS * MANIFEST_PER_OUT + 8];
    memset(buf, 0, sizeof buf);
    memcpy(buf, MANIFEST_MAGIC, 8);
    tdm__put_u32(buf + 8, MANIFEST_VERSION);
    tdm__put_u32(buf + 12, (uint32_t)n_out);
    memcpy(buf + 16, key16, 16);
    tdm__put_u32(buf + 32, (uint32_t)codec);
    tdm__put_u32(buf + 36, compute_us);
    for (int i = 0; i < n_out; i++) {
        unsigned char *e = buf + MANIFEST_HEAD + (size_t)i * MANIFEST_PER_OUT;
        tdm__put_u32(e, (uint32_t)outs[i]->dtype);
        tdm__put_u32(e + 4, (uint32_t)outs[i]->ndim);
        for (int k = 0; k < outs[i]->ndim; k++)
            tdm__put_u64(e + 8 + 8 * k, (uint64_t)outs[i]->shape[k]);
        tdm__put_u64(e + 72, file_bytes[i]);
        tdm__put_u64(e + 80, hash[i]);
        tdm__put_u64(e + 88, head_hash[i]);
    }
    size_t len = MANIFEST_HEAD + (size_t)n_out * MANIFEST_PER_OUT;
    tdm__put_u64(buf + len, XXH3_64bits(buf, len));
    len += 8;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    bool ok = write(fd, buf, len) == (ssize_t)len && (!sync || fsync(fd) == 0);
    ok = close(fd) == 0 && ok;
    return ok ? 0 : -1;
}

static uint64_t data_hash(const tdm_tensor *t)
{
    size_t n = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(t->dtype);
    return n ? XXH3_64bits(tdm_tensor_data(t), n) : XXH3_64bits("", 0);
}

/* ---- hits ---------------------------------------------------------------------------------- */

/* An entry whose manifest is there but whose output is not is damaged; one whose manifest is
 * gone was evicted meanwhile (a plain miss). */
static bool manifest_exists(tdm_cache *c, const char *key)
{
    char *p = tdm__cache_join(c->dir, key, "manifest");
    bool r = p && access(p, F_OK) == 0;
    free(p);
    return r;
}

/* 1 when a loaded output is exactly what the manifest describes: dtype, shape, C order. */
static bool matches_desc(const tdm_tensor *t, const tdm__cache_desc *d)
{
    if (tdm_tensor_dtype(t) != d->dtype || tdm_tensor_ndim(t) != d->ndim)
        return false;
    const int64_t *s = tdm_tensor_shape(t);
    for (int k = 0; k < d->ndim; k++)
        if (s[k] != d->shape[k])
            return false;
    return tdm_tensor_is_contiguous(t) != 0;
}

/* Checks output file `p` against the manifest before it is loaded: its size, and the hash of
 * its head (.npy header). 0 fine, 1 gone because the entry was evicted meanwhile, -1 corrupt. */
static int check_file(tdm_cache *c, const char *key, const char *p, const manifest *m, int i)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT && !manifest_exists(c, key) ? 1 : -1;
    struct stat st;
    int64_t hl = head_len(m->codec, m->file_bytes[i], &m->d[i]);
    uint64_t h = 0;
    int r = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == m->file_bytes[i] &&
        hl >= 0 && hash_head(fd, hl, &h) == 0 && h == m->head_hash[i])
        r = 0;
    close(fd);
    return r;
}

/* Tries to serve a hit: 0 (hit, outputs filled), 1 (miss), 2 (an entry of an older format: a
 * miss, to be replaced), -1 (corrupt entry: a miss too). Created outputs are released again
 * on anything but a hit. The size, head, dtype/shape/order checks run whatever opts.verify
 * says; verify adds the data hash. */
int tdm__cache_try_hit(tdm_cache *c, const char *key, tdm_tensor **outputs, int n_out,
                       const tdm__cache_desc *descs, bool create, uint32_t *compute_us)
{
    manifest m;
    int r = read_manifest(c, key, n_out, descs, &m);
    if (r != 0)
        return r;
    if (compute_us)
        *compute_us = m.compute_us;
    tdm_runtime *rt = c->rt;
    int result = 0;
    int made = 0;
    for (int i = 0; i < n_out && result == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%d.%s", i, ext_of(m.codec));
        char *p = tdm__cache_join(c->dir, key, name);
        if (!p) {
            result = 1;
            break;
        }
        result = check_file(c, key, p, &m, i);
        if (result == 0) {
            int rc;
            if (create) {
                tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
                lo.mmap = c->o.mmap;
                lo.mem = c->o.mem;
                rc = tdm_load(rt, p, &lo, &outputs[i]);
                if (rc == 0)
                    made++;
            } else {
                rc = tdm_load_into(rt, p, outputs[i]);
            }
            if (rc == TDM_EIO && !manifest_exists(c, key))
                result = 1; /* evicted meanwhile */
            else if (rc == TDM_ENOMEM || rc == TDM_ENOSPC || rc == TDM_EPERM)
                result = 1; /* not the entry's fault */
            else if (rc != 0)
                result = -1;
            else if (!matches_desc(outputs[i], &m.d[i]))
                result = -1; /* a header that loads, but not as the manifest says */
            else if (c->o.verify && data_hash(outputs[i]) != m.hash[i])
                result = -1;
        }
        free(p);
    }
    if (result != 0 && create)
        for (int i = 0; i < made; i++) {
            tdm_tensor_release(outputs[i]);
            outputs[i] = NULL;
        }
    if (result == 0) {
        char *p = tdm__cache_join(c->dir, key, "manifest");
        if (p)
            utimensat(AT_FDCWD, p, NULL, 0); /* last use, for LRU eviction */
        free(p);
    }
    return result;
}

/* ---- stores ----------------------------------------------------------------------------- */

/* Writes the outputs as a new entry. 0 stored (or another writer's entry won), -1 failed. */
int tdm__cache_store(tdm_cache *c, const char *key, tdm_tensor *const *outs, int n_out,
                     uint32_t compute_us)
{
    char tmpname[64];
    tdm__cache_random_name(tmpname, sizeof tmpname, ".tmp-");
    char *tmp = tdm__cache_join(c->dir, tmpname, NULL), *final = tdm__cache_join(c->dir, key, NULL);
    int rc = -1;
    if (!tmp || !final || mkdir(tmp, 0700) != 0)
        goto out;
    uint64_t bytes[TDM__CACHE_MAX_OUTPUTS], hash[TDM__CACHE_MAX_OUTPUTS],
        head[TDM__CACHE_MAX_OUTPUTS];
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = c->o.codec;
    so.level = c->o.level;
    so.fsync = c->o.fsync;
    for (int i = 0; i < n_out; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%d.%s", i, ext_of(c->o.codec));
        char *p = tdm__cache_join(tmp, name, NULL);
        struct stat st;
        bool ok = p && tdm_save(outs[i], p, &so) == 0;
        /* The head's hash is taken from the file as written (the .npy header is read back). */
        int fd = ok ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        free(p);
        ok = fd >= 0 && fstat(fd, &st) == 0;
        if (ok) {
            tdm__cache_desc d;
            memset(&d, 0, sizeof d);
            d.dtype = outs[i]->dtype;
            d.ndim = outs[i]->ndim;
            memcpy(d.shape, outs[i]->shape, (size_t)d.ndim * sizeof(int64_t));
            int64_t hl = head_len(c->o.codec, (uint64_t)st.st_size, &d);
            ok = hl >= 0 && hash_head(fd, hl, &head[i]) == 0;
        }
        if (fd >= 0)
            close(fd);
        if (!ok)
            goto cleanup;
        bytes[i] = (uint64_t)st.st_size;
        hash[i] = data_hash(outs[i]);
    }
    unsigned char key16[16];
    tdm__cache_key_bytes(key, key16);
    char *mp = tdm__cache_join(tmp, "manifest", NULL);
    bool ok = mp && write_manifest(mp, key16, c->o.codec, n_out, outs, bytes, hash, head,
                                   compute_us, c->o.fsync != 0) == 0;
    free(mp);
    if (!ok)
        goto cleanup;
    if (rename(tmp, final) == 0) {
        if (c->o.fsync) {
            int fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0) {
                (void)fsync(fd);
                close(fd);
            }
        }
        tdm__cache_count(c, &c->st.stores, 1);
        rc = 0;
        goto out;
    }
    if (errno == EEXIST || errno == ENOTEMPTY)
        rc = 0; /* another writer stored the same key first: theirs stays */
cleanup:
    tdm__cache_remove_tree(tmp);
out:
    free(tmp);
    free(final);
    return rc;
}
