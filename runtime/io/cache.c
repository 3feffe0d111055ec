/* The result cache (joblib's Memory): maps keyed by kernel, version, parameters, output
 * descriptions and input bytes (xxh3-128), entries stored as directories renamed into place.
 *
 * Entry layout: dir/<32 hex>/manifest and dir/<32 hex>/out<k>.npy (or .tdz). The manifest:
 *   "TDMCACH1" | u32 2 | u32 n_out | key (16 bytes) | u32 codec | u32 0 |
 *   n_out x { u32 dtype | u32 ndim | i64 shape[8] | u64 file bytes | u64 xxh3(data) |
 *             u64 xxh3(head) } |
 *   u64 xxh3(everything before)
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
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "io/io_internal.h"

#define MANIFEST_MAGIC "TDMCACH1"
#define MANIFEST_VERSION 2u
#define MANIFEST_HEAD 40u
#define MANIFEST_PER_OUT 96u
#define MAX_OUTPUTS 64
#define STALE_TMP_S 600 /* a temporary entry untouched this long belongs to a dead writer */

struct tdm_cache {
    tdm_runtime *rt;
    char *dir;
    tdm_cache_opts o;
    pthread_mutex_t mu;
    tdm_cache_stats st;
};

typedef struct out_desc {
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
} out_desc;

static void count(tdm_cache *c, int64_t *field, int64_t n)
{
    pthread_mutex_lock(&c->mu);
    *field += n;
    pthread_mutex_unlock(&c->mu);
}

/* ---- paths --------------------------------------------------------------------------------- */

static bool is_key(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 32;
}

/* dir + "/" + a + (b ? "/" + b : ""); NULL when out of memory. */
static char *join(const char *dir, const char *a, const char *b)
{
    size_t n = strlen(dir) + strlen(a) + (b ? strlen(b) + 1 : 0) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s%s%s", dir, a, b ? "/" : "", b ? b : "");
    return p;
}

static void random_name(char *buf, size_t len, const char *prefix)
{
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid() << 48;
        r[1] = (uint64_t)(uintptr_t)buf ^ tdm__now_ns();
    }
    snprintf(buf, len, "%s%016llx%016llx", prefix, (unsigned long long)r[0],
             (unsigned long long)r[1]);
}

/* Removes a directory's files, then the directory (one level: entries hold only files). */
static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Takes an entry away atomically (rename into the trash), then deletes it. 0, or -1 when the
 * entry was already gone. */
static int remove_entry(tdm_cache *c, const char *name)
{
    char trash[64];
    random_name(trash, sizeof trash, ".trash-");
    char *from = join(c->dir, name, NULL), *to = join(c->dir, trash, NULL);
    int rc = -1;
    if (from && to && rename(from, to) == 0) {
        remove_tree(to);
        rc = 0;
    }
    free(from);
    free(to);
    return rc;
}

int tdm__mkdir_p(tdm_runtime *rt, const char *who, const char *dir)
{
    char *p = strdup(dir);
    if (!p)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            int rc = tdm__err(rt, TDM_EIO, "%s: cannot create '%s' (%s)", who, p, strerror(e));
            free(p);
            return rc;
        }
        *s = '/';
    }
    free(p);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return tdm__err(rt, TDM_EIO, "%s: cannot create '%s' (%s)", who, dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return tdm__err(rt, TDM_EIO, "%s: '%s' is not a directory", who, dir);
    if (access(dir, R_OK | W_OK | X_OK) != 0)
        return tdm__err(rt, TDM_EIO, "%s: '%s' is not readable and writable (%s)", who, dir,
                        strerror(errno));
    return 0;
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

static void hash_u64(XXH3_state_t *s, uint64_t v)
{
    unsigned char b[8];
    tdm__put_u64(b, v);
    XXH3_128bits_update(s, b, 8);
}

/* Validates the call and computes its key and output descriptions. */
static int make_key(tdm_cache *c, const char *who, const char *kernel, tdm_tensor *const *inputs,
                    int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                    size_t params_size, out_desc *descs, bool *create, char hex[33])
{
    tdm_runtime *rt = c->rt;
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel is NULL", who);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s'", who, kernel);
    if (n_in < 0 || n_out < 0 || n_out > MAX_OUTPUTS || (n_in > 0 && !inputs) ||
        (n_out > 0 && !outputs))
        return tdm__err(rt, TDM_EINVAL, "%s: bad input/output counts or NULL arrays", who);
    if (n_out != k->def.n_out)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel '%s' has %d outputs, %d given", who, kernel,
                        k->def.n_out, n_out);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", who,
                        params_size);
    int given = 0;
    for (int i = 0; i < n_out; i++)
        given += outputs[i] != NULL;
    if (given != 0 && given != n_out)
        return tdm__err(rt, TDM_EINVAL, "%s: outputs must be all given or all NULL", who);
    *create = n_out > 0 && given == 0;
    for (int i = 0; i < n_in; i++) {
        if (!inputs[i])
            return tdm__err(rt, TDM_EINVAL, "%s: input %d is NULL", who, i);
        if (!tdm_tensor_is_contiguous(inputs[i]))
            return tdm__err(rt, TDM_ELAYOUT, "%s: input %d is not contiguous", who, i);
    }
    if (*create) {
        if (!k->def.infer)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: kernel '%s' has no infer function: pass the outputs", who, kernel);
        if (n_in == 0 || inputs[0]->ndim == 0)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: without row-carrying inputs the row count is unknown: pass the "
                            "outputs",
                            who);
        tdm_tensor_desc d[MAX_OUTPUTS];
        memset(d, 0, sizeof d);
        char msg[256] = "";
        int rc = k->def.infer((const tdm_tensor *const *)inputs, n_in, params, params_size, d,
                              n_out, msg, sizeof msg);
        if (rc != 0)
            return tdm__err(rt, rc, "%s: kernel '%s': %s", who, kernel, msg);
        for (int i = 0; i < n_out; i++) {
            if (d[i].ndim < 1 || d[i].ndim > TDM_MAX_DIMS)
                return tdm__err(rt, TDM_EINVAL, "%s: infer gave output %d %d dims", who, i,
                                d[i].ndim);
            descs[i].dtype = d[i].dtype;
            descs[i].ndim = d[i].ndim;
            memcpy(descs[i].shape, d[i].shape, sizeof d[i].shape);
            descs[i].shape[0] = inputs[0]->shape[0];
        }
    } else {
        for (int i = 0; i < n_out; i++) {
            /* (tdm_map refuses them too; checked here so that no hit is tried into them) */
            if (!tdm_tensor_is_contiguous(outputs[i]))
                return tdm__err(rt, TDM_ELAYOUT, "%s: output %d is not contiguous", who, i);
            memset(&descs[i], 0, sizeof descs[i]);
            descs[i].dtype = outputs[i]->dtype;
            descs[i].ndim = outputs[i]->ndim;
            memcpy(descs[i].shape, outputs[i]->shape, (size_t)outputs[i]->ndim * sizeof(int64_t));
        }
    }
    XXH3_state_t *s = XXH3_createState();
    if (!s)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    XXH3_128bits_reset(s);
    XXH3_128bits_update(s, "tandem-cache-v1", 16);
    XXH3_128bits_update(s, kernel, strlen(kernel) + 1);
    hash_u64(s, k->def.kernel_version);
    hash_u64(s, (uint64_t)n_in);
    for (int i = 0; i < n_in; i++) {
        const tdm_tensor *t = inputs[i];
        hash_u64(s, (uint64_t)t->dtype);
        hash_u64(s, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            hash_u64(s, (uint64_t)t->shape[d]);
        size_t n = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(t->dtype);
        if (n > 0)
            XXH3_128bits_update(s, tdm_tensor_data(t), n);
    }
    hash_u64(s, (uint64_t)params_size);
    if (params_size > 0)
        XXH3_128bits_update(s, params, params_size);
    hash_u64(s, (uint64_t)n_out);
    for (int i = 0; i < n_out; i++) {
        hash_u64(s, (uint64_t)descs[i].dtype);
        hash_u64(s, (uint64_t)descs[i].ndim);
        for (int d = 0; d < descs[i].ndim; d++)
            hash_u64(s, (uint64_t)descs[i].shape[d]);
    }
    XXH128_hash_t h = XXH3_128bits_digest(s);
    XXH3_freeState(s);
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
    return 0;
}

int tdm_cache_key(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                  tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
                  char key_hex[33])
{
    static const char who[] = "tdm_cache_key";
    if (!c || !key_hex)
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL, "%s: NULL cache or key_hex", who);
    tdm__err_clear(c->rt);
    out_desc d[MAX_OUTPUTS];
    bool create;
    return make_key(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size, d, &create,
                    key_hex);
}

int tdm_cache_contains(tdm_cache *c, const char *key_hex)
{
    if (!c || !key_hex || !is_key(key_hex))
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL,
                        "tdm_cache_contains: NULL cache or a key that is not 32 hex digits");
    char *p = join(c->dir, key_hex, "manifest");
    if (!p)
        return tdm__err(c->rt, TDM_ENOMEM, "tdm_cache_contains: out of memory");
    int r = access(p, F_OK) == 0;
    free(p);
    return r;
}

static void key_bytes(const char *hex, unsigned char *b)
{
    for (int i = 0; i < 16; i++) {
        int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
        int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
}

/* ---- manifest ------------------------------------------------------------------------------ */

static const char *ext_of(tdm_codec codec)
{
    return codec == TDM_CODEC_NONE ? "npy" : "tdz";
}

typedef struct manifest {
    int n_out;
    tdm_codec codec;
    out_desc d[MAX_OUTPUTS];
    uint64_t file_bytes[MAX_OUTPUTS];
    uint64_t hash[MAX_OUTPUTS];
    uint64_t head_hash[MAX_OUTPUTS];
} manifest;

/* Bytes of element data an output of this description holds. */
static uint64_t desc_data_bytes(const out_desc *d)
{
    uint64_t n = tdm_dtype_size(d->dtype);
    for (int k = 0; k < d->ndim; k++)
        n *= (uint64_t)d->shape[k];
    return n;
}

/* Length of the head (bytes of the file that are not element data) of an output file; -1
 * when the sizes cannot belong to a file tandem wrote. */
static int64_t head_len(tdm_codec codec, uint64_t file_bytes, const out_desc *d)
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
static int read_manifest(tdm_cache *c, const char *key, int n_out, const out_desc *want,
                         manifest *m)
{
    char *p = join(c->dir, key, "manifest");
    if (!p)
        return 1;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? 1 : -1;
    size_t len = MANIFEST_HEAD + (size_t)n_out * MANIFEST_PER_OUT + 8;
    unsigned char buf[MANIFEST_HEAD + MAX_OUTPUTS * MANIFEST_PER_OUT + 8 + 1];
    ssize_t r = read(fd, buf, len + 1);
    close(fd);
    if (r >= 12 && memcmp(buf, MANIFEST_MAGIC, 8) == 0 && tdm__get_u32(buf + 8) == 1)
        return 2; /* written before the head hash existed: never served */
    if (r != (ssize_t)len || memcmp(buf, MANIFEST_MAGIC, 8) != 0 ||
        tdm__get_u32(buf + 8) != MANIFEST_VERSION || tdm__get_u32(buf + 12) != (uint32_t)n_out ||
        tdm__get_u64(buf + len - 8) != XXH3_64bits(buf, len - 8))
        return -1;
    unsigned char key16[16];
    key_bytes(key, key16);
    if (memcmp(buf + 16, key16, 16) != 0)
        return -1;
    m->n_out = n_out;
    m->codec = (tdm_codec)tdm__get_u32(buf + 32);
    if (m->codec > TDM_CODEC_DEFLATE)
        return -1;
    for (int i = 0; i < n_out; i++) {
        const unsigned char *e = buf + MANIFEST_HEAD + (size_t)i * MANIFEST_PER_OUT;
        out_desc *d = &m->d[i];
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
                          const uint64_t *head_hash, bool sync)
{
    unsigned char buf[MANIFEST_HEAD + MAX_OUTPUTS * MANIFEST_PER_OUT + 8];
    memset(buf, 0, sizeof buf);
    memcpy(buf, MANIFEST_MAGIC, 8);
    tdm__put_u32(buf + 8, MANIFEST_VERSION);
    tdm__put_u32(buf + 12, (uint32_t)n_out);
    memcpy(buf + 16, key16, 16);
    tdm__put_u32(buf + 32, (uint32_t)codec);
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
    char *p = join(c->dir, key, "manifest");
    bool r = p && access(p, F_OK) == 0;
    free(p);
    return r;
}

/* 1 when a loaded output is exactly what the manifest describes: dtype, shape, C order. */
static bool matches_desc(const tdm_tensor *t, const out_desc *d)
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
static int try_hit(tdm_cache *c, const char *key, tdm_tensor **outputs, int n_out,
                   const out_desc *descs, bool create)
{
    manifest m;
    int r = read_manifest(c, key, n_out, descs, &m);
    if (r != 0)
        return r;
    tdm_runtime *rt = c->rt;
    int result = 0;
    int made = 0;
    for (int i = 0; i < n_out && result == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%d.%s", i, ext_of(m.codec));
        char *p = join(c->dir, key, name);
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
        char *p = join(c->dir, key, "manifest");
        if (p)
            utimensat(AT_FDCWD, p, NULL, 0); /* last use, for LRU eviction */
        free(p);
    }
    return result;
}

/* ---- stores and eviction ------------------------------------------------------------------- */

typedef struct entry_info {
    char name[33];
    struct timespec used;
    uint64_t bytes;
} entry_info;

static int cmp_used(const void *a, const void *b)
{
    const entry_info *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec)
        return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec)
        return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Lists the entries with their size and last use; removes stale temporaries on the way when
 * `sweep`. *out is malloc'ed. */
static int scan(tdm_cache *c, const char *who, bool sweep, entry_info **out, int64_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(c->dir);
    if (!d)
        return tdm__err(c->rt, TDM_EIO, "%s: cannot read '%s' (%s)", who, c->dir, strerror(errno));
    entry_info *v = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        if (sweep &&
            (strncmp(e->d_name, ".tmp-", 5) == 0 || strncmp(e->d_name, ".trash-", 7) == 0)) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                (strncmp(e->d_name, ".trash-", 7) == 0 || now - st.st_mtime > STALE_TMP_S)) {
                char *p = join(c->dir, e->d_name, NULL);
                if (p)
                    remove_tree(p);
                free(p);
            }
            continue;
        }
        if (!is_key(e->d_name))
            continue;
        DIR *sub = NULL;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || !(sub = fdopendir(fd))) {
            if (fd >= 0)
                close(fd);
            continue; /* removed meanwhile */
        }
        entry_info info;
        memset(&info, 0, sizeof info);
        memcpy(info.name, e->d_name, 33);
        struct stat st;
        bool has_manifest = false;
        struct dirent *f;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.' ||
                fstatat(dirfd(sub), f->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            info.bytes += (uint64_t)st.st_size;
            if (strcmp(f->d_name, "manifest") == 0) {
                info.used = st.st_mtim;
                has_manifest = true;
            }
        }
        closedir(sub);
        if (!has_manifest)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            entry_info *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                return tdm__err(c->rt, TDM_ENOMEM, "%s: out of memory", who);
            }
            v = nv;
        }
        v[n++] = info;
    }
    closedir(d);
    *out = v;
    *n_out = n;
    return 0;
}

static void evict(tdm_cache *c)
{
    if (c->o.bytes_limit == 0)
        return;
    entry_info *v;
    int64_t n;
    if (scan(c, "tdm_cache_map", true, &v, &n) != 0)
        return;
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += v[i].bytes;
    if (total > c->o.bytes_limit) {
        qsort(v, (size_t)n, sizeof *v, cmp_used);
        for (int64_t i = 0; i < n && total > c->o.bytes_limit; i++) {
            if (remove_entry(c, v[i].name) == 0)
                count(c, &c->st.evictions, 1);
            total -= v[i].bytes;
        }
    }
    free(v);
}

/* Writes the outputs as a new entry. 0 stored (or another writer's entry won), -1 failed. */
static int store(tdm_cache *c, const char *key, tdm_tensor *const *outs, int n_out)
{
    char tmpname[64];
    random_name(tmpname, sizeof tmpname, ".tmp-");
    char *tmp = join(c->dir, tmpname, NULL), *final = join(c->dir, key, NULL);
    int rc = -1;
    if (!tmp || !final || mkdir(tmp, 0700) != 0)
        goto out;
    uint64_t bytes[MAX_OUTPUTS], hash[MAX_OUTPUTS], head[MAX_OUTPUTS];
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = c->o.codec;
    so.level = c->o.level;
    so.fsync = c->o.fsync;
    for (int i = 0; i < n_out; i++) {
        char name[32];
        snprintf(name, sizeof name, "out%d.%s", i, ext_of(c->o.codec));
        char *p = join(tmp, name, NULL);
        struct stat st;
        bool ok = p && tdm_save(outs[i], p, &so) == 0;
        /* The head's hash is taken from the file as written (the .npy header is read back). */
        int fd = ok ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        free(p);
        ok = fd >= 0 && fstat(fd, &st) == 0;
        if (ok) {
            out_desc d;
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
    key_bytes(key, key16);
    char *mp = join(tmp, "manifest", NULL);
    bool ok = mp && write_manifest(mp, key16, c->o.codec, n_out, outs, bytes, hash, head,
                                   c->o.fsync != 0) == 0;
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
        count(c, &c->st.stores, 1);
        rc = 0;
        goto out;
    }
    if (errno == EEXIST || errno == ENOTEMPTY)
        rc = 0; /* another writer stored the same key first: theirs stays */
cleanup:
    remove_tree(tmp);
out:
    free(tmp);
    free(final);
    return rc;
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
    out_desc descs[MAX_OUTPUTS];
    bool create;
    char key[33];
    int rc = make_key(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size, descs,
                      &create, key);
    if (rc != 0)
        return rc;
    int r = try_hit(c, key, outputs, n_out, descs, create);
    if (r == 0) {
        count(c, &c->st.hits, 1);
        if (hit)
            *hit = 1;
        tdm__err_clear(rt);
        return 0;
    }
    if (r < 0)
        count(c, &c->st.corrupt, 1);
    if (r < 0 || r == 2)
        remove_entry(c, key); /* corrupt, or of an older format: the store below replaces it */
    count(c, &c->st.misses, 1);
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
    rc = tdm_map(rt, kernel, inputs, n_in, outputs, n_out, params, params_size, opts, report);
    if (rc != 0)
        goto fail;
    if (store(c, key, outputs, n_out) != 0)
        count(c, &c->st.store_failures, 1);
    else
        evict(c);
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

int tdm_cache_clear(tdm_cache *c)
{
    static const char who[] = "tdm_cache_clear";
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm__err_clear(c->rt);
    entry_info *v;
    int64_t n;
    int rc = scan(c, who, true, &v, &n);
    if (rc != 0)
        return rc;
    for (int64_t i = 0; i < n; i++)
        remove_entry(c, v[i].name);
    free(v);
    /* Entries without a manifest (a crashed removal) go too. */
    DIR *d = opendir(c->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (is_key(e->d_name))
                remove_entry(c, e->d_name);
        closedir(d);
    }
    return 0;
}

int tdm_cache_usage(tdm_cache *c, uint64_t *bytes, int64_t *entries)
{
    static const char who[] = "tdm_cache_usage";
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm__err_clear(c->rt);
    entry_info *v;
    int64_t n;
    int rc = scan(c, who, false, &v, &n);
    if (rc != 0)
        return rc;
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += v[i].bytes;
    free(v);
    if (bytes)
        *bytes = total;
    if (entries)
        *entries = n;
    return 0;
}
