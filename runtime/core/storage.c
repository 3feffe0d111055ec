/* SPDX-License-Identifier: MIT */
/* Tensor storage: host, shared (the runtime's memfd arena), pinned (mlock) and wrapped user
 * memory, refcounted.
 *
 * Every storage that tandem allocates has a real, non-NULL mapping, even for 0 bytes (host: 64
 * bytes, mmap'ed kinds: one page), so tdm_tensor_data() of an empty tensor is a valid pointer. Only
 * a wrapped empty tensor over NULL user data has a NULL base. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "core/core.h"

#define HOST_ALIGN 64

/* The system calls themselves, not the libc wrappers: ASan and TSan intercept mlock() as a
 * no-op that returns 0, and a sanitized build would then report pages as pinned that are not
 * (and never see the limit). The kernel's answer is what tdm_tensor_mem() must report. */
static int sys_mlock(void *p, size_t n)
{
    return (int)syscall(SYS_mlock, p, n);
}

static void sys_munlock(void *p, size_t n)
{
    syscall(SYS_munlock, p, n);
}

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/* Rounds up to a multiple of `to` (a power of two), at least `to`; 0 when it would overflow. */
static size_t round_up(size_t n, size_t to)
{
    if (n == 0)
        return to;
    if (n > SIZE_MAX - (to - 1))
        return 0;
    return (n + to - 1) & ~(to - 1);
}

/* ---- how much memory the system can still give ------------------------------------------ */

/* Reads the first unsigned number of a one-line file; false if absent or not a number (e.g.
 * "max" in cgroup v2's memory.max). */
static bool read_u64_file(const char *path, uint64_t *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    unsigned long long x;
    bool ok = fscanf(f, "%llu", &x) == 1;
    fclose(f);
    if (ok)
        *v = x;
    return ok;
}

static bool meminfo_available(uint64_t *bytes)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return false;
    char line[128];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long long kib;
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            *bytes = (uint64_t)kib * 1024u;
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* Room left under the memory cgroups this process is confined to: the least of limit - usage
 * over its own cgroup (from /proc/self/cgroup) and every ancestor up to the mount root, since
 * a limit anywhere above applies too. A container's own cgroup is often its mount root, but a
 * systemd scope or a job scheduler's step is a nested cgroup whose limit the root does not
 * show; reserving past it would invoke the cgroup's OOM killer on the caller. cgroup v2
 * (memory.max / memory.current) and v1 (memory.limit_in_bytes / memory.usage_in_bytes).
 * TDM_CGROUP_ROOT replaces /sys/fs/cgroup (tests point it at a fake tree). */
static bool cgroup_available(uint64_t *bytes)
{
    const char *root = getenv("TDM_CGROUP_ROOT");
    if (!root || !*root)
        root = "/sys/fs/cgroup";
    char v2[PATH_MAX] = "", v1[PATH_MAX] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        char line[PATH_MAX];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!c2 || c2[1] != '/')
                continue;
            if (strncmp(line, "0::", 3) == 0)
                snprintf(v2, sizeof v2, "%s", c2 + 1);
            else if (c2 - c1 - 1 == 6 && strncmp(c1 + 1, "memory", 6) == 0)
                snprintf(v1, sizeof v1, "%s", c2 + 1);
        }
        fclose(f);
    }
    static const struct {
        const char *sub, *max, *cur;
    } kinds[] = {{"", "memory.max", "memory.current"},
                 {"/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"}};
    bool found = false;
    uint64_t best = UINT64_MAX;
    for (int k = 0; k < 2; k++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s", k == 0 ? v2 : v1);
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/')
            path[--len] = '\0';
        for (;;) { /* from our cgroup up to the root ("" or "/") */
            char pmax[2 * PATH_MAX], pcur[2 * PATH_MAX];
            const char *rel = strcmp(path, "/") == 0 ? "" : path;
            snprintf(pmax, sizeof pmax, "%s%s%s/%s", root, kinds[k].sub, rel, kinds[k].max);
            snprintf(pcur, sizeof pcur, "%s%s%s/%s", root, kinds[k].sub, rel, kinds[k].cur);
            uint64_t limit, used;
            if (read_u64_file(pmax, &limit) && read_u64_file(pcur, &used)) {
                found = true;
                uint64_t room = limit > used ? limit - used : 0;
                if (room < best)
                    best = room;
            }
            char *slash = strrchr(path, '/');
            if (!slash || !*rel)
                break;
            slash[slash == path ? 1 : 0] = '\0';
        }
        if (found)
            break; /* (a v2 hierarchy is the one that limits when both are there) */
    }
    if (found)
        *bytes = best;
    return found;
}

/* Bytes the system can still give without reclaim storms or the OOM killer; false when
 * unknown (no /proc), in which case callers go ahead and let the system answer. */
bool tdm__memory_available(uint64_t *bytes, const char **source)
{
    uint64_t avail, cg;
    if (!meminfo_available(&avail))
        return false;
    *source = "MemAvailable";
    if (cgroup_available(&cg) && cg < avail) {
        avail = cg;
        *source = "the memory cgroup's remaining limit";
    }
    *bytes = avail;
    return true;
}

/* ---- what shared tensors may still take (tdm_runtime_shm_info) ------------------------------ */

/* The same bounds that alloc_shared() applies, in the same order: check_available() (memory,
 * or the cgroup's room when smaller), tdm__shm_reserve() (shm_limit), tdm__arena_alloc()
 * (a free range of address space). */
int tdm_runtime_shm_info(const tdm_runtime *rt, tdm_shm_info *info)
{
    if (!info)
        return tdm__err(rt, TDM_EINVAL, "tdm_runtime_shm_info: info is NULL");
    memset(info, 0, sizeof *info);
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_shm_info: runtime is NULL");
    uint64_t v;
    info->mem_available_bytes = meminfo_available(&v) ? v : 0;
    /* cgroup v1 spells "no limit" as a number near 2^63 */
    info->cgroup_free_bytes = cgroup_available(&v) && v < (1ull << 62) ? v : UINT64_MAX;
    info->limit_bytes = rt->shm_limit;
    info->held_bytes = atomic_load(&((tdm_runtime *)rt)->shm_bytes);
    tdm__arena_space(rt->arena, &info->arena_bytes, &info->arena_free_bytes);

    uint64_t allowed = info->arena_free_bytes;
    const char *bound = "arena address space";
    if (info->limit_bytes) {
        uint64_t room =
            info->limit_bytes > info->held_bytes ? info->limit_bytes - info->held_bytes : 0;
        if (room <= allowed) {
            allowed = room;
            bound = "shm_limit";
        }
    }
    /* tdm__memory_available() checks nothing when MemAvailable is unknown: neither do we. */
    if (info->mem_available_bytes) {
        if (info->cgroup_free_bytes < info->mem_available_bytes &&
            info->cgroup_free_bytes <= allowed) {
            allowed = info->cgroup_free_bytes;
            bound = "memory cgroup";
        } else if (info->mem_available_bytes <= allowed) {
            allowed = info->mem_available_bytes;
            bound = "memory available";
        }
    }
    info->allowed_bytes = allowed - allowed % page_size(); /* creation rounds up to pages */
    info->bound = bound;
    return 0;
}

/* ---- host --------------------------------------------------------------------------------- */

static int alloc_host(tdm__storage *s, size_t bytes, const char *who)
{
    size_t n = round_up(bytes, HOST_ALIGN);
    if (n == 0)
        return tdm__err(s->rt, TDM_EOVERFLOW, "%s: %zu bytes cannot be rounded up to %d", who,
                        bytes, HOST_ALIGN);
    void *p = aligned_alloc(HOST_ALIGN, n);
    if (!p)
        return tdm__err(s->rt, TDM_ENOMEM, "%s: cannot allocate %zu bytes of host memory", who, n);
    s->base = s->map_base = p;
    s->map_bytes = n;
#ifdef MADV_HUGEPAGE
    /* Large tensors on transparent huge pages, as NumPy does for its arrays of 4 MiB or more:
     * with THP in "madvise" mode (Debian's default) the first write of each 2 MiB takes one
     * fault instead of 512 (a .npy load's first touch, a map's outputs). Advice only: with THP
     * off it changes nothing, and a refusal is harmless. */
    if (n >= ((size_t)4 << 20)) {
        uintptr_t huge = (uintptr_t)2 << 20;
        uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1),
                  hi = ((uintptr_t)p + n) & ~(huge - 1);
        if (hi > lo)
            (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
#endif
    return 0;
}

/* ---- locking ------------------------------------------------------------------------------ */

/* Locks the mapping when asked. Without STRICT a refusal is not an error: the storage simply
 * lacks TDM_MEM_PINNED, so the API reports what it really got. A private request larger than
 * what the system has is not even tried, since faulting it all in could wake the OOM killer;
 * shared pages were already reserved by fallocate, so locking them allocates nothing. */
static int lock_pages(tdm__storage *s, unsigned mem, const char *who)
{
    if (!(mem & TDM_MEM_PINNED))
        return 0;
    bool strict = (mem & TDM_MEM_STRICT) != 0;
    uint64_t avail;
    const char *src;
    if (!(s->mem & TDM_MEM_SHARED) && tdm__memory_available(&avail, &src) && s->map_bytes > avail) {
        if (strict)
            return tdm__err(s->rt, TDM_EPERM, "%s: cannot pin %zu bytes: more than %s (%llu bytes)",
                            who, s->map_bytes, src, (unsigned long long)avail);
        tdm__log(s->rt, TDM_DEBUG_RUNTIME, "%s: %zu bytes left unpinned: more than %s", who,
                 s->map_bytes, src);
        return 0;
    }
    if (sys_mlock(s->map_base, s->map_bytes) == 0) {
        s->mem |= TDM_MEM_PINNED;
        return 0;
    }
    int e = errno;
    if (!strict) {
        tdm__log(s->rt, TDM_DEBUG_RUNTIME, "%s: %zu bytes left unpinned: mlock failed (%s)", who,
                 s->map_bytes, strerror(e));
        return 0;
    }
    int code = (e == EPERM || e == ENOMEM || e == EAGAIN) ? TDM_EPERM : TDM_ESYS;
    return tdm__err(s->rt, code,
                    "%s: mlock of %zu bytes failed (%s); raise RLIMIT_MEMLOCK (ulimit -l) or drop "
                    "TDM_MEM_STRICT to accept unlocked memory",
                    who, s->map_bytes, strerror(e));
}

/* ---- pinned (private) --------------------------------------------------------------------- */

static int alloc_pinned(tdm__storage *s, size_t bytes, unsigned mem, const char *who)
{
    size_t n = round_up(bytes, page_size());
    if (n == 0)
        return tdm__err(s->rt, TDM_EOVERFLOW, "%s: %zu bytes cannot be rounded up to a page", who,
                        bytes);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return tdm__err(s->rt, TDM_ENOMEM, "%s: mmap of %zu bytes for pinned memory failed (%s)",
                        who, n, strerror(errno));
    s->base = s->map_base = p;
    s->map_bytes = n;
    s->mmapped = true;
    int rc = lock_pages(s, mem, who);
    if (rc != 0) {
        munmap(p, n);
        s->base = s->map_base = NULL;
        s->mmapped = false;
        return rc;
    }
    return 0;
}

/* ---- shared (the arena) -----------------------------------------------------------------------
 */

static int check_available(tdm__storage *s, size_t n, const char *who)
{
    uint64_t avail;
    const char *src;
    if (tdm__memory_available(&avail, &src) && n > avail)
        return tdm__err(s->rt, TDM_ENOSPC,
                        "%s: %zu bytes of shared memory requested, more than %s (%llu bytes)", who,
                        n, src, (unsigned long long)avail);
    return 0;
}

/* Takes `n` bytes (a page multiple) of the runtime's shared arena (runtime/core/arena.c) into s,
 * pages reserved; the caller accounts them. */
static int map_shared(tdm__storage *s, size_t n, unsigned mem, const void *init, size_t init_n,
                      const char *who)
{
    void *p;
    int rc = tdm__arena_alloc(s->rt, s->rt->arena, n, init == NULL, who, &p);
    if (rc != 0)
        return rc;
    if (init && (rc = tdm__arena_write(s->rt, s->rt->arena, p, init, init_n, who)) != 0) {
        tdm__arena_free(s->rt->arena, p, n);
        return rc;
    }
    s->base = s->map_base = p;
    s->map_bytes = n;
    s->mmapped = true;
    s->in_arena = true;
    s->fd = -1;
    s->mem |= TDM_MEM_SHARED;
    rc = lock_pages(s, mem, who);
    if (rc != 0) {
        tdm__arena_free(s->rt->arena, p, n);
        s->base = s->map_base = NULL;
        s->map_bytes = 0;
        s->mmapped = false;
        s->in_arena = false;
        s->mem = 0;
    }
    return rc;
}

/* Accounts, then maps; every failure gives the accounted bytes back. */
static int alloc_shared(tdm__storage *s, size_t bytes, unsigned mem, const void *init,
                        const char *who)
{
    size_t n = round_up(bytes, page_size());
    if (n == 0 || n > (size_t)INT64_MAX)
        return tdm__err(s->rt, TDM_EOVERFLOW, "%s: %zu bytes of shared memory is too large", who,
                        bytes);
    int rc = check_available(s, n, who);
    if (rc != 0)
        return rc;
    rc = tdm__shm_reserve(s->rt, n);
    if (rc != 0)
        return tdm__err(s->rt, rc,
                        "%s: %zu more bytes of shared memory would exceed the runtime's limit "
                        "(shm_limit %llu bytes, %llu held)",
                        who, n, (unsigned long long)s->rt->shm_limit,
                        (unsigned long long)atomic_load(&s->rt->shm_bytes));
    rc = map_shared(s, n, mem, init, bytes, who);
    if (rc != 0)
        tdm__shm_unreserve(s->rt, n);
    return rc;
}

/* ---- the storage object ------------------------------------------------------------------- */

static tdm__storage *storage_new(tdm_runtime *rt, size_t bytes)
{
    tdm__storage *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->rt = rt;
    s->bytes = bytes;
    s->fd = -1;
    return s;
}

int tdm__storage_create(tdm_runtime *rt, size_t bytes, unsigned mem, const char *who,
                        tdm__storage **out)
{
    *out = NULL;
    /* The arena is the parent's: a child's allocations would land on its tensors. */
    int frc = (mem & TDM_MEM_SHARED) ? tdm__check_fork(rt, who) : 0;
    if (frc < 0)
        return frc;
    tdm__storage *s = storage_new(rt, bytes);
    if (!s)
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate a storage object", who);
    int rc;
    if (mem & TDM_MEM_SHARED)
        rc = alloc_shared(s, bytes, mem, NULL, who);
    else if (mem & TDM_MEM_PINNED)
        rc = alloc_pinned(s, bytes, mem, who);
    else
        rc = alloc_host(s, bytes, who);
    if (rc != 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int tdm__storage_wrap(tdm_runtime *rt, void *data, size_t bytes, const char *who,
                      tdm__storage **out)
{
    *out = NULL;
    tdm__storage *s = storage_new(rt, bytes);
    if (!s)
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate a storage object", who);
    s->base = data;
    s->mem = TDM_MEM_WRAPPED;
    *out = s;
    return 0;
}

/* Gives back what s holds (not the object): unlock, unmap or free, close, unaccount. */
static void storage_drop_memory(tdm__storage *s)
{
    if (s->mem & TDM_MEM_WRAPPED)
        return;
    if (s->mem & TDM_MEM_PINNED)
        sys_munlock(s->map_base, s->map_bytes);
    if (s->arena_file) {
        tdm__arena_unmap_file(s->rt->arena, s->map_base, s->map_bytes);
    } else if (s->in_arena) {
        tdm__arena_free(s->rt->arena, s->map_base, s->map_bytes);
        tdm__shm_unreserve(s->rt, s->map_bytes);
    } else if (s->mmapped) {
        munmap(s->map_base, s->map_bytes);
    } else {
        free(s->map_base);
    }
    if (s->fd >= 0)
        close(s->fd);
}

void tdm__storage_retain(tdm__storage *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void tdm__storage_release(tdm__storage *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->mirror || s->registered)
        tdm__storage_drop_mirror(s);
    storage_drop_memory(s);
    free(s);
}

/* An imported tensor (tdm_tensor_import) is shared memory already, but mapped at an address
 * the worker processes do not have. Its descriptor is mapped again inside the arena's address
 * range, as a memory-mapped file is (tdm__arena_map_file): the workers map the same pages at
 * the same address before their next batch. No byte is copied and the pages stay those of the
 * exporter (its writes are seen, ours reach it); only the address changes. Nothing is
 * accounted against shm_limit: the pages are the exporter's, as they were before. On error s
 * is unchanged. */
static int remap_into_arena(tdm__storage *s, const char *who)
{
    void *p;
    tdm__err_clear(s->rt); /* a message after TDM_ENOSPC then says it was set by the arena */
    int rc = tdm__arena_ensure(s->rt, s->rt->arena, who);
    if (rc != 0)
        return rc;
    rc = tdm__arena_map_file(s->rt, s->rt->arena, s->fd, s->fd_offset, s->map_bytes,
                                 PROT_READ | PROT_WRITE, who, &p);
    if (rc == TDM_ENOSPC && !tdm_errmsg(s->rt)[0])
        rc = tdm__err(s->rt, TDM_ENOSPC,
                      "%s: every slot for mapped memory in the shared arena is in use (memory-"
                      "mapped files and shared imports); release some, or copy the imported "
                      "tensor into a new TDM_MEM_SHARED one",
                      who);
    if (rc != 0)
        return rc;
    size_t lead = (size_t)((char *)s->base - (char *)s->map_base);
    munmap(s->map_base, s->map_bytes);
    s->map_base = p;
    s->base = (char *)p + lead;
    s->in_arena = true;
    s->arena_file = true;
    return 0;
}

/* Builds the shared mapping in a scratch object first, so that on failure s is unchanged;
 * only then copies, frees the old memory and moves the new fields in. refs is left alone:
 * every view keeps pointing at the same object and sees the new memory. */
int tdm__storage_make_shared(tdm__storage *s, const char *who)
{
    if (s->in_arena)
        return 0;
    if (s->mirror) {
        int rc = tdm__storage_sync_host(s, true);
        if (rc != 0)
            return rc;
    }
    if (s->registered) /* the old pages (or address) go away: the device must forget them */
        tdm__storage_drop_mirror(s);
    if ((s->mem & TDM_MEM_SHARED) && s->fd >= 0)
        return remap_into_arena(s, who);
    tdm__storage n = {.rt = s->rt, .bytes = s->bytes, .fd = -1};
    unsigned want = TDM_MEM_SHARED | (s->mem & TDM_MEM_PINNED);
    /* The bytes go in through the file (pwrite), which is about twice as fast as reserving
     * zeroed pages and then faulting each one in with memcpy. */
    int rc = alloc_shared(&n, s->bytes, want, s->bytes > 0 ? s->base : NULL, who);
    if (rc != 0)
        return rc;
    storage_drop_memory(s);
    s->mem = n.mem;
    s->base = n.base;
    s->map_base = n.map_base;
    s->map_bytes = n.map_bytes;
    s->mmapped = n.mmapped;
    s->in_arena = n.in_arena;
    s->fd = n.fd;
    return 0;
}
