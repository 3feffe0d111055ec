/* SPDX-License-Identifier: MIT */
/* The result cache: its directory - paths, removal through the trash, listing, LRU eviction,
 * clear and usage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "io/cache_internal.h"

#define STALE_TMP_S 600 /* a temporary entry untouched this long belongs to a dead writer */

/* dir + "/" + a + (b ? "/" + b : ""); NULL when out of memory. */
char *tdm__cache_join(const char *dir, const char *a, const char *b)
{
    size_t n = strlen(dir) + strlen(a) + (b ? strlen(b) + 1 : 0) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s%s%s", dir, a, b ? "/" : "", b ? b : "");
    return p;
}

void tdm__cache_random_name(char *buf, size_t len, const char *prefix)
{
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid() << 48;
        r[1] = (uint64_t)(uintptr_t)buf ^ tdm__now_ns();
    }
    snprintf(buf, len, "%s%016llx%016llx", prefix, (unsigned long long)r[0],
             (unsigned long long)r[1]);
}

/* Removes a directory's files, then the directory (one level: entries hold only files). */
void tdm__cache_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Takes an entry away atomically (rename into the trash), then deletes it. 0, or -1 when the
 * entry was already gone. */
int tdm__cache_remove_entry(tdm_cache *c, const char *name)
{
    char trash[64];
    tdm__cache_random_name(trash, sizeof trash, ".trash-");
    char *from = tdm__cache_join(c->dir, name, NULL), *to = tdm__cache_join(c->dir, trash, NULL);
    int rc = -1;
    if (from && to && rename(from, to) == 0) {
        tdm__cache_remove_tree(to);
        rc = 0;
    }
    free(from);
    free(to);
    return rc;
}

int tdm__mkdir_p(tdm_runtime *rt, const char *who, const char *dir)
{
    char *p = strdup(dir);
    if (!p)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            int rc = tdm__err(rt, TDM_EIO, "%s: cannot create '%s' (%s)", who, p, strerror(e));
            free(p);
            return rc;
        }
        *s = '/';
    }
    free(p);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return tdm__err(rt, TDM_EIO, "%s: cannot create '%s' (%s)", who, dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return tdm__err(rt, TDM_EIO, "%s: '%s' is not a directory", who, dir);
    if (access(dir, R_OK | W_OK | X_OK) != 0)
        return tdm__err(rt, TDM_EIO, "%s: '%s' is not readable and writable (%s)", who, dir,
                        strerror(errno));
    return 0;
}
typedef struct entry_info {
    char name[33];
    struct timespec used;
    uint64_t bytes;
} entry_info;

static int cmp_used(const void *a, const void *b)
{
    const entry_info *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec)
        return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec)
        return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Lists the entries with their size and last use; removes stale temporaries on the way when
 * `sweep`. *out is malloc'ed. */
static int scan(tdm_cache *c, const char *who, bool sweep, entry_info **out, int64_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(c->dir);
    if (!d)
        return tdm__err(c->rt, TDM_EIO, "%s: cannot read '%s' (%s)", who, c->dir, strerror(errno));
    entry_info *v = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        if (sweep &&
            (strncmp(e->d_name, ".tmp-", 5) == 0 || strncmp(e->d_name, ".trash-", 7) == 0)) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                (strncmp(e->d_name, ".trash-", 7) == 0 || now - st.st_mtime > STALE_TMP_S)) {
                char *p = tdm__cache_join(c->dir, e->d_name, NULL);
                if (p)
                    tdm__cache_remove_tree(p);
                free(p);
            }
            continue;
        }
        if (!tdm__cache_is_key(e->d_name))
            continue;
        DIR *sub = NULL;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || !(sub = fdopendir(fd))) {
            if (fd >= 0)
                close(fd);
            continue; /* removed meanwhile */
        }
        entry_info info;
        memset(&info, 0, sizeof info);
        memcpy(info.name, e->d_name, 33);
        struct stat st;
        bool has_manifest = false;
        struct dirent *f;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.' ||
                fstatat(dirfd(sub), f->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            info.bytes += (uint64_t)st.st_size;
            if (strcmp(f->d_name, "manifest") == 0) {
                info.used = st.st_mtim;
                has_manifest = true;
            }
        }
        closedir(sub);
        if (!has_manifest)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            entry_info *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                return tdm__err(c->rt, TDM_ENOMEM, "%s: out of memory", who);
            }
            v = nv;
        }
        v[n++] = info;
    }
    closedir(d);
    *out = v;
    *n_out = n;
    return 0;
}

void tdm__cache_evict(tdm_cache *c)
{
    if (c->o.bytes_limit == 0)
        return;
    entry_info *v;
    int64_t n;
    if (scan(c, "tdm_cache_map", true, &v, &n) != 0)
        return;
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += v[i].bytes;
    if (total > c->o.bytes_limit) {
        qsort(v, (size_t)n, sizeof *v, cmp_used);
        for (int64_t i = 0; i < n && total > c->o.bytes_limit; i++) {
            if (tdm__cache_remove_entry(c, v[i].name) == 0)
                tdm__cache_count(c, &c->st.evictions, 1);
            total -= v[i].bytes;
        }
    }
    free(v);
}

int tdm_cache_clear(tdm_cache *c)
{
    static const char who[] = "tdm_cache_clear";
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm__err_clear(c->rt);
    entry_info *v;
    int64_t n;
    int rc = scan(c, who, true, &v, &n);
    if (rc != 0)
        return rc;
    for (int64_t i = 0; i < n; i++)
        tdm__cache_remove_entry(c, v[i].name);
    free(v);
    /* Entries without a manifest (a crashed removal) go too. */
    DIR *d = opendir(c->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (tdm__cache_is_key(e->d_name))
                tdm__cache_remove_entry(c, e->d_name);
        closedir(d);
    }
    return 0;
}

int tdm_cache_usage(tdm_cache *c, uint64_t *bytes, int64_t *entries)
{
    static const char who[] = "tdm_cache_usage";
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm__err_clear(c->rt);
    entry_info *v;
    int64_t n;
    int rc = scan(c, who, false, &v, &n);
    if (rc != 0)
        return rc;
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += v[i].bytes;
    free(v);
    if (bytes)
        *bytes = total;
    if (entries)
        *entries = n;
    return 0;
}
