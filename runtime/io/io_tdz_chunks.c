/* SPDX-License-Identifier: MIT */
/* Compressed tensor files: the per-chunk work (compress or decompress, checksum), run on the
 * runtime's threads a group at a time, and the header a writer puts first. Format in io_tdz.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4hc.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "io/tdz_internal.h"

/* Largest raw/compressed ratio each codec can produce, with a little slack: a chunk claiming
 * more is corrupt, and this bounds what a small hostile file can make a reader allocate. */
uint64_t tdm__tdz_max_ratio(tdm_codec c)
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

size_t tdm__tdz_bound(tdm_codec c, size_t n)
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

static int compress_one(const tdm__tdz_group *g, tdm__tdz_chunk *j, void **ctx)
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

static int decompress_one(const tdm__tdz_group *g, tdm__tdz_chunk *j, void **ctx)
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
    const tdm__tdz_group *g = params;
    int w = tdm_task_worker(task);
    void **ctx = &g->ctx[w < g->n_ctx ? w : 0];
    for (int64_t i = begin; i < end; i++) {
        tdm__tdz_chunk *j = &g->jobs[i];
        j->status = g->compress ? compress_one(g, j, ctx) : decompress_one(g, j, ctx);
    }
    return 0;
}

/* Runs n chunk jobs on the runtime's threads. */
int tdm__tdz_run_group(tdm_runtime *rt, tdm__tdz_group *g, int n)
{
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_THREADS;
    mo.batch_size = 1;
    mo.progress = TDM_PROGRESS_OFF;
    return tdm_parallel_for(rt, n, run_chunks, g, sizeof *g, &mo, NULL);
}

void tdm__tdz_free_ctx(tdm__tdz_group *g)
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

int tdm__tdz_group_size(tdm_runtime *rt)
{
    int n = 2 * tdm_runtime_threads(rt);
    return n < 2 ? 2 : n > 64 ? 64 : n;
}

/* ---- header -------------------------------------------------------------------------------- */

void tdm__tdz_write_header(unsigned char *h, tdm_codec codec, int level, tdm_dtype dtype, int ndim,
                           const int64_t *shape, uint32_t chunk)
{
    memset(h, 0, TDM__TDZ_HDR_BYTES);
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
