/* SPDX-License-Identifier: MIT */
/* .npz archives: a zip of .npy members, stored or deflated, with zip64 (numpy.savez,
 * numpy.savez_compressed, numpy.load of an .npz).
 *
 * Reading trusts only the central directory, and checks it against the file before using it:
 * every tdm__zip_member's local header and data must lie before the directory, sizes must be
 * consistent with the method, and a deflated tdm__zip_member cannot claim more than deflate's
 * largest ratio. Writing puts a zip64 extra field in every local header (as numpy does, through
 * Python's force_zip64) and pads stored members so their data is 64-byte aligned, which
 * makes them memory-mappable. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/npz_internal.h"

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
        rc = tdm__zip_find_directory(rt, who, path, z->fd, z->size, &cd_off, &cd_size, &count,
                                     &limit);
    if (rc == 0)
        rc = tdm__zip_read_members(z, who, cd_off, cd_size, count);
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
    if (out)
        *out = NULL;
    int rc = tdm__io_begin(rt, who, out != NULL, path);
    if (rc != 0)
        return rc;
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
    tdm__zip_free_members(z->m, z->n);
    free(z->path);
    free(z);
}

/* ---- loading a tdm__zip_member
 * ---------------------------------------------------------------------- */

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
                                   "the compressed tdm__zip_member");
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

static int load_deflated(tdm_npz *z, const char *who, const tdm__zip_member *m,
                         const tdm_load_opts *o, tdm_tensor **out)
{
    tdm_runtime *rt = z->rt;
    const char *path = z->path;
    if (o->mmap != TDM_MMAP_NONE)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: tdm__zip_member '%s' of '%s' is deflated: it cannot be mapped", who,
                        m->name, path);
    if (m->usize > m->csize * TDM__ZIP_DEFLATE_MAX_RATIO + 64)
        return tdm__err(
            rt, TDM_EFORMAT,
            "%s: tdm__zip_member '%s' claims %llu bytes from %llu compressed: more than "
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
        rc = tdm__err(rt, TDM_EFORMAT, "%s: tdm__zip_member '%s' of '%s' is not a valid .npy", who,
                      m->name, path);
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
        rc = tdm__err(rt, rc, "%s: tdm__zip_member '%s' of '%s': %s", who, m->name, path, msg);
        goto out;
    }
    if (o->max_bytes > 0 && h.data_bytes > (uint64_t)o->max_bytes) {
        rc = tdm__err(rt, TDM_EFORMAT,
                      "%s: tdm__zip_member '%s' holds %llu bytes, more than max_bytes", who,
                      m->name, (unsigned long long)h.data_bytes);
        goto out;
    }
    rc = tdm__io_new_tensor(rt, who, h.dtype, h.ndim, h.shape, h.fortran, o->mem, &t);
    if (rc != 0)
        goto out;
    rc = inflate_some(&f, tdm_tensor_data(t), (size_t)h.data_bytes, &got);
    if (rc == 0 && got != h.data_bytes)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: tdm__zip_member '%s' of '%s' inflates to fewer bytes than "
                      "its header says",
                      who, m->name, path);
    /* Whatever follows the data (nothing, from numpy) still counts for the CRC and size. */
    unsigned char scratch[4096];
    while (rc == 0 && !f.ended)
        rc = inflate_some(&f, scratch, sizeof scratch, &got);
    if (rc == 0 && f.produced != m->usize)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: tdm__zip_member '%s' inflates to %llu bytes, the directory "
                      "says %llu",
                      who, m->name, (unsigned long long)f.produced, (unsigned long long)m->usize);
    if (rc == 0 && (uint32_t)f.crc != m->crc)
        rc = tdm__err(rt, TDM_ECORRUPT,
                      "%s: tdm__zip_member '%s' of '%s': CRC-32 mismatch (stored %08x, "
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
    const tdm__zip_member *m = NULL;
    for (int i = 0; i < z->n && !m; i++)
        if (strlen(z->m[i].name) == nl && memcmp(z->m[i].name, name, nl) == 0)
            m = &z->m[i];
    if (!m)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: '%s' has no tdm__zip_member '%s'", who, z->path,
                        name);
    if (m->flags & 1)
        return tdm__err(rt, TDM_EFORMAT, "%s: tdm__zip_member '%s' is encrypted: not supported",
                        who, m->name);
    if (m->method == 8)
        return load_deflated(z, who, m, &o, out);
    if (m->method != 0)
        return tdm__err(
            rt, TDM_EFORMAT,
            "%s: tdm__zip_member '%s' uses zip compression method %u: only stored (0) and "
            "deflate (8) are supported",
            who, m->name, m->method);
    if (m->csize != m->usize)
        return tdm__err(rt, TDM_EFORMAT, "%s: stored tdm__zip_member '%s' has sizes %llu and %llu",
                        who, m->name, (unsigned long long)m->csize, (unsigned long long)m->usize);
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
