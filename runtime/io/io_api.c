/* SPDX-License-Identifier: MIT */
/* Tensor files: the public entry points that dispatch on the file kind (tdm_save, tdm_load,
 * tdm_load_into, tdm_file_info_get, tdm_npy_create). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"
#include "core/core.h"

/* ---- public entry points -------------------------------------------------------------------- */

static int check_tensor(tdm_runtime *rt, const char *who, const tdm_tensor *t)
{
    if (!t)
        return tdm__err(rt, TDM_EINVAL, "%s: tensor is NULL", who);
    if (tdm_tensor_numel(t) > 0 && !tdm_tensor_data(t))
        return tdm__err(rt, TDM_EINVAL, "%s: tensor has no data", who);
    return 0;
}

/* Whether reading t's memory may fault because another process can shrink the file behind it:
 * a mapped file (tdm_load with a mmap mode), an import (tdm_tensor_import), or any storage with
 * a descriptor of its own. pwrite turns such a fault into EFAULT; a copy on a helper thread
 * would end the process (io_write.c). */
static bool src_may_fault(const tdm_tensor *t)
{
    const tdm__storage *s = t->storage;
    return (s->mem & TDM_MEM_MAPPED) || s->fd >= 0 || s->arena_file;
}

/* Writes a whole .npy. */
static int npy_save(const tdm_tensor *t, const char *path, const tdm_save_opts *o)
{
    static const char who[] = "tdm_save";
    tdm_runtime *rt = tdm_tensor_runtime(t);
    unsigned char hdr[4096];
    size_t hlen;
    bool fortran = tdm__io_is_fortran(t);
    int rc = tdm__npy_format(t->dtype, t->ndim, t->shape, fortran, o->npy_version, 0, hdr,
                             sizeof hdr, &hlen);
    if (rc != 0)
        return tdm__err(rt, rc, "%s: cannot write a .npy header for this tensor", who);
    tdm__io_out out;
    rc = tdm__io_out_open(rt, who, path, &out);
    if (rc != 0)
        return rc;
    rc = tdm__io_pwrite(rt, who, path, out.fd, hdr, hlen, 0);
    uint64_t bytes = (uint64_t)tdm_tensor_numel(t) * tdm_dtype_size(t->dtype);
    if (rc == 0 && (fortran || tdm_tensor_is_contiguous(t))) {
        /* the raw bytes, on several threads when large */
        rc = tdm__io_write_block(rt, who, path, out.fd, tdm_tensor_data(t), bytes, hlen,
                                 src_may_fault(t));
    } else if (rc == 0) {
        rc = tdm__io_reserve(rt, who, path, out.fd, hlen, bytes);
        tdm__io_fdsink sink = {rt, who, path, out.fd, hlen};
        if (rc == 0)
            rc = tdm__io_emit_elements(rt, who, t, tdm__io_fdsink_write, &sink);
    }
    if (rc != 0) {
        tdm__io_out_abort(&out);
        return rc;
    }
    return tdm__io_out_commit(rt, who, &out, o->fsync != 0);
}

int tdm_save(const tdm_tensor *t, const char *path, const tdm_save_opts *opts)
{
    static const char who[] = "tdm_save";
    tdm_runtime *rt = tdm_tensor_runtime(t);
    int rc = check_tensor(rt, who, t);
    if (rc != 0)
        return rc;
    if (!path)
        return tdm__err(rt, TDM_EINVAL, "%s: path is NULL", who);
    tdm__err_clear(rt);
    tdm_save_opts o;
    rc = tdm__io_save_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    if (o.codec == TDM_CODEC_NONE)
        return npy_save(t, path, &o);
    return tdm__tdz_save(t, path, &o);
}

/* Reads the first bytes and tells the kind: 0 and *kind, or TDM_EFORMAT. */
static int sniff(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                 tdm_file_kind *kind)
{
    unsigned char m[8] = {0};
    size_t n = size < sizeof m ? (size_t)size : sizeof m;
    int rc = tdm__io_pread(rt, who, path, fd, m, n, 0, "the magic bytes");
    if (rc != 0)
        return rc;
    if (n >= 6 && memcmp(m, "\x93NUMPY", 6) == 0)
        *kind = TDM_FILE_NPY;
    else if (tdm__tdz_is(m, n))
        *kind = TDM_FILE_TDZ;
    else if (n >= 4 && (memcmp(m, "PK\x03\x04", 4) == 0 || memcmp(m, "PK\x05\x06", 4) == 0))
        *kind = TDM_FILE_NPZ;
    else
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: '%s' is not a .npy, .npz or tandem compressed file (magic bytes "
                        "%02x %02x %02x %02x %02x %02x, file of %llu bytes)",
                        who, path, m[0], m[1], m[2], m[3], m[4], m[5], (unsigned long long)size);
    return 0;
}

/* Opens a tensor file and tells its kind: 0 with *fd (the caller closes it), *size and *kind;
 * or the error of tdm__io_open_read() / sniff() with nothing left open. */
static int open_sniffed(tdm_runtime *rt, const char *who, const char *path, bool rw, int *fd,
                        uint64_t *size, tdm_file_kind *kind)
{
    int rc = tdm__io_open_read(rt, who, path, rw, fd, size);
    if (rc != 0)
        return rc;
    rc = sniff(rt, who, path, *fd, *size, kind);
    if (rc != 0) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

int tdm_load(tdm_runtime *rt, const char *path, const tdm_load_opts *opts, tdm_tensor **out)
{
    static const char who[] = "tdm_load";
    if (out)
        *out = NULL;
    int rc = tdm__io_begin(rt, who, out != NULL, path);
    if (rc != 0)
        return rc;
    tdm_load_opts o;
    rc = tdm__io_load_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    int fd;
    uint64_t size;
    tdm_file_kind kind;
    rc = open_sniffed(rt, who, path, o.mmap == TDM_MMAP_READWRITE, &fd, &size, &kind);
    if (rc != 0)
        return rc;
    switch (kind) {
    case TDM_FILE_NPY:
        rc = tdm__npy_load_region(rt, who, path, fd, 0, size, &o, NULL, NULL, out);
        break;
    case TDM_FILE_TDZ:
        rc = tdm__tdz_load(rt, who, path, fd, size, &o, NULL, out);
        break;
    default:
        rc = tdm__err(rt, TDM_EINVAL, "%s: '%s' is a .npz archive: open it with tdm_npz_open()",
                      who, path);
    }
    close(fd);
    return rc;
}

int tdm_load_into(tdm_runtime *rt, const char *path, tdm_tensor *dst)
{
    static const char who[] = "tdm_load_into";
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path || !dst)
        return tdm__err(rt, TDM_EINVAL, "%s: %s is NULL", who, path ? "dst" : "path");
    tdm__err_clear(rt);
    int fd;
    uint64_t size;
    tdm_file_kind kind;
    int rc = open_sniffed(rt, who, path, false, &fd, &size, &kind);
    if (rc != 0)
        return rc;
    tdm_load_opts o = TDM_LOAD_OPTS_INIT;
    if (kind == TDM_FILE_TDZ)
        rc = tdm__tdz_load(rt, who, path, fd, size, &o, dst, NULL);
    else if (kind == TDM_FILE_NPY)
        rc = tdm__npy_load_region(rt, who, path, fd, 0, size, &o, NULL, dst, NULL);
    else
        rc = tdm__err(rt, TDM_EINVAL, "%s: '%s' is a .npz archive", who, path);
    close(fd);
    return rc;
}

int tdm_file_info_get(tdm_runtime *rt, const char *path, tdm_file_info *info)
{
    static const char who[] = "tdm_file_info_get";
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path || !info)
        return tdm__err(rt, TDM_EINVAL, "%s: %s is NULL", who, path ? "info" : "path");
    tdm__err_clear(rt);
    memset(info, 0, sizeof *info);
    int fd;
    uint64_t size;
    tdm_file_kind kind;
    int rc = open_sniffed(rt, who, path, false, &fd, &size, &kind);
    if (rc != 0)
        return rc;
    if (kind == TDM_FILE_NPY) {
        tdm__npy_header h;
        rc = tdm__npy_read_header(rt, who, path, fd, 0, size, &h);
        if (rc == 0) {
            info->kind = TDM_FILE_NPY;
            info->dtype = h.dtype;
            info->ndim = h.ndim;
            memcpy(info->shape, h.shape, sizeof h.shape);
            info->fortran_order = h.fortran;
            info->big_endian = h.big_endian;
            info->npy_version = h.version;
            info->data_offset = (int64_t)h.data_offset;
            info->data_bytes = (int64_t)h.data_bytes;
        }
    } else if (kind == TDM_FILE_TDZ) {
        rc = tdm__tdz_info(rt, who, path, fd, size, info);
    }
    close(fd);
    if (rc == 0 && kind == TDM_FILE_NPZ)
        rc = tdm__npz_info(rt, who, path, info);
    if (rc == 0)
        info->file_bytes = (int64_t)size;
    return rc;
}

int tdm_npy_create(tdm_runtime *rt, const char *path, tdm_dtype dtype, int ndim,
                   const int64_t *shape, tdm_tensor **out)
{
    static const char who[] = "tdm_npy_create";
    if (out)
        *out = NULL;
    int rc = tdm__io_begin(rt, who, out != NULL, path);
    if (rc != 0)
        return rc;
    if (tdm_dtype_size(dtype) == 0)
        return tdm__err(rt, TDM_EINVAL, "%s: invalid dtype %d", who, (int)dtype);
    if (ndim < 0 || ndim > TDM_MAX_DIMS || (ndim > 0 && !shape))
        return tdm__err(rt, TDM_EINVAL, "%s: bad ndim %d or NULL shape", who, ndim);
    int64_t numel, bytes, total;
    rc = tdm__shape_numel(ndim, shape, &numel);
    if (rc != 0)
        return tdm__err(rt, rc, "%s: %s shape", who,
                        rc == TDM_EINVAL ? "a negative dim in the" : "overflow in the");
    unsigned char hdr[4096];
    size_t hlen;
    if (tdm__mul_ovf(numel, (int64_t)tdm_dtype_size(dtype), &bytes))
        return tdm__err(rt, TDM_EOVERFLOW, "%s: the byte size overflows", who);
    rc = tdm__npy_format(dtype, ndim, shape, false, 0, 0, hdr, sizeof hdr, &hlen);
    if (rc != 0)
        return tdm__err(rt, rc, "%s: cannot format the header", who);
    if (tdm__add_ovf(bytes, (int64_t)hlen, &total) || (uint64_t)bytes > SIZE_MAX)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: the file size overflows", who);
    tdm__io_out o;
    rc = tdm__io_out_open(rt, who, path, &o);
    if (rc != 0)
        return rc;
    rc = tdm__io_pwrite(rt, who, path, o.fd, hdr, hlen, 0);
    if (rc == 0 && ftruncate(o.fd, (off_t)total) != 0)
        rc = tdm__err(rt, TDM_EIO, "%s: cannot size '%s' to %lld bytes (%s)", who, path,
                      (long long)total, strerror(errno));
    int fd = -1;
    if (rc == 0) {
        fd = dup(o.fd);
        if (fd < 0)
            rc = tdm__err(rt, TDM_EIO, "%s: dup failed (%s)", who, strerror(errno));
    }
    if (rc == 0)
        rc = tdm__io_out_commit(rt, who, &o, false);
    else
        tdm__io_out_abort(&o);
    if (rc != 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    tdm__storage *s;
    rc = tdm__storage_map_file(rt, fd, hlen, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, who,
                               &s);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    rc = tdm__tensor_over_storage(s, dtype, ndim, shape, NULL, who, out);
    if (rc != 0)
        tdm__storage_release(s);
    return rc;
}
