/* SPDX-License-Identifier: MIT */
/* .npz archives: reading a zip's central directory (zip64 included) and checking it against
 * the file before anything uses it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/npz_internal.h"

/* ---- reading the directory ----------------------------------------------------------------- */

#define BAD(...) tdm__err(rt, TDM_EFORMAT, __VA_ARGS__)

/* Finds the end of central directory record; gives the directory's extent and entry count. */
int tdm__zip_find_directory(tdm_runtime *rt, const char *who, const char *path, int fd,
                            uint64_t size, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count,
                            uint64_t *cd_end_limit)
{
    if (size < TDM__ZIP_EOCD_BYTES)
        return BAD("%s: '%s' is not a zip archive (%llu bytes)", who, path,
                   (unsigned long long)size);
    size_t tail = size < TDM__ZIP_EOCD_BYTES + 65535u ? (size_t)size : TDM__ZIP_EOCD_BYTES + 65535u;
    unsigned char *b = malloc(tail);
    if (!b)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    int rc = tdm__io_pread(rt, who, path, fd, b, tail, size - tail, "the zip directory");
    if (rc != 0) {
        free(b);
        return rc;
    }
    long pos = -1;
    for (long i = (long)tail - (long)TDM__ZIP_EOCD_BYTES; i >= 0; i--)
        if (tdm__get_u32(b + i) == TDM__ZIP_SIG_EOCD &&
            (size_t)i + TDM__ZIP_EOCD_BYTES + tdm__get_u16(b + i + 20) <= tail) {
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
        unsigned char loc[TDM__ZIP_LOC64_BYTES], r[TDM__ZIP_EOCD64_BYTES];
        if (eocd_at < TDM__ZIP_LOC64_BYTES)
            return BAD("%s: '%s': zip64 locator missing", who, path);
        rc = tdm__io_pread(rt, who, path, fd, loc, TDM__ZIP_LOC64_BYTES,
                           eocd_at - TDM__ZIP_LOC64_BYTES, "the zip64 locator");
        if (rc != 0)
            return rc;
        uint64_t at = tdm__get_u64(loc + 8);
        if (tdm__get_u32(loc) != TDM__ZIP_SIG_LOC64 || at > eocd_at - TDM__ZIP_LOC64_BYTES ||
            eocd_at - TDM__ZIP_LOC64_BYTES - at < TDM__ZIP_EOCD64_BYTES)
            return BAD("%s: '%s': bad zip64 locator", who, path);
        rc = tdm__io_pread(rt, who, path, fd, r, TDM__ZIP_EOCD64_BYTES, at,
                           "the zip64 directory end");
        if (rc != 0)
            return rc;
        if (tdm__get_u32(r) != TDM__ZIP_SIG_EOCD64 || tdm__get_u32(r + 16) != 0 ||
            tdm__get_u32(r + 20) != 0 || tdm__get_u64(r + 24) != tdm__get_u64(r + 32))
            return BAD("%s: '%s': bad or multi-disk zip64 end of directory", who, path);
        *count = tdm__get_u64(r + 32);
        *cd_size = tdm__get_u64(r + 40);
        *cd_off = tdm__get_u64(r + 48);
        *cd_end_limit = at;
    }
    if (*cd_off > *cd_end_limit || *cd_size > *cd_end_limit - *cd_off)
        return BAD("%s: '%s': the central directory points outside the file", who, path);
    if (*count > *cd_size / TDM__ZIP_CENTRAL_BYTES)
        return BAD("%s: '%s': %llu entries cannot fit a directory of %llu bytes", who, path,
                   (unsigned long long)*count, (unsigned long long)*cd_size);
    return 0;
}

/* Reads a zip64 extra field for the members whose 32-bit fields are saturated. */
static bool read_zip64_extra(const unsigned char *x, size_t xlen, tdm__zip_member *m, bool need_u,
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

void tdm__zip_free_members(tdm__zip_member *m, int n)
{
    for (int i = 0; i < n; i++)
        free(m[i].name);
    free(m);
}

int tdm__zip_read_members(tdm_npz *z, const char *who, uint64_t cd_off, uint64_t cd_size,
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
        if (cd_size - at < TDM__ZIP_CENTRAL_BYTES ||
            tdm__get_u32(cd + at) != TDM__ZIP_SIG_CENTRAL) {
            rc = BAD("%s: '%s': directory entry %llu is malformed", who, path,
                     (unsigned long long)i);
            break;
        }
        const unsigned char *e = cd + at;
        tdm__zip_member *m = &z->m[z->n];
        m->flags = tdm__get_u16(e + 8);
        m->method = tdm__get_u16(e + 10);
        m->crc = tdm__get_u32(e + 16);
        m->csize = tdm__get_u32(e + 20);
        m->usize = tdm__get_u32(e + 24);
        size_t nlen = tdm__get_u16(e + 28), xlen = tdm__get_u16(e + 30),
               clen = tdm__get_u16(e + 32);
        uint16_t disk = tdm__get_u16(e + 34);
        m->local_off = tdm__get_u32(e + 42);
        if (cd_size - at - TDM__ZIP_CENTRAL_BYTES < nlen + xlen + clen) {
            rc = BAD("%s: '%s': directory entry %llu overruns the directory", who, path,
                     (unsigned long long)i);
            break;
        }
        bool nu = m->usize == 0xffffffffu, nc = m->csize == 0xffffffffu,
             no = m->local_off == 0xffffffffu;
        if (!read_zip64_extra(e + TDM__ZIP_CENTRAL_BYTES + nlen, xlen, m, nu, nc, no) ||
            (disk != 0 && disk != 0xffff)) {
            rc = BAD("%s: '%s': entry %llu has a bad zip64 field or another disk", who, path,
                     (unsigned long long)i);
            break;
        }
        const char *nm = (const char *)e + TDM__ZIP_CENTRAL_BYTES;
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
            rc = BAD("%s: '%s': a tdm__zip_member name holds a NUL byte", who, path);
            break;
        }
        /* The local header and the data must lie before the directory. */
        unsigned char lh[TDM__ZIP_LOCAL_BYTES];
        if (m->local_off > cd_off || cd_off - m->local_off < TDM__ZIP_LOCAL_BYTES) {
            rc = BAD("%s: '%s': tdm__zip_member '%s' points outside the file (offset %llu)", who,
                     path, m->name, (unsigned long long)m->local_off);
            break;
        }
        rc = tdm__io_pread(rt, who, path, z->fd, lh, TDM__ZIP_LOCAL_BYTES, m->local_off,
                           "a local header");
        if (rc != 0)
            break;
        if (tdm__get_u32(lh) != TDM__ZIP_SIG_LOCAL) {
            rc = BAD("%s: '%s': tdm__zip_member '%s' has no local header at offset %llu", who, path,
                     m->name, (unsigned long long)m->local_off);
            break;
        }
        m->data_off =
            m->local_off + TDM__ZIP_LOCAL_BYTES + tdm__get_u16(lh + 26) + tdm__get_u16(lh + 28);
        if (m->data_off > cd_off || m->csize > cd_off - m->data_off) {
            rc = BAD(
                "%s: '%s': tdm__zip_member '%s' (%llu bytes at %llu) extends past the directory",
                who, path, m->name, (unsigned long long)m->csize, (unsigned long long)m->data_off);
            break;
        }
        at += TDM__ZIP_CENTRAL_BYTES + nlen + xlen + clen;
    }
    free(cd);
    return rc;
}
