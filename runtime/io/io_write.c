/* SPDX-License-Identifier: MIT */
/* Writing one large block of bytes to a file (a contiguous tensor's data), on several threads.
 *
 * ext4 and XFS take the inode's lock for every buffered write, so two threads calling pwrite on
 * one file go no faster than one: 1 GiB from a memfd mapping, 0.214 s with two threads and
 * 0.213 s with one (medians of 7, 2 cores). A write fault in a MAP_SHARED mapping of the file
 * does not take that lock. So the caller's thread writes steps with pwrite while helper threads
 * copy other steps into a shared mapping of the file, the steps handed out through one counter
 * and ending at multiples of 8 MiB in the file. 1 GiB by hand, 2 cores, 3 interleaved runs
 * each: one pwrite thread 0.230-0.293 s; two threads copying 0.200-0.241 s; this 0.148-0.152 s.
 *
 * The mapping is advised MADV_HUGEPAGE | MADV_RANDOM: a fault then brings in one 2 MiB folio
 * of the page cache, as pwrite makes them. Without the advice, or with the default readahead
 * (which reads 4 MiB, spilling into the next step: where that step's pwrite had made a folio,
 * the rest came in as 4 KiB pages), 12-23% of the file's pages were small folios, and mapped
 * reads of the file were 10% slower (numpy.load(mmap_mode='r').sum(): 17%).
 *
 * A store into a mapping cannot return an error: a failure is SIGBUS, which a helper thread
 * (all signals blocked) cannot be handed, so the process dies. The threaded path is therefore
 * taken only where that cannot happen:
 *  - the file's blocks are reserved first (fallocate mode 0, which also sets the size), and
 *    only on file systems whose write faults into reserved blocks allocate nothing more: ext4,
 *    XFS, tmpfs (statfs). btrfs reserves space again at each write fault (copy-on-write), and
 *    an outside test had SIGBUS there under a quota or near a full disk; others are unknown.
 *    So a copy cannot fail for lack of space; a file system that shuts down meanwhile (an I/O
 *    error, an aborted journal, errors=remount-ro) still faults it, where pwrite would fail;
 *  - the source is not memory another process may shrink: a tensor mapped from a file
 *    (tdm_load with a mmap mode), an import, any storage with a descriptor of its own (the
 *    caller says so: src_may_fault). pwrite then fails with EFAULT (TDM_EIO) where a copy
 *    would fault.
 * Elsewhere, or where reserving, mapping or starting a thread fails, the write goes the
 * one-thread way. The helpers are threads made for the call, not the runtime's pool
 * (tdm__io_start_helpers: a save may run inside a pool task). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "io/io_internal.h"
#include "core/core.h"

#define WRITE_STEP (8u << 20)
/* statfs f_type of the file systems the threaded path is used on (linux/magic.h) */
#define FS_EXT4 0xEF53 /* ext2/3/4 share it: ext2 has no fallocate, so never gets here */
#define FS_XFS 0x58465342
#define FS_TMPFS 0x01021994
/* Below this, no reservation: its syscall costs more than delayed allocation saves. */
#define PREALLOC_MIN_BYTES (4u << 20)

typedef struct writer {
    tdm_runtime *rt;
    const char *who, *path;
    int fd;
    const char *src; /* bytes [0, n) go to file offset off */
    char *map;       /* the file mapped from map_off; map + (off - map_off) receives src */
    uint64_t n, off;
    uint64_t n_steps;
    atomic_uint_least64_t next;
    atomic_bool stop;
    int rc; /* the caller's pwrite failure (only the caller writes it) */
} writer;

/* Step i: bytes [*at, *at + *len) of src. Steps end at file offsets that are multiples of
 * WRITE_STEP (the first one is shorter by the header), so each 2 MiB folio of the page cache
 * lies in one step, made by one thread, one way. */
static void step_bounds(const writer *w, uint64_t i, uint64_t *at, size_t *len)
{
    uint64_t first = WRITE_STEP - w->off % WRITE_STEP; /* bytes up to the first boundary */
    uint64_t b = i == 0 ? 0 : first + (i - 1) * WRITE_STEP;
    uint64_t e = first + i * WRITE_STEP;
    if (e > w->n)
        e = w->n;
    *at = b;
    *len = (size_t)(e - b);
}

/* The helpers: copy steps into the mapping until none are left or the caller failed. */
static void *copier_main(void *arg)
{
    writer *w = arg;
    while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        uint64_t i = atomic_fetch_add(&w->next, 1), at;
        size_t len;
        if (i >= w->n_steps)
            break;
        step_bounds(w, i, &at, &len);
        memcpy(w->map + at, w->src + at, len);
    }
    return NULL;
}

/* The caller: pwrite steps; the first failure stops everyone. */
static void caller_run(writer *w)
{
    for (;;) {
        uint64_t i = atomic_fetch_add(&w->next, 1), at;
        size_t len;
        if (i >= w->n_steps)
            return;
        step_bounds(w, i, &at, &len);
        w->rc = tdm__io_pwrite(w->rt, w->who, w->path, w->fd, w->src + at, len, w->off + at);
        if (w->rc != 0) {
            atomic_store(&w->stop, true);
            return;
        }
    }
}

static int no_room(tdm_runtime *rt, const char *who, const char *path, uint64_t n)
{
    return tdm__err(rt, TDM_EIO, "%s: no room for the %llu bytes of '%s' (%s)", who,
                    (unsigned long long)n, path, strerror(errno));
}

int tdm__io_reserve(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                    uint64_t n)
{
#ifdef FALLOC_FL_KEEP_SIZE
    if (n < PREALLOC_MIN_BYTES || n > (uint64_t)INT64_MAX - off)
        return 0;
    int r;
    do
        r = fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n);
    while (r != 0 && errno == EINTR);
    if (r != 0 && (errno == ENOSPC || errno == EDQUOT))
        return no_room(rt, who, path, n);
#else
    (void)rt, (void)who, (void)path, (void)fd, (void)off, (void)n;
#endif
    return 0;
}

/* One thread: the reservation, then pwrite. */
static int write_serial(tdm_runtime *rt, const char *who, const char *path, int fd, const char *p,
                        uint64_t n, uint64_t off)
{
    int rc = tdm__io_reserve(rt, who, path, fd, off, n);
    while (rc == 0 && n > 0) {
        size_t step = n > (64u << 20) ? (64u << 20) : (size_t)n;
        rc = tdm__io_pwrite(rt, who, path, fd, p, step, off);
        p += step, n -= step, off += step;
    }
    return rc;
}

/* Whether a write fault into reserved blocks of fd's file system cannot fail for lack of space
 * (see above). */
static bool faults_cannot_fail(int fd)
{
    struct statfs st;
    if (fstatfs(fd, &st) != 0)
        return false;
    unsigned long type = (unsigned long)st.f_type;
    return type == FS_EXT4 || type == FS_XFS || type == FS_TMPFS;
}

int tdm__io_write_block(tdm_runtime *rt, const char *who, const char *path, int fd, const void *p,
                        uint64_t n, uint64_t off, bool src_may_fault)
{
    int want = n > SIZE_MAX / 2 ? 1 : tdm__io_threads_for(rt, n, (n + WRITE_STEP - 1) / WRITE_STEP);
    if (want < 2 || src_may_fault || off > (uint64_t)INT64_MAX - n || !faults_cannot_fail(fd))
        return write_serial(rt, who, path, fd, p, n, off);
    /* The reservation, which also sets the size to off + n: the mapping's pages then have
     * blocks behind them. */
    int r;
    do
        r = fallocate(fd, 0, (off_t)off, (off_t)n);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        if (errno == ENOSPC || errno == EDQUOT)
            return no_room(rt, who, path, n);
        return write_serial(rt, who, path, fd, p, n, off);
    }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t map_off = off - off % (uint64_t)(page > 0 ? page : 4096);
    size_t map_len = (size_t)(off + n - map_off);
    char *map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)map_off);
    if (map == MAP_FAILED)
        return write_serial(rt, who, path, fd, p, n, off);
#ifdef MADV_HUGEPAGE
    madvise(map, map_len, MADV_HUGEPAGE); /* advice only: a kernel without THP ignores it */
#endif
    madvise(map, map_len, MADV_RANDOM);
    writer w = {.rt = rt,
                .who = who,
                .path = path,
                .fd = fd,
                .src = p,
                .map = map + (off - map_off),
                .n = n,
                .off = off};
    w.n_steps = (off + n + WRITE_STEP - 1) / WRITE_STEP - off / WRITE_STEP;
    atomic_init(&w.next, 0);
    atomic_init(&w.stop, false);
    pthread_t th[TDM__IO_MAX_HELPERS];
    int started = tdm__io_start_helpers(th, want - 1, copier_main, &w);
    caller_run(&w);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    munmap(map, map_len);
    return w.rc;
}
