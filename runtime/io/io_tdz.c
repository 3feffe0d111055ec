/* SPDX-License-Identifier: MIT */
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

#include "io/tdz_internal.h"

bool tdm__tdz_is(const unsigned char *buf, size_t n)
{
    return n >= 8 && memcmp(buf, TDM__TDZ_MAGIC, 8) == 0;
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
    unsigned char h[TDM__TDZ_HDR_BYTES], f[TDM__TDZ_FOOTER_BYTES];
    if (size < TDM__TDZ_HDR_BYTES + TDM__TDZ_FOOTER_BYTES)
        return BAD("%s: '%s' is truncated: %llu bytes, less than a compressed file's header and "
                   "footer",
                   who, path, (unsigned long long)size);
    int rc = tdm__io_pread(rt, who, path, fd, h, TDM__TDZ_HDR_BYTES, 0, "the header");
    if (rc != 0)
        return rc;
    if (!tdm__tdz_is(h, TDM__TDZ_HDR_BYTES))
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
    rc = tdm__io_pread(rt, who, path, fd, f, TDM__TDZ_FOOTER_BYTES, size - TDM__TDZ_FOOTER_BYTES,
                       "the footer");
    if (rc != 0)
        return rc;
    if (memcmp(f + 32, TDM__TDZ_END_MAGIC, 8) != 0)
        return BAD("%s: '%s' is truncated or damaged: no end marker", who, path);
    t->n = tdm__get_u64(f);
    t->raw_total = tdm__get_u64(f + 8);
    t->index_off = tdm__get_u64(f + 16);
    uint64_t room = size - TDM__TDZ_HDR_BYTES - TDM__TDZ_FOOTER_BYTES;
    if (t->n > room / TDM__TDZ_ENTRY_BYTES ||
        t->index_off != size - TDM__TDZ_FOOTER_BYTES - t->n * TDM__TDZ_ENTRY_BYTES)
        return BAD("%s: '%s': the index (%llu entries) does not fit the file", who, path,
                   (unsigned long long)t->n);
    if (t->raw_total != (uint64_t)bytes)
        return BAD("%s: '%s': %llu raw bytes for a shape of %lld bytes", who, path,
                   (unsigned long long)t->raw_total, (long long)bytes);
    if (!want_index)
        return 0;
    size_t ib = (size_t)(t->n * TDM__TDZ_ENTRY_BYTES);
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
    uint64_t at = TDM__TDZ_HDR_BYTES, raw = 0;
    for (uint64_t i = 0; i < t->n; i++) {
        const unsigned char *e = t->index + i * TDM__TDZ_ENTRY_BYTES;
        uint64_t off = tdm__get_u64(e);
        uint32_t cl = tdm__get_u32(e + 8), rl = tdm__get_u32(e + 12);
        bool last = i + 1 == t->n;
        if (off != at || cl == 0 || cl > t->index_off - at || rl == 0 || rl > t->chunk ||
            (!last && rl != t->chunk) ||
            (uint64_t)rl > (uint64_t)cl * tdm__tdz_max_ratio(t->codec) ||
            cl > tdm__tdz_bound(t->codec, t->chunk)) {
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
    tdm__tdz_group g = {.codec = t.codec, .compress = false};
    char *cbuf = NULL;
    tdm__tdz_chunk *jobs = NULL;
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
    int k = tdm__tdz_group_size(rt);
    size_t cap = tdm__tdz_bound(t.codec, t.chunk);
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
        const unsigned char *e0 = t.index + first * TDM__TDZ_ENTRY_BYTES;
        uint64_t off0 = tdm__get_u64(e0), span = 0;
        for (int i = 0; i < m; i++)
            span += tdm__get_u32(e0 + (size_t)i * TDM__TDZ_ENTRY_BYTES + 8);
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
            const unsigned char *e = e0 + (size_t)i * TDM__TDZ_ENTRY_BYTES;
            tdm__tdz_chunk *j = &jobs[i];
            j->src = p;
            j->src_len = tdm__get_u32(e + 8);
            j->dst = data + (first + (uint64_t)i) * t.chunk;
            j->dst_cap = tdm__get_u32(e + 12);
            j->hash = tdm__get_u64(e + 16);
            j->status = 0;
            p += j->src_len;
        }
        rc = tdm__tdz_run_group(rt, &g, m);
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
    tdm__tdz_free_ctx(&g);
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
