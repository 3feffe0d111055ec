/* SPDX-License-Identifier: MIT */
/* The shared-memory arena: one memfd, mapped once over a large reserved address range when the
 * runtime opens, from which every shared tensor is sub-allocated.
 *
 * Why one big mapping made at open:
 *  - worker processes are forked after it exists, so they inherit it: a shared tensor created
 *    at any later time is already visible in every worker, at the SAME address as in the
 *    parent, so kernel arguments and pointers inside a parameter block stay valid there;
 *  - one file descriptor in all, whatever the number of tensors;
 *  - no named segment: a memfd disappears with the last process holding it, even after
 *    SIGKILL;
 *  - the file is sparse: a sub-allocation reserves its pages with fallocate() (so running out
 *    is TDM_ENOSPC at creation, never SIGBUS at first touch) and gives them back with
 *    FALLOC_FL_PUNCH_HOLE when freed. The address range costs nothing until pages are reserved.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "core/core.h"

typedef struct {
    uint64_t off, len;
} tdm__extent;

/* A file mapped inside the arena's address range (a memory-mapped tensor file). The table is
 * shared with the worker processes (made before they are forked): a worker maps the same file
 * at the same address, through /proc/<parent>/fd/<fd>, before it runs its next batch. */
#define TDM__MAX_FILE_MAPS 256
typedef struct {
    uint64_t off, len, file_off;
    uint64_t pad, alloc; /* the arena range taken: [off - pad, off - pad + alloc) */
    int32_t fd, prot, live;
    uint32_t seq; /* bumped when the entry is (re)used */
} tdm__fmap;

/* A file mapping whose address is congruent to its file offset modulo 2 MiB lets the kernel
 * map the page cache's large folios with one PMD each: touching a 512 MiB file then takes
 * ~260 page faults instead of ~8,000 (4 KiB fault-around), about 8x faster here. mmap(NULL)
 * picks such addresses by itself; a range of the arena has to be chosen so. */
#define TDM__FILE_ALIGN ((uint64_t)2 << 20)

typedef struct {
    atomic_uint gen; /* bumped on every change; workers compare with what they have seen */
    int32_t parent;  /* pid whose descriptors the entries name */
    tdm__fmap e[TDM__MAX_FILE_MAPS];
} tdm__fmaps;

struct tdm__arena {
    int fd;         /* -1 until mapped */
    uint8_t *base;  /* MAP_FAILED until mapped */
    uint64_t size;  /* (until mapped: what it would be) */
    uint64_t min_size;
    pthread_mutex_t mu;
    tdm__extent *free; /* sorted by offset, never adjacent (coalesced) */
    int n_free, cap_free;
    /* Small blocks kept for reuse (job descriptors): a map sent to worker processes then costs
     * no fallocate / hole punch, and its pages are already in every process's page table. */
    tdm__extent cache[16];
    int n_cache;
    tdm__fmaps *fmaps; /* MAP_SHARED, inherited by worker processes */
    /* Ranges exported to other programs (tdm_tensor_export): another process may map their
     * pages for as long as it likes, so when the exporter releases one it is retired — never
     * hole-punched, never handed out again — and its pages live until the memfd does. */
    tdm__extent *exported;
    int n_exported, cap_exported;
    uint64_t retired_bytes;
};

/* The reservation wanted: TDM_SHM_REGION_GB (GiB, 1..65536) when set, else twice physical
 * memory (shared tensors cannot all be resident beyond that anyway) between 16 GiB and 1 TiB;
 * then at least min_size (the configured shm_limit, up to 1 TiB). *explicit_gb says the
 * variable decided it. */
static uint64_t arena_size(uint64_t min_size, bool *explicit_gb)
{
    *explicit_gb = false;
    uint64_t size = 0;
    const char *env = getenv("TDM_SHM_REGION_GB");
    if (env && *env) {
        char *end;
        unsigned long long gb = strtoull(env, &end, 10);
        if (*end == '\0' && gb >= 1 && gb <= 65536) {
            size = (uint64_t)gb << 30;
            *explicit_gb = true;
        }
    }
    if (!size) {
        long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
        uint64_t mem = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : (16ull << 30);
        size = 2 * mem;
        if (size < (16ull << 30))
            size = 16ull << 30;
        if (size > (1ull << 40))
            size = 1ull << 40;
    }
    /* Room for the configured cap, up to 1 TiB of address space (beyond that the cap cannot be
     * reached anyway on the machines this runs on, and sanitizers limit mappings). */
    if (min_size > (1ull << 40))
        min_size = 1ull << 40;
    if (size < min_size)
        size = (min_size + (1ull << 30) - 1) & ~((1ull << 30) - 1);
    return size;
}

/* Address space this process may still map under RLIMIT_AS (ulimit -v), or UINT64_MAX. */
static uint64_t as_room(uint64_t *limit)
{
    struct rlimit rl;
    *limit = UINT64_MAX;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    *limit = (uint64_t)rl.rlim_cur;
    unsigned long long vm_pages = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%llu", &vm_pages) != 1)
            vm_pages = 0;
        fclose(f);
    }
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t used = (uint64_t)vm_pages * (uint64_t)(ps > 0 ? ps : 4096);
    return *limit > used ? *limit - used : 0;
}

/* The size to reserve now: what arena_size() wants, or under RLIMIT_AS at most half of the
 * address space still free (the rest is the program's: heap, thread stacks, libraries). 0 and
 * an error message when not even TDM__ARENA_MIN fits, or when TDM_SHM_REGION_GB asks for more
 * than fits. */
#define TDM__ARENA_MIN (64ull << 20)
static int plan_size(tdm_runtime *rt, uint64_t min_size, const char *who, uint64_t *out)
{
    bool explicit_gb;
    uint64_t want = arena_size(min_size, &explicit_gb), limit;
    uint64_t room = as_room(&limit);
    *out = want;
    if (room == UINT64_MAX || want <= room / 2)
        return 0;
    uint64_t fit = (room / 2) & ~(TDM__ARENA_MIN - 1);
    if (explicit_gb || fit < TDM__ARENA_MIN)
        return tdm__err(rt, TDM_ESYS,
                        "%s: the shared arena needs %llu bytes of address space%s, but the "
                        "address-space limit (RLIMIT_AS, ulimit -v) of %llu bytes leaves %llu free "
                        "(half of it may go to the arena): raise the limit%s",
                        who, (unsigned long long)(explicit_gb ? want : TDM__ARENA_MIN),
                        explicit_gb ? " (TDM_SHM_REGION_GB)" : "", (unsigned long long)limit,
                        (unsigned long long)room,
                        explicit_gb ? ", or lower TDM_SHM_REGION_GB"
                                    : " (TDM_SHM_REGION_GB sets the arena's size otherwise)");
    *out = fit;
    return 0;
}

/* Creates the memfd and maps it (a->mu held, or before the arena is shared). */
static int arena_map(tdm_runtime *rt, tdm__arena *a, const char *who)
{
    uint64_t size;
    int rc = plan_size(rt, a->min_size, who, &size);
    if (rc != 0)
        return rc;
    /* Not inherited by exec'd programs. A memfd is created with mode 0777 (and can be reopened
     * through /proc/<pid>/fd by whoever may look there): make it 0600, owner only. */
    int fd = memfd_create("tandem-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return tdm__err(rt, TDM_ESYS, "%s: memfd_create failed (%s)", who, strerror(errno));
    if (fchmod(fd, 0600) != 0) {
        rc = tdm__err(rt, TDM_ESYS,
                      "%s: setting the shared arena's permissions to 0600 failed (%s)", who,
                      strerror(errno));
        close(fd);
        return rc;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        rc = tdm__err(rt, TDM_ESYS, "%s: sizing the shared arena to %llu bytes failed (%s)", who,
                      (unsigned long long)size, strerror(errno));
        close(fd);
        return rc;
    }
    /* Its size never changes again: sealed against shrinking, so no program it is exported to
     * (tdm_tensor_export hands out this descriptor) can cut pages from under this one, whose
     * reads would then fault (SIGBUS). Punching holes stays allowed. Best effort: a kernel
     * without seals still works. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        uint64_t limit;
        as_room(&limit);
        char lim[64] = "none";
        if (limit != UINT64_MAX)
            snprintf(lim, sizeof lim, "%llu bytes", (unsigned long long)limit);
        rc = tdm__err(rt, TDM_ESYS,
                      "%s: mapping the shared arena (%llu bytes of address space) failed (%s); "
                      "TDM_SHM_REGION_GB sets its size (address-space limit: %s)",
                      who, (unsigned long long)size, strerror(e), lim);
        close(fd);
        return rc;
    }
    a->fd = fd;
    a->base = base;
    a->size = size;
    a->free[0] = (tdm__extent){0, size};
    a->n_free = 1;
    return 0;
}

int tdm__arena_open(tdm_runtime *rt, uint64_t min_size, bool lazy, tdm__arena **out)
{
    *out = NULL;
    tdm__arena *a = calloc(1, sizeof *a);
    if (!a)
        return tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (arena)");
    a->fd = -1;
    a->base = MAP_FAILED;
    a->min_size = min_size;
    int rc;
    a->free = malloc(16 * sizeof *a->free);
    if (!a->free) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (arena)");
        goto fail;
    }
    a->cap_free = 16;
    a->n_free = 0;
    a->fmaps =
        mmap(NULL, sizeof *a->fmaps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a->fmaps == MAP_FAILED) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (arena file table)");
        goto fail;
    }
    a->fmaps->parent = (int32_t)getpid();
    /* Worker processes need the range before they are forked; without them it is reserved
     * when a shared tensor first needs it (a program that never makes one reserves nothing). */
    if (!lazy && (rc = arena_map(rt, a, "tdm_runtime_open")) != 0) {
        munmap(a->fmaps, sizeof *a->fmaps);
        goto fail;
    }
    if (lazy) { /* what it would be, for tdm_runtime_shm_info() until then */
        bool explicit_gb;
        uint64_t limit;
        uint64_t room = as_room(&limit);
        a->size = arena_size(min_size, &explicit_gb);
        if (room != UINT64_MAX && a->size > room / 2)
            a->size = (room / 2) & ~(TDM__ARENA_MIN - 1);
    }
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return 0;

fail:
    free(a->free);
    free(a);
    return rc;
}

int tdm__arena_ensure(tdm_runtime *rt, tdm__arena *a, const char *who)
{
    pthread_mutex_lock(&a->mu);
    int rc = a->base == MAP_FAILED ? arena_map(rt, a, who) : 0;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void tdm__arena_close(tdm__arena *a)
{
    if (!a)
        return;
    if (a->base != MAP_FAILED) {
        munmap(a->base, a->size);
        close(a->fd);
    }
    munmap(a->fmaps, sizeof *a->fmaps);
    pthread_mutex_destroy(&a->mu);
    free(a->free);
    free(a->exported);
    free(a);
}

int tdm__arena_mark_exported(tdm__arena *a, const void *p, uint64_t len)
{
    uint64_t off = tdm__arena_offset(a, p);
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    int i = 0;
    while (i < a->n_exported && a->exported[i].off != off)
        i++;
    if (i == a->n_exported) {
        if (a->n_exported == a->cap_exported) {
            int cap = a->cap_exported ? 2 * a->cap_exported : 8;
            tdm__extent *g = realloc(a->exported, (size_t)cap * sizeof *g);
            if (!g)
                rc = TDM_ENOMEM;
            else {
                a->exported = g;
                a->cap_exported = cap;
            }
        }
        if (rc == 0)
            a->exported[a->n_exported++] = (tdm__extent){off, len};
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

uint64_t tdm__arena_retired_bytes(tdm__arena *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t r = a->retired_bytes;
    pthread_mutex_unlock(&a->mu);
    return r;
}

int tdm__arena_block_get(tdm_runtime *rt, tdm__arena *a, uint64_t len, const char *who, void **out)
{
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->n_cache; i++) {
        if (a->cache[i].len == len) {
            *out = a->base + a->cache[i].off;
            a->cache[i] = a->cache[--a->n_cache];
            pthread_mutex_unlock(&a->mu);
            memset(*out, 0, len); /* as fresh pages would read */
            return 0;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return tdm__arena_alloc(rt, a, len, true, who, out);
}

void tdm__arena_block_put(tdm__arena *a, void *p, uint64_t len)
{
    pthread_mutex_lock(&a->mu);
    if (a->n_cache < (int)(sizeof a->cache / sizeof a->cache[0])) {
        a->cache[a->n_cache++] = (tdm__extent){tdm__arena_offset(a, p), len};
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_unlock(&a->mu);
    tdm__arena_free(a, p, len);
}

int tdm__arena_map_file(tdm_runtime *rt, tdm__arena *a, int fd, uint64_t file_off, uint64_t len,
                        int prot, const char *who, void **out)
{
    *out = NULL;
    pthread_mutex_lock(&a->mu);
    bool mapped = a->base != MAP_FAILED;
    pthread_mutex_unlock(&a->mu);
    if (!mapped)
        return TDM_ENOSPC; /* no arena yet (no worker processes): the caller maps elsewhere */
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t pg = ps > 0 ? (uint64_t)ps : 4096u;
    len = (len + pg - 1) / pg * pg;
    pthread_mutex_lock(&a->mu);
    int slot = -1;
    for (int i = 0; i < TDM__MAX_FILE_MAPS && slot < 0; i++)
        if (!a->fmaps->e[i].live)
            slot = i;
    pthread_mutex_unlock(&a->mu);
    if (slot < 0)
        return TDM_ENOSPC; /* the caller maps outside the arena instead */
    uint64_t alloc = len >= TDM__FILE_ALIGN ? len + TDM__FILE_ALIGN - pg : len;
    void *base;
    int rc = tdm__arena_alloc(rt, a, alloc, false, who, &base);
    if (rc != 0)
        return rc;
    uint64_t pad = alloc == len ? 0
                                : (file_off - (uint64_t)(uintptr_t)base) & (TDM__FILE_ALIGN - 1);
    void *p = (char *)base + pad;
    if (mmap(p, len, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)file_off) == MAP_FAILED) {
        int e = errno;
        /* Put the arena back over the range before returning it; if even that fails the
         * range is left out of the free list (address space lost, never a hole handed out). */
        if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a->fd,
                 (off_t)tdm__arena_offset(a, p)) != MAP_FAILED)
            tdm__arena_free(a, base, alloc);
        return tdm__err(rt, e == ENOMEM ? TDM_ENOMEM : TDM_EIO, "%s: mmap of the file failed (%s)",
                        who, strerror(e));
    }
    pthread_mutex_lock(&a->mu);
    tdm__fmap *m = &a->fmaps->e[slot];
    m->off = tdm__arena_offset(a, p);
    m->len = len;
    m->pad = pad;
    m->alloc = alloc;
    m->file_off = file_off;
    m->fd = fd;
    m->prot = prot;
    m->seq++;
    m->live = 1;
    atomic_fetch_add_explicit(&a->fmaps->gen, 1, memory_order_release);
    pthread_mutex_unlock(&a->mu);
    *out = p;
    return 0;
}

void tdm__arena_unmap_file(tdm__arena *a, void *p, uint64_t len)
{
    uint64_t off = tdm__arena_offset(a, p);
    uint64_t pad = 0, alloc = len;
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < TDM__MAX_FILE_MAPS; i++) {
        tdm__fmap *m = &a->fmaps->e[i];
        if (m->live && m->off == off) {
            len = m->len;
            pad = m->pad;
            alloc = m->alloc;
            m->live = 0;
            break;
        }
    }
    /* Published before the range can be handed out again: a worker re-syncs (and puts the
     * arena back over its copy of the range) before it runs any batch that could use it. */
    atomic_fetch_add_explicit(&a->fmaps->gen, 1, memory_order_release);
    pthread_mutex_unlock(&a->mu);
    /* (the range's slack around the file, pad before and the rest after, is still the arena's) */
    if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a->fd, (off_t)off) !=
        MAP_FAILED)
        tdm__arena_free(a, (char *)p - pad, alloc); /* (else the range stays out of use) */
}

int tdm__arena_worker_sync(tdm__arena *a, char *detail, size_t dlen)
{
    /* Per worker process: what it has mapped, by entry (seq 0 = nothing). */
    static unsigned seen_gen;
    static uint32_t mapped_seq[TDM__MAX_FILE_MAPS];
    static uint64_t mapped_off[TDM__MAX_FILE_MAPS], mapped_len[TDM__MAX_FILE_MAPS];
    unsigned gen = atomic_load_explicit(&a->fmaps->gen, memory_order_acquire);
    if (gen == seen_gen)
        return 0;
    for (int i = 0; i < TDM__MAX_FILE_MAPS; i++) {
        const tdm__fmap *m = &a->fmaps->e[i];
        bool want = m->live && m->seq != 0;
        if (mapped_seq[i] && (!want || mapped_seq[i] != m->seq)) {
            /* gone or replaced: the arena goes back over our copy of the range */
            mmap(a->base + mapped_off[i], mapped_len[i], PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED, a->fd, (off_t)mapped_off[i]);
            mapped_seq[i] = 0;
        }
        if (want && mapped_seq[i] != m->seq) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)a->fmaps->parent, (int)m->fd);
            int fd = open(path, (m->prot & PROT_WRITE) ? O_RDWR : O_RDONLY);
            if (fd < 0 || mmap(a->base + m->off, m->len, m->prot, MAP_SHARED | MAP_FIXED, fd,
                               (off_t)m->file_off) == MAP_FAILED) {
                snprintf(detail, dlen, "worker process cannot map a file-backed tensor (%s: %s)",
                         path, strerror(errno));
                if (fd >= 0)
                    close(fd);
                return TDM_EIO;
            }
            close(fd);
            mapped_seq[i] = m->seq;
            mapped_off[i] = m->off;
            mapped_len[i] = m->len;
        }
    }
    seen_gen = gen;
    return 0;
}

/* For tdm_runtime_shm_info() (runtime/core/storage.c): the reserved size and the largest free range
 * (the biggest shared tensor that can still be placed). Thread-safe. */
void tdm__arena_space(tdm__arena *a, uint64_t *size, uint64_t *largest_free)
{
    uint64_t best = 0;
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->n_free; i++)
        if (a->free[i].len > best)
            best = a->free[i].len;
    if (a->base == MAP_FAILED)
        best = a->size; /* not reserved yet: all of it, once it is */
    pthread_mutex_unlock(&a->mu);
    *size = a->size;
    *largest_free = best;
}

int tdm__arena_fd(const tdm__arena *a)
{
    return a->fd;
}

bool tdm__arena_contains(const tdm__arena *a, const void *p)
{
    const uint8_t *q = p;
    return a && a->base != MAP_FAILED && q >= a->base && q < a->base + a->size;
}

uint64_t tdm__arena_offset(const tdm__arena *a, const void *p)
{
    return (uint64_t)((const uint8_t *)p - a->base);
}

/* Inserts [off, off+len) into the free list, merging with its neighbours. Mutex held. */
static int free_insert(tdm__arena *a, uint64_t off, uint64_t len)
{
    int i = 0;
    while (i < a->n_free && a->free[i].off < off)
        i++;
    bool merge_prev = i > 0 && a->free[i - 1].off + a->free[i - 1].len == off;
    bool merge_next = i < a->n_free && off + len == a->free[i].off;
    if (merge_prev && merge_next) {
        a->free[i - 1].len += len + a->free[i].len;
        memmove(&a->free[i], &a->free[i + 1], (size_t)(a->n_free - i - 1) * sizeof *a->free);
        a->n_free--;
        return 0;
    }
    if (merge_prev) {
        a->free[i - 1].len += len;
        return 0;
    }
    if (merge_next) {
        a->free[i].off = off;
        a->free[i].len += len;
        return 0;
    }
    if (a->n_free == a->cap_free) {
        tdm__extent *g = realloc(a->free, (size_t)a->cap_free * 2 * sizeof *g);
        if (!g)
            return TDM_ENOMEM;
        a->free = g;
        a->cap_free *= 2;
    }
    memmove(&a->free[i + 1], &a->free[i], (size_t)(a->n_free - i) * sizeof *a->free);
    a->free[i] = (tdm__extent){off, len};
    a->n_free++;
    return 0;
}

int tdm__arena_alloc(tdm_runtime *rt, tdm__arena *a, uint64_t len, bool reserve, const char *who,
                     void **out)
{
    *out = NULL;
    int rc0 = tdm__arena_ensure(rt, a, who);
    if (rc0 != 0)
        return rc0;
    pthread_mutex_lock(&a->mu);
    int i = 0;
    while (i < a->n_free && a->free[i].len < len)
        i++;
    if (i == a->n_free) {
        pthread_mutex_unlock(&a->mu);
        return tdm__err(rt, TDM_ENOSPC,
                        "%s: no %llu-byte range left in the shared arena (%llu "
                        "bytes of address space; TDM_SHM_REGION_GB raises it)",
                        who, (unsigned long long)len, (unsigned long long)a->size);
    }
    uint64_t off = a->free[i].off;
    a->free[i].off += len;
    a->free[i].len -= len;
    if (a->free[i].len == 0) {
        memmove(&a->free[i], &a->free[i + 1], (size_t)(a->n_free - i - 1) * sizeof *a->free);
        a->n_free--;
    }
    pthread_mutex_unlock(&a->mu);
    if (!reserve) {
        *out = a->base + off;
        return 0;
    }

    /* Reserve the pages now: running out must be an error here, never SIGBUS later. */
    int r;
    do
        r = fallocate(a->fd, 0, (off_t)off, (off_t)len);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        int e = errno;
        pthread_mutex_lock(&a->mu);
        int rc = free_insert(a, off, len);
        pthread_mutex_unlock(&a->mu);
        (void)rc; /* merging never needs memory when the range was just taken from the list */
        return tdm__err(rt, (e == ENOSPC || e == ENOMEM || e == EFBIG) ? TDM_ENOSPC : TDM_ESYS,
                        "%s: cannot reserve %llu bytes of shared memory (fallocate: %s)", who,
                        (unsigned long long)len, strerror(e));
    }
    *out = a->base + off;
    return 0;
}

int tdm__arena_write(tdm_runtime *rt, tdm__arena *a, void *dst, const void *src, uint64_t n,
                     const char *who)
{
    /* pwrite() puts the bytes straight into the file's pages: none of them is faulted into
     * this process's page table, and a page the system cannot give is an error here. */
    uint64_t off = tdm__arena_offset(a, dst), done = 0;
    while (done < n) {
        size_t chunk = n - done > (1u << 30) ? (1u << 30) : (size_t)(n - done);
        ssize_t w = pwrite(a->fd, (const char *)src + done, chunk, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            return tdm__err(rt, (e == ENOSPC || e == ENOMEM || e == EFBIG) ? TDM_ENOSPC : TDM_ESYS,
                            "%s: cannot write %llu bytes into shared memory (%s)", who,
                            (unsigned long long)n, strerror(e));
        }
        done += (uint64_t)w;
    }
    return 0;
}

void tdm__arena_free(tdm__arena *a, void *p, uint64_t len)
{
    uint64_t off = tdm__arena_offset(a, p);
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->n_exported; i++) {
        if (a->exported[i].off == off) {
            /* Another program may still map these pages: retire the range. */
            a->exported[i] = a->exported[--a->n_exported];
            a->retired_bytes += len;
            pthread_mutex_unlock(&a->mu);
            return;
        }
    }
    pthread_mutex_unlock(&a->mu);
    /* Give the pages back to the system; the range reads as zeros when reused. */
    fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    pthread_mutex_lock(&a->mu);
    if (free_insert(a, off, len) != 0) {
        /* Out of memory for the free list: the range is leaked as address space only (its
         * pages were returned above). */
    }
    pthread_mutex_unlock(&a->mu);
}
