/* SPDX-License-Identifier: MIT */
/* Running a map's batches on a device: the driver thread of one device claims batches and
 * pipelines them over the device's queues — batch k+1 copies in while batch k computes and
 * batch k-1 copies out — each queue in order, round-robin, so at most n_queues batches are in
 * flight. A batch whose device work ends in TDM_ENOMEM — when its buffers are allocated, when
 * it is enqueued, or only when its queue finishes (a driver that allocates lazily) — runs on
 * the host instead, in this thread, when the kernel has a CPU implementation (and the job is
 * not resident); the run goes on. Otherwise that batch fails with TDM_ENOMEM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/costmodel.h"
#include "sched/device.h"
#include "sched/job.h"
#include "sched/job_sched.h"
#include "core/core.h"
#include "observe/trace.h"

/* Automatic device batches move about this many bytes (inputs + outputs): large enough to
 * amortise a launch and a transfer, small enough to pipeline and to balance devices. */
#define TDM__DEV_BATCH_BYTES ((int64_t)8 << 20)
#define TDM__MAX_QUEUES 8

typedef struct {
    bool busy;
    uint64_t t_submit;
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

/* After TDM_ENOMEM on a queue (now finished): frees the queue's batch buffers — memory the
 * driver may not have been able to back (lazily, at first use) — so that its next batch
 * allocates afresh, or fails at that and runs on the host. ds->mu held. */
static void drop_bufs(tdm__devslot *ds, tdm__qslot *s)
{
    for (int k = 0; k < 16; k++) {
        if (s->in[k])
            ds->ops->free(ds->dev, s->in[k]);
        if (s->out[k])
            ds->ops->free(ds->dev, s->out[k]);
        s->in[k] = s->out[k] = NULL;
        s->in_cap[k] = s->out_cap[k] = 0;
    }
}

/* Device copies of whole tensors, when the job runs resident (runtime/sched/residency.c). */
typedef struct {
    tdm__dbuf *in[16], *out[16];
} tdm__resident;

/* Enqueues copy-in, kernel, copy-out of rows [begin, end) on queue q; or, resident, the kernel
 * on the whole-tensor device copies (and the batch's rows copied back unless they stay). */
static int submit(tdm__job *job, tdm__devslot *ds, int q, tdm__qslot *qs, const tdm__resident *r,
                  tdm__dbuf *const *whole, char *detail, size_t len)
{
    const tdm__jdesc *d = job->d;
    int64_t rows = qs->end - qs->begin;
    int rc;
    if (r)
        goto launch;
    for (int k = 0; k < d->n_in; k++) {
        if ((d->whole >> k) & 1u)
            continue; /* uploaded once for the job */
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
        if ((d->whole >> k) & 1u)
            continue;
        size_t bytes = (size_t)(rows * d->in_row_bytes[k]);
        if (bytes && (rc = ds->ops->write(ds->dev, q, qs->in[k], 0,
                                          d->in_base[k] + qs->begin * d->in_row_bytes[k], bytes,
                                          detail, len)) < 0)
            return rc;
        atomic_fetch_add_explicit(&job->bytes_to_device, (long long)bytes, memory_order_relaxed);
        job->ws[ds->worker].bytes += (int64_t)bytes;
    }
launch:;
    const tdm_dev_launch *l = &job->launch;
    int64_t items = rows * l->items_per_row;
    /* Batch buffers start at the batch's first row; resident copies at the tensor's. */
    int64_t first = r ? qs->begin * l->items_per_row : 0;
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
            if (r)
                g->buf = in ? r->in[a->index] : r->out[a->index];
            else if (in && ((d->whole >> a->index) & 1u))
                g->buf = whole[a->index];
            else
                g->buf = in ? qs->in[a->index] : qs->out[a->index];
            break;
        }
        case TDM_DEV_ARG_NULL:
            g->kind = TDM__KARG_NULL;
            break;
        case TDM_DEV_ARG_ROW0: {
            int64_t v = qs->begin;
            g->kind = TDM__KARG_VALUE;
            g->size = sizeof v;
            memcpy(g->value, &v, sizeof v);
            break;
        }
        case TDM_DEV_ARG_BEGIN:
        case TDM_DEV_ARG_END: {
            int64_t v = a->kind == TDM_DEV_ARG_BEGIN ? first : first + items;
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
    if (l->dims == 2) {
        /* A tiled entry: an output row's elements along dimension 0, the rows along 1. */
        if (!ds->ops->launch_2d) {
            snprintf(detail, len, "%s: this device backend has no 2-D launches", l->entry);
            return TDM_EINVAL;
        }
        tdm__range2 g = {{l->items_per_row, rows}, {(uint32_t)l->local[0], (uint32_t)l->local[1]}};
        rc = ds->ops->launch_2d(ds->dev, q, job->dev_key, job->dev_source, l->entry, args,
                                l->n_args, &g, detail, len);
    } else {
        rc = ds->ops->launch(ds->dev, q, job->dev_key, job->dev_source, l->entry, args, l->n_args,
                             items, detail, len);
    }
    if (rc < 0)
        return rc;
    if (r && job->opts.keep_on_device)
        return 0; /* the outputs stay on the device */
    for (int k = 0; k < d->n_out; k++) {
        size_t bytes = (size_t)(rows * d->out_row_bytes[k]);
        size_t src_off = r ? (size_t)(qs->begin * d->out_row_bytes[k]) : 0;
        if (bytes &&
            (rc = ds->ops->read(ds->dev, q, d->out_base[k] + qs->begin * d->out_row_bytes[k],
                                r ? r->out[k] : qs->out[k], src_off, bytes, detail, len)) < 0)
            return rc;
        atomic_fetch_add_explicit(&job->bytes_from_device, (long long)bytes, memory_order_relaxed);
        job->ws[ds->worker].bytes += (int64_t)bytes;
    }
    return 0;
}

/* Makes the device copies of the job's tensors current on ds (uploading what is not there
 * yet). On failure the job runs without residency: host copies are made current instead. */
static bool go_resident(tdm__job *job, tdm__devslot *ds, tdm__resident *r)
{
    char detail[256];
    int64_t moved = 0;
    int rc = 0;
    const tdm__jdesc *d = job->d;
    for (int k = 0; k < d->n_in && rc == 0; k++)
        rc = tdm__mirror_acquire(ds, job->tin[k]->storage, false, false, &r->in[k], &moved, detail,
                                 sizeof detail);
    for (int k = 0; k < d->n_out && rc == 0; k++) {
        const tdm_tensor *t = job->tout[k];
        bool whole = tdm_tensor_nbytes(t) == t->storage->bytes;
        rc = tdm__mirror_acquire(ds, t->storage, true, whole, &r->out[k], &moved, detail,
                                 sizeof detail);
    }
    atomic_fetch_add_explicit(&job->bytes_to_device, (long long)moved, memory_order_relaxed);
    job->ws[ds->worker].bytes += moved;
    if (rc == 0)
        return true;
    tdm__log(job->rt, TDM_DEBUG_SCHED, "%s: no residency on %s (%s): batches copy in and out",
             job->what, ds->info.name, detail);
    for (int k = 0; k < d->n_in; k++)
        tdm__storage_sync_host(job->tin[k]->storage, false);
    for (int k = 0; k < d->n_out; k++)
        tdm__storage_sync_host(job->tout[k]->storage, true);
    return false;
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

/* A device error that is not the batch's own fault (the kernel, its arguments, memory): the
 * device is lost (the backend says so with TDM_EDEVLOST; TDM_ESYS is any other driver failure,
 * or TDM_DEVICE_FAIL_AFTER's simulation). */
static bool device_fault(int rc)
{
    return rc == TDM_ESYS || rc == TDM_EDEVLOST;
}

/* Whether a batch the device could not run may run on the host instead: the kernel has a CPU
 * implementation, and the job is not resident (its host copies may be older than the
 * device's), unless the map forbids it (opts.no_cpu_fallback). */
static bool host_fallback_ok(const tdm__job *job, bool resident)
{
    return job->d->kcpu && !resident && !job->opts.no_cpu_fallback;
}

/* Appends why a failed batch did not run on the host instead, when there is room. */
static void note_no_fallback(const tdm__job *job, bool resident, char *detail, size_t len)
{
    size_t n = strlen(detail);
    if (n < len)
        snprintf(detail + n, len - n, "%s%s", n ? "; " : "",
                 !job->d->kcpu             ? "the kernel has no CPU implementation to run it instead"
                 : job->opts.no_cpu_fallback ? "the map forbids running it on the CPU instead"
                                             : "resident data: the host copies are not current");
}

/* Batch [begin, end) runs on the host, here, instead of on the device, when it may (saying why
 * under TDM_DEBUG=sched); else it fails with rc, its detail saying why it did not. */
static int host_instead(tdm__job *job, tdm_task *task, int64_t begin, int64_t end, bool resident,
                        int rc, const char *reason, char *detail, size_t len)
{
    if (!host_fallback_ok(job, resident)) {
        note_no_fallback(job, resident, detail, len);
        return rc;
    }
    tdm__log(job->rt, TDM_DEBUG_SCHED, "%s: batch %lld (items %lld..%lld) runs on the CPU: %s",
             job->what, (long long)task->batch, (long long)begin, (long long)end, reason);
    atomic_fetch_add_explicit(&job->fallback_batches, 1, memory_order_relaxed);
    task->reported = 0;
    detail[0] = '\0';
    return tdm__run_batch(job->d, begin, end, task);
}

/* The device had no memory for this batch (its buffers, its launch, or only found at its
 * completion): the batch runs on the host, here, when it may; else it fails with rc. */
static int enomem_on_host(tdm__job *job, tdm__devslot *ds, tdm_task *task, int64_t begin,
                          int64_t end, bool resident, int rc, const char *stage, char *detail,
                          size_t len)
{
    char reason[768];
    snprintf(reason, sizeof reason, "no memory on %.150s at %.40s: %.500s", ds->info.name, stage,
             detail);
    return host_instead(job, task, begin, end, resident, rc, reason, detail, len);
}

/* What a device lane does when it cannot run the job's kernel (rc; why: the build's error).
 * Under AUTO, a program that does not build (TDM_EKERNEL: at prepare for OpenCL, at the first
 * launch for CUDA, whose NVRTC builds there) is the device's failure, not the map's, when the
 * CPU can run the kernel: without share caps the lane leaves the job for good (RUN_LEAVE), the
 * CPU workers taking every item; with them (a cap may leave the CPU less than all the items)
 * its driver runs its batches on the host (RUN_HOST: *host_only and host_why are set), which
 * opts.no_cpu_fallback forbids. Else, and under any other policy, the map fails with the
 * build's error (RUN_FAIL): a device policy, ROUND_ROBIN, a kernel without a CPU version, a
 * job bound to its device (resident data: it has no scheduler). */
enum { RUN_FAIL, RUN_LEAVE, RUN_HOST };
static int cannot_run(tdm__job *job, const tdm__devslot *ds, int w, bool resident, int rc,
                      const char *why, bool *host_only, char *host_why, size_t len)
{
    if (rc != TDM_EKERNEL || !job->sched || job->opts.policy != TDM_POLICY_AUTO || !job->d->kcpu)
        return RUN_FAIL;
    bool capped = job->capped;
    if (capped && !host_fallback_ok(job, resident))
        return RUN_FAIL;
    if (!(capped && job->sched->lanes[w].on_host)) /* (said once a map: it comes back) */
        tdm__log(job->rt, TDM_DEBUG_SCHED, "%s: %s cannot run it (%.300s): %s", job->what,
                 ds->info.name, why,
                 capped ? "its batches run on the CPU" : "it leaves the map to the CPU");
    if (!capped) {
        tdm__jsched_gone(job, w);
        return RUN_LEAVE;
    }
    *host_only = true;
    snprintf(host_why, len, "its program did not build: %.200s", why);
    tdm__jsched_on_host(job, w);
    return RUN_HOST;
}

/* The device is gone (found at the batch's submission or completion, or earlier): it is marked
 * lost once, and the batch runs on the host instead, when its inputs are there; else the batch
 * fails with TDM_EDEVLOST, saying why it did not run on the host. */
static int rerun_on_host(tdm__job *job, tdm__devslot *ds, tdm_task *task, int64_t begin,
                         int64_t end, bool resident, int rc, char *detail, size_t len)
{
    (void)rc;
    if (atomic_exchange(&ds->lost, 1) == 0)
        tdm__log(job->rt, TDM_DEBUG_SCHED, "device %s lost (%s): its batches run on the CPU",
                 ds->info.name, detail);
    if (!host_fallback_ok(job, resident)) {
        size_t n = strlen(detail);
        if (n + 1 < len && !strstr(detail, "lost"))
            snprintf(detail + n, len - n, "%sdevice %s lost", n ? ": " : "", ds->info.name);
        note_no_fallback(job, resident, detail, len);
        return TDM_EDEVLOST;
    }
    tdm__log(job->rt, TDM_DEBUG_SCHED,
             "%s: batch %lld (items %lld..%lld) runs on the CPU: %s is lost", job->what,
             (long long)task->batch, (long long)begin, (long long)end, ds->info.name);
    atomic_fetch_add_explicit(&job->fallback_batches, 1, memory_order_relaxed);
    task->reported = 0;
    detail[0] = '\0';
    return tdm__run_batch(job->d, begin, end, task);
}

/* The job's kernel, hashed (FNV-1a of its model key). */
static uint64_t kernel_hash(const tdm__job *job)
{
    char key[TDM__CM_KEY_LEN];
    tdm__cm_kernel_key(key, sizeof key, job->kernel->def.name, job->kernel->def.kernel_version);
    uint64_t h = 1469598103934665603ull;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

/* Whether device ds launched the kernel hashed kh in an earlier map (the last 16 kept;
 * ds->mu held). */
static bool launched_before(tdm__devslot *ds, uint64_t kh)
{
    for (int i = 0; i < ds->n_launched; i++)
        if (ds->launched[i] == kh)
            return true;
    return false;
}

bool tdm__job_device_ok(tdm__job *job, int w)
{
    tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
    if (!ds || (job->dev_kind >= 0 && (int)ds->info.kind != job->dev_kind))
        return false;
    /* A lane that left the job for good (its program did not build) is not offered it again:
     * it was, and came back to leave again, thousands of times a map (an outside test). */
    if (job->sched && w < job->sched->n &&
        atomic_load_explicit(&job->sched->lanes[w].gone, memory_order_acquire))
        return false;
    /* A lost device takes no new work while another device lives; a job bound to it (resident
     * data) still has to end, so its driver stays and settles each batch on the host. */
    return !(atomic_load(&ds->lost) && job->only_worker != w && tdm__devices_live(job->rt) > 0);
}

int tdm__device_queues(const tdm__devslot *ds)
{
    int nq = ds->ops->n_queues(ds->dev);
    return nq > TDM__MAX_QUEUES ? TDM__MAX_QUEUES : nq < 1 ? 1 : nq;
}

void tdm__job_run_device(tdm__job *job, int w)
{
    tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
    if (!ds || !tdm__job_device_ok(job, w))
        return;
    tdm__jsched_join(job, w); /* (a lazy job's lane for a device opened since) */
    tdm__jsched_presence(job, w, 1);
    for (int k = 0; k < job->d->n_in; k++)
        tdm__storage_register_pinned(ds, job->tin[k]->storage);
    for (int k = 0; k < job->d->n_out && job->tout[k]; k++)
        tdm__storage_register_pinned(ds, job->tout[k]->storage);
    tdm__wstat *ws = &job->ws[w];
    int nq = tdm__device_queues(ds);
    tdm__qslot qs[TDM__MAX_QUEUES];
    memset(qs, 0, sizeof qs);
    int64_t want = job->fixed_bs ? job->fixed_bs : auto_rows(job);
    tdm__resident res;
    memset(&res, 0, sizeof res);
    bool resident = job->resident && go_resident(job, ds, &res);
    /* Inputs given whole: device copies of the whole tensors, uploaded unless already current
     * there. Without them (no device memory) this driver runs its batches on the host. */
    tdm__dbuf *whole[16] = {NULL};
    bool host_only = false;
    int host_rc = TDM_ENOMEM; /* why host_only: its whole inputs (ENOMEM), its build (EKERNEL) */
    char host_why[256] = "";
    for (int k = 0; k < job->d->n_in && !resident; k++) {
        if (!((job->d->whole >> k) & 1u))
            continue;
        int64_t moved = 0;
        char why[256];
        if (tdm__mirror_acquire(ds, job->tin[k]->storage, false, false, &whole[k], &moved, why,
                                sizeof why) != 0) {
            tdm__log(job->rt, TDM_DEBUG_SCHED, "%s: input %d not on %s (%s): its batches run on "
                     "the CPU", job->what, k, ds->info.name, why);
            snprintf(host_why, sizeof host_why, "input %d (given whole) not on the device: %.200s",
                     k, why);
            host_only = true;
            tdm__jsched_on_host(job, w);
            break;
        }
        atomic_fetch_add_explicit(&job->bytes_to_device, (long long)moved, memory_order_relaxed);
        job->ws[w].bytes += moved;
    }
    /* A map on the devices alone (no scheduler; nor a batch size of its own, which a
     * round-robin map beside the CPU has; nor data kept on the device, whose batches move
     * nothing) teaches the stored model this device's time per item, as a CPU-only map
     * teaches it the threads' (map_job.c): from its batches' times, grouped as the scheduler
     * groups them. Not in the first map of its kernel on this device: the program build aside,
     * its launches can hold compiles (PoCL compiles a work-group function for each new launch
     * shape: 56 items of pi took 0.1-0.5 s with an empty cache, 1.6 ms warm; 1750 items of
     * a first 2000-item map 0.9 s, 0.55-0.65 s after). */
    uint64_t kh = job->kernel ? kernel_hash(job) : 0;
    pthread_mutex_lock(&ds->mu);
    bool before = launched_before(ds, kh);
    pthread_mutex_unlock(&ds->mu);
    bool learn = !job->sched && job->kernel && !job->streaming && !job->fixed_bs && !host_only &&
                 !resident && before;
    double learned_ns = 0;
    int64_t learned_items = 0, learned_groups = 0;
    bool gone = false;
    int then = RUN_FAIL; /* what the lane does once it found it cannot run the kernel */
    if ((job->sched || learn) && ds->ops->prepare && !host_only && !atomic_load(&ds->lost)) {
        /* Build the program before the first batch, while the CPU workers go on with the map
         * (the lane is not counted on until then): its build is not its time per item. */
        uint64_t t0 = tdm__now_ns();
        char why[512] = "";
        tdm__jsched_preparing(job, w);
        pthread_mutex_lock(&ds->mu);
        int rc = ds->ops->prepare(ds->dev, job->dev_key, job->dev_source, job->launch.entry, why,
                                  sizeof why);
        pthread_mutex_unlock(&ds->mu);
        if (rc != 0 || tdm__now_ns() - t0 > 1000000)
            tdm__log(job->rt, TDM_DEBUG_SCHED, "%s: %s prepared its program in %.1f ms%s%.300s",
                     job->what, ds->info.name, (double)(tdm__now_ns() - t0) * 1e-6,
                     rc ? ": " : "", rc ? why : "");
        if (rc != 0)
            then = cannot_run(job, ds, w, resident, rc, why, &host_only, host_why, sizeof host_why);
        gone = then == RUN_LEAVE;
        if (then == RUN_HOST)
            host_rc = TDM_EKERNEL;
    }
    if (!gone)
        tdm__jsched_prepared(job, w);
    int in_flight = 0;
    uint64_t busy_since = 0, last_done = 0, grp_from = 0;
    int64_t grp_n = 0;
    int grp_batches = 0, grp_batches_seen = 0;
    char detail[512];

    for (int q = 0;; q = (q + 1) % nq) {
        tdm__qslot *s = &qs[q];
        if (s->busy) {
            /* The oldest batch in flight: wait for it, then account it. */
            detail[0] = '\0';
            pthread_mutex_lock(&ds->mu);
            int rc = ds->ops->finish(ds->dev, q, detail, sizeof detail);
            if (ds->enomem_at > 0 && ++ds->completions == ds->enomem_at && rc == 0) {
                rc = TDM_ENOMEM; /* TDM_DEVICE_ENOMEM_AT_FINISH: a simulated lazy allocation */
                snprintf(detail, sizeof detail,
                         "injected device out of memory at batch completion %d on %s",
                         ds->completions, ds->info.name);
            }
            if (rc == TDM_ENOMEM)
                drop_bufs(ds, s);
            pthread_mutex_unlock(&ds->mu);
            if (rc == 0 && ds->fail_after > 0 && ++ds->batches >= ds->fail_after) {
                rc = TDM_ESYS; /* TDM_DEVICE_FAIL_AFTER: a simulated device loss */
                snprintf(detail, sizeof detail, "injected device loss after %d batches",
                         ds->batches);
            }
            s->busy = false;
            uint64_t t_done = tdm__now_ns();
            if (--in_flight == 0) {
                ws->busy_ns += t_done - busy_since;
                tdm__jsched_device_busy(job, w, false);
            }
            if (job->sched || learn) {
                /* Queued batches overlap (a CPU device may even run its queues at once), so
                 * one batch's time means little: the model learns from groups of n_queues
                 * consecutive completions, each costing the device the time from the later of
                 * its first submission and the previous group's end. The scheduler does not
                 * learn from a job's first group: set-up (program build, buffers) as it
                 * joins the CPU workers. (Alone, its program built before, the first
                 * group counts: a map of pi on PoCL is one batch.) */
                if (grp_n == 0)
                    grp_from = s->t_submit > last_done ? s->t_submit : last_done;
                grp_n += s->end - s->begin;
                if (++grp_batches >= nq || in_flight == 0) {
                    double dur = (double)(t_done - grp_from);
                    if (job->sched) {
                        tdm__jsched_done(job, w, grp_batches_seen++ ? grp_n : 0, dur,
                                         in_flight == 0);
                    } else {
                        learned_items += grp_n;
                        learned_groups++;
                        learned_ns += dur;
                    }
                    grp_n = 0;
                    grp_batches = 0;
                    last_done = t_done;
                }
            }
            tdm__trace_span(job->rt, (TDM__TRACE_DEVICE_BASE + w) * TDM__TRACE_QUEUES + q,
                            job->what, s->task.batch, s->begin, s->end, rc, s->t_submit,
                            tdm__now_ns());
            if (device_fault(rc)) {
                rc = rerun_on_host(job, ds, &s->task, s->begin, s->end, resident, rc, detail,
                                   sizeof detail);
            } else if (rc == TDM_ENOMEM) {
                uint64_t t0 = tdm__now_ns();
                rc = enomem_on_host(job, ds, &s->task, s->begin, s->end, resident, rc, "completion",
                                    detail, sizeof detail);
                if (in_flight == 0) /* (else the busy span still open covers it) */
                    ws->busy_ns += tdm__now_ns() - t0;
            }
            tdm__job_batch_done(job, w, &s->task, s->begin, s->end, rc, detail);
        }
        bool stopped = gone || atomic_load_explicit(&job->d->stop, memory_order_relaxed) != 0;
        bool got = false;
        int slot = -1;
        double est = 0;
        if (!stopped && job->sched && in_flight > 0 && tdm__jsched_exploring(job, w))
            continue; /* exploring: one batch at a time, each measured before the next */
        if (!stopped && job->sched) {
            int64_t b = tdm__jsched_want(job, w, &est);
            if (b > 0) {
                got = tdm__job_claim_exact(job, b, &s->begin, &s->end);
                tdm__jsched_claimed(job, w, b, got ? s->end - s->begin : 0, est);
            } else if (!tdm__job_exhausted(job)) {
                /* Declined: a faster worker finishes it sooner. Drain what is in flight, then
                 * leave the job until one of its batches completes. */
                if (in_flight > 0)
                    continue;
                tdm__job_decline(job, w);
                break;
            }
        } else if (!stopped && job->streaming) {
            /* A streamed job's batch holds one of its max_in_flight result slots until it is
             * consumed, as a CPU worker's does (job.c): taken with the batch, given back by
             * tdm__job_batch_done or the consumer. Without one, a streamed map on a device
             * pushed more slots back than it had (an outside test: ASan, a heap overflow
             * in tdm__job_batch_done after tdm_map_async under policy OPENCL). */
            pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
            pthread_mutex_lock(mu);
            got = job->n_free > 0 && tdm__job_claim(job, want, &s->begin, &s->end);
            if (got)
                slot = job->free_slots[--job->n_free];
            pthread_mutex_unlock(mu);
        } else if (!stopped) {
            got = tdm__job_claim(job, want, &s->begin, &s->end);
        }
        if (!got) {
            if (in_flight == 0)
                break;
            continue; /* drain the queues still busy */
        }
        s->task = (tdm_task){job->d, w, slot, 0, 0};
        s->task.batch = atomic_fetch_add_explicit(&job->next_batch, 1, memory_order_relaxed);
        if (atomic_load(&ds->lost)) {
            /* Lost during this job: the rest of what this driver claims runs on the host
             * (other devices, if any, go on on their own). */
            char why[256] = "the device was lost";
            uint64_t t0 = tdm__now_ns();
            int rc = rerun_on_host(job, ds, &s->task, s->begin, s->end, resident, TDM_EDEVLOST,
                                   why, sizeof why);
            ws->busy_ns += tdm__now_ns() - t0;
            tdm__job_batch_done(job, w, &s->task, s->begin, s->end, rc, why);
            continue;
        }
        if (in_flight++ == 0) {
            busy_since = tdm__now_ns();
            tdm__jsched_device_busy(job, w, true);
        }
        detail[0] = '\0';
        s->t_submit = tdm__now_ns();
        pthread_mutex_lock(&ds->mu);
        int rc = host_rc;
        if (host_only)
            snprintf(detail, sizeof detail, "%s", host_why);
        else
            rc = submit(job, ds, q, s, resident ? &res : NULL, whole, detail, sizeof detail);
        if (rc != 0) {
            /* Whatever was enqueued before the failure must finish before the buffers change. */
            char ignored[64];
            ds->ops->finish(ds->dev, q, ignored, sizeof ignored);
            if (rc == TDM_ENOMEM)
                drop_bufs(ds, s);
        }
        pthread_mutex_unlock(&ds->mu);
        if (rc == 0) {
            s->busy = true;
            continue;
        }
        if (--in_flight == 0) {
            ws->busy_ns += tdm__now_ns() - busy_since;
            tdm__jsched_device_busy(job, w, false);
        }
        if (device_fault(rc)) {
            /* Lost at submission (a dead context is usually found here first, by the next copy
             * or launch): this batch, and those still in flight, run elsewhere. */
            uint64_t t0 = tdm__now_ns();
            rc = rerun_on_host(job, ds, &s->task, s->begin, s->end, resident, rc, detail,
                               sizeof detail);
            ws->busy_ns += tdm__now_ns() - t0;
        } else if (rc == TDM_ENOMEM) {
            /* No device memory for this batch (its buffers, or its launch): on the host. */
            uint64_t t0 = tdm__now_ns();
            rc = enomem_on_host(job, ds, &s->task, s->begin, s->end, resident, rc,
                                host_only ? "its whole inputs" : "submission", detail,
                                sizeof detail);
            ws->busy_ns += tdm__now_ns() - t0;
        } else if (rc == TDM_EKERNEL &&
                   (host_only || (then = cannot_run(job, ds, w, resident, rc, detail, &host_only,
                                                    host_why, sizeof host_why)) != RUN_FAIL)) {
            /* Its program did not build (found here at the first launch: CUDA), or did not
             * before (host_only): this batch on the host; the lane leaves or stays (above). */
            gone |= then == RUN_LEAVE;
            if (host_only)
                host_rc = TDM_EKERNEL;
            char reason[700];
            snprintf(reason, sizeof reason, "%.150s: %.500s", ds->info.name,
                     host_only ? host_why : detail);
            uint64_t t0 = tdm__now_ns();
            rc = host_instead(job, &s->task, s->begin, s->end, resident, rc, reason, detail,
                              sizeof detail);
            ws->busy_ns += tdm__now_ns() - t0;
        }
        if (host_only && job->sched && rc == 0) /* (its batches: the scheduler sizes them) */
            tdm__jsched_done(job, w, s->end - s->begin, (double)(tdm__now_ns() - s->t_submit),
                             true);
        tdm__job_batch_done(job, w, &s->task, s->begin, s->end, rc, detail);
    }
    if (resident)
        for (int k = 0; k < job->d->n_out; k++)
            tdm__mirror_written(job->tout[k]->storage, !job->opts.keep_on_device);
    if (learn && learned_items > 0 && learned_ns > 0) {
        /* (its time over its items, less a launch per group: its groups here are its own
         * batches, hundreds of items and more, and a fit to their sizes read 0.5-1.3x that,
         * one slowed batch moving it) */
        double lat = TDM__LAT_DEVICE;
        if (lat * (double)learned_groups > learned_ns / 2)
            lat = learned_ns / 2 / (double)learned_groups;
        ws->learn_tpi = (learned_ns - lat * (double)learned_groups) / (double)learned_items;
        ws->learn_lat = lat;
        ws->learn_ns = learned_ns;
    }
    tdm__jsched_presence(job, w, 0);
    pthread_mutex_lock(&ds->mu);
    if (job->kernel && ws->batches > 0 && !launched_before(ds, kh)) {
        ds->launched[ds->next_launched] = kh;
        ds->next_launched = (ds->next_launched + 1) % 16;
        ds->n_launched += ds->n_launched < 16;
    }
    for (int q = 0; q < nq; q++) {
        for (int k = 0; k < 16; k++) {
            if (qs[q].in[k])
                ds->ops->free(ds->dev, qs[q].in[k]);
            if (qs[q].out[k])
                ds->ops->free(ds->dev, qs[q].out[k]);
        }
    }
    if (ds->ops->idle && !atomic_load(&ds->lost))
        ds->ops->idle(ds->dev); /* nothing in flight: cached memory may go back */
    pthread_mutex_unlock(&ds->mu);
}
