/* Opening the devices of the device backends (OpenCL, CUDA), lazily, each with a driver thread
 * in the pool. Opening a device costs what loading its driver costs (tens of milliseconds for
 * PoCL), so it happens at the first map that asks for devices, not when the runtime opens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"

int tdm__devices_count(const tdm_runtime *rt)
{
    return rt->devices ? rt->devices->n : 0;
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
                tdm__log(rt, TDM_DEBUG_RUNTIME, "device %s %d (%s) not used: %s", st->ops->name,
                         i, st->devices[i].name, detail);
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
