/* SPDX-License-Identifier: MIT */
/* Sharing a tensor with an unrelated process: its memory's file descriptor travels over a Unix
 * socket (SCM_RIGHTS) with a small header; the receiver maps the same pages. torch's
 * "file_descriptor" sharing strategy, without a per-tensor segment. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "core/core.h"

#define WIRE_MAGIC "TDMTNSR1"

typedef struct {
    char magic[8];
    uint32_t dtype;
    int32_t ndim;
    int64_t shape[TDM_MAX_DIMS];
    int64_t strides[TDM_MAX_DIMS];
    int64_t offset;         /* elements from the storage's first byte */
    uint64_t storage_bytes; /* usable bytes of the storage */
    uint64_t map_offset;    /* where the storage starts in the descriptor (page aligned) */
    uint64_t map_len;       /* bytes to map */
} tdm__wire;

ssize_t tdm__send_with_fd(int sock, const void *p, size_t len, int fd)
{
    struct iovec iov = {(void *)p, len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
}

int tdm_tensor_export(const tdm_tensor *t, int sock)
{
    if (!t)
        return tdm__err(NULL, TDM_EINVAL, "tdm_tensor_export: tensor is NULL");
    tdm_runtime *rt = t->storage->rt;
    const tdm__storage *s = t->storage;
    int fd;
    uint64_t off;
    if (s->in_arena && !s->arena_file) {
        fd = tdm__arena_fd(rt->arena);
        off = tdm__arena_offset(rt->arena, s->map_base);
        /* The receiver may map these pages after we release the tensor: from now on its range
         * is never punched out nor reused (tdm__arena_free retires it). */
        if (sock >= 0 && tdm__arena_mark_exported(rt->arena, s->map_base, s->map_bytes) != 0)
            return tdm__err(rt, TDM_ENOMEM, "tdm_tensor_export: out of memory");
    } else if (s->fd >= 0) {
        fd = s->fd;
        off = s->fd_offset;
    } else {
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_tensor_export: the tensor is not in shared memory (create it with "
                        "TDM_MEM_SHARED or call tdm_tensor_share() first)");
    }
    if (sock < 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_tensor_export: bad socket %d", sock);
    tdm__wire w;
    memset(&w, 0, sizeof w);
    memcpy(w.magic, WIRE_MAGIC, 8);
    w.dtype = (uint32_t)t->dtype;
    w.ndim = t->ndim;
    memcpy(w.shape, t->shape, sizeof w.shape);
    memcpy(w.strides, t->strides, sizeof w.strides);
    /* The importer's storage starts where its mapping does, at map_offset: a mapped file's
     * data starts `lead` bytes into its first page (the .npy header), so the offset and the
     * usable bytes count from the page. A .npy maps only data aligned to its elements, so lead
     * is a whole number of them. */
    size_t es = tdm_dtype_size(t->dtype);
    uint64_t lead = (uint64_t)((const char *)s->base - (const char *)s->map_base);
    if (lead % es != 0)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_tensor_export: the tensor's data is not aligned to its elements in "
                        "its mapping");
    w.offset = t->offset + (int64_t)(lead / es);
    w.storage_bytes = s->bytes + lead;
    w.map_offset = off;
    w.map_len = s->map_bytes;

    ssize_t n = tdm__send_with_fd(sock, &w, sizeof w, fd);
    if (n != (ssize_t)sizeof w)
        return tdm__err(rt, TDM_ESYS, "tdm_tensor_export: sendmsg failed (%s)",
                        n < 0 ? strerror(errno) : "short write");
    return 0;
}

/* Reads the whole header; the descriptor comes with the first byte. */
static int recv_wire(int sock, tdm__wire *w, int *fd)
{
    *fd = -1;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {w, sizeof *w};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len >= CMSG_LEN(sizeof(int)))
            memcpy(fd, CMSG_DATA(c), sizeof *fd);
    size_t got = n > 0 ? (size_t)n : 0;
    while (n > 0 && got < sizeof *w) {
        n = recv(sock, (char *)w + got, sizeof *w - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            got += (size_t)n;
    }
    return got == sizeof *w ? 0 : 1;
}

int tdm_tensor_import(tdm_runtime *rt, int sock, tdm_tensor **out)
{
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: out is NULL");
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "tdm_tensor_import: runtime is NULL");
    if (sock < 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: bad socket %d", sock);
    tdm__wire w;
    int fd;
    int r = recv_wire(sock, &w, &fd);
    if (r < 0)
        return tdm__err(rt, TDM_ESYS, "tdm_tensor_import: recvmsg failed (%s)", strerror(-r));
    int rc;
    void *p = MAP_FAILED;
    tdm__storage *s = NULL;
    if (r > 0 || fd < 0 || memcmp(w.magic, WIRE_MAGIC, 8) != 0) {
        rc = tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: not a tandem tensor message (%s)",
                      r > 0    ? "connection closed or short header"
                      : fd < 0 ? "no file descriptor attached"
                               : "bad magic");
        goto fail;
    }
    /* Never trust the header: every size is checked against the mapping before use. */
    size_t es = tdm_dtype_size((tdm_dtype)w.dtype);
    int64_t numel;
    long pg = sysconf(_SC_PAGESIZE);
    if (es == 0 || w.ndim < 0 || w.ndim > TDM_MAX_DIMS || w.offset < 0 ||
        w.storage_bytes > w.map_len || w.map_len == 0 || w.map_len > (uint64_t)PTRDIFF_MAX ||
        w.map_offset % (uint64_t)(pg > 0 ? pg : 4096) != 0 ||
        tdm__shape_numel(w.ndim, w.shape, &numel) != 0) {
        rc = tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: invalid tensor header");
        goto fail;
    }
    int64_t last = w.offset, step;
    for (int i = 0; i < w.ndim; i++) {
        if (w.shape[i] < 0 || w.strides[i] < 0 ||
            (w.shape[i] > 0 && (tdm__mul_ovf(w.shape[i] - 1, w.strides[i], &step) ||
                                tdm__add_ovf(last, step, &last)))) {
            rc = tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: invalid shape or strides");
            goto fail;
        }
    }
    int64_t end_bytes;
    if (numel > 0 && (tdm__mul_ovf(last + 1, (int64_t)es, &end_bytes) ||
                      (uint64_t)end_bytes > w.storage_bytes)) {
        rc = tdm__err(rt, TDM_EINVAL, "tdm_tensor_import: the tensor does not fit its storage");
        goto fail;
    }
    /* Pages past the descriptor's end would fault (SIGBUS) at the first touch: the file must
     * hold the whole storage now. (The sender can still shrink it later, as it can any memory it
     * shares: tdm_save does not copy an import on helper threads for that reason.) */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = tdm__err(rt, TDM_ESYS, "tdm_tensor_import: fstat of the descriptor failed (%s)",
                      strerror(errno));
        goto fail;
    }
    if (st.st_size < 0 || w.map_offset > (uint64_t)st.st_size ||
        w.storage_bytes > (uint64_t)st.st_size - w.map_offset) {
        rc = tdm__err(rt, TDM_EINVAL,
                      "tdm_tensor_import: the descriptor holds %lld bytes, fewer than the "
                      "tensor's storage (%llu at offset %llu)",
                      (long long)st.st_size, (unsigned long long)w.storage_bytes,
                      (unsigned long long)w.map_offset);
        goto fail;
    }
    /* A descriptor opened read-only (a tensor mapped with TDM_MMAP_READ) maps read-only, as
     * the exporter's mapping is: writing to the import faults there too. */
    int fl = fcntl(fd, F_GETFL);
    int prot = fl >= 0 && (fl & O_ACCMODE) == O_RDONLY ? PROT_READ : PROT_READ | PROT_WRITE;
    p = mmap(NULL, w.map_len, prot, MAP_SHARED, fd, (off_t)w.map_offset);
    if (p == MAP_FAILED) {
        rc = tdm__err(rt, TDM_ESYS, "tdm_tensor_import: mmap of %llu bytes failed (%s)",
                      (unsigned long long)w.map_len, strerror(errno));
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_tensor_import: out of memory");
        goto fail;
    }
    atomic_init(&s->refs, 1);
    s->rt = rt;
    s->mem = TDM_MEM_SHARED;
    s->base = s->map_base = p;
    s->bytes = w.storage_bytes;
    s->map_bytes = w.map_len;
    s->mmapped = true;
    s->fd = fd; /* kept: the tensor can be exported on */
    s->fd_offset = w.map_offset;
    tdm_tensor *t = tdm__tensor_new(s, (tdm_dtype)w.dtype, w.ndim, w.shape, w.strides, w.offset);
    if (!t) {
        tdm__storage_release(s); /* unmaps and closes */
        return tdm__err(rt, TDM_ENOMEM, "tdm_tensor_import: out of memory");
    }
    *out = t;
    return 0;

fail:
    if (p != MAP_FAILED)
        munmap(p, w.map_len);
    if (fd >= 0)
        close(fd);
    return rc;
}
