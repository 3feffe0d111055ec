/* SPDX-License-Identifier: MIT */
/* Stored cost models (see costmodel.h). */
#include "sched/costmodel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define TDM__CM_MAX 4096

typedef struct {
    char kernel[TDM__CM_KEY_LEN];
    char lane[96];
    int cls;
    double tpi;
    double lat;
    int n;
    int passed; /* maps that ran without this lane since it last ran (its best entry) */
} cm_entry;

struct tdm__costmodel {
    tdm_runtime *rt;
    pthread_mutex_t mu;
    cm_entry *e;
    int n, cap;
    bool dirty;
    char dir[PATH_MAX];
    char path[PATH_MAX];
};

void tdm__cm_map_key(char *key, size_t len, const tdm_kernel_def *def, const void *params,
                     size_t params_size)
{
    tdm__cm_kernel_key(key, len, def->name, def->kernel_version);
    double w = def->work ? def->work(params, params_size) : 0;
    if (!(w > 0) || !isfinite(w))
        return;
    double k = round(log2(w));
    k = k < -64 ? -64 : k > 64 ? 64 : k;
    size_t used = strlen(key);
    if (used < len)
        snprintf(key + used, len - used, ".w%d", (int)k);
}

int tdm__cm_size_class(long long n)
{
    int c = 0;
    while (n >= 4) {
        n /= 4;
        c++;
    }
    return c;
}

/* The machine: host name, CPU model and core count, hashed (FNV-1a) into the file name. */
static unsigned long long machine_key(void)
{
    char buf[512] = "";
    size_t len = 0;
    if (gethostname(buf, 128) == 0)
        len = strnlen(buf, 128);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                snprintf(buf + len, sizeof buf - len, "|%s", line);
                break;
            }
        }
        fclose(f);
    }
    len = strlen(buf);
    snprintf(buf + len, sizeof buf - len, "|%ld", sysconf(_SC_NPROCESSORS_ONLN));
    unsigned long long h = 1469598103934665603ull;
    for (const char *p = buf; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static bool field_ok(const char *s, size_t cap)
{
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return false;
    for (; *s; s++)
        if (*s == '\t' || *s == '\n' || (unsigned char)*s < 32)
            return false;
    return true;
}

/* Whether entry e is of `kernel` on `lane`. */
static bool of_lane(const cm_entry *e, const char *kernel, const char *lane)
{
    return !strcmp(e->kernel, kernel) && !strcmp(e->lane, lane);
}

/* Whether `lane` is a device's ("opencl:..." or "cuda:..."). */
static bool device_lane(const char *lane)
{
    return !strncmp(lane, "opencl:", 7) || !strncmp(lane, "cuda:", 5);
}

static cm_entry *find(tdm__costmodel *cm, const char *kernel, const char *lane, int cls)
{
    for (int i = 0; i < cm->n; i++)
        if (cm->e[i].cls == cls && of_lane(&cm->e[i], kernel, lane))
            return &cm->e[i];
    return NULL;
}

static cm_entry *add(tdm__costmodel *cm)
{
    if (cm->n == cm->cap) {
        if (cm->cap >= TDM__CM_MAX)
            return NULL;
        int cap = cm->cap ? cm->cap * 2 : 32;
        cm_entry *e = realloc(cm->e, (size_t)cap * sizeof *e);
        if (!e)
            return NULL;
        cm->e = e;
        cm->cap = cap;
    }
    cm_entry *x = &cm->e[cm->n++];
    memset(x, 0, sizeof *x);
    return x;
}

static void load(tdm__costmodel *cm)
{
    FILE *f = fopen(cm->path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char *save = NULL;
        char *k = strtok_r(line, "\t", &save), *l = strtok_r(NULL, "\t", &save);
        char *c = strtok_r(NULL, "\t", &save), *t = strtok_r(NULL, "\t", &save);
        char *la = strtok_r(NULL, "\t", &save), *n = strtok_r(NULL, "\t\n", &save);
        char *ps = strtok_r(NULL, "\t\n", &save); /* (optional: files before it have 6) */
        if (!k || !l || !c || !t || !la || !n || !field_ok(k, sizeof cm->e->kernel) ||
            !field_ok(l, sizeof cm->e->lane))
            continue;
        char *end;
        errno = 0;
        long cls = strtol(c, &end, 10);
        if (*end || errno || cls < 0 || cls > 40)
            continue;
        double tpi = strtod(t, &end);
        if (*end || !(tpi > 0) || !isfinite(tpi))
            continue;
        double lat = strtod(la, &end);
        if (*end || !(lat >= 0) || !isfinite(lat))
            continue;
        long cnt = strtol(n, &end, 10);
        if (*end || cnt < 1 || cnt > INT_MAX)
            continue;
        long passed = 0;
        if (ps) {
            errno = 0;
            passed = strtol(ps, &end, 10);
            if (*end || errno || passed < 0 || passed > INT_MAX)
                continue;
        }
        if (find(cm, k, l, (int)cls))
            continue;
        cm_entry *e = add(cm);
        if (!e)
            break;
        snprintf(e->kernel, sizeof e->kernel, "%s", k);
        snprintf(e->lane, sizeof e->lane, "%s", l);
        e->cls = (int)cls;
        e->tpi = tpi;
        e->lat = lat;
        e->n = (int)cnt;
        e->passed = (int)passed;
    }
    fclose(f);
}

int tdm__cm_open(tdm_runtime *rt, const char *dir, tdm__costmodel **out)
{
    *out = NULL;
    tdm__costmodel *cm = calloc(1, sizeof *cm);
    if (!cm)
        return tdm__err(rt, TDM_ENOMEM, "cost model: out of memory");
    cm->rt = rt;
    pthread_mutex_init(&cm->mu, NULL);
    if (!dir) {
        const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (x && x[0] == '/')
            snprintf(cm->dir, sizeof cm->dir, "%s/tandem", x);
        else if (home && home[0] == '/')
            snprintf(cm->dir, sizeof cm->dir, "%s/.cache/tandem", home);
    } else if (strcmp(dir, "off") != 0) {
        snprintf(cm->dir, sizeof cm->dir, "%s", dir);
    }
    if (cm->dir[0]) {
        int n = snprintf(cm->path, sizeof cm->path, "%s/costmodel-%016llx.tsv", cm->dir,
                         machine_key());
        if (n < 0 || (size_t)n >= sizeof cm->path)
            cm->path[0] = cm->dir[0] = '\0';
        else
            load(cm);
    }
    tdm__log(rt, TDM_DEBUG_SCHED, "cost model: %d entr%s from %s", cm->n, cm->n == 1 ? "y" : "ies",
             cm->path[0] ? cm->path : "(memory only)");
    *out = cm;
    return 0;
}

int tdm__cm_save(tdm__costmodel *cm)
{
    if (!cm)
        return 0;
    pthread_mutex_lock(&cm->mu);
    int rc = 0;
    if (!cm->dirty || !cm->path[0])
        goto out;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", cm->path, (long)getpid());
    if ((rc = tdm__mkdir_p(cm->rt, "cost model", cm->dir)) != 0)
        goto out;
    FILE *f = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && !(f = fdopen(fd, "w")))
        close(fd);
    if (!f) {
        rc = tdm__err(cm->rt, TDM_EIO, "cost model: cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, "# tandem cost model v2: kernel, lane, size class (log4 items), ns per item, "
               "ns per batch, samples, maps run without the lane since it last ran\n");
    for (int i = 0; i < cm->n; i++)
        fprintf(f, "%s\t%s\t%d\t%.6g\t%.6g\t%d\t%d\n", cm->e[i].kernel, cm->e[i].lane, cm->e[i].cls,
                cm->e[i].tpi, cm->e[i].lat, cm->e[i].n, cm->e[i].passed);
    bool ok = fflush(f) == 0 && !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, cm->path) != 0) {
        rc = tdm__err(cm->rt, TDM_EIO, "cost model: cannot write %s: %s", cm->path,
                      strerror(errno));
        unlink(tmp);
        goto out;
    }
    cm->dirty = false;
out:
    pthread_mutex_unlock(&cm->mu);
    return rc;
}

int tdm__cm_close(tdm__costmodel *cm)
{
    if (!cm)
        return 0;
    int rc = tdm__cm_save(cm);
    pthread_mutex_destroy(&cm->mu);
    free(cm->e);
    free(cm);
    return rc;
}

/* Whether two figures of a lane are 8x apart or more: one of them stale, or measured with
 * other parameters (the model is keyed by kernel, not by its parameters). */
static bool far_apart(double a, double b)
{
    double r = a / b;
    return r >= 8 || r <= 0.125;
}

/* The entry with the most samples for (kernel, lane); caller holds cm->mu. */
static const cm_entry *best_entry(const tdm__costmodel *cm, const char *kernel, const char *lane)
{
    const cm_entry *b = NULL;
    for (int i = 0; i < cm->n; i++)
        if ((!b || cm->e[i].n > b->n) && of_lane(&cm->e[i], kernel, lane))
            b = &cm->e[i];
    return b;
}

double tdm__cm_get(tdm__costmodel *cm, const char *kernel, const char *lane, double *lat_ns,
                   int *samples)
{
    pthread_mutex_lock(&cm->mu);
    const cm_entry *e = best_entry(cm, kernel, lane);
    double v = e ? e->tpi : 0, lat = e ? e->lat : 0;
    int best = e ? e->n : 0;
    pthread_mutex_unlock(&cm->mu);
    if (samples)
        *samples = best;
    if (lat_ns)
        *lat_ns = lat;
    return v;
}

/* tdm__cm_put with cm->mu held. */
static void put_locked(tdm__costmodel *cm, const char *kernel, const char *lane, int cls,
                       double tpi, double lat, int samples)
{
    if (!(lat >= 0) || !isfinite(lat))
        lat = 0;
    if (!(tpi > 0) || !isfinite(tpi) || samples < 1 || !field_ok(kernel, sizeof cm->e->kernel) ||
        !field_ok(lane, sizeof cm->e->lane))
        return;
    cm_entry *e = find(cm, kernel, lane, cls);
    if (!e && (e = add(cm))) {
        snprintf(e->kernel, sizeof e->kernel, "%s", kernel);
        snprintf(e->lane, sizeof e->lane, "%s", lane);
        e->cls = cls;
        e->tpi = tpi;
        e->lat = lat;
        e->n = samples;
    } else if (e) {
        double r = tpi / e->tpi;
        double wo = e->n < 64 ? e->n : 64, wn = samples < 64 ? samples : 64;
        e->lat = (e->lat * wo + lat * wn) / (wo + wn);
        if (r >= 0.5 && r <= 2.0) {
            e->tpi = (e->tpi * wo + tpi * wn) / (wo + wn);
            e->n = e->n > INT_MAX - samples ? INT_MAX : e->n + samples;
        } else {
            /* (a geometric mean weighted like the average above: an exploration's few
             * batches give way to a whole map's; the larger count halved) */
            e->tpi = exp((log(e->tpi) * wo + log(tpi) * wn) / (wo + wn));
            int big = e->n > samples ? e->n : samples;
            e->n = big / 2 > 1 ? big / 2 : 1;
        }
    }
    if (e) {
        cm->dirty = true;
        for (int i = 0; i < cm->n; i++) /* (it ran: none of its entries is passed over now) */
            if (of_lane(&cm->e[i], kernel, lane))
                cm->e[i].passed = 0;
    }
}

void tdm__cm_put(tdm__costmodel *cm, const char *kernel, const char *lane, int cls, double tpi,
                 double lat, int samples)
{
    pthread_mutex_lock(&cm->mu);
    put_locked(cm, kernel, lane, cls, tpi, lat, samples);
    pthread_mutex_unlock(&cm->mu);
}

/* tdm__cm_put_read, and with `settle` tdm__cm_put_confirm: one lock, so the entry read is the
 * one merged into (and settled). */
static void put_read(tdm__costmodel *cm, const char *kernel, const char *lane, int cls, double tpi,
                     double lat, int samples, bool settle)
{
    pthread_mutex_lock(&cm->mu);
    const cm_entry *b = best_entry(cm, kernel, lane);
    bool into = b && tpi > 0 && !far_apart(b->tpi, tpi);
    bool agree = settle && into && samples >= 1 && isfinite(tpi) && device_lane(lane) &&
                 b->n < TDM__CM_SETTLED && tpi <= 1.5 * b->tpi && b->tpi <= 1.5 * tpi;
    int into_cls = into ? b->cls : cls;
    put_locked(cm, kernel, lane, into_cls, tpi, lat, samples);
    cm_entry *e = agree ? find(cm, kernel, lane, into_cls) : NULL;
    if (e && e->n < TDM__CM_SETTLED)
        e->n = TDM__CM_SETTLED;
    pthread_mutex_unlock(&cm->mu);
}

void tdm__cm_put_read(tdm__costmodel *cm, const char *kernel, const char *lane, int cls, double tpi,
                      double lat, int samples)
{
    put_read(cm, kernel, lane, cls, tpi, lat, samples, false);
}

void tdm__cm_put_confirm(tdm__costmodel *cm, const char *kernel, const char *lane, int cls,
                         double tpi, double lat, int samples)
{
    put_read(cm, kernel, lane, cls, tpi, lat, samples, true);
}

void tdm__cm_drop_stale(tdm__costmodel *cm, const char *kernel, const char *lane,
                        double ns_per_item)
{
    if (!cm || !(ns_per_item > 0) || !isfinite(ns_per_item))
        return;
    pthread_mutex_lock(&cm->mu);
    for (int i = 0; i < cm->n;) {
        const cm_entry *e = &cm->e[i];
        if (far_apart(e->tpi, ns_per_item) && of_lane(e, kernel, lane)) {
            cm->e[i] = cm->e[--cm->n]; /* (order does not matter) */
            cm->dirty = true;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&cm->mu);
}

int tdm__cm_passed(tdm__costmodel *cm, const char *kernel, const char *lane)
{
    pthread_mutex_lock(&cm->mu);
    const cm_entry *e = best_entry(cm, kernel, lane);
    int p = e ? e->passed : 0;
    pthread_mutex_unlock(&cm->mu);
    return p;
}

/* (caller holds cm->mu) */
static void pass(tdm__costmodel *cm, cm_entry *e)
{
    if (e && e->passed < INT_MAX) {
        e->passed++;
        cm->dirty = true;
    }
}

void tdm__cm_pass(tdm__costmodel *cm, const char *kernel, const char *lane)
{
    pthread_mutex_lock(&cm->mu);
    pass(cm, (cm_entry *)best_entry(cm, kernel, lane));
    pthread_mutex_unlock(&cm->mu);
}

void tdm__cm_pass_devices(tdm__costmodel *cm, const char *kernel)
{
    pthread_mutex_lock(&cm->mu);
    for (int i = 0; i < cm->n; i++) {
        cm_entry *e = &cm->e[i];
        if (!strcmp(e->kernel, kernel) && device_lane(e->lane) &&
            best_entry(cm, kernel, e->lane) == e)
            pass(cm, e);
    }
    pthread_mutex_unlock(&cm->mu);
}

int tdm__cm_recheck(tdm__costmodel *cm, const char *kernel, const char *lane)
{
    pthread_mutex_lock(&cm->mu);
    const cm_entry *b = best_entry(cm, kernel, lane);
    int cls = b ? b->cls : -1;
    for (int i = 0; i < cm->n; i++)
        if (of_lane(&cm->e[i], kernel, lane) && cm->e[i].passed) {
            cm->e[i].passed = 0;
            cm->dirty = true;
        }
    pthread_mutex_unlock(&cm->mu);
    return cls;
}

void tdm__cm_put_again(tdm__costmodel *cm, const char *kernel, const char *lane, int cls,
                       double tpi, double lat, int samples)
{
    if (!(tpi > 0) || !isfinite(tpi) || samples < 1)
        return;
    pthread_mutex_lock(&cm->mu);
    const cm_entry *b = best_entry(cm, kernel, lane);
    if (b) {
        cls = b->cls;
        for (int i = 0; i < cm->n;) { /* (the lane's other size classes go) */
            cm_entry *e = &cm->e[i];
            if (e->cls != cls && of_lane(e, kernel, lane)) {
                cm->e[i] = cm->e[--cm->n]; /* (order does not matter) */
                cm->dirty = true;
                continue;
            }
            if (e->cls == cls && of_lane(e, kernel, lane) && e->n >= TDM__CM_SETTLED) {
                e->n = TDM__CM_SETTLED - 1;
                cm->dirty = true;
            }
            i++;
        }
    }
    pthread_mutex_unlock(&cm->mu);
    tdm__cm_put(cm, kernel, lane, cls, tpi, lat, samples);
}

/* A stored device figure (dev_tpi from dev_samples batches) against `cpu_lanes` CPU threads of
 * cpu_tpi ns per item each: false when one of them is not a figure; else the device's items
 * per ns in *dev and the threads' together in *host. */
static bool loss_rates(double dev_tpi, int dev_samples, double cpu_tpi, int cpu_lanes, double *dev,
                       double *host)
{
    if (!(dev_tpi > 0) || !(cpu_tpi > 0) || !isfinite(dev_tpi) || !isfinite(cpu_tpi) ||
        dev_samples < 1 || cpu_lanes < 1)
        return false;
    *dev = 1.0 / dev_tpi;
    *host = (double)cpu_lanes / cpu_tpi;
    return true;
}

bool tdm__cm_close_unsettled(double dev_tpi, int dev_samples, int dev_passed, double cpu_tpi,
                             int cpu_lanes)
{
    double dev, host;
    if (!loss_rates(dev_tpi, dev_samples, cpu_tpi, cpu_lanes, &dev, &host) ||
        (dev_samples >= TDM__CM_SETTLED && dev_passed < TDM__CM_RECHECK))
        return false;
    return dev <= 1.05 * host && dev > host / TDM__CM_CLOSE;
}

bool tdm__cm_measure_again(double dev_tpi, int dev_samples, int dev_passed, double cpu_tpi,
                           int cpu_lanes)
{
    double dev, host;
    if (tdm__cm_close_unsettled(dev_tpi, dev_samples, dev_passed, cpu_tpi, cpu_lanes))
        return true;
    return loss_rates(dev_tpi, dev_samples, cpu_tpi, cpu_lanes, &dev, &host) &&
           dev <= 1.05 * host && dev_samples < TDM__CM_SETTLED && dev_passed >= TDM__CM_RECHECK;
}

/* The stored devices for `kernel` against `cpu_lanes` CPU threads together: whether the model
 * has a "cpu" entry and a device entry for it at all (*any), and whether one device (from each
 * lane's entry with the most samples) is more than 5% faster, and whether a slower one is a
 * close call not yet settled (*unsettled). While none is faster, `why` (may be NULL) names the
 * last device compared (not a close call) and its time. */
static bool device_beats_cpu(tdm__costmodel *cm, const char *kernel, int cpu_lanes, bool *any,
                             bool *unsettled, char *why, size_t len)
{
    *any = false;
    *unsettled = false;
    if (!cm || !kernel || cpu_lanes < 1)
        return false;
    pthread_mutex_lock(&cm->mu);
    const cm_entry *cpu = best_entry(cm, kernel, "cpu");
    bool faster = false;
    for (int i = 0; cpu && !faster && i < cm->n; i++) {
        const cm_entry *e = &cm->e[i];
        if (strcmp(e->kernel, kernel) || !device_lane(e->lane) ||
            best_entry(cm, kernel, e->lane) != e)
            continue;
        *any = true;
        /* items per ns: the device's against every CPU thread's together */
        double dev = 1.0 / e->tpi, host = (double)cpu_lanes / cpu->tpi;
        if (dev > 1.05 * host)
            faster = true;
        else if (tdm__cm_measure_again(e->tpi, e->n, e->passed, cpu->tpi, cpu_lanes))
            *unsettled = true;
        else if (why)
            snprintf(why, len, "%s runs %.3g ns/item, %d CPU threads %.3g ns/item together",
                     e->lane, e->tpi, cpu_lanes, cpu->tpi / cpu_lanes);
    }
    pthread_mutex_unlock(&cm->mu);
    return faster;
}

bool tdm__cm_devices_slower(tdm__costmodel *cm, const char *kernel, int cpu_lanes, char *why,
                            size_t len)
{
    bool any, unsettled;
    return !device_beats_cpu(cm, kernel, cpu_lanes, &any, &unsettled, why, len) && any &&
           !unsettled;
}

bool tdm__cm_device_faster(tdm__costmodel *cm, const char *kernel, int cpu_lanes)
{
    bool any, unsettled;
    return device_beats_cpu(cm, kernel, cpu_lanes, &any, &unsettled, NULL, 0);
}

const char *tdm__cm_path(const tdm__costmodel *cm)
{
    return cm ? cm->path : "";
}
