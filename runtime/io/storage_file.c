/* SPDX-License-Identifier: MIT */
/* Storage over a memory-mapped file (tdm_load() with a mmap mode, tdm_npy_create()).
 *
 * The storage owns the mapping (s->mmapped: tdm__storage_release() munmaps it) and, for a
 * MAP_SHARED mapping, the file descriptor (closed on release), which a worker-process backend
 * can map to see the same bytes without a copy. Nothing is accounted against shm_limit: the
 * pages belong to the file, not to the shared-memory arena. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "core/core.h"

int tdm__storage_map_file(tdm_runtime *rt, int fd, uint64_t offset, size_t bytes, int prot,
                          int flags, const char *who, tdm__storage **out)
{
    *out = NULL;
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t page = ps > 0 ? (uint64_t)ps : 4096u;
    uint64_t start = offset - offset % page;
    uint64_t lead = offset - start;
    /* An empty tensor still gets a real mapping (one page) so its data pointer is valid. */
    uint64_t len = lead + (bytes > 0 ? bytes : 1);
    if (len < lead || len > (uint64_t)SIZE_MAX || start > (uint64_t)INT64_MAX)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: a mapping of %zu bytes at offset %llu is too large",
                        who, bytes, (unsigned long long)offset);
    tdm__storage *s = calloc(1, sizeof *s);
    if (!s)
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate a storage object", who);
    /* A shared mapping goes inside the arena's address range when there is room, so worker
     * processes see the file at the same address, with no copy. A private (copy-on-write) one
     * cannot be shared: it is mapped on its own. */
    void *p = MAP_FAILED;
    bool in_arena = false;
    if ((flags & MAP_SHARED) && rt->arena &&
        tdm__arena_map_file(rt, rt->arena, fd, start, len, prot, who, &p) == 0)
        in_arena = true;
    else
        p = mmap(NULL, (size_t)len, prot, flags, fd, (off_t)start);
    if (p == MAP_FAILED) {
        int e = errno;
        free(s);
        return tdm__err(rt, e == ENOMEM ? TDM_ENOMEM : TDM_EIO,
                        "%s: mmap of %llu bytes of the file failed (%s)", who,
                        (unsigned long long)len, strerror(e));
    }
    atomic_init(&s->refs, 1);
    s->rt = rt;
    s->mem = TDM_MEM_MAPPED;
    s->base = (char *)p + lead;
    s->bytes = bytes;
    s->map_base = p;
    s->map_bytes = (size_t)len;
    s->mmapped = true;
    s->in_arena = s->arena_file = in_arena;
    s->fd_offset = start;
    if (flags & MAP_PRIVATE) {
        close(fd);
        s->fd = -1;
    } else {
        s->fd = fd;
    }
    *out = s;
    return 0;
}

/* Built on tdm_tensor_wrap() (which validates the layout and counts the tensor), then the
 * wrapped storage object is swapped for `s`: the tensor's offset is 0 from base either way. */
int tdm__tensor_over_storage(tdm__storage *s, tdm_dtype dtype, int ndim, const int64_t *shape,
                             const int64_t *strides, const char *who, tdm_tensor **out)
{
    tdm_tensor *t;
    int rc = tdm_tensor_wrap(s->rt, dtype, ndim, shape, strides, s->base, &t);
    if (rc != 0) {
        char why[TDM__ERRMSG_LEN];
        snprintf(why, sizeof why, "%s", tdm_errmsg(s->rt));
        return tdm__err(s->rt, rc, "%s: %s", who, why);
    }
    tdm__storage *wrapped = t->storage;
    t->storage = s;
    tdm__storage_release(wrapped);
    *out = t;
    return 0;
}
