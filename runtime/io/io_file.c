/* Tensor files: options, file helpers (atomic writes, checked reads), layout helpers, and the
 * public entry points that dispatch on the file kind (tdm_save, tdm_load, tdm_load_into,
 * tdm_file_info_get, tdm_npy_create). */
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

int tdm__io_reerr(tdm_runtime *rt, int rc, const char *who)
{
    char why[TDM__ERRMSG_LEN];
    snprintf(why, sizeof why, "%s", tdm_errmsg(rt));
    return tdm__err(rt, rc, "%s: %s", who, why);
}

/* ---- options ------------------------------------------------------------------------------- */

int tdm_save_opts_init(tdm_save_opts *o)
{
    if (!o)
        return TDM_EINVAL;
    *o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
    return 0;
}

int tdm_load_opts_init(tdm_load_opts *o)
{
    if (!o)
        return TDM_EINVAL;
    *o = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    return 0;
}

int tdm_codec_from_name(const char *name, tdm_codec *codec)
{
    static const struct {
        const char *name;
        tdm_codec codec;
    } names[] = {{"none", TDM_CODEC_NONE},       {"raw", TDM_CODEC_NONE},
                 {"zstd", TDM_CODEC_ZSTD},       {"lz4", TDM_CODEC_LZ4},
                 {"deflate", TDM_CODEC_DEFLATE}, {"zlib", TDM_CODEC_DEFLATE},
                 {"gzip", TDM_CODEC_DEFLATE}};
    if (!name || !codec)
        return TDM_EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i].name) == 0) {
            *codec = names[i].codec;
            return 0;
        }
    return TDM_EINVAL;
}

const char *tdm_codec_name(tdm_codec codec)
{
    switch (codec) {
    case TDM_CODEC_NONE:
        return "none";
    case TDM_CODEC_ZSTD:
        return "zstd";
    case TDM_CODEC_LZ4:
        return "lz4";
    case TDM_CODEC_DEFLATE:
        return "deflate";
    default:
        return "invalid";
    }
}

int tdm__io_save_opts(tdm_runtime *rt, const char *who, const tdm_save_opts *in, tdm_save_opts *o)
{
    *o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
    if (!in)
        return 0;
    if (in->size < sizeof(tdm_save_opts) || in->version != TDM_SAVE_OPTS_VERSION)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: opts size %u / version %u: start from TDM_SAVE_OPTS_INIT", who,
                        in->size, in->version);
    *o = *in;
    int lo, hi;
    switch (o->codec) {
    case TDM_CODEC_NONE:
        lo = hi = 0;
        break;
    case TDM_CODEC_ZSTD:
        lo = -100;
        hi = 22;
        break;
    case TDM_CODEC_LZ4:
        lo = 0;
        hi = 12;
        break;
    case TDM_CODEC_DEFLATE:
        lo = 0;
        hi = 9;
        break;
    default:
        return tdm__err(rt, TDM_EINVAL, "%s: unknown codec %d", who, (int)o->codec);
    }
    if (o->level < lo || o->level > hi)
        return tdm__err(rt, TDM_EINVAL, "%s: level %d out of range [%d, %d] for codec %s", who,
                        o->level, lo, hi, tdm_codec_name(o->codec));
    if (o->npy_version < 0 || o->npy_version > 3)
        return tdm__err(rt, TDM_EINVAL, "%s: npy_version %d: 0 (automatic), 1, 2 or 3", who,
                        o->npy_version);
    if (o->chunk_bytes != 0 && (o->chunk_bytes < 4096 || o->chunk_bytes > (64 << 20)))
        return tdm__err(rt, TDM_EINVAL, "%s: chunk_bytes %lld out of range [4096, 64 MiB]", who,
                        (long long)o->chunk_bytes);
    return 0;
}

int tdm__io_load_opts(tdm_runtime *rt, const char *who, const tdm_load_opts *in, tdm_load_opts *o)
{
    *o = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    if (!in)
        return 0;
    if (in->size < sizeof(tdm_load_opts) || in->version != TDM_LOAD_OPTS_VERSION)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: opts size %u / version %u: start from TDM_LOAD_OPTS_INIT", who,
                        in->size, in->version);
    *o = *in;
    if ((unsigned)o->mmap > TDM_MMAP_COPY)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown mmap mode %d", who, (int)o->mmap);
    if (o->mmap != TDM_MMAP_NONE && o->c_order)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: c_order needs a copy, which a memory-mapped load cannot make", who);
    if (o->max_bytes < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: max_bytes %lld is negative", who,
                        (long long)o->max_bytes);
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------- */

int tdm__io_open_read(tdm_runtime *rt, const char *who, const char *path, bool rw, int *fd,
                      uint64_t *size)
{
    *fd = -1;
    int f = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (f < 0)
        return tdm__err(rt, TDM_EIO, "%s: cannot open '%s'%s (%s)", who, path,
                        rw ? " for reading and writing" : "", strerror(errno));
    struct stat st;
    if (fstat(f, &st) != 0) {
        int e = errno;
        close(f);
        return tdm__err(rt, TDM_EIO, "%s: cannot stat '%s' (%s)", who, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return tdm__err(rt, TDM_EINVAL, "%s: '%s' is not a regular file", who, path);
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

int tdm__io_pread(tdm_runtime *rt, const char *who, const char *path, int fd, void *buf, size_t n,
                  uint64_t off, const char *what)
{
    char *p = buf;
    while (n > 0) {
        size_t step = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pread(fd, p, step, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return tdm__err(rt, TDM_EIO, "%s: read of '%s' failed at offset %llu (%s)", who, path,
                            (unsigned long long)off, strerror(errno));
        if (r == 0)
            return tdm__err(rt, TDM_EFORMAT, "%s: '%s' is truncated: it ends at offset %llu, in %s",
                            who, path, (unsigned long long)off, what);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int tdm__io_pwrite(tdm_runtime *rt, const char *who, const char *path, int fd, const void *buf,
                   size_t n, uint64_t off)
{
    const char *p = buf;
    while (n > 0) {
        size_t step = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pwrite(fd, p, step, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return tdm__err(rt, TDM_EIO, "%s: write to '%s' failed at offset %llu (%s)", who, path,
                            (unsigned long long)off, r < 0 ? strerror(errno) : "no progress");
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ---- atomic output ------------------------------------------------------------------------- */

int tdm__io_out_open(tdm_runtime *rt, const char *who, const char *path, tdm__io_out *o)
{
    o->fd = -1;
    o->path = o->tmp = NULL;
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp = malloc(n + 32);
    if (!o->path || !o->tmp) {
        tdm__io_out_abort(o);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    /* open(O_CREAT | O_EXCL, 0666) rather than mkstemp: the file gets the mode any new file
     * gets under the process's umask, without touching the (process-wide) umask. */
    static atomic_uint counter;
    int e = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned long long r = tdm__now_ns() ^ ((unsigned long long)getpid() << 32) ^
                               ((unsigned long long)atomic_fetch_add(&counter, 1) << 20);
        snprintf(o->tmp, n + 32, "%s.tmp-%012llx", path, r & 0xffffffffffffull);
        o->fd = open(o->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (o->fd >= 0)
            return 0;
        e = errno;
        if (e != EEXIST)
            break;
    }
    free(o->tmp);
    o->tmp = NULL;
    tdm__io_out_abort(o);
    return tdm__err(rt, TDM_EIO, "%s: cannot create a file next to '%s' (%s)", who, path,
                    strerror(e));
}

void tdm__io_out_abort(tdm__io_out *o)
{
    if (o->fd >= 0)
        close(o->fd);
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    o->fd = -1;
    o->tmp = o->path = NULL;
}

static void sync_parent_dir(const char *path)
{
    char *d = strdup(path);
    if (!d)
        return;
    char *slash = strrchr(d, '/');
    const char *dir = ".";
    if (slash) {
        *(slash == d ? slash + 1 : slash) = '\0';
        dir = d;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(d);
}

int tdm__io_out_commit(tdm_runtime *rt, const char *who, tdm__io_out *o, bool sync)
{
    if (sync && fsync(o->fd) != 0) {
        int e = errno;
        int rc = tdm__err(rt, TDM_EIO, "%s: fsync of '%s' failed (%s)", who, o->tmp, strerror(e));
        tdm__io_out_abort(o);
        return rc;
    }
    if (close(o->fd) != 0) {
        int e = errno;
        o->fd = -1;
        int rc = tdm__err(rt, TDM_EIO, "%s: closing '%s' failed (%s)", who, o->tmp, strerror(e));
        tdm__io_out_abort(o);
        return rc;
    }
    o->fd = -1;
    if (rename(o->tmp, o->path) != 0) {
        int e = errno;
        int rc = tdm__err(rt, TDM_EIO, "%s: cannot rename '%s' to '%s' (%s)", who, o->tmp, o->path,
                          strerror(e));
        tdm__io_out_abort(o);
        return rc;
    }
    if (sync)
        sync_parent_dir(o->path);
    free(o->tmp);
    o->tmp = NULL;
    tdm__io_out_abort(o);
    return 0;
}

/* ---- layouts ------------------------------------------------------------------------------- */

void tdm__io_fortran_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = 0; i < ndim; i++) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

/* Dims of size 1 can have any stride: compare only the others. */
static bool strides_match(const tdm_tensor *t, const int64_t *want)
{
    const int64_t *sh = tdm_tensor_shape(t), *st = tdm_tensor_strides(t);
    for (int i = 0; i < tdm_tensor_ndim(t); i++)
        if (sh[i] > 1 && st[i] != want[i])
            return false;
    return true;
}

bool tdm__io_is_fortran(const tdm_tensor *t)
{
    if (tdm_tensor_is_contiguous(t) || tdm_tensor_numel(t) == 0)
        return false;
    int64_t f[TDM_MAX_DIMS];
    tdm__io_fortran_strides(tdm_tensor_ndim(t), tdm_tensor_shape(t), f);
    return strides_match(t, f);
}

void tdm__io_copy_strided(void *dst, const int64_t *dst_strides, const void *src,
                          const int64_t *src_strides, int ndim, const int64_t *shape, size_t es)
{
    if (ndim == 0) {
        memcpy(dst, src, es);
        return;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0)
            return;
    /* An odometer over every index but the last; the last dim is a strided element loop. */
    int64_t idx[TDM_MAX_DIMS] = {0};
    int last = ndim - 1;
    char *d = dst;
    const char *s = src;
    for (;;) {
        int64_t doff = 0, soff = 0;
        for (int i = 0; i < last; i++) {
            doff += idx[i] * dst_strides[i];
            soff += idx[i] * src_strides[i];
        }
        char *dp = d + doff * (int64_t)es;
        const char *sp = s + soff * (int64_t)es;
        int64_t ds = dst_strides[last] * (int64_t)es, ss = src_strides[last] * (int64_t)es;
        if (ds == (int64_t)es && ss == (int64_t)es) {
            memcpy(dp, sp, (size_t)shape[last] * es);
        } else {
            for (int64_t j = 0; j < shape[last]; j++)
                memcpy(dp + j * ds, sp + j * ss, es);
        }
        int i = last - 1;
        while (i >= 0 && ++idx[i] == shape[i])
            idx[i--] = 0;
        if (i < 0)
            return;
    }
}

void tdm__io_byteswap(void *p, size_t n, size_t es)
{
    unsigned char *b = p;
    /* the element sizes .npy has, one word at a time (memcpy: p need not be aligned) */
    if (es == 2 || es == 4 || es == 8) {
        for (size_t i = 0; i < n; i++, b += es) {
            if (es == 2) {
                uint16_t v;
                memcpy(&v, b, 2);
                v = __builtin_bswap16(v);
                memcpy(b, &v, 2);
            } else if (es == 4) {
                uint32_t v;
                memcpy(&v, b, 4);
                v = __builtin_bswap32(v);
                memcpy(b, &v, 4);
            } else {
                uint64_t v;
                memcpy(&v, b, 8);
                v = __builtin_bswap64(v);
                memcpy(b, &v, 8);
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++, b += es)
        for (size_t j = 0; j < es / 2; j++) {
            unsigned char c = b[j];
            b[j] = b[es - 1 - j];
            b[es - 1 - j] = c;
        }
}

int tdm__io_new_tensor(tdm_runtime *rt, const char *who, tdm_dtype dtype, int ndim,
                       const int64_t *shape, bool fortran, unsigned mem, tdm_tensor **out)
{
    int rc = tdm_tensor_empty(rt, dtype, ndim, shape, mem, out);
    if (rc != 0)
        return tdm__io_reerr(rt, rc, who);
    /* fresh host memory of 4 MiB or more is on transparent huge pages already (storage.c) */
    if (fortran)
        tdm__io_fortran_strides(ndim, shape, (*out)->strides);
    return 0;
}

int tdm__io_to_c_order(tdm_runtime *rt, const char *who, tdm_tensor **t, unsigned mem)
{
    tdm_tensor *src = *t, *dst;
    int rc = tdm_tensor_empty(rt, src->dtype, src->ndim, src->shape, mem, &dst);
    if (rc != 0)
        return tdm__io_reerr(rt, rc, who);
    tdm__io_copy_strided(tdm_tensor_data(dst), dst->strides, tdm_tensor_data(src), src->strides,
                         src->ndim, src->shape, tdm_dtype_size(src->dtype));
    tdm_tensor_release(src);
    *t = dst;
    return 0;
}

/* ---- public entry points -------------------------------------------------------------------- */

static int check_tensor(tdm_runtime *rt, const char *who, const tdm_tensor *t)
{
    if (!t)
        return tdm__err(rt, TDM_EINVAL, "%s: tensor is NULL", who);
    if (tdm_tensor_numel(t) > 0 && !tdm_tensor_data(t))
        return tdm__err(rt, TDM_EINVAL, "%s: tensor has no data", who);
    return 0;
}

/* Reserves the file's blocks before a large write, as numpy's tofile() does: on ext4 (and
 * XFS) writing into allocated extents skips delayed allocation's per-page bookkeeping (1 GiB:
 * 0.16 s instead of 0.22 s here), and a full disk shows up before anything is written. A file
 * system without fallocate (EOPNOTSUPP...) simply writes as before; only ENOSPC / EDQUOT fail
 * the save. FALLOC_FL_KEEP_SIZE: the size still grows only with what is written. */
#define PREALLOC_MIN_BYTES (4u << 20)

static int prealloc(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                    uint64_t len)
{
#ifdef FALLOC_FL_KEEP_SIZE
    if (len < PREALLOC_MIN_BYTES || len > (uint64_t)INT64_MAX - off)
        return 0;
    int r;
    do
        r = fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    while (r != 0 && errno == EINTR);
    if (r != 0 && (errno == ENOSPC || errno == EDQUOT))
        return tdm__err(rt, TDM_EIO, "%s: no room for the %llu bytes of '%s' (%s)", who,
                        (unsigned long long)len, path, strerror(errno));
#else
    (void)rt, (void)who, (void)path, (void)fd, (void)off, (void)len;
#endif
    return 0;
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
    if (rc == 0)
        rc = prealloc(rt, who, path, out.fd, hlen,
                      (uint64_t)tdm_tensor_numel(t) * tdm_dtype_size(t->dtype));
    if (rc == 0) {
        tdm__io_fdsink sink = {rt, who, path, out.fd, hlen};
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

int tdm_load(tdm_runtime *rt, const char *path, const tdm_load_opts *opts, tdm_tensor **out)
{
    static const char who[] = "tdm_load";
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path)
        return tdm__err(rt, TDM_EINVAL, "%s: path is NULL", who);
    tdm__err_clear(rt);
    tdm_load_opts o;
    int rc = tdm__io_load_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    int fd;
    uint64_t size;
    rc = tdm__io_open_read(rt, who, path, o.mmap == TDM_MMAP_READWRITE, &fd, &size);
    if (rc != 0)
        return rc;
    tdm_file_kind kind;
    rc = sniff(rt, who, path, fd, size, &kind);
    if (rc == 0) {
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
    int rc = tdm__io_open_read(rt, who, path, false, &fd, &size);
    if (rc != 0)
        return rc;
    tdm_file_kind kind;
    rc = sniff(rt, who, path, fd, size, &kind);
    if (rc == 0) {
        tdm_load_opts o = TDM_LOAD_OPTS_INIT;
        if (kind == TDM_FILE_TDZ) {
            rc = tdm__tdz_load(rt, who, path, fd, size, &o, dst, NULL);
        } else if (kind == TDM_FILE_NPY) {
            rc = tdm__npy_load_region(rt, who, path, fd, 0, size, &o, NULL, dst, NULL);
        } else {
            rc = tdm__err(rt, TDM_EINVAL, "%s: '%s' is a .npz archive", who, path);
        }
    }
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
    int rc = tdm__io_open_read(rt, who, path, false, &fd, &size);
    if (rc != 0)
        return rc;
    tdm_file_kind kind;
    rc = sniff(rt, who, path, fd, size, &kind);
    if (rc == 0 && kind == TDM_FILE_NPY) {
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
    } else if (rc == 0 && kind == TDM_FILE_TDZ) {
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
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path)
        return tdm__err(rt, TDM_EINVAL, "%s: path is NULL", who);
    tdm__err_clear(rt);
    if (tdm_dtype_size(dtype) == 0)
        return tdm__err(rt, TDM_EINVAL, "%s: invalid dtype %d", who, (int)dtype);
    if (ndim < 0 || ndim > TDM_MAX_DIMS || (ndim > 0 && !shape))
        return tdm__err(rt, TDM_EINVAL, "%s: bad ndim %d or NULL shape", who, ndim);
    int64_t numel, bytes, total;
    int rc = tdm__shape_numel(ndim, shape, &numel);
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
