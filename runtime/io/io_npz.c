/* .npz archives: a zip of .npy members, stored or deflated, with zip64 (numpy.savez,
 * numpy.savez_compressed, numpy.load of an .npz).
 *
 * Reading trusts only the central directory, and checks it against the file before using it:
 * every member's local header and data must lie before the directory, sizes must be
 * consistent with the method, and a deflated member cannot claim more than deflate's largest
 * ratio. Writing puts a zip64 extra field in every local header (as numpy does, through
 * Python's force_zip64) and pads stored members so their data is 64-byte aligned, which
 * makes them memory-mappable. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/io_internal.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define LOCAL_BYTES 30u
#define CENTRAL_BYTES 46u
#define EOCD_BYTES 22u
#define EOCD64_BYTES 56u
#define LOC64_BYTES 20u
#define DEFLATE_MAX_RATIO 1032u
#define DOS_DATE 0x21u /* 1980-01-01: reproducible archives */

typedef struct member {
    char *name; /* without ".npy" */
    uint16_t method, flags;
    uint32_t crc;
    uint64_t csize, usize, local_off, data_off;
} member;

struct tdm_npz {
    tdm_runtime *rt;
    char *path;
    int fd;
    uint64_t size;
    int n;
    member *m;
};

/* ---- reading the directory ----------------------------------------------------------------- */

#define BAD(...) tdm__err(rt, TDM_EFORMAT, __VA_ARGS__)

/* Finds the end of central directory record; gives the directory's extent and entry count. */
static int find_directory(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                          uint64_t *cd_off, uint64_t *cd_size, uint64_t *count,
                          uint64_t *cd_end_limit)
{
    if (size < EOCD_BYTES)
        return BAD("%s: '%s' is not a zip archive (%llu bytes)", who, path,
                   (unsigned long long)size);
    size_t tail = size < EOCD_BYTES + 65535u ? (size_t)size : EOCD_BYTES + 65535u;
    unsigned char *b = malloc(tail);
    if (!b)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    int rc = tdm__io_pread(rt, who, path, fd, b, tail, size - tail, "the zip directory");
    if (rc != 0) {
        free(b);
        return rc;
    }
    long pos = -1;
    for (long i = (long)tail - (long)EOCD_BYTES; i >= 0; i--)
        if (tdm__get_u32(b + i) == SIG_EOCD &&
            (size_t)i + EOCD_BYTES + tdm__get_u16(b + i + 20) <= tail) {
            pos = i;
            break;
        }
    if (pos < 0) {
        free(b);
        return BAD("%s: '%s' is not a zip archive or is truncated (no end of central directory)",
                   who, path);
    }
    const unsigned char *e = b + pos;
    uint64_t eocd_at = size - tail + (uint64_t)pos;
    uint16_t disk = tdm__get_u16(e + 4), cd_disk = tdm__get_u16(e + 6);
    uint16_t on_disk = tdm__get_u16(e + 8);
    *count = tdm__get_u16(e + 10);
    *cd_size = tdm__get_u32(e + 12);
    *cd_off = tdm__get_u32(e + 16);
    *cd_end_limit = eocd_at;
    bool z64 = *count == 0xffff || *cd_size == 0xffffffffu || *cd_off == 0xffffffffu;
    free(b);
    if (!z64 && (disk != 0 || cd_disk != 0 || on_disk != *count))
        return BAD("%s: '%s' is a multi-disk archive: not supported", who, path);
    if (z64) {
        unsigned char loc[LOC64_BYTES], r[EOCD64_BYTES];
        if (eocd_at < LOC64_BYTES)
            return BAD("%s: '%s': zip64 locator missing", who, path);
        rc = tdm__io_pread(rt, who, path, fd, loc, LOC64_BYTES, eocd_at - LOC64_BYTES,
                           "the zip64 locator");
        if (rc != 0)
            return rc;
        uint64_t at = tdm__get_u64(loc + 8);
        if (tdm__get_u32(loc) != SIG_LOC64 || at > eocd_at - LOC64_BYTES ||
            eocd_at - LOC64_BYTES - at < EOCD64_BYTES)
            return BAD("%s: '%s': bad zip64 locator", who, path);
        rc = tdm__io_pread(rt, who, path, fd, r, EOCD64_BYTES, at, "the zip64 directory end");
        if (rc != 0)
            return rc;
        if (tdm__get_u32(r) != SIG_EOCD64 || tdm__get_u32(r + 16) != 0 ||
            tdm__get_u32(r + 20) != 0 || tdm__get_u64(r + 24) != tdm__get_u64(r + 32))
            return BAD("%s: '%s': bad or multi-disk zip64 end of directory", who, path);
        *count = tdm__get_u64(r + 32);
        *cd_size = tdm__get_u64(r + 40);
        *cd_off = tdm__get_u64(r + 48);
        *cd_end_limit = at;
    }
    if (*cd_off > *cd_end_limit || *cd_size > *cd_end_limit - *cd_off)
        return BAD("%s: '%s': the central directory points outside the file", who, path);
    if (*count > *cd_size / CENTRAL_BYTES)
        return BAD("%s: '%s': %llu entries cannot fit a directory of %llu bytes", who, path,
                   (unsigned long long)*count, (unsigned long long)*cd_size);
    return 0;
}

/* Reads a zip64 extra field for the members whose 32-bit fields are saturated. */
static bool read_zip64_extra(const unsigned char *x, size_t xlen, member *m, bool need_u,
                             bool need_c, bool need_o)
{
    size_t i = 0;
    while (i + 4 <= xlen) {
        uint16_t id = tdm__get_u16(x + i), len = tdm__get_u16(x + i + 2);
        if (i + 4 + len > xlen)
            return false;
        if (id == 0x0001) {
            const unsigned char *p = x + i + 4;
            size_t left = len;
            if (need_u) {
                if (left < 8)
                    return false;
                m->usize = tdm__get_u64(p);
                p += 8;
                left -= 8;
            }
            if (need_c) {
                if (left < 8)
                    return false;
                m->csize = tdm__get_u64(p);
                p += 8;
                left -= 8;
            }
            if (need_o) {
                if (left < 8)
                    return false;
                m->local_off = tdm__get_u64(p);
            }
            return true;
        }
        i += 4 + (size_t)len;
    }
    return !need_u && !need_c && !need_o;
}

static void free_members(member *m, int n)
{
    for (int i = 0; i < n; i++)
        free(m[i].name);
    free(m);
}

static int read_members(tdm_npz *z, const char *who, uint64_t cd_off, uint64_t cd_size,
                        uint64_t count)
{
    tdm_runtime *rt = z->rt;
    const char *path = z->path;
    unsigned char *cd = malloc(cd_size ? (size_t)cd_size : 1);
    z->m = calloc(count ? (size_t)count : 1, sizeof *z->m);
    if (!cd || !z->m) {
        free(cd);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory for the zip directory", who);
    }
    int rc = tdm__io_pread(rt, who, path, z->fd, cd, (size_t)cd_size, cd_off, "the directory");
    size_t at = 0;
    for (uint64_t i = 0; rc == 0 && i < count; i++) {
        if (cd_size - at < CENTRAL_BYTES || tdm__get_u32(cd + at) != SIG_CENTRAL) {
            rc = BAD("%s: '%s': directory entry %llu is malformed", who, path,
                     (unsigned long long)i);
            break;
        }
        const unsigned char *e = cd + at;
        member *m = &z->m[z->n];
        m->flags = tdm__get_u16(e + 8);
        m->method = tdm__get_u16(e + 10);
        m->crc = tdm__get_u32(e + 16);
        m->csize = tdm__get_u32(e + 20);
        m->usize = tdm__get_u32(e + 24);
        size_t nlen = tdm__get_u16(e + 28), xlen = tdm__get_u16(e + 30),
               clen = tdm__get_u16(e + 32);
        uint16_t disk = tdm__get_u16(e + 34);
        m->local_off = tdm__get_u32(e + 42);
        if (cd_size - at - CENTRAL_BYTES < nlen + xlen + clen) {
            rc = BAD("%s: '%s': directory entry %llu overruns the directory", who, path,
                     (unsigned long long)i);
            break;
        }
        bool nu = m->usize == 0xffffffffu, nc = m->csize == 0xffffffffu,
             no = m->local_off == 0xffffffffu;
        if (!read_zip64_extra(e + CENTRAL_BYTES + nlen, xlen, m, nu, nc, no) ||
            (disk != 0 && disk != 0xffff)) {
            rc = BAD("%s: '%s': entry %llu has a bad zip64 field or another disk", who, path,
                     (unsigned long long)i);
            break;
        }
        const char *nm = (const char *)e + CENTRAL_BYTES;
        size_t keep = nlen >= 4 && memcmp(nm + nlen - 4, ".npy", 4) == 0 ? nlen - 4 : nlen;
        m->name = malloc(keep + 1);
        if (!m->name) {
            rc = tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
            break;
        }
        memcpy(m->name, nm, keep);
        m->name[keep] = '\0';
        z->n++;
        if (memchr(m->name, '\0', keep)) {
            rc = BAD("%s: '%s': a member name holds a NUL byte", who, path);
            break;
        }
        /* The local header and the data must lie before the directory. */
        unsigned char lh[LOCAL_BYTES];
        if (m->local_off > cd_off || cd_off - m->local_off < LOCAL_BYTES) {
            rc = BAD("%s: '%s': member '%s' points outside the file (offset %llu)", who, path,
                     m->name, (unsigned long long)m->local_off);
            break;
        }
        rc = tdm__io_pread(rt, who, path, z->fd, lh, LOCAL_BYTES, m->local_off, "a local header");
        if (rc != 0)
            break;
        if (tdm__get_u32(lh) != SIG_LOCAL) {
            rc = BAD("%s: '%s': member '%s' has no local header at offset %llu", who, path, m->name,
                     (unsigned long long)m->local_off);
            break;
        }
        m->data_off = m->local_off + LOCAL_BYTES + tdm__get_u16(lh + 26) + tdm__get_u16(lh + 28);
        if (m->data_off > cd_off || m->csize > cd_off - m->data_off) {
            rc = BAD("%s: '%s': member '%s' (%llu bytes at %llu) extends past the directory", who,
                     path, m->name, (unsigned long long)m->csize, (unsigned long long)m->data_off);
            break;
        }
        at += CENTRAL_BYTES + nlen + xlen + clen;
    }
    free(cd);
    return rc;
}

static int npz_open(tdm_runtime *rt, const char *who, const char *path, tdm_npz **out)
{
    tdm_npz *z = calloc(1, sizeof *z);
    if (!z)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    z->rt = rt;
    z->fd = -1;
    z->path = strdup(path);
    int rc = z->path ? 0 : tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    if (rc == 0)
        rc = tdm__io_open_read(rt, who, path, false, &z->fd, &z->size);
    uint64_t cd_off = 0, cd_size = 0, count = 0, limit = 0;
    if (rc == 0)
        rc = find_directory(rt, who, path, z->fd, z->size, &cd_off, &cd_size, &count, &limit);
    if (rc == 0)
        rc = read_members(z, who, cd_off, cd_size, count);
    if (rc != 0) {
        tdm_npz_close(z);
        return rc;
    }
    *out = z;
    return 0;
}

int tdm_npz_open(tdm_runtime *rt, const char *path, tdm_npz **out)
{
    static const char who[] = "tdm_npz_open";
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path)
        return tdm__err(rt, TDM_EINVAL, "%s: path is NULL", who);
    tdm__err_clear(rt);
    return npz_open(rt, who, path, out);
}

int tdm__npz_info(tdm_runtime *rt, const char *who, const char *path, tdm_file_info *info)
{
    tdm_npz *z;
    int rc = npz_open(rt, who, path, &z);
    if (rc != 0)
        return rc;
    info->kind = TDM_FILE_NPZ;
    info->npz_members = z->n;
    tdm_npz_close(z);
    return 0;
}

int tdm_npz_count(const tdm_npz *z)
{
    return z ? z->n : 0;
}

const char *tdm_npz_name(const tdm_npz *z, int i)
{
    return z && i >= 0 && i < z->n ? z->m[i].name : NULL;
}

void tdm_npz_close(tdm_npz *z)
{
    if (!z)
        return;
    if (z->fd >= 0)
        close(z->fd);
    free_members(z->m, z->n);
    free(z->path);
    free(z);
}

/* ---- loading a member ---------------------------------------------------------------------- */

#define IN_STEP (1u << 20)

typedef struct inflater {
    tdm_runtime *rt;
    const char *who, *path;
    int fd;
    z_stream zs;
    unsigned char *in;
    uint64_t next_off, left; /* compressed bytes not yet read */
    uLong crc;
    uint64_t produced;
    bool ended;
} inflater;

/* Inflates exactly n bytes into dst (or fewer if the stream ends: *got says). */
static int inflate_some(inflater *f, void *dst, size_t n, size_t *got)
{
    tdm_runtime *rt = f->rt;
    f->zs.next_out = dst;
    size_t done = 0;
    while (done < n && !f->ended) {
        uInt step = n - done > (1u << 30) ? (1u << 30) : (uInt)(n - done);
        f->zs.next_out = (Bytef *)dst + done;
        f->zs.avail_out = step;
        if (f->zs.avail_in == 0 && f->left > 0) {
            size_t r = f->left > IN_STEP ? IN_STEP : (size_t)f->left;
            int rc = tdm__io_pread(rt, f->who, f->path, f->fd, f->in, r, f->next_off,
                                   "the compressed member");
            if (rc != 0)
                return rc;
            f->zs.next_in = f->in;
            f->zs.avail_in = (uInt)r;
            f->next_off += r;
            f->left -= r;
        }
        int z = inflate(&f->zs, Z_NO_FLUSH);
        size_t made = step - f->zs.avail_out;
        f->crc = crc32_z(f->crc, (const Bytef *)dst + done, made);
        done += made;
        f->produced += made;
        if (z == Z_STREAM_END) {
            f->ended = true;
        } else if (z != Z_OK && !(z == Z_BUF_ERROR && made > 0)) {
            return tdm__err(rt, TDM_ECORRUPT, "%s: '%s': the deflate stream is corrupted (%s)",
                            f->who, f->path, f->zs.msg ? f->zs.msg : "zlib error");
        } else if (made == 0 && f->zs.avail_in == 0 && f->left == 0) {
            return tdm__err(rt, TDM_ECORRUPT, "%s: '%s': the deflate stream ends early", f->who,
                            f->path);
        }
    }
    *got = done;
    return 0;
}

static int load_deflated(tdm_npz *z, const char *who, const member *m, const tdm_load_opts *o,
                         tdm_tensor **out)
{
    tdm_runtime *rt = z->rt;
    const char *path = z->path;
    if (o->mmap != TDM_MMAP_NONE)
        return tdm__err(rt, TDM_EINVAL, "%s: member '%s' of '%s' is deflated: it cannot be mapped",
                        who, m->name, path);
    if (m->usize > m->csize * DEFLATE_MAX_RATIO + 64)
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: member '%s' claims %llu bytes from %llu compressed: more than "
                        "deflate can produce",
                        who, m->name, (unsigned long long)m->usize, (unsigned long long)m->csize);
    inflater f = {.rt = rt,
                  .who = who,
                  .path = path,
                  .fd = z->fd,
                  .next_off = m->data_off,
                  .left = m->csize,
                  .crc = crc32_z(0L, Z_NULL, 0)};
    f.in = malloc(IN_STEP);
    unsigned char *hdr = NULL;
    tdm_tensor *t = NULL;
    int rc = 0;
    if (!f.in)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    if (inflateInit2(&f.zs, -15) != Z_OK) {
        free(f.in);
        return tdm__err(rt, TDM_ENOMEM, "%s: inflateInit2 failed", who);
    }
    /* The header: its fixed prefix tells its length. */
    unsigned char pre[12];
    size_t got;
    rc = inflate_some(&f, pre, sizeof pre, &got);
    if (rc != 0)
        goto out;
    uint64_t total = 0;
    if (got >= 10 && memcmp(pre, "\x93NUMPY", 6) == 0)
        total = pre[6] == 1 ? 10u + tdm__get_u16(pre + 8)
                : got == 12 ? 12u + tdm__get_u32(pre + 8)
                            : 0;
    if (total < got || total > TDM__NPY_PREFIX_MAX || total > m->usize) {
        rc = tdm__err(rt, TDM_EFORMAT, "%s: member '%s' of '%s' is not a valid .npy", who, m->name,
                      path);
        goto out;
    }
    hdr = malloc((size_t)total);
    if (!hdr) {
        rc = tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
        goto out;
    }
    memcpy(hdr, pre, got);
    size_t more;
    rc = inflate_some(&f, hdr + got, (size_t)total - got, &more);
    if (rc != 0)
        goto out;
    tdm__npy_header h;
    char msg[256];
    rc = tdm__npy_parse(hdr, got + more, m->usize, &h, msg, sizeof msg);
    if (rc != 0) {
        rc = tdm__err(rt, rc, "%s: member '%s' of '%s': %s", who, m->name, path, msg);
        goto out;
    }
    if (o->max_bytes > 0 && h.data_bytes > (uint64_t)o->max_bytes) {
        rc = tdm__err(rt, TDM_EFORMAT, "%s: member '%s' holds %llu bytes, more than max_bytes", who,
                      m->name, (unsigned long long)h.data_bytes);
        goto out;
    }
    rc = tdm__io_new_tensor(rt, who, h.dtype, h.ndim, h.shape, h.fortran, o->mem, &t);
    if (rc != 0)
        goto out;
    rc = inflate_some(&f, tdm_tensor_data(t), (size_t)h.data_bytes, &got);
    if (rc == 0 && got != h.data_bytes)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: member '%s' of '%s' inflates to fewer bytes than "
                      "its header says",
                      who, m->name, path);
    /* Whatever follows the data (nothing, from numpy) still counts for the CRC and size. */
    unsigned char scratch[4096];
    while (rc == 0 && !f.ended)
        rc = inflate_some(&f, scratch, sizeof scratch, &got);
    if (rc == 0 && f.produced != m->usize)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: member '%s' inflates to %llu bytes, the directory "
                      "says %llu",
                      who, m->name, (unsigned long long)f.produced, (unsigned long long)m->usize);
    if (rc == 0 && (uint32_t)f.crc != m->crc)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: member '%s' of '%s': CRC-32 mismatch (stored %08x, "
                      "computed %08x)",
                      who, m->name, path, m->crc, (uint32_t)f.crc);
    if (rc == 0 && h.big_endian)
        tdm__io_byteswap(tdm_tensor_data(t), (size_t)tdm_tensor_numel(t), tdm_dtype_size(h.dtype));
    if (rc == 0 && h.fortran && o->c_order)
        rc = tdm__io_to_c_order(rt, who, &t, o->mem);
out:
    inflateEnd(&f.zs);
    free(f.in);
    free(hdr);
    if (rc != 0) {
        tdm_tensor_release(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tdm_npz_load(tdm_npz *z, const char *name, const tdm_load_opts *opts, tdm_tensor **out)
{
    static const char who[] = "tdm_npz_load";
    tdm_runtime *rt = z ? z->rt : NULL;
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!z || !name)
        return tdm__err(rt, TDM_EINVAL, "%s: %s is NULL", who, z ? "name" : "archive");
    tdm__err_clear(rt);
    tdm_load_opts o;
    int rc = tdm__io_load_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    size_t nl = strlen(name);
    if (nl >= 4 && strcmp(name + nl - 4, ".npy") == 0)
        nl -= 4;
    const member *m = NULL;
    for (int i = 0; i < z->n && !m; i++)
        if (strlen(z->m[i].name) == nl && memcmp(z->m[i].name, name, nl) == 0)
            m = &z->m[i];
    if (!m)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: '%s' has no member '%s'", who, z->path, name);
    if (m->flags & 1)
        return tdm__err(rt, TDM_EFORMAT, "%s: member '%s' is encrypted: not supported", who,
                        m->name);
    if (m->method == 8)
        return load_deflated(z, who, m, &o, out);
    if (m->method != 0)
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: member '%s' uses zip compression method %u: only stored (0) and "
                        "deflate (8) are supported",
                        who, m->name, m->method);
    if (m->csize != m->usize)
        return tdm__err(rt, TDM_EFORMAT, "%s: stored member '%s' has sizes %llu and %llu", who,
                        m->name, (unsigned long long)m->csize, (unsigned long long)m->usize);
    int fd = z->fd;
    if (o.mmap == TDM_MMAP_READWRITE) {
        uint64_t size;
        rc = tdm__io_open_read(rt, who, z->path, true, &fd, &size);
        if (rc != 0)
            return rc;
    }
    const uint32_t *crc = o.mmap == TDM_MMAP_NONE ? &m->crc : NULL;
    rc = tdm__npy_load_region(rt, who, z->path, fd, m->data_off, m->csize, &o, crc, NULL, out);
    if (fd != z->fd)
        close(fd);
    return rc;
}

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

/* Writes member i; *at is where it starts and, after, where the next one goes. */
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
        size_t r = (size_t)((*at + LOCAL_BYTES + nl + xlen + hlen) % 64);
        size_t pad = (64 - r) % 64;
        if (pad > 0 && pad < 4)
            pad += 64;
        xlen += pad;
    }
    unsigned char *lh = calloc(1, LOCAL_BYTES + nl + xlen);
    if (!lh)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    tdm__put_u32(lh, SIG_LOCAL);
    tdm__put_u16(lh + 4, 45);
    tdm__put_u16(lh + 8, e->method);
    tdm__put_u16(lh + 12, DOS_DATE);
    tdm__put_u32(lh + 18, 0xffffffffu);
    tdm__put_u32(lh + 22, 0xffffffffu);
    tdm__put_u16(lh + 26, (uint16_t)nl);
    tdm__put_u16(lh + 28, (uint16_t)xlen);
    memcpy(lh + LOCAL_BYTES, e->name, nl);
    unsigned char *x = lh + LOCAL_BYTES + nl;
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
               .off = *at + LOCAL_BYTES + nl + xlen,
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
        rc = tdm__io_pwrite(rt, who, path, fd, lh, LOCAL_BYTES + nl + xlen, *at);
        *at = s.off;
    }
    free(lh);
    return rc;
}

static int write_directory(tdm_runtime *rt, const char *who, const char *path, int fd,
                           const entry *es, int n, uint64_t at)
{
    uint64_t cd_off = at;
    unsigned char buf[CENTRAL_BYTES + 300 + 28];
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const entry *e = &es[i];
        size_t nl = strlen(e->name);
        bool bu = e->usize >= 0xffffffffu, bc = e->csize >= 0xffffffffu,
             bo = e->local_off >= 0xffffffffu;
        size_t xl = (bu || bc || bo) ? 4 + 8 * (size_t)(bu + bc + bo) : 0;
        memset(buf, 0, sizeof buf);
        tdm__put_u32(buf, SIG_CENTRAL);
        tdm__put_u16(buf + 4, 0x031e); /* unix, zip 3.0 */
        tdm__put_u16(buf + 6, xl ? 45 : 20);
        tdm__put_u16(buf + 10, e->method);
        tdm__put_u16(buf + 14, DOS_DATE);
        tdm__put_u32(buf + 16, e->crc);
        tdm__put_u32(buf + 20, bc ? 0xffffffffu : (uint32_t)e->csize);
        tdm__put_u32(buf + 24, bu ? 0xffffffffu : (uint32_t)e->usize);
        tdm__put_u16(buf + 28, (uint16_t)nl);
        tdm__put_u16(buf + 30, (uint16_t)xl);
        tdm__put_u32(buf + 38, 0x81a40000u); /* regular file, 0644 */
        tdm__put_u32(buf + 42, bo ? 0xffffffffu : (uint32_t)e->local_off);
        memcpy(buf + CENTRAL_BYTES, e->name, nl);
        unsigned char *x = buf + CENTRAL_BYTES + nl;
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
        size_t len = CENTRAL_BYTES + nl + xl;
        rc = tdm__io_pwrite(rt, who, path, fd, buf, len, at);
        at += len;
    }
    if (rc != 0)
        return rc;
    uint64_t cd_size = at - cd_off;
    unsigned char end[EOCD64_BYTES + LOC64_BYTES + EOCD_BYTES];
    size_t el = 0;
    bool z64 = n >= 0xffff || cd_off >= 0xffffffffu || cd_size >= 0xffffffffu;
    if (z64) {
        unsigned char *r = end;
        memset(r, 0, EOCD64_BYTES + LOC64_BYTES);
        tdm__put_u32(r, SIG_EOCD64);
        tdm__put_u64(r + 4, EOCD64_BYTES - 12);
        tdm__put_u16(r + 12, 0x031e);
        tdm__put_u16(r + 14, 45);
        tdm__put_u64(r + 24, (uint64_t)n);
        tdm__put_u64(r + 32, (uint64_t)n);
        tdm__put_u64(r + 40, cd_size);
        tdm__put_u64(r + 48, cd_off);
        unsigned char *l = end + EOCD64_BYTES;
        tdm__put_u32(l, SIG_LOC64);
        tdm__put_u64(l + 8, at);
        tdm__put_u32(l + 16, 1);
        el = EOCD64_BYTES + LOC64_BYTES;
    }
    unsigned char *e = end + el;
    memset(e, 0, EOCD_BYTES);
    tdm__put_u32(e, SIG_EOCD);
    uint16_t cnt = n >= 0xffff ? 0xffff : (uint16_t)n;
    tdm__put_u16(e + 8, cnt);
    tdm__put_u16(e + 10, cnt);
    tdm__put_u32(e + 12, cd_size >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_size);
    tdm__put_u32(e + 16, cd_off >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_off);
    el += EOCD_BYTES;
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
