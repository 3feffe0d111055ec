/* SPDX-License-Identifier: MIT */
/* .npz archives: writing (tdm_npz_save): zip64 local headers as numpy writes them, stored
 * members padded to 64-byte aligned data, deflated members streamed through zlib. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/npz_internal.h"

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct entry {
    char *name;
    uint16_t method;
    uint32_t crc;
    uint64_t csize, usize, local_off;
} entry;

typedef struct zsink {
    tdm_runtime *rt;
    const char *who, *path;
    int fd;
    uint64_t off; /* where the next compressed byte goes */
    uLong crc;
    uint64_t usize;
    bool deflate;
    z_stream zs;
    unsigned char *out;
} zsink;

#define OUT_STEP (1u << 20)

static int zsink_drain(zsink *s, int flush)
{
    for (;;) {
        s->zs.next_out = s->out;
        s->zs.avail_out = OUT_STEP;
        int z = deflate(&s->zs, flush);
        if (z == Z_STREAM_ERROR)
            return tdm__err(s->rt, TDM_ENOMEM, "%s: deflate failed", s->who);
        size_t made = OUT_STEP - s->zs.avail_out;
        if (made) {
            int rc = tdm__io_pwrite(s->rt, s->who, s->path, s->fd, s->out, made, s->off);
            if (rc != 0)
                return rc;
            s->off += made;
        }
        if (flush == Z_FINISH ? z == Z_STREAM_END : s->zs.avail_out != 0)
            return 0;
    }
}

static int zsink_write(void *ctx, const void *p, size_t n)
{
    zsink *s = ctx;
    s->crc = crc32_z(s->crc, p, n);
    s->usize += n;
    if (!s->deflate) {
        int rc = tdm__io_pwrite(s->rt, s->who, s->path, s->fd, p, n, s->off);
        if (rc == 0)
            s->off += n;
        return rc;
    }
    const unsigned char *b = p;
    while (n > 0) {
        uInt step = n > (1u << 30) ? (1u << 30) : (uInt)n;
        s->zs.next_in = (Bytef *)b;
        s->zs.avail_in = step;
        int rc = zsink_drain(s, Z_NO_FLUSH);
        if (rc != 0)
            return rc;
        b += step;
        n -= step;
    }
    return 0;
}

/* Writes tdm__zip_member i; *at is where it starts and, after, where the next one goes. */
static int write_member(tdm_runtime *rt, const char *who, const char *path, int fd,
                        const char *name, const tdm_tensor *t, const tdm_save_opts *o, entry *e,
                        uint64_t *at)
{
    size_t nl = strlen(name);
    e->name = malloc(nl + 5);
    if (!e->name)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    memcpy(e->name, name, nl);
    memcpy(e->name + nl, ".npy", 5);
    nl += 4;
    e->local_off = *at;
    e->method = o->codec == TDM_CODEC_DEFLATE ? 8 : 0;
    unsigned char hdr[4096];
    size_t hlen;
    int rc = tdm__npy_format(t->dtype, t->ndim, t->shape, tdm__io_is_fortran(t), o->npy_version, 0,
                             hdr, sizeof hdr, &hlen);
    if (rc != 0)
        return tdm__err(rt, rc, "%s: cannot format the header of '%s'", who, name);
    /* A zip64 extra (sizes patched later), then for stored data padding to 64 bytes. */
    size_t xlen = 20;
    if (e->method == 0) {
        size_t r = (size_t)((*at + TDM__ZIP_LOCAL_BYTES + nl + xlen + hlen) % 64);
        size_t pad = (64 - r) % 64;
        if (pad > 0 && pad < 4)
            pad += 64;
        xlen += pad;
    }
    unsigned char *lh = calloc(1, TDM__ZIP_LOCAL_BYTES + nl + xlen);
    if (!lh)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    tdm__put_u32(lh, TDM__ZIP_SIG_LOCAL);
    tdm__put_u16(lh + 4, 45);
    tdm__put_u16(lh + 8, e->method);
    tdm__put_u16(lh + 12, TDM__ZIP_DOS_DATE);
    tdm__put_u32(lh + 18, 0xffffffffu);
    tdm__put_u32(lh + 22, 0xffffffffu);
    tdm__put_u16(lh + 26, (uint16_t)nl);
    tdm__put_u16(lh + 28, (uint16_t)xlen);
    memcpy(lh + TDM__ZIP_LOCAL_BYTES, e->name, nl);
    unsigned char *x = lh + TDM__ZIP_LOCAL_BYTES + nl;
    tdm__put_u16(x, 0x0001);
    tdm__put_u16(x + 2, 16);
    if (xlen > 20) {
        tdm__put_u16(x + 20, 0xd935); /* padding (the id Android's zipalign uses) */
        tdm__put_u16(x + 22, (uint16_t)(xlen - 24));
    }
    zsink s = {.rt = rt,
               .who = who,
               .path = path,
               .fd = fd,
               .off = *at + TDM__ZIP_LOCAL_BYTES + nl + xlen,
               .crc = crc32_z(0L, Z_NULL, 0),
               .deflate = e->method == 8};
    if (s.deflate) {
        s.out = malloc(OUT_STEP);
        if (!s.out || deflateInit2(&s.zs, o->level ? o->level : 6, Z_DEFLATED, -15, 8,
                                   Z_DEFAULT_STRATEGY) != Z_OK) {
            free(s.out);
            free(lh);
            return tdm__err(rt, TDM_ENOMEM, "%s: cannot start deflate", who);
        }
    }
    uint64_t data_start = s.off;
    rc = zsink_write(&s, hdr, hlen);
    if (rc == 0)
        rc = tdm__io_emit_elements(rt, who, t, zsink_write, &s);
    if (rc == 0 && s.deflate)
        rc = zsink_drain(&s, Z_FINISH);
    if (s.deflate) {
        deflateEnd(&s.zs);
        free(s.out);
    }
    if (rc == 0) {
        e->crc = (uint32_t)s.crc;
        e->usize = s.usize;
        e->csize = s.off - data_start;
        tdm__put_u32(lh + 14, e->crc);
        tdm__put_u64(x + 4, e->usize);
        tdm__put_u64(x + 12, e->csize);
        rc = tdm__io_pwrite(rt, who, path, fd, lh, TDM__ZIP_LOCAL_BYTES + nl + xlen, *at);
        *at = s.off;
    }
    free(lh);
    return rc;
}

static int write_directory(tdm_runtime *rt, const char *who, const char *path, int fd,
                           const entry *es, int n, uint64_t at)
{
    uint64_t cd_off = at;
    unsigned char buf[TDM__ZIP_CENTRAL_BYTES + 300 + 28];
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const entry *e = &es[i];
        size_t nl = strlen(e->name);
        bool bu = e->usize >= 0xffffffffu, bc = e->csize >= 0xffffffffu,
             bo = e->local_off >= 0xffffffffu;
        size_t xl = (bu || bc || bo) ? 4 + 8 * (size_t)(bu + bc + bo) : 0;
        memset(buf, 0, sizeof buf);
        tdm__put_u32(buf, TDM__ZIP_SIG_CENTRAL);
        tdm__put_u16(buf + 4, 0x031e); /* unix, zip 3.0 */
        tdm__put_u16(buf + 6, xl ? 45 : 20);
        tdm__put_u16(buf + 10, e->method);
        tdm__put_u16(buf + 14, TDM__ZIP_DOS_DATE);
        tdm__put_u32(buf + 16, e->crc);
        tdm__put_u32(buf + 20, bc ? 0xffffffffu : (uint32_t)e->csize);
        tdm__put_u32(buf + 24, bu ? 0xffffffffu : (uint32_t)e->usize);
        tdm__put_u16(buf + 28, (uint16_t)nl);
        tdm__put_u16(buf + 30, (uint16_t)xl);
        tdm__put_u32(buf + 38, 0x81a40000u); /* regular file, 0644 */
        tdm__put_u32(buf + 42, bo ? 0xffffffffu : (uint32_t)e->local_off);
        memcpy(buf + TDM__ZIP_CENTRAL_BYTES, e->name, nl);
        unsigned char *x = buf + TDM__ZIP_CENTRAL_BYTES + nl;
        if (xl) {
            tdm__put_u16(x, 0x0001);
            tdm__put_u16(x + 2, (uint16_t)(xl - 4));
            x += 4;
            if (bu) {
                tdm__put_u64(x, e->usize);
                x += 8;
            }
            if (bc) {
                tdm__put_u64(x, e->csize);
                x += 8;
            }
            if (bo)
                tdm__put_u64(x, e->local_off);
        }
        size_t len = TDM__ZIP_CENTRAL_BYTES + nl + xl;
        rc = tdm__io_pwrite(rt, who, path, fd, buf, len, at);
        at += len;
    }
    if (rc != 0)
        return rc;
    uint64_t cd_size = at - cd_off;
    unsigned char end[TDM__ZIP_EOCD64_BYTES + TDM__ZIP_LOC64_BYTES + TDM__ZIP_EOCD_BYTES];
    size_t el = 0;
    bool z64 = n >= 0xffff || cd_off >= 0xffffffffu || cd_size >= 0xffffffffu;
    if (z64) {
        unsigned char *r = end;
        memset(r, 0, TDM__ZIP_EOCD64_BYTES + TDM__ZIP_LOC64_BYTES);
        tdm__put_u32(r, TDM__ZIP_SIG_EOCD64);
        tdm__put_u64(r + 4, TDM__ZIP_EOCD64_BYTES - 12);
        tdm__put_u16(r + 12, 0x031e);
        tdm__put_u16(r + 14, 45);
        tdm__put_u64(r + 24, (uint64_t)n);
        tdm__put_u64(r + 32, (uint64_t)n);
        tdm__put_u64(r + 40, cd_size);
        tdm__put_u64(r + 48, cd_off);
        unsigned char *l = end + TDM__ZIP_EOCD64_BYTES;
        tdm__put_u32(l, TDM__ZIP_SIG_LOC64);
        tdm__put_u64(l + 8, at);
        tdm__put_u32(l + 16, 1);
        el = TDM__ZIP_EOCD64_BYTES + TDM__ZIP_LOC64_BYTES;
    }
    unsigned char *e = end + el;
    memset(e, 0, TDM__ZIP_EOCD_BYTES);
    tdm__put_u32(e, TDM__ZIP_SIG_EOCD);
    uint16_t cnt = n >= 0xffff ? 0xffff : (uint16_t)n;
    tdm__put_u16(e + 8, cnt);
    tdm__put_u16(e + 10, cnt);
    tdm__put_u32(e + 12, cd_size >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_size);
    tdm__put_u32(e + 16, cd_off >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_off);
    el += TDM__ZIP_EOCD_BYTES;
    return tdm__io_pwrite(rt, who, path, fd, end, el, at);
}

int tdm_npz_save(tdm_runtime *rt, const char *path, const char *const *names,
                 const tdm_tensor *const *tensors, int n, const tdm_save_opts *opts)
{
    static const char who[] = "tdm_npz_save";
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path || n < 0 || (n > 0 && (!names || !tensors)))
        return tdm__err(rt, TDM_EINVAL, "%s: NULL path, names or tensors, or n %d < 0", who, n);
    tdm__err_clear(rt);
    tdm_save_opts o;
    int rc = tdm__io_save_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    if (o.codec != TDM_CODEC_NONE && o.codec != TDM_CODEC_DEFLATE)
        return tdm__err(rt, TDM_EINVAL, "%s: .npz members are stored or deflated, not %s", who,
                        tdm_codec_name(o.codec));
    for (int i = 0; i < n; i++) {
        if (!names[i] || !tensors[i])
            return tdm__err(rt, TDM_EINVAL, "%s: name or tensor %d is NULL", who, i);
        size_t nl = strlen(names[i]);
        if (nl == 0 || nl > 250)
            return tdm__err(rt, TDM_EINVAL, "%s: name %d has %zu bytes (1..250)", who, i, nl);
        if (tdm_tensor_numel(tensors[i]) > 0 && !tdm_tensor_data(tensors[i]))
            return tdm__err(rt, TDM_EINVAL, "%s: tensor %d has no data", who, i);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return tdm__err(rt, TDM_EINVAL, "%s: name '%s' given twice", who, names[i]);
    }
    entry *es = calloc(n > 0 ? (size_t)n : 1, sizeof *es);
    if (!es)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    tdm__io_out out;
    rc = tdm__io_out_open(rt, who, path, &out);
    uint64_t at = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = write_member(rt, who, path, out.fd, names[i], tensors[i], &o, &es[i], &at);
    if (rc == 0)
        rc = write_directory(rt, who, path, out.fd, es, n, at);
    if (rc == 0)
        rc = tdm__io_out_commit(rt, who, &out, o.fsync != 0);
    else if (out.fd >= 0)
        tdm__io_out_abort(&out);
    for (int i = 0; i < n; i++)
        free(es[i].name);
    free(es);
    return rc;
}
