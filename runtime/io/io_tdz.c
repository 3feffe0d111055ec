/* Compressed tensor files (".tdz"): the tensor's bytes (C order) in independent chunks, each
 * compressed with zstd, lz4 or deflate and checksummed, compressed and decompressed in
 * parallel on the runtime's threads a group at a time, so memory stays bounded and a file
 * larger than memory can be written and read back (into a mapped tensor).
 *
 * Layout (little-endian):
 *   header, 96 bytes: magic "\x93TDZ\x01\r\n\x1a" | u8 codec | u8 dtype | u8 ndim | u8 flags (0)
 *                     | i32 level | u32 chunk_bytes | u32 0 | i64 shape[8] | u64 xxh3(bytes 0..87)
 *                     | 0 padding to 96
 *   chunks, back to back from offset 96
 *   index, n entries of 24 bytes: u64 offset | u32 comp_len | u32 raw_len | u64 xxh3(comp bytes)
 *   footer, 40 bytes: u64 n | u64 raw_total | u64 index_offset | u64 xxh3(index + the 24 bytes
 *                     before) | "TDZEND\0\0"
 * Every chunk but the last holds exactly chunk_bytes raw bytes. A reader checks the header and
 * the footer against the file's size, and each index entry against the file and against the
 * codec's largest possible ratio, before it allocates anything. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4hc.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "io/io_internal.h"

#define HDR_BYTES 96u
#define FOOTER_BYTES 40u
#define ENTRY_BYTES 24u
#define END_MAGIC "TDZEND\0\0"
#define DEFAULT_CHUNK (1u << 20)

bool tdm__tdz_is(const unsigned char *buf, size_t n)
{
    return n >= 8 && memcmp(buf, TDM__TDZ_MAGIC, 8) == 0;
}

/* Largest raw/compressed ratio each codec can produce, with a little slack: a chunk claiming
 * more is corrupt, and this bounds what a small hostile file can make a reader allocate. */
static uint64_t max_ratio(tdm_codec c)
{
    switch (c) {
    case TDM_CODEC_LZ4:
        return 256;
    case TDM_CODEC_DEFLATE:
        return 1040;
    default:
        return 32768; /* zstd: an RLE block of 128 KiB in 4 bytes */
    }
}

static size_t bound_of(tdm_codec c, size_t n)
{
    switch (c) {
    case TDM_CODEC_ZSTD:
        return ZSTD_compressBound(n);
    case TDM_CODEC_LZ4:
        return (size_t)LZ4_compressBound((int)n);
    default:
        return (size_t)compressBound((uLong)n);
    }
}

/* ---- per-chunk work, run on the pool ------------------------------------------------------- */

typedef struct chunk_job {
    const char *src; /* compress: raw chunk; decompress: compressed chunk */
    size_t src_len;
    char *dst;
    size_t dst_cap;
    size_t out_len; /* compress: compressed size */
    uint64_t hash;  /* compress: xxh3 of the output; decompress: expected xxh3 of src */
    int status;     /* 0, TDM_ECORRUPT, TDM_ENOMEM */
} chunk_job;

typedef struct group_params {
    chunk_job *jobs;
    tdm_codec codec;
    int level;
    void **ctx; /* per worker: a ZSTD_CCtx / ZSTD_DCtx, made on first use */
    int n_ctx;
    bool compress;
} group_params;

static int compress_one(const group_params *g, chunk_job *j, void **ctx)
{
    switch (g->codec) {
    case TDM_CODEC_ZSTD: {
        if (!*ctx)
            *ctx = ZSTD_createCCtx();
        if (!*ctx)
            return TDM_ENOMEM;
        size_t r = ZSTD_compressCCtx(*ctx, j->dst, j->dst_cap, j->src, j->src_len,
                                     g->level ? g->level : ZSTD_CLEVEL_DEFAULT);
        if (ZSTD_isError(r))
            return TDM_ENOMEM;
        j->out_len = r;
        break;
    }
    case TDM_CODEC_LZ4: {
        int r = g->level >= 3
                    ? LZ4_compress_HC(j->src, j->dst, (int)j->src_len, (int)j->dst_cap, g->level)
                    : LZ4_compress_default(j->src, j->dst, (int)j->src_len, (int)j->dst_cap);
        if (r <= 0)
            return TDM_ENOMEM;
        j->out_len = (size_t)r;
        break;
    }
    default: {
        uLongf n = (uLongf)j->dst_cap;
        if (compress2((Bytef *)j->dst, &n, (const Bytef *)j->src, (uLong)j->src_len,
                      g->level ? g->level : 6) != Z_OK)
            return TDM_ENOMEM;
        j->out_len = n;
    }
    }
    j->hash = XXH3_64bits(j->dst, j->out_len);
    return 0;
}

static int decompress_one(const group_params *g, chunk_job *j, void **ctx)
{
    if (XXH3_64bits(j->src, j->src_len) != j->hash)
        return TDM_ECORRUPT;
    switch (g->codec) {
    case TDM_CODEC_ZSTD: {
        if (!*ctx)
            *ctx = ZSTD_createDCtx();
        if (!*ctx)
            return TDM_ENOMEM;
        size_t r = ZSTD_decompressDCtx(*ctx, j->dst, j->dst_cap, j->src, j->src_len);
        return !ZSTD_isError(r) && r == j->dst_cap ? 0 : TDM_ECORRUPT;
    }
    case TDM_CODEC_LZ4: {
        int r = LZ4_decompress_safe(j->src, j->dst, (int)j->src_len, (int)j->dst_cap);
        return r >= 0 && (size_t)r == j->dst_cap ? 0 : TDM_ECORRUPT;
    }
    default: {
        uLongf n = (uLongf)j->dst_cap;
        int r = uncompress((Bytef *)j->dst, &n, (const Bytef *)j->src, (uLong)j->src_len);
        return r == Z_OK && n == j->dst_cap ? 0 : TDM_ECORRUPT;
    }
    }
}

static int run_chunks(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const group_params *g = params;
    int w = tdm_task_worker(task);
    void **ctx = &g->ctx[w < g->n_ctx ? w : 0];
    for (int64_t i = begin; i < end; i++) {
        chunk_job *j = &g->jobs[i];
        j->status = g->compress ? compress_one(g, j, ctx) : decompress_one(g, j, ctx);
    }
    return 0;
}

/* Runs n chunk jobs on the runtime's threads. */
static int run_group(tdm_runtime *rt, group_params *g, int n)
{
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_THREADS;
    mo.batch_size = 1;
    mo.progress = TDM_PROGRESS_OFF;
    return tdm_parallel_for(rt, n, run_chunks, g, sizeof *g, &mo, NULL);
}

static void free_ctx(group_params *g)
{
    for (int i = 0; i < g->n_ctx; i++) {
        if (!g->ctx[i] || g->codec != TDM_CODEC_ZSTD)
            continue;
        if (g->compress)
            ZSTD_freeCCtx(g->ctx[i]);
        else
            ZSTD_freeDCtx(g->ctx[i]);
    }
    free(g->ctx);
    g->ctx = NULL;
}

static int group_size(tdm_runtime *rt)
{
    int n = 2 * tdm_runtime_threads(rt);
    return n < 2 ? 2 : n > 64 ? 64 : n;
}

/* ---- header -------------------------------------------------------------------------------- */

static void write_header(unsigned char *h, tdm_codec codec, int level, tdm_dtype dtype, int ndim,
                         const int64_t *shape, uint32_t chunk)
{
    memset(h, 0, HDR_BYTES);
    memcpy(h, TDM__TDZ_MAGIC, 8);
    h[8] = (unsigned char)codec;
    h[9] = (unsigned char)dtype;
    h[10] = (unsigned char)ndim;
    h[11] = 0;
    tdm__put_u32(h + 12, (uint32_t)level);
    tdm__put_u32(h + 16, chunk);
    for (int i = 0; i < ndim; i++)
        tdm__put_u64(h + 24 + 8 * i, (uint64_t)shape[i]);
    tdm__put_u64(h + 88, XXH3_64bits(h, 88));
}

typedef struct tdz_header {
    tdm_codec codec;
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
    uint32_t chunk;
    uint64_t raw_total;
    uint64_t n;
    uint64_t index_off;
    unsigned char *index; /* n entries */
} tdz_header;

#define BAD(...) tdm__err(rt, TDM_EFORMAT, __VA_ARGS__)

/* Reads and checks header, footer and index. The index is malloc'ed (free it). */
static int read_meta(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                     bool want_index, tdz_header *t)
{
    memset(t, 0, sizeof *t);
    unsigned char h[HDR_BYTES], f[FOOTER_BYTES];
    if (size < HDR_BYTES + FOOTER_BYTES)
        return BAD("%s: '%s' is truncated: %llu bytes, less than a compressed file's header and "
                   "footer",
                   who, path, (unsigned long long)size);
    int rc = tdm__io_pread(rt, who, path, fd, h, HDR_BYTES, 0, "the header");
    if (rc != 0)
        return rc;
    if (!tdm__tdz_is(h, HDR_BYTES))
        return BAD("%s: '%s' is not a tandem compressed file", who, path);
    if (tdm__get_u64(h + 88) != XXH3_64bits(h, 88))
        return tdm__err(rt, TDM_ECORRUPT, "%s: '%s': the header fails its checksum", who, path);
    t->codec = (tdm_codec)h[8];
    t->dtype = (tdm_dtype)h[9];
    t->ndim = h[10];
    t->chunk = tdm__get_u32(h + 16);
    if (t->codec < TDM_CODEC_ZSTD || t->codec > TDM_CODEC_DEFLATE)
        return BAD("%s: '%s': unknown codec %u", who, path, h[8]);
    if (tdm_dtype_size(t->dtype) == 0)
        return tdm__err(rt, TDM_EDTYPE, "%s: '%s': unknown dtype %u", who, path, h[9]);
    if (t->ndim > TDM_MAX_DIMS)
        return tdm__err(rt, TDM_ESHAPE, "%s: '%s': %d dims", who, path, t->ndim);
    if (h[11] != 0 || t->chunk < 4096 || t->chunk > (64u << 20))
        return BAD("%s: '%s': bad flags or chunk size %u", who, path, t->chunk);
    int64_t numel, bytes;
    for (int i = 0; i < t->ndim; i++)
        t->shape[i] = (int64_t)tdm__get_u64(h + 24 + 8 * i);
    if (tdm__shape_numel(t->ndim, t->shape, &numel) != 0 ||
        tdm__mul_ovf(numel, (int64_t)tdm_dtype_size(t->dtype), &bytes))
        return BAD("%s: '%s': the shape is negative or overflows", who, path);
    rc = tdm__io_pread(rt, who, path, fd, f, FOOTER_BYTES, size - FOOTER_BYTES, "the footer");
    if (rc != 0)
        return rc;
    if (memcmp(f + 32, END_MAGIC, 8) != 0)
        return BAD("%s: '%s' is truncated or damaged: no end marker", who, path);
    t->n = tdm__get_u64(f);
    t->raw_total = tdm__get_u64(f + 8);
    t->index_off = tdm__get_u64(f + 16);
    uint64_t room = size - HDR_BYTES - FOOTER_BYTES;
    if (t->n > room / ENTRY_BYTES || t->index_off != size - FOOTER_BYTES - t->n * ENTRY_BYTES)
        return BAD("%s: '%s': the index (%llu entries) does not fit the file", who, path,
                   (unsigned long long)t->n);
    if (t->raw_total != (uint64_t)bytes)
        return BAD("%s: '%s': %llu raw bytes for a shape of %lld bytes", who, path,
                   (unsigned long long)t->raw_total, (long long)bytes);
    if (!want_index)
        return 0;
    size_t ib = (size_t)(t->n * ENTRY_BYTES);
    t->index = malloc(ib + 24 + 1);
    if (!t->index)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory for an index of %zu bytes", who, ib);
    rc = tdm__io_pread(rt, who, path, fd, t->index, ib, t->index_off, "the index");
    if (rc != 0)
        goto fail;
    memcpy(t->index + ib, f, 24);
    if (XXH3_64bits(t->index, ib + 24) != tdm__get_u64(f + 24)) {
        rc = tdm__err(rt, TDM_ECORRUPT, "%s: '%s': the index fails its checksum", who, path);
        goto fail;
    }
    uint64_t at = HDR_BYTES, raw = 0;
    for (uint64_t i = 0; i < t->n; i++) {
        const unsigned char *e = t->index + i * ENTRY_BYTES;
        uint64_t off = tdm__get_u64(e);
        uint32_t cl = tdm__get_u32(e + 8), rl = tdm__get_u32(e + 12);
        bool last = i + 1 == t->n;
        if (off != at || cl == 0 || cl > t->index_off - at || rl == 0 || rl > t->chunk ||
            (!last && rl != t->chunk) || (uint64_t)rl > (uint64_t)cl * max_ratio(t->codec) ||
            cl > bound_of(t->codec, t->chunk)) {
            rc = BAD("%s: '%s': chunk %llu is inconsistent (offset %llu, %u -> %u bytes)", who,
                     path, (unsigned long long)i, (unsigned long long)off, cl, rl);
            goto fail;
        }
        at += cl;
        raw += rl;
    }
    if (at != t->index_off || raw != t->raw_total) {
        rc = BAD("%s: '%s': the chunks do not add up (%llu raw bytes, %llu expected)", who, path,
                 (unsigned long long)raw, (unsigned long long)t->raw_total);
        goto fail;
    }
    return 0;
fail:
    free(t->index);
    t->index = NULL;
    return rc;
}

int tdm__tdz_info(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                  tdm_file_info *info)
{
    tdz_header t;
    int rc = read_meta(rt, who, path, fd, size, false, &t);
    if (rc != 0)
        return rc;
    info->kind = TDM_FILE_TDZ;
    info->dtype = t.dtype;
    info->ndim = t.ndim;
    memcpy(info->shape, t.shape, sizeof t.shape);
    info->codec = t.codec;
    info->data_bytes = (int64_t)t.raw_total;
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------- */

int tdm__tdz_load(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                  const tdm_load_opts *o, tdm_tensor *dst, tdm_tensor **out)
{
    if (!dst && o->mmap != TDM_MMAP_NONE)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: '%s' is compressed and cannot be memory-mapped; decompress it into a "
                        "mapped tensor with tdm_npy_create() + tdm_load_into()",
                        who, path);
    tdz_header t;
    int rc = read_meta(rt, who, path, fd, size, true, &t);
    if (rc != 0)
        return rc;
    tdm_tensor *x = dst;
    group_params g = {.codec = t.codec, .compress = false};
    char *cbuf = NULL;
    chunk_job *jobs = NULL;
    if (o->max_bytes > 0 && t.raw_total > (uint64_t)o->max_bytes) {
        rc = BAD("%s: '%s' holds %llu bytes, more than max_bytes %lld", who, path,
                 (unsigned long long)t.raw_total, (long long)o->max_bytes);
        goto out;
    }
    if (dst)
        rc = tdm__io_check_dst(rt, who, dst, t.dtype, t.ndim, t.shape, false);
    else
        rc = tdm__io_new_tensor(rt, who, t.dtype, t.ndim, t.shape, false, o->mem, &x);
    if (rc != 0)
        goto out;
    int k = group_size(rt);
    size_t cap = bound_of(t.codec, t.chunk);
    g.n_ctx = tdm_runtime_threads(rt) + 1;
    g.ctx = calloc((size_t)g.n_ctx, sizeof *g.ctx);
    jobs = calloc((size_t)k, sizeof *jobs);
    cbuf = t.n > 0 ? malloc(cap * (size_t)(t.n < (uint64_t)k ? t.n : (uint64_t)k)) : NULL;
    if (!g.ctx || !jobs || (t.n > 0 && !cbuf)) {
        rc = tdm__err(rt, TDM_ENOMEM, "%s: out of memory for decompression buffers", who);
        goto out;
    }
    g.jobs = jobs;
    char *data = tdm_tensor_data(x);
    for (uint64_t first = 0; first < t.n && rc == 0; first += (uint64_t)k) {
        int m = (int)(t.n - first < (uint64_t)k ? t.n - first : (uint64_t)k);
        const unsigned char *e0 = t.index + first * ENTRY_BYTES;
        uint64_t off0 = tdm__get_u64(e0), span = 0;
        for (int i = 0; i < m; i++)
            span += tdm__get_u32(e0 + (size_t)i * ENTRY_BYTES + 8);
        /* The group's compressed chunks are contiguous in the file: one read. */
        char *p = cbuf;
        if (span > cap * (size_t)m) {
            rc = BAD("%s: '%s': chunk sizes exceed their bound", who, path);
            break;
        }
        rc = tdm__io_pread(rt, who, path, fd, cbuf, (size_t)span, off0, "the compressed chunks");
        if (rc != 0)
            break;
        for (int i = 0; i < m; i++) {
            const unsigned char *e = e0 + (size_t)i * ENTRY_BYTES;
            chunk_job *j = &jobs[i];
            j->src = p;
            j->src_len = tdm__get_u32(e + 8);
            j->dst = data + (first + (uint64_t)i) * t.chunk;
            j->dst_cap = tdm__get_u32(e + 12);
            j->hash = tdm__get_u64(e + 16);
            j->status = 0;
            p += j->src_len;
        }
        rc = run_group(rt, &g, m);
        if (rc != 0) {
            rc = tdm__io_reerr(rt, rc, who);
            break;
        }
        for (int i = 0; i < m && rc == 0; i++)
            if (jobs[i].status != 0)
                rc = tdm__err(rt, jobs[i].status,
                              jobs[i].status == TDM_ECORRUPT
                                  ? "%s: '%s': chunk %llu fails its checksum or does not "
                                    "decompress to its size: the file is corrupted"
                                  : "%s: '%s': out of memory decompressing chunk %llu",
                              who, path, (unsigned long long)(first + (uint64_t)i));
    }
out:
    free_ctx(&g);
    free(jobs);
    free(cbuf);
    free(t.index);
    if (rc != 0) {
        if (!dst)
            tdm_tensor_release(x);
        return rc;
    }
    if (!dst)
        *out = x;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------- */

struct tdm__tdz_writer {
    tdm_runtime *rt;
    const char *who;
    tdm__io_out out;
    bool sync;
    tdm_codec codec;
    int level;
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
    size_t chunk;
    int k;           /* chunks per group */
    char *raw;       /* k chunks of raw bytes being filled */
    size_t fill;     /* bytes in raw */
    char *comp;      /* k compressed outputs */
    size_t comp_cap; /* per chunk */
    chunk_job *jobs;
    group_params g;
    uint64_t at; /* file offset of the next chunk */
    unsigned char *index;
    uint64_t n, n_cap;
    uint64_t raw_total;
};

int tdm__tdz_writer_open(tdm_runtime *rt, const char *who, const char *path, tdm_dtype dtype,
                         int ndim, const int64_t *shape, const tdm_save_opts *o,
                         tdm__tdz_writer **out)
{
    *out = NULL;
    tdm__tdz_writer *w = calloc(1, sizeof *w);
    if (!w)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    w->out.fd = -1;
    w->rt = rt;
    w->who = who;
    w->sync = o->fsync != 0;
    w->codec = o->codec;
    w->level = o->level;
    w->dtype = dtype;
    w->ndim = ndim;
    memcpy(w->shape, shape, (size_t)ndim * sizeof *shape);
    w->chunk = o->chunk_bytes ? (size_t)o->chunk_bytes : DEFAULT_CHUNK;
    w->k = group_size(rt);
    w->comp_cap = bound_of(w->codec, w->chunk);
    w->raw = malloc(w->chunk * (size_t)w->k);
    w->comp = malloc(w->comp_cap * (size_t)w->k);
    w->jobs = calloc((size_t)w->k, sizeof *w->jobs);
    w->g.codec = w->codec;
    w->g.level = w->level;
    w->g.compress = true;
    w->g.n_ctx = tdm_runtime_threads(rt) + 1;
    w->g.ctx = calloc((size_t)w->g.n_ctx, sizeof *w->g.ctx);
    w->g.jobs = w->jobs;
    int rc = 0;
    if (!w->raw || !w->comp || !w->jobs || !w->g.ctx) {
        rc = tdm__err(rt, TDM_ENOMEM, "%s: out of memory for compression buffers", who);
        goto fail;
    }
    rc = tdm__io_out_open(rt, who, path, &w->out);
    if (rc != 0)
        goto fail;
    unsigned char h[HDR_BYTES];
    write_header(h, w->codec, w->level, dtype, ndim, shape, (uint32_t)w->chunk);
    rc = tdm__io_pwrite(rt, who, path, w->out.fd, h, HDR_BYTES, 0);
    if (rc != 0)
        goto fail;
    w->at = HDR_BYTES;
    *out = w;
    return 0;
fail:
    tdm__tdz_writer_abort(w);
    return rc;
}

/* Compresses m chunks of `src` (the last may be short: `last_len`) and appends them. */
static int flush_chunks(tdm__tdz_writer *w, const char *src, int m, size_t last_len)
{
    for (int i = 0; i < m; i++) {
        chunk_job *j = &w->jobs[i];
        j->src = src + (size_t)i * w->chunk;
        j->src_len = i + 1 == m ? last_len : w->chunk;
        j->dst = w->comp + (size_t)i * w->comp_cap;
        j->dst_cap = w->comp_cap;
        j->status = 0;
    }
    int rc = run_group(w->rt, &w->g, m);
    if (rc != 0)
        return tdm__io_reerr(w->rt, rc, w->who);
    if (w->n + (uint64_t)m > w->n_cap) {
        uint64_t cap = w->n_cap ? w->n_cap * 2 : 256;
        while (cap < w->n + (uint64_t)m)
            cap *= 2;
        unsigned char *ix = realloc(w->index, (size_t)cap * ENTRY_BYTES);
        if (!ix)
            return tdm__err(w->rt, TDM_ENOMEM, "%s: out of memory for the chunk index", w->who);
        w->index = ix;
        w->n_cap = cap;
    }
    for (int i = 0; i < m; i++) {
        chunk_job *j = &w->jobs[i];
        if (j->status != 0)
            return tdm__err(w->rt, TDM_ENOMEM, "%s: compressing a chunk with %s failed", w->who,
                            tdm_codec_name(w->codec));
        rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, j->dst, j->out_len, w->at);
        if (rc != 0)
            return rc;
        unsigned char *e = w->index + w->n * ENTRY_BYTES;
        tdm__put_u64(e, w->at);
        tdm__put_u32(e + 8, (uint32_t)j->out_len);
        tdm__put_u32(e + 12, (uint32_t)j->src_len);
        tdm__put_u64(e + 16, j->hash);
        w->at += j->out_len;
        w->n++;
        w->raw_total += j->src_len;
    }
    return 0;
}

int tdm__tdz_writer_write(tdm__tdz_writer *w, const void *p, size_t n)
{
    const char *s = p;
    size_t group = w->chunk * (size_t)w->k;
    while (n > 0) {
        if (w->fill == 0 && n >= group) {
            /* Whole groups straight from the caller's memory: no copy. */
            int rc = flush_chunks(w, s, w->k, w->chunk);
            if (rc != 0)
                return rc;
            s += group;
            n -= group;
            continue;
        }
        size_t step = group - w->fill < n ? group - w->fill : n;
        memcpy(w->raw + w->fill, s, step);
        w->fill += step;
        s += step;
        n -= step;
        if (w->fill == group) {
            int rc = flush_chunks(w, w->raw, w->k, w->chunk);
            if (rc != 0)
                return rc;
            w->fill = 0;
        }
    }
    return 0;
}

int tdm__tdz_writer_close(tdm__tdz_writer *w, int64_t rows)
{
    int rc = 0;
    if (w->fill > 0) {
        int m = (int)((w->fill + w->chunk - 1) / w->chunk);
        rc = flush_chunks(w, w->raw, m, w->fill - (size_t)(m - 1) * w->chunk);
    }
    if (rc == 0 && w->ndim > 0 && rows >= 0) {
        w->shape[0] = rows;
        unsigned char h[HDR_BYTES];
        write_header(h, w->codec, w->level, w->dtype, w->ndim, w->shape, (uint32_t)w->chunk);
        rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, h, HDR_BYTES, 0);
    }
    if (rc == 0) {
        size_t ib = (size_t)(w->n * ENTRY_BYTES);
        unsigned char *buf = malloc(ib + FOOTER_BYTES);
        if (!buf) {
            rc = tdm__err(w->rt, TDM_ENOMEM, "%s: out of memory", w->who);
        } else {
            if (ib)
                memcpy(buf, w->index, ib);
            unsigned char *f = buf + ib;
            tdm__put_u64(f, w->n);
            tdm__put_u64(f + 8, w->raw_total);
            tdm__put_u64(f + 16, w->at);
            tdm__put_u64(f + 24, XXH3_64bits(buf, ib + 24));
            memcpy(f + 32, END_MAGIC, 8);
            rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, buf, ib + FOOTER_BYTES,
                                w->at);
            free(buf);
        }
    }
    if (rc == 0)
        rc = tdm__io_out_commit(w->rt, w->who, &w->out, w->sync);
    tdm__tdz_writer_abort(w);
    return rc;
}

void tdm__tdz_writer_abort(tdm__tdz_writer *w)
{
    if (!w)
        return;
    if (w->out.fd >= 0 || w->out.tmp)
        tdm__io_out_abort(&w->out);
    free_ctx(&w->g);
    free(w->raw);
    free(w->comp);
    free(w->jobs);
    free(w->index);
    free(w);
}

static int tdz_sink(void *ctx, const void *p, size_t n)
{
    return tdm__tdz_writer_write(ctx, p, n);
}

int tdm__tdz_save(const tdm_tensor *t, const char *path, const tdm_save_opts *o)
{
    static const char who[] = "tdm_save";
    tdm_runtime *rt = tdm_tensor_runtime(t);
    tdm_tensor *c = NULL;
    if (tdm__io_is_fortran(t)) {
        /* The format is C order: a column-major tensor is gathered (emit_elements would give
         * its raw column-major bytes). */
        int rc = tdm_tensor_empty(rt, t->dtype, t->ndim, t->shape, TDM_MEM_HOST, &c);
        if (rc != 0)
            return tdm__io_reerr(rt, rc, who);
        tdm__io_copy_strided(tdm_tensor_data(c), c->strides, tdm_tensor_data(t), t->strides,
                             t->ndim, t->shape, tdm_dtype_size(t->dtype));
        t = c;
    }
    tdm__tdz_writer *w;
    int rc = tdm__tdz_writer_open(rt, who, path, t->dtype, t->ndim, t->shape, o, &w);
    if (rc == 0) {
        rc = tdm__io_emit_elements(rt, who, t, tdz_sink, w);
        if (rc == 0)
            rc = tdm__tdz_writer_close(w, -1);
        else
            tdm__tdz_writer_abort(w);
    }
    tdm_tensor_release(c);
    return rc;
}
