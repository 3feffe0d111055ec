/* SPDX-License-Identifier: MIT */
/* Device residency: a storage may keep a copy of its bytes in one device's memory, so a chain
 * of maps on that device moves nothing between them (tdm_map_opts.keep_on_device). Which copy
 * is current is tracked per storage; the host copy is brought back when the host needs it
 * (tdm_tensor_data(), a CPU map, sharing, saving). All state changes under rt->dev_mu; device
 * calls under the device's own mutex (its driver thread may be busy with another map). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"

/* Reads the whole device copy back into host memory. dev_mu held. */
static int read_back(tdm__storage *s, char *detail, size_t len)
{
    struct tdm__mirror *m = s->mirror;
    tdm__devslot *ds = m->dev;
    pthread_mutex_lock(&ds->mu);
    int rc = s->bytes ? ds->ops->read(ds->dev, 0, s->base, m->buf, 0, s->bytes, detail, len) : 0;
    if (rc == 0)
        rc = ds->ops->finish(ds->dev, 0, detail, len);
    pthread_mutex_unlock(&ds->mu);
    if (rc == 0)
        s->host_stale = false;
    return rc;
}

static void free_mirror(tdm__storage *s)
{
    struct tdm__mirror *m = s->mirror;
    pthread_mutex_lock(&m->dev->mu);
    m->dev->ops->free(m->dev->dev, m->buf);
    pthread_mutex_unlock(&m->dev->mu);
    free(m);
    s->mirror = NULL;
    s->host_stale = false;
}

int tdm__storage_sync_host(tdm__storage *s, bool for_write)
{
    tdm_runtime *rt = s->rt;
    pthread_mutex_lock(&rt->dev_mu);
    int rc = 0;
    char detail[256] = "";
    if (s->mirror && s->host_stale)
        rc = read_back(s, detail, sizeof detail);
    if (rc == 0 && s->mirror && for_write)
        s->mirror->dev_valid = false; /* the host is about to change: the device copy is old */
    pthread_mutex_unlock(&rt->dev_mu);
    if (rc != 0)
        return tdm__err(rt, rc, "reading a tensor back from %s failed: %s",
                        s->mirror ? s->mirror->dev->info.name : "its device", detail);
    return 0;
}

void tdm__storage_drop_mirror(tdm__storage *s)
{
    pthread_mutex_lock(&s->rt->dev_mu);
    if (s->mirror)
        free_mirror(s);
    if (s->registered) {
        tdm__devslot *ds = s->registered;
        pthread_mutex_lock(&ds->mu);
        ds->ops->host_unregister(ds->dev, s->map_base);
        pthread_mutex_unlock(&ds->mu);
        s->registered = NULL;
    }
    pthread_mutex_unlock(&s->rt->dev_mu);
}

void tdm__storage_register_pinned(tdm__devslot *ds, tdm__storage *s)
{
    if (!(s->mem & TDM_MEM_PINNED) || !ds->ops->host_register || !s->map_base)
        return;
    pthread_mutex_lock(&s->rt->dev_mu);
    if (!s->registered) {
        char detail[128];
        pthread_mutex_lock(&ds->mu);
        int rc = ds->ops->host_register(ds->dev, s->map_base, s->map_bytes, detail, sizeof detail);
        pthread_mutex_unlock(&ds->mu);
        if (rc == 0) {
            s->registered = ds;
            tdm__log(s->rt, TDM_DEBUG_SCHED, "pinned tensor memory (%zu bytes) registered with %s",
                     s->map_bytes, ds->info.name);
        } else if (rc == TDM_EEXIST) /* someone else's registration: used, never undone here */
            tdm__log(s->rt, TDM_DEBUG_SCHED, "pinned tensor memory already registered with %s: %s",
                     ds->info.name, detail);
        else
            tdm__log(s->rt, TDM_DEBUG_SCHED, "pinned tensor not registered with %s: %s",
                     ds->info.name, detail);
    }
    pthread_mutex_unlock(&s->rt->dev_mu);
}

int tdm__mirror_acquire(tdm__devslot *ds, tdm__storage *s, bool is_output, bool whole,
                        tdm__dbuf **buf, int64_t *moved, char *detail, size_t len)
{
    tdm_runtime *rt = s->rt;
    int rc = 0;
    pthread_mutex_lock(&rt->dev_mu);
    struct tdm__mirror *m = s->mirror;
    if (m && m->dev != ds) {
        /* Resident on another device: bring it home, then move it here. */
        if (s->host_stale && (rc = read_back(s, detail, len)) != 0)
            goto out;
        free_mirror(s);
        m = NULL;
    }
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m) {
            rc = TDM_ENOMEM;
            snprintf(detail, len, "out of host memory");
            goto out;
        }
        m->dev = ds;
        m->bytes = s->bytes > 64 ? s->bytes : 64;
        pthread_mutex_lock(&ds->mu);
        rc = ds->ops->alloc(ds->dev, m->bytes, &m->buf, detail, len);
        pthread_mutex_unlock(&ds->mu);
        if (rc != 0) {
            free(m);
            goto out;
        }
        s->mirror = m;
    }
    if (!m->dev_valid && !(is_output && whole)) {
        /* The host holds the current bytes (host_stale is only ever set with dev_valid). */
        pthread_mutex_lock(&ds->mu);
        rc = s->bytes ? ds->ops->write(ds->dev, 0, m->buf, 0, s->base, s->bytes, detail, len) : 0;
        if (rc == 0)
            rc = ds->ops->finish(ds->dev, 0, detail, len);
        pthread_mutex_unlock(&ds->mu);
        if (rc != 0)
            goto out;
        *moved += (int64_t)s->bytes;
        m->dev_valid = true;
    }
    *buf = m->buf;
out:
    pthread_mutex_unlock(&rt->dev_mu);
    return rc;
}

void tdm__mirror_written(tdm__storage *s, bool host_current)
{
    pthread_mutex_lock(&s->rt->dev_mu);
    if (s->mirror) {
        s->mirror->dev_valid = true;
        s->host_stale = !host_current;
    }
    pthread_mutex_unlock(&s->rt->dev_mu);
}
