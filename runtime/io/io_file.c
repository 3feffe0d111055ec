/* SPDX-License-Identifier: MIT */
/* Tensor files: options, file helpers (atomic writes, checked reads). The layout helpers are in
 * io_layout.c, the public entry points that dispatch on the file kind in io_api.c. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

int tdm__io_begin(tdm_runtime *rt, const char *who, bool out_given, const char *path)
{
    if (!out_given)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    if (!path)
        return tdm__err(rt, TDM_EINVAL, "%s: path is NULL", who);
    tdm__err_clear(rt);
    return 0;
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

/* ---- helper threads ------------------------------------------------------------------------ */

int tdm__io_threads_for(tdm_runtime *rt, uint64_t n, uint64_t steps)
{
    if (n < TDM__IO_PAR_MIN_BYTES)
        return 1;
    int want = tdm_runtime_threads(rt);
    if (want > TDM__IO_MAX_HELPERS)
        want = TDM__IO_MAX_HELPERS;
    if ((uint64_t)want > steps)
        want = (int)steps;
    return want < 1 ? 1 : want;
}

int tdm__io_start_helpers(pthread_t *th, int n, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    bool masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
    int started = 0;
    while (started < n && pthread_create(&th[started], NULL, fn, arg) == 0)
        started++;
    if (masked)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    return started;
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
