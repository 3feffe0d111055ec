/* SPDX-License-Identifier: MIT */
/* Compressed tensor files: writing - the streaming writer (tdm_writer's compressed form) and
 * tdm_save of a whole tensor. Format in io_tdz.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4hc.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "io/tdz_internal.h"

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
    tdm__tdz_chunk *jobs;
    tdm__tdz_group g;
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
    w->chunk = o->chunk_bytes ? (size_t)o->chunk_bytes : TDM__TDZ_DEFAULT_CHUNK;
    w->k = tdm__tdz_group_size(rt);
    w->comp_cap = tdm__tdz_bound(w->codec, w->chunk);
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
    unsigned char h[TDM__TDZ_HDR_BYTES];
    tdm__tdz_write_header(h, w->codec, w->level, dtype, ndim, shape, (uint32_t)w->chunk);
    rc = tdm__io_pwrite(rt, who, path, w->out.fd, h, TDM__TDZ_HDR_BYTES, 0);
    if (rc != 0)
        goto fail;
    w->at = TDM__TDZ_HDR_BYTES;
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
        tdm__tdz_chunk *j = &w->jobs[i];
        j->src = src + (size_t)i * w->chunk;
        j->src_len = i + 1 == m ? last_len : w->chunk;
        j->dst = w->comp + (size_t)i * w->comp_cap;
        j->dst_cap = w->comp_cap;
        j->status = 0;
    }
    int rc = tdm__tdz_run_group(w->rt, &w->g, m);
    if (rc != 0)
        return tdm__io_reerr(w->rt, rc, w->who);
    if (w->n + (uint64_t)m > w->n_cap) {
        uint64_t cap = w->n_cap ? w->n_cap * 2 : 256;
        while (cap < w->n + (uint64_t)m)
            cap *= 2;
        unsigned char *ix = realloc(w->index, (size_t)cap * TDM__TDZ_ENTRY_BYTES);
        if (!ix)
            return tdm__err(w->rt, TDM_ENOMEM, "%s: out of memory for the chunk index", w->who);
        w->index = ix;
        w->n_cap = cap;
    }
    for (int i = 0; i < m; i++) {
        tdm__tdz_chunk *j = &w->jobs[i];
        if (j->status != 0)
            return tdm__err(w->rt, TDM_ENOMEM, "%s: compressing a chunk with %s failed", w->who,
                            tdm_codec_name(w->codec));
        rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, j->dst, j->out_len, w->at);
        if (rc != 0)
            return rc;
        unsigned char *e = w->index + w->n * TDM__TDZ_ENTRY_BYTES;
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
        unsigned char h[TDM__TDZ_HDR_BYTES];
        tdm__tdz_write_header(h, w->codec, w->level, w->dtype, w->ndim, w->shape,
                              (uint32_t)w->chunk);
        rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, h, TDM__TDZ_HDR_BYTES, 0);
    }
    if (rc == 0) {
        size_t ib = (size_t)(w->n * TDM__TDZ_ENTRY_BYTES);
        unsigned char *buf = malloc(ib + TDM__TDZ_FOOTER_BYTES);
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
            memcpy(f + 32, TDM__TDZ_END_MAGIC, 8);
            rc = tdm__io_pwrite(w->rt, w->who, w->out.path, w->out.fd, buf,
                                ib + TDM__TDZ_FOOTER_BYTES, w->at);
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
    tdm__tdz_free_ctx(&w->g);
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
