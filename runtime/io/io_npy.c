/* SPDX-License-Identifier: MIT */
/* .npy files: loading (read in steps on several threads, or memory-mapped) and the element
 * stream a writer emits. The header is parsed and formatted in io_npy_header.c. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "io/io_internal.h"
#include "core/core.h"

/* ---- writing elements ---------------------------------------------------------------------- */

int tdm__io_fdsink_write(void *ctx, const void *p, size_t n)
{
    tdm__io_fdsink *s = ctx;
    int rc = tdm__io_pwrite(s->rt, s->who, s->path, s->fd, p, n, s->off);
    if (rc == 0)
        s->off += n;
    return rc;
}

#define GATHER_BYTES (1u << 20)

int tdm__io_emit_elements(tdm_runtime *rt, const char *who, const tdm_tensor *t, tdm__io_sink sink,
                          void *ctx)
{
    size_t es = tdm_dtype_size(t->dtype);
    int64_t numel = tdm_tensor_numel(t);
    if (numel == 0)
        return 0;
    const char *data = tdm_tensor_data(t);
    if (tdm_tensor_is_contiguous(t) || tdm__io_is_fortran(t)) {
        size_t total = (size_t)numel * es, done = 0;
        while (done < total) {
            size_t step = total - done > (64u << 20) ? (64u << 20) : total - done;
            int rc = sink(ctx, data + done, step);
            if (rc != 0)
                return rc;
            done += step;
        }
        return 0;
    }
    /* Any other layout: C order, gathered through a bounded buffer. */
    char *buf = malloc(GATHER_BYTES);
    if (!buf)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory for a gather buffer", who);
    int ndim = t->ndim, last = ndim - 1;
    int64_t idx[TDM_MAX_DIMS] = {0};
    size_t fill = 0;
    int rc = 0;
    for (;;) {
        int64_t off = 0;
        for (int i = 0; i < last; i++)
            off += idx[i] * t->strides[i];
        for (int64_t j = 0; j < t->shape[last]; j++) {
            if (fill + es > GATHER_BYTES) {
                rc = sink(ctx, buf, fill);
                if (rc != 0)
                    goto out;
                fill = 0;
            }
            memcpy(buf + fill, data + (off + j * t->strides[last]) * (int64_t)es, es);
            fill += es;
        }
        int i = last - 1;
        while (i >= 0 && ++idx[i] == t->shape[i])
            idx[i--] = 0;
        if (i < 0)
            break;
    }
    if (fill > 0)
        rc = sink(ctx, buf, fill);
out:
    free(buf);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------- */

int tdm__io_check_dst(tdm_runtime *rt, const char *who, const tdm_tensor *dst, tdm_dtype dtype,
                      int ndim, const int64_t *shape, bool fortran)
{
    if (dst->dtype != dtype)
        return tdm__err(rt, TDM_EDTYPE, "%s: the file holds %s, the tensor is %s", who,
                        tdm_dtype_name(dtype), tdm_dtype_name(dst->dtype));
    bool same = dst->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = dst->shape[i] == shape[i];
    if (!same)
        return tdm__err(rt, TDM_ESHAPE, "%s: the file's shape (%d dims) differs from the tensor's",
                        who, ndim);
    if (tdm_tensor_numel(dst) == 0)
        return 0;
    int64_t want[TDM_MAX_DIMS];
    if (fortran) {
        tdm__io_fortran_strides(ndim, shape, want);
    } else {
        int64_t st = 1;
        for (int i = ndim - 1; i >= 0; i--) {
            want[i] = st;
            st *= shape[i] > 0 ? shape[i] : 1;
        }
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] > 1 && dst->strides[i] != want[i])
            return tdm__err(rt, TDM_ELAYOUT, "%s: the tensor's strides are not the file's %s order",
                            who, fortran ? "Fortran (column-major)" : "C (row-major)");
    return 0;
}

/* ---- reading the data: in steps, on several threads when it is large ----------------------
 *
 * A load into new memory costs, per byte, a first touch of the destination (the kernel zeroes
 * each fresh page: a huge page at a time for tensors on THP) and a copy out of the page cache;
 * both run in the reading thread, at about 6 GB/s per core, whatever the size of the reads. So a
 * large read is split into steps that a few threads take in turn from a shared counter (the
 * file is still read front to back, two or three steps in flight, as readahead likes), on
 * threads made for the call (tdm__io_threads_for, tdm__io_start_helpers: io_internal.h). */

#define READ_STEP (8u << 20)

typedef struct reader {
    int fd;
    char *dst; /* receives bytes [off, off + n) of the file */
    uint64_t n, off;
    uint64_t n_steps; /* of READ_STEP bytes, the last one shorter */
    size_t swap_es;   /* byteswap elements of this size after the read (and the CRC); 0 = no */
    uint32_t *crcs;   /* per step, when the caller wants the CRC-32 */
    atomic_uint_least64_t next;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards the failure record */
    int err;              /* 0, TDM_EIO (err_errno), TDM_EFORMAT (the file ended at err_off) */
    int err_errno;
    uint64_t err_off; /* the lowest failing offset */
} reader;

static void reader_fail(reader *r, int code, int e, uint64_t off)
{
    pthread_mutex_lock(&r->lock);
    if (r->err == 0 || off < r->err_off) {
        r->err = code;
        r->err_errno = e;
        r->err_off = off;
    }
    pthread_mutex_unlock(&r->lock);
    atomic_store(&r->stop, true);
}

static void reader_run(reader *r)
{
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n_steps)
            return;
        uint64_t at = i * READ_STEP;
        size_t len = r->n - at > READ_STEP ? READ_STEP : (size_t)(r->n - at);
        char *p = r->dst + at;
        uint64_t off = r->off + at;
        size_t left = len;
        while (left > 0) {
            ssize_t got = pread(r->fd, p, left, (off_t)off);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                reader_fail(r, got < 0 ? TDM_EIO : TDM_EFORMAT, got < 0 ? errno : 0, off);
                return;
            }
            p += got;
            off += (uint64_t)got;
            left -= (size_t)got;
        }
        if (r->crcs)
            r->crcs[i] = (uint32_t)crc32_z(0L, (const Bytef *)(r->dst + at), len);
        if (r->swap_es > 1)
            tdm__io_byteswap(r->dst + at, len / r->swap_es, r->swap_es);
    }
}

static void *reader_main(void *arg)
{
    reader_run(arg);
    return NULL;
}

/* Reads n bytes at off into p; byteswaps elements of swap_es bytes (0 or 1: none); updates
 * *crc (the CRC-32 of the bytes as read) when given. */
static int read_data(tdm_runtime *rt, const char *who, const char *path, int fd, char *p,
                     uint64_t n, uint64_t off, size_t swap_es, uLong *crc)
{
    if (n == 0)
        return 0;
    reader r = {.fd = fd, .dst = p, .n = n, .off = off, .swap_es = swap_es};
    r.n_steps = (n + READ_STEP - 1) / READ_STEP;
    atomic_init(&r.next, 0);
    atomic_init(&r.stop, false);
    if (crc) {
        r.crcs = malloc((size_t)r.n_steps * sizeof *r.crcs);
        if (!r.crcs)
            return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    pthread_mutex_init(&r.lock, NULL);
    int want = tdm__io_threads_for(rt, n, r.n_steps);
    pthread_t th[TDM__IO_MAX_HELPERS];
    int started = tdm__io_start_helpers(th, want - 1, reader_main, &r);
    reader_run(&r);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&r.lock);
    int rc = 0;
    if (r.err == TDM_EIO)
        rc = tdm__err(rt, TDM_EIO, "%s: read of '%s' failed at offset %llu (%s)", who, path,
                      (unsigned long long)r.err_off, strerror(r.err_errno));
    else if (r.err != 0)
        rc = tdm__err(rt, TDM_EFORMAT, "%s: '%s' is truncated: it ends at offset %llu, in %s", who,
                      path, (unsigned long long)r.err_off, "the data");
    else if (crc)
        for (uint64_t i = 0; i < r.n_steps; i++) {
            uint64_t at = i * READ_STEP;
            uint64_t len = n - at > READ_STEP ? READ_STEP : n - at;
            *crc = crc32_combine(*crc, r.crcs[i], (z_off_t)len);
        }
    free(r.crcs);
    return rc;
}

static int load_mapped(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                       const tdm__npy_header *h, const tdm_load_opts *o, tdm_tensor **out)
{
    size_t es = tdm_dtype_size(h->dtype);
    if (h->big_endian)
        return tdm__err(rt, TDM_ELAYOUT,
                        "%s: '%s' holds big-endian data, which cannot be memory-mapped (load it "
                        "without a mmap mode to have it swapped)",
                        who, path);
    uint64_t at = off + h->data_offset;
    if (at % es != 0)
        return tdm__err(rt, TDM_ELAYOUT,
                        "%s: the data of '%s' starts at offset %llu, not aligned to its %zu-byte "
                        "elements: it cannot be memory-mapped",
                        who, path, (unsigned long long)at, es);
    if (h->data_bytes > SIZE_MAX)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: too large to map", who);
    int prot = PROT_READ, flags = MAP_SHARED;
    if (o->mmap == TDM_MMAP_READWRITE)
        prot |= PROT_WRITE;
    else if (o->mmap == TDM_MMAP_COPY) {
        prot |= PROT_WRITE;
        flags = MAP_PRIVATE;
    }
    int mfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mfd < 0)
        return tdm__err(rt, TDM_EIO, "%s: dup of the file descriptor failed (%s)", who,
                        strerror(errno));
    tdm__storage *s;
    int rc = tdm__storage_map_file(rt, mfd, at, (size_t)h->data_bytes, prot, flags, who, &s);
    if (rc != 0) {
        close(mfd);
        return rc;
    }
    int64_t st[TDM_MAX_DIMS];
    if (h->fortran)
        tdm__io_fortran_strides(h->ndim, h->shape, st);
    rc = tdm__tensor_over_storage(s, h->dtype, h->ndim, h->shape, h->fortran ? st : NULL, who, out);
    if (rc != 0)
        tdm__storage_release(s);
    return rc;
}

int tdm__npy_load_region(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                         uint64_t len, const tdm_load_opts *o, const uint32_t *crc, tdm_tensor *dst,
                         tdm_tensor **out)
{
    tdm__npy_header h;
    int rc = tdm__npy_read_header(rt, who, path, fd, off, len, &h);
    if (rc != 0)
        return rc;
    if (o->max_bytes > 0 && h.data_bytes > (uint64_t)o->max_bytes)
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: '%s' holds %llu bytes of data, more than max_bytes %lld", who, path,
                        (unsigned long long)h.data_bytes, (long long)o->max_bytes);
    if (!dst && o->mmap != TDM_MMAP_NONE)
        return load_mapped(rt, who, path, fd, off, &h, o, out);
    tdm_tensor *t = dst;
    if (dst) {
        rc = tdm__io_check_dst(rt, who, dst, h.dtype, h.ndim, h.shape, h.fortran);
        if (rc != 0)
            return rc;
    } else {
        if (h.data_bytes > (uint64_t)PTRDIFF_MAX)
            return tdm__err(rt, TDM_EOVERFLOW, "%s: too large", who);
        rc = tdm__io_new_tensor(rt, who, h.dtype, h.ndim, h.shape, h.fortran, o->mem, &t);
        if (rc != 0)
            return rc;
    }
    uLong c = crc32_z(0L, Z_NULL, 0);
    uLong *pc = crc ? &c : NULL;
    if (crc) {
        /* The CRC covers the whole member: header, data and anything after. */
        unsigned char hb[4096];
        uint64_t done = 0;
        while (rc == 0 && done < h.data_offset) {
            size_t step =
                h.data_offset - done > sizeof hb ? sizeof hb : (size_t)(h.data_offset - done);
            rc = tdm__io_pread(rt, who, path, fd, hb, step, off + done, "the header");
            c = crc32_z(c, hb, step);
            done += step;
        }
    }
    if (rc == 0)
        rc = read_data(rt, who, path, fd, tdm_tensor_data(t), h.data_bytes, off + h.data_offset,
                       h.big_endian ? tdm_dtype_size(h.dtype) : 0, pc);
    if (rc == 0 && crc) {
        unsigned char tb[4096];
        uint64_t at = h.data_offset + h.data_bytes;
        while (rc == 0 && at < len) {
            size_t step = len - at > sizeof tb ? sizeof tb : (size_t)(len - at);
            rc = tdm__io_pread(rt, who, path, fd, tb, step, off + at, "the member");
            c = crc32_z(c, tb, step);
            at += step;
        }
        if (rc == 0 && (uint32_t)c != *crc)
            rc = tdm__err(rt, TDM_ECORRUPT,
                          "%s: '%s': CRC-32 mismatch (stored %08x, computed %08x): the member is "
                          "corrupted",
                          who, path, *crc, (uint32_t)c);
    }
    if (rc == 0 && !dst && h.fortran && o->c_order)
        rc = tdm__io_to_c_order(rt, who, &t, o->mem);
    if (rc != 0) {
        if (!dst)
            tdm_tensor_release(t);
        return rc;
    }
    if (!dst)
        *out = t;
    return 0;
}
