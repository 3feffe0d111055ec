/* SPDX-License-Identifier: MIT */
/* Opening the devices of the device backends (OpenCL, CUDA), lazily, each with a driver thread
 * in the pool. Opening a device costs what loading its driver costs (tens of milliseconds for
 * PoCL), so it happens at the first map that asks for devices, not when the runtime opens. */
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched/device.h"
#include "sched/job.h"

int tdm__devices_count(const tdm_runtime *rt)
{
    return rt->devices ? rt->devices->n : 0;
}

int tdm__devices_live_kind(const tdm_runtime *rt, int kind)
{
    int n = 0;
    for (int i = 0; rt->devices && i < rt->devices->n; i++)
        n += !atomic_load(&rt->devices->slots[i].lost) &&
             (kind < 0 || (int)rt->devices->slots[i].info.kind == kind);
    return n;
}

int tdm__devices_live(const tdm_runtime *rt)
{
    return tdm__devices_live_kind(rt, -1);
}

int tdm__devices_ensure(tdm_runtime *rt)
{
    pthread_mutex_lock(&rt->dev_mu);
    if (rt->devices) {
        int n = rt->devices->n;
        pthread_mutex_unlock(&rt->dev_mu);
        return n;
    }
    struct tdm__devices *ds = calloc(1, sizeof *ds);
    if (!ds) {
        pthread_mutex_unlock(&rt->dev_mu);
        return tdm__err(rt, TDM_ENOMEM, "devices: out of memory");
    }
    ds->first_worker = -1;
    (void)tdm_runtime_device_count(rt); /* runs the lazy probe of the device backends */
    static const tdm_backend_kind kinds[] = {TDM_BACKEND_CUDA, TDM_BACKEND_OPENCL};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const tdm__backend_state *st = &rt->backends[kinds[k]];
        if (!st->ops || !st->enabled || !st->ops->dev)
            continue;
        for (int i = 0; i < st->n_devices && ds->n < TDM__MAX_DEVICES; i++) {
            char detail[256] = "";
            tdm__dev *dev = NULL;
            int rc = st->ops->dev->open(rt, i, &dev, detail, sizeof detail);
            if (rc < 0) {
                /* A device that will not open is a device we do not have. */
                tdm__log(rt, TDM_DEBUG_RUNTIME, "device %s %d (%s) not used: %s", st->ops->name, i,
                         st->devices[i].name, detail);
                continue;
            }
            int w;
            rc = tdm__pool_add_worker(rt->pool, &w);
            if (rc < 0) {
                st->ops->dev->close(dev);
                break;
            }
            tdm__devslot *slot = &ds->slots[ds->n++];
            slot->ops = st->ops->dev;
            slot->dev = dev;
            slot->info = st->devices[i];
            slot->worker = w;
            pthread_mutex_init(&slot->mu, NULL);
            atomic_init(&slot->lost, 0);
            /* Fault injection for tests: the device "fails" after this many batches. */
            const char *fa = getenv("TDM_DEVICE_FAIL_AFTER");
            slot->fail_after = fa ? atoi(fa) : 0;
            /* ... and its Nth batch completion reports device memory exhausted. */
            const char *ea = getenv("TDM_DEVICE_ENOMEM_AT_FINISH");
            slot->enomem_at = ea ? atoi(ea) : 0;
            if (ds->first_worker < 0)
                ds->first_worker = w;
            tdm__log(rt, TDM_DEBUG_RUNTIME, "device %s %d (%s) opened, driver worker %d",
                     st->ops->name, i, slot->info.name, w);
        }
    }
    /* Published under the mutex: workers read it only for jobs created after this point. */
    rt->devices = ds;
    int n = ds->n;
    pthread_mutex_unlock(&rt->dev_mu);
    return n;
}

static void *open_in_background(void *arg)
{
    tdm_runtime *rt = arg;
    int n = tdm__devices_ensure(rt);
    if (n < 0) /* (its message is this thread's: said here, or nowhere) */
        tdm__log(rt, TDM_DEBUG_SCHED, "devices not opened in the background: %s",
                 tdm_errmsg(rt));
    else
        tdm__log(rt, TDM_DEBUG_SCHED, "devices opened in the background: %d", n);
    /* (after the line: a thread that left the open a core takes no batch before the log says
     * the open is over) */
    atomic_store(&rt->dev_opening, 0);
    /* Their drivers look at the jobs again: a map already running takes them in; and a CPU
     * thread that left the open a core comes back now, not at its peers' next completions. */
    pthread_mutex_t *mu = tdm__pool_mutex(rt->pool);
    pthread_mutex_lock(mu);
    tdm__pool_reoffer(rt->pool);
    pthread_mutex_unlock(mu);
    return NULL;
}

bool tdm__gpu_nodes(const char *dev)
{
    static const char *const nodes[] = {"nvidiactl", "nvidia0", "kfd"};
    char path[1024];
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dev, nodes[i]);
        if (access(path, F_OK) == 0)
            return true;
    }
    snprintf(path, sizeof path, "%s/dri", dev);
    DIR *d = opendir(path);
    bool render = false;
    for (struct dirent *e; d && !render && (e = readdir(d));)
        render = strncmp(e->d_name, "renderD", 7) == 0;
    if (d)
        closedir(d);
    return render;
}

void tdm__devices_open_async(tdm_runtime *rt)
{
    if (rt->devices)
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&rt->dev_bg, &expected, 1))
        return;
    atomic_store(&rt->dev_opening, 1);
    int rc = pthread_create(&rt->dev_bg_thread, NULL, open_in_background, rt);
    if (rc != 0) {
        atomic_store(&rt->dev_opening, 0);
        /* No thread: the devices stay closed for this map; a later one may try again. */
        tdm__log(rt, TDM_DEBUG_SCHED, "devices: no thread to open them in the background: %s",
                 strerror(rc));
        atomic_store(&rt->dev_bg, 0);
    } else {
        atomic_store(&rt->dev_bg, 2);
    }
}

void tdm__devices_join_async(tdm_runtime *rt)
{
    /* (1: being started by a map's worker, which sets 2 or 0 right after) */
    int st;
    while ((st = atomic_load(&rt->dev_bg)) == 1)
        sched_yield();
    if (st == 2) {
        pthread_join(rt->dev_bg_thread, NULL);
        atomic_store(&rt->dev_bg, 3);
    }
}

void tdm__devices_close(tdm_runtime *rt)
{
    struct tdm__devices *ds = rt->devices;
    if (!ds)
        return;
    for (int i = 0; i < ds->n; i++) {
        ds->slots[i].ops->close(ds->slots[i].dev);
        pthread_mutex_destroy(&ds->slots[i].mu);
    }
    free(ds);
    rt->devices = NULL;
}

int tdm_device_bandwidth(tdm_runtime *rt, int index, uint64_t bytes, double *h2d, double *d2h)
{
    if (!rt || !h2d || !d2h)
        return tdm__err(rt, TDM_EINVAL, "tdm_device_bandwidth: NULL argument");
    if (bytes == 0)
        bytes = 64u << 20;
    if (bytes > (1ull << 34))
        return tdm__err(rt, TDM_EINVAL, "tdm_device_bandwidth: %llu bytes is too large",
                        (unsigned long long)bytes);
    tdm_device_info want;
    int rc = tdm_runtime_device(rt, index, &want);
    if (rc != 0)
        return rc;
    if ((rc = tdm__devices_ensure(rt)) < 0)
        return rc;
    tdm__devslot *ds = NULL;
    for (int i = 0; rt->devices && i < rt->devices->n && !ds; i++)
        if (rt->devices->slots[i].info.kind == want.kind &&
            rt->devices->slots[i].info.index == want.index)
            ds = &rt->devices->slots[i];
    if (!ds)
        return tdm__err(rt, TDM_ENOTFOUND,
                        "tdm_device_bandwidth: device %d (%s) is not an open device of a device "
                        "backend",
                        index, want.name);
    char *host = malloc(bytes);
    if (!host)
        return tdm__err(rt, TDM_ENOMEM, "tdm_device_bandwidth: out of memory");
    memset(host, 1, bytes); /* fault the pages in: measure copies, not first touch */
    char detail[256] = "";
    tdm__dbuf *buf = NULL;
    double best_up[5], best_down[5];
    pthread_mutex_lock(&ds->mu);
    rc = ds->ops->alloc(ds->dev, bytes, &buf, detail, sizeof detail);
    for (int r = 0; rc == 0 && r < 5; r++) {
        uint64_t t0 = tdm__now_ns();
        rc = ds->ops->write(ds->dev, 0, buf, 0, host, bytes, detail, sizeof detail);
        if (rc == 0)
            rc = ds->ops->finish(ds->dev, 0, detail, sizeof detail);
        uint64_t t1 = tdm__now_ns();
        if (rc == 0)
            rc = ds->ops->read(ds->dev, 0, host, buf, 0, bytes, detail, sizeof detail);
        if (rc == 0)
            rc = ds->ops->finish(ds->dev, 0, detail, sizeof detail);
        uint64_t t2 = tdm__now_ns();
        best_up[r] = (double)bytes / (double)(t1 - t0);
        best_down[r] = (double)bytes / (double)(t2 - t1);
    }
    if (buf)
        ds->ops->free(ds->dev, buf);
    pthread_mutex_unlock(&ds->mu);
    free(host);
    if (rc != 0)
        return tdm__err(rt, rc, "tdm_device_bandwidth(%s): %s", ds->info.name, detail);
    /* medians of 5 (bytes per ns = GB/s) */
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++) {
            if (best_up[j] < best_up[i]) {
                double t = best_up[i];
                best_up[i] = best_up[j];
                best_up[j] = t;
            }
            if (best_down[j] < best_down[i]) {
                double t = best_down[i];
                best_down[i] = best_down[j];
                best_down[j] = t;
            }
        }
    *h2d = best_up[2];
    *d2h = best_down[2];
    return 0;
}
