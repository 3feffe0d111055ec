/* Running a map's batches on a device: the driver thread of one device claims batches and
 * pipelines them over the device's queues — batch k+1 copies in while batch k computes and
 * batch k-1 copies out — each queue in order, round-robin, so at most n_queues batches are in
 * flight. A batch whose device memory cannot be had runs on the host instead (when the kernel
 * has a CPU implementation), in this thread; the run goes on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "job.h"

/* Automatic device batches move about this many bytes (inputs + outputs): large enough to
 * amortise a launch and a transfer, small enough to pipeline and to balance devices. */
#define TDM__DEV_BATCH_BYTES ((int64_t)8 << 20)
#define TDM__MAX_QUEUES 8

typedef struct {
    bool busy;
    int64_t begin, end;
    tdm_task task;
    tdm__dbuf *in[16], *out[16];
    size_t in_cap[16], out_cap[16];
} tdm__qslot;

/* Makes *b hold at least `need` bytes (at least 64: a zero-sized buffer is not allowed). */
static int ensure_buf(tdm__devslot *ds, tdm__dbuf **b, size_t *cap, size_t need, char *detail,
                      size_t len)
{
    if (need < 64)
        need = 64;
    if (*b && *cap >= need)
        return 0;
    if (*b) {
        ds->ops->free(ds->dev, *b);
        *b = NULL;
        *cap = 0;
    }
    int rc = ds->ops->alloc(ds->dev, need, b, detail, len);
    if (rc == 0)
        *cap = need;
    return rc;
}

/* Enqueues copy-in, kernel, copy-out of rows [begin, end) on queue q. */
static int submit(tdm__job *job, tdm__devslot *ds, int q, tdm__qslot *qs, char *detail,
                  size_t len)
{
    const tdm__jdesc *d = job->d;
    int64_t rows = qs->end - qs->begin;
    int rc;
    for (int k = 0; k < d->n_in; k++) {
        size_t bytes = (size_t)(rows * d->in_row_bytes[k]);
        if ((rc = ensure_buf(ds, &qs->in[k], &qs->in_cap[k], bytes, detail, len)) < 0)
            return rc;
    }
    for (int k = 0; k < d->n_out; k++) {
        size_t bytes = (size_t)(rows * d->out_row_bytes[k]);
        if ((rc = ensure_buf(ds, &qs->out[k], &qs->out_cap[k], bytes, detail, len)) < 0)
            return rc;
    }
    for (int k = 0; k < d->n_in; k++) {
        size_t bytes = (size_t)(rows * d->in_row_bytes[k]);
        if (bytes && (rc = ds->ops->write(ds->dev, q, qs->in[k], 0,
                                          d->in_base[k] + qs->begin * d->in_row_bytes[k], bytes,
                                          detail, len)) < 0)
            return rc;
    }
    const tdm_dev_launch *l = &job->launch;
    int64_t items = rows * l->items_per_row;
    tdm__karg args[TDM_DEV_MAX_ARGS];
    for (int i = 0; i < l->n_args; i++) {
        const tdm_dev_arg *a = &l->args[i];
        tdm__karg *g = &args[i];
        memset(g, 0, sizeof *g);
        switch (a->kind) {
        case TDM_DEV_ARG_INPUT:
        case TDM_DEV_ARG_OUTPUT: {
            bool in = a->kind == TDM_DEV_ARG_INPUT;
            if (a->index < 0 || a->index >= (in ? d->n_in : d->n_out)) {
                snprintf(detail, len, "device argument %d names %s %d, which the call lacks", i,
                         in ? "input" : "output", a->index);
                return TDM_EINVAL;
            }
            g->kind = TDM__KARG_BUF;
            g->buf = in ? qs->in[a->index] : qs->out[a->index];
            break;
        }
        case TDM_DEV_ARG_NULL:
            g->kind = TDM__KARG_NULL;
            break;
        case TDM_DEV_ARG_BEGIN:
        case TDM_DEV_ARG_END: {
            int64_t v = a->kind == TDM_DEV_ARG_BEGIN ? 0 : items;
            g->kind = TDM__KARG_VALUE;
            g->size = sizeof v;
            memcpy(g->value, &v, sizeof v);
            break;
        }
        default:
            g->kind = TDM__KARG_VALUE;
            g->size = a->size <= sizeof g->value ? a->size : (uint32_t)sizeof g->value;
            memcpy(g->value, a->value, g->size);
            break;
        }
    }
    rc = ds->ops->launch(ds->dev, q, job->dev_key, job->dev_source, l->entry, args, l->n_args,
                         items, detail, len);
    if (rc < 0)
        return rc;
    for (int k = 0; k < d->n_out; k++) {
        size_t bytes = (size_t)(rows * d->out_row_bytes[k]);
        if (bytes && (rc = ds->ops->read(ds->dev, q,
                                         d->out_base[k] + qs->begin * d->out_row_bytes[k],
                                         qs->out[k], 0, bytes, detail, len)) < 0)
            return rc;
    }
    return 0;
}

static int64_t auto_rows(const tdm__job *job)
{
    const tdm__jdesc *d = job->d;
    int64_t row_bytes = 0;
    for (int k = 0; k < d->n_in; k++)
        row_bytes += d->in_row_bytes[k];
    for (int k = 0; k < d->n_out; k++)
        row_bytes += d->out_row_bytes[k];
    int64_t rows = row_bytes > 0 ? TDM__DEV_BATCH_BYTES / row_bytes : job->n_items;
    return rows > 0 ? rows : 1;
}

void tdm__job_run_device(tdm__job *job, int w)
{
    tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
    if (!ds)
        return;
    tdm__wstat *ws = &job->ws[w];
    int nq = ds->ops->n_queues(ds->dev);
    if (nq > TDM__MAX_QUEUES)
        nq = TDM__MAX_QUEUES;
    if (nq < 1)
        nq = 1;
    tdm__qslot qs[TDM__MAX_QUEUES];
    memset(qs, 0, sizeof qs);
    int64_t want = job->fixed_bs ? job->fixed_bs : auto_rows(job);
    int in_flight = 0;
    uint64_t busy_since = 0;
    char detail[512];

    for (int q = 0;; q = (q + 1) % nq) {
        tdm__qslot *s = &qs[q];
        if (s->busy) {
            /* The oldest batch in flight: wait for it, then account it. */
            detail[0] = '\0';
            int rc = ds->ops->finish(ds->dev, q, detail, sizeof detail);
            s->busy = false;
            if (--in_flight == 0)
                ws->busy_ns += tdm__now_ns() - busy_since;
            tdm__job_batch_done(job, w, &s->task, s->begin, s->end, rc, detail);
        }
        bool stopped = atomic_load_explicit(&job->d->stop, memory_order_relaxed) != 0;
        if (stopped || !tdm__job_claim(job, want, &s->begin, &s->end)) {
            if (in_flight == 0)
                break;
            continue; /* drain the queues still busy */
        }
        s->task = (tdm_task){job->d, w, -1, 0, 0};
        s->task.batch = atomic_fetch_add_explicit(&job->next_batch, 1, memory_order_relaxed);
        if (in_flight++ == 0)
            busy_since = tdm__now_ns();
        detail[0] = '\0';
        int rc = submit(job, ds, q, s, detail, sizeof detail);
        if (rc == 0) {
            s->busy = true;
            continue;
        }
        /* Whatever was enqueued before the failure must finish before the buffers change. */
        char ignored[64];
        ds->ops->finish(ds->dev, q, ignored, sizeof ignored);
        if (--in_flight == 0)
            ws->busy_ns += tdm__now_ns() - busy_since;
        if (rc == TDM_ENOMEM && job->d->kcpu) {
            /* No device memory for this batch: run it on the host, here. */
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "%s: batch %lld (items %lld..%lld) runs on the CPU: %s", job->what,
                     (long long)s->task.batch, (long long)s->begin, (long long)s->end, detail);
            atomic_fetch_add_explicit(&job->fallback_batches, 1, memory_order_relaxed);
            uint64_t t0 = tdm__now_ns();
            rc = tdm__run_batch(job->d, s->begin, s->end, &s->task);
            ws->busy_ns += tdm__now_ns() - t0;
            detail[0] = '\0';
        }
        tdm__job_batch_done(job, w, &s->task, s->begin, s->end, rc, detail);
    }
    for (int q = 0; q < nq; q++) {
        for (int k = 0; k < 16; k++) {
            if (qs[q].in[k])
                ds->ops->free(ds->dev, qs[q].in[k]);
            if (qs[q].out[k])
                ds->ops->free(ds->dev, qs[q].out[k]);
        }
    }
}
