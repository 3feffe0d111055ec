/* tdm_map / tdm_parallel_for and their asynchronous forms: validation, job set-up, teardown. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "sched/costmodel.h"
#include "sched/job.h"
#include "sched/job_sched.h"
#include "sched/sched_model.h"
#include "observe/progress_internal.h"
#include "core/core.h"

int tdm_map_opts_init(tdm_map_opts *o)
{
    if (!o)
        return tdm__err(NULL, TDM_EINVAL, "tdm_map_opts_init: opts is NULL");
    tdm_map_opts d = TDM_MAP_OPTS_INIT;
    *o = d;
    return 0;
}

static int check_opts(tdm_runtime *rt, const char *fn, const tdm_map_opts *in, tdm_map_opts *o,
                      bool streaming)
{
    tdm_map_opts_init(o);
    if (!in)
        return 0;
    if (in->size < sizeof(tdm_map_opts) || in->version != TDM_MAP_OPTS_VERSION)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: opts size %u / version %u not supported (start from "
                        "TDM_MAP_OPTS_INIT)",
                        fn, in->size, in->version);
    *o = *in;
    if ((int)o->policy < TDM_POLICY_AUTO || o->policy > TDM_POLICY_ROUND_ROBIN)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown policy %d", fn, (int)o->policy);
    if (o->batch_size < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: batch_size %lld is negative", fn,
                        (long long)o->batch_size);
    if ((int)o->on_error < TDM_ON_ERROR_STOP || o->on_error > TDM_ON_ERROR_CONTINUE)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown on_error %d", fn, (int)o->on_error);
    if ((int)o->progress < TDM_PROGRESS_AUTO || o->progress > TDM_PROGRESS_CALLBACK)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown progress mode %d", fn, (int)o->progress);
    if (o->progress == TDM_PROGRESS_CALLBACK && !o->progress_fn)
        return tdm__err(rt, TDM_EINVAL, "%s: progress mode CALLBACK needs progress_fn", fn);
    if (o->progress_interval_s < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: progress_interval_s is negative", fn);
    if ((int)o->order < TDM_ORDER_SUBMISSION || o->order > TDM_ORDER_COMPLETION)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown order %d", fn, (int)o->order);
    if (o->max_in_flight < 0 || o->max_in_flight > 65536)
        return tdm__err(rt, TDM_EINVAL, "%s: max_in_flight %d not in 0..65536", fn,
                        o->max_in_flight);
    if (!(o->timeout_s >= 0) || o->timeout_s > 1e9)
        return tdm__err(rt, TDM_EINVAL, "%s: timeout_s must be in 0..1e9 seconds", fn);
    if (o->retries < 0 || o->retries > 1000)
        return tdm__err(rt, TDM_EINVAL, "%s: retries %d not in 0..1000", fn, o->retries);
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        if (!(o->share_cap[k] >= 0 && o->share_cap[k] <= 1))
            return tdm__err(rt, TDM_EINVAL, "%s: share_cap[%s] must be in 0..1", fn,
                            tdm_backend_kind_name((tdm_backend_kind)k));
    (void)streaming;
    return 0;
}

/* True when every tensor of the map lives in the shared arena, so a worker process sees it. */
static bool all_in_arena(tdm_tensor *const *ts, int n)
{
    for (int i = 0; i < n; i++)
        if (!ts[i]->storage->in_arena)
            return false;
    return true;
}

/* Decides which kinds of worker may run the job's batches (job->on) under its policy.
 * `proc_safe`: the job's data is visible to worker processes (a map over arena tensors); a
 * parallel_for body may write anywhere, so only an explicit PROCS policy sends it there. */
static int place(tdm__job *job, const char *fn, bool has_cpu, bool proc_safe,
                 const char *why_not_safe, const char *why_no_dev)
{
    tdm_runtime *rt = job->rt;
    const char *what = job->what;
    bool threads_ok = rt->backends[TDM_BACKEND_CPU_THREADS].enabled;
    bool procs_ok = rt->procs != NULL && rt->backends[TDM_BACKEND_CPU_PROCS].enabled;
    /* Worker processes that are gone (their fork server died or was stopped) take no part in
     * AUTO; a call that asks for them gets TDM_EWORKER and why. */
    bool procs_broken = procs_ok && tdm__procs_broken(rt->procs);
    if (procs_broken && job->opts.policy == TDM_POLICY_PROCS) {
        char why[256];
        int rc = tdm__procs_why_broken(rt->procs, why, sizeof why);
        return tdm__err(rt, rc, "%s(%s): policy PROCS: %s", fn, what, why);
    }
    procs_ok = procs_ok && !procs_broken;
    if (!has_cpu && job->opts.policy != TDM_POLICY_GPU)
        return tdm__err(rt, TDM_ENODEV,
                        "%s(%s): kernel has no CPU implementation (use policy GPU for its "
                        "device version)",
                        fn, what);
    /* Devices take part in AUTO when they are open and the kernel runs there. */
    bool dev_ok = !why_no_dev && !job->streaming && tdm__devices_live(rt) > 0;
    switch (job->opts.policy) {
    case TDM_POLICY_AUTO:
    case TDM_POLICY_CPU:
    case TDM_POLICY_ROUND_ROBIN:
        job->on =
            (threads_ok ? TDM__ON_THREADS : 0u) | (procs_ok && proc_safe ? TDM__ON_PROCS : 0u);
        if (job->opts.policy != TDM_POLICY_CPU && dev_ok && has_cpu && job->on)
            job->on |= TDM__ON_DEVICES;
        if (!job->on)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): the cpu backend is disabled (TDM_BACKENDS / "
                            "config.backends) and no other enabled backend runs it%s%s",
                            fn, what, procs_ok ? "; worker processes: " : "",
                            procs_ok ? why_not_safe : "");
        break;
    case TDM_POLICY_THREADS:
        if (!threads_ok)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy THREADS but the cpu backend is disabled "
                            "(TDM_BACKENDS / config.backends)",
                            fn, what);
        job->on = TDM__ON_THREADS;
        break;
    case TDM_POLICY_PROCS:
        if (!procs_ok)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy PROCS but the runtime has no worker processes "
                            "(config.procs / TDM_NUM_PROCS = 0, or procs disabled)",
                            fn, what);
        if (!proc_safe)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): policy PROCS: %s", fn, what, why_not_safe);
        job->on = TDM__ON_PROCS;
        break;
    case TDM_POLICY_GPU:
    case TDM_POLICY_OPENCL:
    case TDM_POLICY_CUDA:
    default: {
        const char *pname = job->opts.policy == TDM_POLICY_OPENCL ? "OPENCL"
                            : job->opts.policy == TDM_POLICY_CUDA ? "CUDA"
                                                                  : "GPU";
        if (why_no_dev)
            return tdm__err(rt, TDM_ENODEV, "%s(%s): policy %s: %s", fn, what, pname, why_no_dev);
        if (job->opts.policy != TDM_POLICY_GPU)
            job->dev_kind =
                job->opts.policy == TDM_POLICY_OPENCL ? TDM_BACKEND_OPENCL : TDM_BACKEND_CUDA;
        if (tdm__devices_live_kind(rt, job->dev_kind) == 0)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy %s: no %s device is available (tandem info lists "
                            "what was found; a device lost to an error is not used again)",
                            fn, what, pname,
                            job->dev_kind < 0 ? "OpenCL or CUDA"
                                              : tdm_backend_kind_name(job->dev_kind));
        job->on = TDM__ON_DEVICES;
        break;
    }
    }
    job->n_eligible = ((job->on & TDM__ON_THREADS) ? job->n_threads : 0) +
                      ((job->on & TDM__ON_PROCS) ? job->n_procs : 0) +
                      ((job->on & TDM__ON_DEVICES) ? tdm__devices_live_kind(rt, job->dev_kind) : 0);
    /* Share caps must leave every item to some kind that may run it. */
    double allowed = 0;
    const double *cap = job->opts.share_cap;
    if (job->on & TDM__ON_THREADS)
        allowed += cap[TDM_BACKEND_CPU_THREADS] > 0 ? cap[TDM_BACKEND_CPU_THREADS] : 1;
    if (job->on & TDM__ON_PROCS)
        allowed += cap[TDM_BACKEND_CPU_PROCS] > 0 ? cap[TDM_BACKEND_CPU_PROCS] : 1;
    if (job->on & TDM__ON_DEVICES) {
        bool any[TDM_BACKEND_KIND_COUNT] = {false};
        for (int i = 0; rt->devices && i < rt->devices->n; i++)
            any[rt->devices->slots[i].info.kind] = !atomic_load(&rt->devices->slots[i].lost);
        for (int k = TDM_BACKEND_OPENCL; k <= TDM_BACKEND_CUDA; k++)
            if (any[k] && (job->dev_kind < 0 || job->dev_kind == k))
                allowed += cap[k] > 0 ? cap[k] : 1;
    }
    if (allowed < 1.0 - 1e-9)
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): share caps allow only %.0f%% of the items to the backends that "
                        "may run the map",
                        fn, what, 100 * allowed);
    return 0;
}

static tdm__job *job_alloc(tdm_runtime *rt, const char *fn)
{
    tdm__job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->rt = rt;
    job->n_threads = rt->threads;
    job->n_procs = tdm__procs_count(rt->procs);
    job->n_workers = tdm__pool_threads(rt->pool);
    job->d = &job->dl;
    atomic_init(&job->cursor, 0);
    atomic_init(&job->next_batch, 0);
    atomic_init(&job->dl.stop, 0);
    atomic_init(&job->first_error, 0);
    atomic_init(&job->failed_batches, 0);
    atomic_init(&job->fallback_batches, 0);
    atomic_init(&job->done_flag, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the progress thread's timed waits */
    pthread_cond_init(&job->cv, &ca);
    pthread_condattr_destroy(&ca);
    job->held_slot = -1;
    job->only_worker = -1;
    job->dev_kind = -1;
    atomic_init(&job->done_gen, 0);
    atomic_init(&job->n_declined, 0);
    atomic_init(&job->bytes_to_device, 0);
    atomic_init(&job->bytes_from_device, 0);
    job->max_bs = INT64_MAX;
    (void)fn;
    return job;
}

/* A CPU-only map of a named kernel teaches the stored model the CPU threads' time per item
 * (the median of the threads' auto-batching estimates), so a later map that mixes in a device
 * starts with the CPU calibrated. Maps of a few batches say too little and are skipped. */
static void learn_cpu(tdm__job *job)
{
    if (!job->kernel || job->sched || job->fixed_bs || !job->ws || !(job->on & TDM__ON_THREADS) ||
        atomic_load(&job->first_error) != 0)
        return;
    double tpis[256];
    int k = 0;
    int64_t batches = 0, items = 0;
    for (int w = 0; w < job->n_threads && w < job->n_workers && k < 256; w++) {
        if (job->ws[w].tpi > 0 && job->ws[w].batches >= 4) {
            tpis[k++] = job->ws[w].tpi;
            batches += job->ws[w].batches;
            items += job->ws[w].items;
        }
    }
    if (batches < 8 || k == 0)
        return;
    tdm__costmodel *cm = tdm__runtime_costmodel(job->rt);
    if (!cm)
        return;
    char key[80];
    snprintf(key, sizeof key, "%s.v%u", job->kernel->def.name, job->kernel->def.kernel_version);
    /* (auto batching's estimate folds the small fixed cost of a thread's batch in) */
    tdm__cm_put(cm, key, "cpu", tdm__cm_size_class(items / batches), tdm__median(tpis, k), 0,
                batches > 1000000 ? 1000000 : (int)batches);
}

void tdm__job_destroy(tdm__job *job)
{
    if (!job)
        return;
    if (job->finished) {
        learn_cpu(job);
        tdm__jsched_destroy(job);
    }
    free(job->sched ? job->sched->lanes : NULL);
    free(job->sched);
    free(job->declined_gen);
    for (int k = 0; k < 16; k++) {
        tdm_tensor_release(job->views[k]);
        tdm_tensor_release(job->tin[k]);
        tdm_tensor_release(job->tout[k]);
    }
    if (job->ring) {
        for (int i = 0; i < job->max_in_flight * job->dl.n_out; i++)
            tdm_tensor_release(job->ring[i]);
        free(job->ring);
    }
    bool counted = job->t_start != 0;
    tdm_runtime *rt = job->rt;
    pthread_cond_destroy(&job->cv);
    if (job->block)
        tdm__arena_block_put(rt->arena, job->block, job->block_bytes);
    free(job->free_slots);
    free(job->done);
    free(job->params_heap);
    free(job->ws_heap);
    free(job->ring_heap);
    free(job);
    if (counted)
        atomic_fetch_sub(&rt->jobs_in_flight, 1);
}

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* Copies a tensor's description (and its storage's) into shared memory for worker processes;
 * the copies are only read (dtype, shape, data pointer), never retained or released. */
static const tdm_tensor *share_desc(const tdm_tensor *t, tdm_tensor *tc, tdm__storage *sc)
{
    *sc = *t->storage;
    *tc = *t;
    tc->storage = sc;
    return tc;
}

/* Gives the job its private copy of the parameter block and its counters, and publishes the
 * descriptor workers read: on the heap, or — when worker processes may run it — in one block
 * of the shared arena holding the descriptor, counters, params and tensor descriptions. */
static int finalize(tdm__job *job, const char *fn, const void *params, size_t psize)
{
    tdm_runtime *rt = job->rt;
    tdm__jdesc *dl = &job->dl;
    int nw = job->n_workers;
    size_t n_ring = job->ring ? (size_t)job->max_in_flight * (size_t)dl->n_out : 0;
    size_t ws_bytes = (size_t)nw * sizeof(tdm__wstat);
    if (!(job->on & TDM__ON_PROCS)) {
        job->ws_heap = aligned_alloc(TDM__CACHELINE, align_up(ws_bytes, TDM__CACHELINE));
        job->params_heap = psize ? malloc(psize) : NULL;
        job->ring_heap = n_ring ? malloc(2 * n_ring * sizeof(void *)) : NULL;
        if (!job->ws_heap || (psize && !job->params_heap) || (n_ring && !job->ring_heap))
            return tdm__err(rt, TDM_ENOMEM, "%s: out of memory (job)", fn);
        memset(job->ws_heap, 0, ws_bytes);
        if (psize)
            memcpy(job->params_heap, params, psize);
        dl->ws = job->ws_heap;
        dl->params = job->params_heap;
        dl->params_size = psize;
        if (n_ring) {
            dl->ring_base = job->ring_heap;
            dl->ring_t = (const tdm_tensor **)((uint8_t **)job->ring_heap + n_ring);
            for (size_t i = 0; i < n_ring; i++) {
                dl->ring_base[i] = tdm__tensor_ptr(job->ring[i]);
                dl->ring_t[i] = job->ring[i];
            }
        }
        for (int w = 0; w < nw; w++)
            atomic_init(&dl->ws[w].progress, 0);
        job->d = dl;
        job->ws = dl->ws;
        return 0;
    }

    size_t n_t = (size_t)(dl->n_in + dl->n_out) + n_ring;
    size_t off_ws = align_up(sizeof(tdm__jdesc), TDM__CACHELINE);
    size_t off_params = align_up(off_ws + ws_bytes, 16);
    size_t off_t = align_up(off_params + psize, 16);
    size_t off_s = align_up(off_t + n_t * sizeof(tdm_tensor), 16);
    size_t off_rb = align_up(off_s + n_t * sizeof(tdm__storage), 16);
    size_t off_rt = off_rb + n_ring * sizeof(void *);
    size_t total = align_up(off_rt + n_ring * sizeof(void *), 4096);
    void *block;
    int rc = tdm__arena_block_get(rt, rt->arena, total, fn, &block);
    if (rc != 0)
        return rc;
    uint8_t *b = block;
    tdm__jdesc *d = (tdm__jdesc *)b;
    memcpy(d, dl, sizeof *d);
    atomic_init(&d->stop, 0);
    d->ws = (tdm__wstat *)(b + off_ws); /* fresh arena pages read as zeros */
    for (int w = 0; w < nw; w++)
        atomic_init(&d->ws[w].progress, 0);
    d->params = psize ? memcpy(b + off_params, params, psize) : NULL;
    d->params_size = psize;
    tdm_tensor *tc = (tdm_tensor *)(b + off_t);
    tdm__storage *sc = (tdm__storage *)(b + off_s);
    size_t i = 0;
    for (int k = 0; k < dl->n_in; k++, i++)
        d->tin[k] = share_desc(job->tin[k], &tc[i], &sc[i]);
    for (int k = 0; k < dl->n_out && job->tout[k]; k++, i++)
        d->tout[k] = share_desc(job->tout[k], &tc[i], &sc[i]);
    if (n_ring) {
        d->ring_base = (uint8_t **)(b + off_rb);
        d->ring_t = (const tdm_tensor **)(b + off_rt);
        for (size_t r = 0; r < n_ring; r++, i++) {
            d->ring_base[r] = tdm__tensor_ptr(job->ring[r]);
            d->ring_t[r] = share_desc(job->ring[r], &tc[i], &sc[i]);
        }
    }
    job->block = block;
    job->block_bytes = total;
    job->d = d;
    job->ws = d->ws;
    return 0;
}

static bool same_desc(const tdm_tensor *t, const tdm_tensor_desc *d)
{
    if (tdm_tensor_ndim(t) != d->ndim)
        return false;
    for (int i = 0; i < d->ndim; i++)
        if (tdm_tensor_dim(t, i) != d->shape[i])
            return false;
    return true;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

/* Where the bytes must be for the job to run. A device map runs on device copies of whole
 * tensors (residency) when it keeps its outputs there or finds an input there already; it then
 * runs on that one device. Every other map needs the host copies current: inputs are fetched
 * back from a device when newer there, and outputs' device copies are forgotten (the map is
 * about to write the host's). */
static int place_data(tdm__job *job, tdm_tensor *const *inputs, int n_in,
                      tdm_tensor *const *outputs, int n_out)
{
    tdm_runtime *rt = job->rt;
    if ((job->on & TDM__ON_DEVICES) && outputs) {
        bool whole = true, on_dev = false;
        tdm__devslot *where = NULL;
        pthread_mutex_lock(&rt->dev_mu);
        for (int i = 0; i < n_in + n_out; i++) {
            const tdm_tensor *t = i < n_in ? inputs[i] : outputs[i - n_in];
            if (t->offset != 0)
                whole = false;
            if (i < n_in && t->storage->mirror && t->storage->mirror->dev_valid) {
                on_dev = true;
                if (!where)
                    where = t->storage->mirror->dev;
            }
        }
        pthread_mutex_unlock(&rt->dev_mu);
        if (whole && (job->opts.keep_on_device || on_dev)) {
            job->resident = true;
            if (!where || atomic_load(&where->lost)) {
                where = NULL;
                for (int i = 0; i < rt->devices->n && !where; i++)
                    if (!atomic_load(&rt->devices->slots[i].lost))
                        where = &rt->devices->slots[i];
            }
            job->only_worker = where ? where->worker : rt->devices->slots[0].worker;
            job->n_eligible = 1;
            return 0;
        }
    }
    for (int i = 0; i < n_in + n_out; i++) {
        tdm_tensor *t = i < n_in ? inputs[i] : outputs ? outputs[i - n_in] : NULL;
        if (t && t->storage->mirror) {
            int rc = tdm__storage_sync_host(t->storage, i >= n_in);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* Validates a map's arguments and fills the job's view of its tensors. Nothing is written to
 * any tensor here. `outputs` NULL (streaming only) asks for ring buffers. */
static int setup_map(tdm__job *job, const char *fn, const char *kernel, tdm_tensor *const *inputs,
                     int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                     size_t params_size, tdm_tensor_desc *descs)
{
    tdm_runtime *rt = job->rt;
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel name is NULL", fn);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s' is registered", fn, kernel);
    const tdm_kernel_def *d = &k->def;
    job->kernel = k;
    snprintf(job->what, sizeof job->what, "%s", d->name);
    if (n_in < d->n_in_min || n_in > d->n_in_max)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): %d input(s) given, the kernel takes %d..%d", fn,
                        d->name, n_in, d->n_in_min, d->n_in_max);
    if (n_out != d->n_out)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): %d output(s) given, the kernel has %d", fn,
                        d->name, n_out, d->n_out);
    if (n_in > 0 && !inputs)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): inputs is NULL", fn, d->name);
    if (params_size != d->params_size)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): params_size %zu, the kernel expects %zu", fn,
                        d->name, params_size, d->params_size);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): params is NULL", fn, d->name);
    int rc;
    int64_t rows = -1;
    for (int i = 0; i < n_in + n_out; i++) {
        bool is_in = i < n_in;
        if (!is_in && !outputs)
            break;
        tdm_tensor *t = is_in ? inputs[i] : outputs[i - n_in];
        if (is_in && t && ((d->whole_inputs >> i) & 1u)) { /* given whole: any row count */
            if (tdm_tensor_runtime(t) != rt)
                return tdm__err(rt, TDM_EINVAL, "%s(%s): input %d belongs to another runtime",
                                fn, d->name, i);
            if (!tdm_tensor_is_contiguous(t))
                return tdm__err(rt, TDM_ELAYOUT, "%s(%s): input %d is not contiguous", fn,
                                d->name, i);
            continue;
        }
        const char *role = is_in ? "input" : "output";
        int idx = is_in ? i : i - n_in;
        if (!t)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): %s %d is NULL", fn, d->name, role, idx);
        if (tdm_tensor_runtime(t) != rt)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): %s %d belongs to another runtime", fn, d->name,
                            role, idx);
        if (tdm_tensor_ndim(t) < 1)
            return tdm__err(rt, TDM_ESHAPE,
                            "%s(%s): %s %d is 0-dimensional; a map runs over "
                            "rows (dim 0)",
                            fn, d->name, role, idx);
        if (!tdm_tensor_is_contiguous(t))
            return tdm__err(rt, TDM_ELAYOUT, "%s(%s): %s %d is not contiguous", fn, d->name, role,
                            idx);
        int64_t r = tdm_tensor_dim(t, 0);
        if (rows < 0)
            rows = r;
        else if (r != rows)
            return tdm__err(rt, TDM_ESHAPE, "%s(%s): %s %d has %lld rows, the first tensor %lld",
                            fn, d->name, role, idx, (long long)r, (long long)rows);
    }
    if (rows < 0)
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): no tensor gives the number of rows (a kernel "
                        "without inputs needs its outputs)",
                        fn, d->name);

    for (int i = 0; i < n_in; i++) /* (NULL whole inputs were passed over above) */
        if (!inputs[i])
            return tdm__err(rt, TDM_EINVAL, "%s(%s): input %d is NULL", fn, d->name, i);
    if (d->infer) {
        char msg[256] = "";
        rc = d->infer((const tdm_tensor *const *)inputs, n_in, params, params_size, descs, n_out,
                      msg, sizeof msg);
        if (rc < 0)
            return tdm__err(rt, rc, "%s(%s): %s", fn, d->name, msg[0] ? msg : tdm_strerror(rc));
        /* Dim 0 of every output is the map's row count (already checked above); an infer
         * function of a kernel without inputs cannot know it. */
        for (int o = 0; o < n_out; o++)
            if (descs[o].ndim >= 1)
                descs[o].shape[0] = rows;
        for (int o = 0; outputs && o < n_out; o++) {
            const tdm_tensor *t = outputs[o];
            if (tdm_tensor_dtype(t) != descs[o].dtype)
                return tdm__err(rt, TDM_EDTYPE, "%s(%s): output %d has dtype %s, expected %s", fn,
                                d->name, o, tdm_dtype_name(tdm_tensor_dtype(t)),
                                tdm_dtype_name(descs[o].dtype));
            if (!same_desc(t, &descs[o])) {
                char got[128], want[128];
                shape_str(tdm_tensor_ndim(t), tdm_tensor_shape(t), got, sizeof got);
                shape_str(descs[o].ndim, descs[o].shape, want, sizeof want);
                return tdm__err(rt, TDM_ESHAPE, "%s(%s): output %d has shape %s, expected %s", fn,
                                d->name, o, got, want);
            }
        }
    } else if (!outputs && n_out > 0) {
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): outputs NULL needs a kernel with an infer "
                        "function",
                        fn, d->name);
    }

    bool in_arena = all_in_arena(inputs, n_in) && (!outputs || all_in_arena(outputs, n_out));
    const char *no_dev = NULL;
    if (!d->dev || !d->source)
        no_dev = "the kernel has no device version (source + dev launch)";
    for (int i = 0; i < n_in && !no_dev; i++)
        if (((d->whole_inputs >> i) & 1u) &&
            (inputs[i]->offset != 0 || tdm_tensor_nbytes(inputs[i]) != inputs[i]->storage->bytes))
            no_dev = "an input given whole is a view, not a whole tensor";
    else if (!outputs)
        no_dev = "streaming into ring buffers does not run on devices yet";
    rc = place(job, fn, d->cpu != NULL, in_arena,
               "a tensor is not in shared memory: create it with TDM_MEM_SHARED or call "
               "tdm_tensor_share() on it first",
               no_dev);
    if (rc < 0)
        return rc;
    if (job->on & TDM__ON_DEVICES) {
        char msg[256] = "";
        memset(&job->launch, 0, sizeof job->launch);
        rc = d->dev((const tdm_tensor *const *)inputs, n_in, params, params_size, &job->launch, msg,
                    sizeof msg);
        if (rc < 0)
            return tdm__err(rt, rc, "%s(%s): %s", fn, d->name, msg[0] ? msg : tdm_strerror(rc));
        const tdm_dev_launch *l = &job->launch;
        if (l->n_args > TDM_DEV_MAX_ARGS || l->items_per_row < 1 || l->dims < 0 || l->dims > 2 ||
            (l->dims == 2 &&
             (l->local[0] < 1 || l->local[1] < 1 || (int64_t)l->local[0] * l->local[1] > 1024)))
            return tdm__err(rt, TDM_EINVAL, "%s(%s): the kernel's device launch is malformed", fn,
                            d->name);
        if (k->builtin)
            snprintf(job->dev_key, sizeof job->dev_key, "builtin");
        else
            snprintf(job->dev_key, sizeof job->dev_key, "%s.v%u", d->name, d->kernel_version);
        job->dev_source = d->source;
    }
    tdm__jdesc *dl = &job->dl;
    dl->kind = TDM__JOB_MAP;
    dl->kcpu = d->cpu;
    dl->whole = d->whole_inputs;
    dl->n_in = n_in;
    dl->n_out = n_out;
    dl->n_workers = job->n_workers;
    job->n_items = rows;
    for (int i = 0; i < n_in; i++) {
        tdm_tensor *t = inputs[i];
        job->tin[i] = tdm_tensor_retain(t);
        dl->tin[i] = t;
        dl->in_base[i] = tdm__tensor_ptr(t);
        int64_t r = !((d->whole_inputs >> i) & 1u) ? rows
                    : tdm_tensor_ndim(t) >= 1           ? tdm_tensor_dim(t, 0)
                                                        : 1;
        dl->in_row_elems[i] = r ? tdm_tensor_numel(t) / r : 0;
        dl->in_row_bytes[i] = dl->in_row_elems[i] * (int64_t)tdm_dtype_size(tdm_tensor_dtype(t));
    }
    for (int o = 0; outputs && o < n_out; o++) {
        tdm_tensor *t = outputs[o];
        job->tout[o] = tdm_tensor_retain(t);
        dl->tout[o] = t;
        dl->out_base[o] = tdm__tensor_ptr(t);
        dl->out_row_elems[o] = rows ? tdm_tensor_numel(t) / rows : 0;
        dl->out_row_bytes[o] = dl->out_row_elems[o] * (int64_t)tdm_dtype_size(tdm_tensor_dtype(t));
    }
    return place_data(job, inputs, n_in, outputs, n_out);
}

/* Ring buffers for a streaming map with NULL outputs: max_in_flight slots of max_bs rows. */
static int setup_ring(tdm__job *job, const char *fn, const tdm_tensor_desc *descs)
{
    tdm_runtime *rt = job->rt;
    int64_t row_bytes = 0;
    tdm__jdesc *dl = &job->dl;
    for (int o = 0; o < dl->n_out; o++) {
        int64_t e = 1;
        for (int i = 1; i < descs[o].ndim; i++)
            if (tdm__mul_ovf(e, descs[o].shape[i], &e))
                return tdm__err(rt, TDM_EOVERFLOW, "%s: output row size overflows", fn);
        dl->out_row_elems[o] = e;
        dl->out_row_bytes[o] = e * (int64_t)tdm_dtype_size(descs[o].dtype);
        row_bytes += dl->out_row_bytes[o];
    }
    int64_t rows = job->opts.batch_size;
    if (!rows) {
        /* Slots of at most 4 MiB, and at most a fair share of the run. */
        rows = row_bytes > 0 ? (int64_t)(4 << 20) / row_bytes : job->n_items;
        int64_t share = job->n_items / (2 * (int64_t)job->n_workers);
        if (rows > share)
            rows = share;
        if (rows < 1)
            rows = 1;
    }
    job->max_bs = rows;
    size_t n = (size_t)job->max_in_flight * (size_t)dl->n_out;
    job->ring = calloc(n ? n : 1, sizeof *job->ring);
    if (!job->ring)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory (ring)", fn);
    for (int s = 0; s < job->max_in_flight; s++) {
        for (int o = 0; o < dl->n_out; o++) {
            tdm_tensor_desc d = descs[o];
            d.shape[0] = rows;
            /* Ring slots worker processes write into must be shared. */
            unsigned mem = (job->on & TDM__ON_PROCS) ? TDM_MEM_SHARED : TDM_MEM_HOST;
            int rc =
                tdm_tensor_empty(rt, d.dtype, d.ndim, d.shape, mem, &job->ring[s * dl->n_out + o]);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int setup_streaming(tdm__job *job, const char *fn)
{
    job->streaming = true;
    job->max_in_flight = job->opts.max_in_flight ? job->opts.max_in_flight : 2 * job->n_workers;
    job->free_slots = malloc((size_t)job->max_in_flight * sizeof *job->free_slots);
    job->done = malloc((size_t)job->max_in_flight * sizeof *job->done);
    if (!job->free_slots || !job->done)
        return tdm__err(job->rt, TDM_ENOMEM, "%s: out of memory (stream)", fn);
    /* Slot 0 on top of the stack, so a lone consumer sees slots 0, 1, 2, ... in order. */
    for (int i = 0; i < job->max_in_flight; i++)
        job->free_slots[i] = job->max_in_flight - 1 - i;
    job->n_free = job->max_in_flight;
    return 0;
}

/* Submits a prepared job to the pool (or finishes it at once when it has no items). */
static int start(tdm__job *job)
{
    job->fixed_bs = job->opts.batch_size;
    if (job->fixed_bs > job->max_bs)
        job->fixed_bs = job->max_bs;
    atomic_fetch_add(&job->rt->jobs_in_flight, 1);
    job->t_start = tdm__now_ns();
    if (job->n_items == 0) {
        job->finished = true;
        atomic_store(&job->done_flag, 1);
        job->t_end = job->t_start;
        if (job->on_finish)
            job->on_finish(job->on_finish_arg);
        return 0;
    }
    int rc = tdm__progress_start(job);
    if (rc < 0)
        return rc;
    tdm__log(job->rt, TDM_DEBUG_MAP, "%s: %lld item(s), batch %s %lld, %d worker(s)%s", job->what,
             (long long)job->n_items, job->fixed_bs ? "fixed" : "auto", (long long)job->fixed_bs,
             job->n_workers, job->streaming ? ", streaming" : "");
    tdm__pool_submit(job->rt->pool, job);
    return 0;
}

/* The common end of a map's and a parallel_for's set-up: publish the job and start it, or, if
 * a step failed (rc), free it. */
typedef struct {
    void (*fn)(void *);
    void *arg;
} tdm__hook;

static int launch(tdm__job *job, const char *fn, const void *params, size_t params_size, int rc,
                  const tdm__hook *hook, tdm__job **out)
{
    if (hook) {
        job->on_finish = hook->fn;
        job->on_finish_arg = hook->arg;
    }
    if (rc == 0)
        rc = finalize(job, fn, params, params_size);
    if (rc == 0)
        rc = start(job);
    if (rc < 0) {
        tdm__job_destroy(job);
        return rc;
    }
    *out = job;
    return 0;
}

/* Whether a map should open the devices first: a device policy always; AUTO and round-robin
 * when the kernel has a device version and the map moves at least TDM__AUTO_DEVICE_BYTES
 * (opening a driver costs tens of milliseconds, more than a small map takes). */
#define TDM__AUTO_DEVICE_BYTES ((uint64_t)16 << 20)
static bool wants_devices(tdm_runtime *rt, const tdm_map_opts *opts, const char *kernel,
                          tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs,
                          int n_out)
{
    tdm_policy p = opts && opts->size >= sizeof *opts ? opts->policy : TDM_POLICY_AUTO;
    if (p == TDM_POLICY_GPU || p == TDM_POLICY_OPENCL || p == TDM_POLICY_CUDA)
        return true;
    if ((p != TDM_POLICY_AUTO && p != TDM_POLICY_ROUND_ROBIN) || !kernel || !outputs ||
        (!rt->backends[TDM_BACKEND_OPENCL].enabled && !rt->backends[TDM_BACKEND_CUDA].enabled))
        return false;
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k || !k->def.dev || !k->def.source || !k->def.cpu || n_in < k->def.n_in_min ||
        n_in > k->def.n_in_max || n_out != k->def.n_out)
        return false; /* (wrong counts are reported by the validation that follows) */
    uint64_t bytes = 0;
    for (int i = 0; i < n_in + n_out; i++) {
        const tdm_tensor *t = i < n_in ? (inputs ? inputs[i] : NULL) : outputs[i - n_in];
        if (t)
            bytes += tdm_tensor_nbytes(t);
    }
    return bytes >= TDM__AUTO_DEVICE_BYTES;
}

static int prepare_map(tdm_runtime *rt, const char *fn, bool streaming, const char *kernel,
                       tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                       const void *params, size_t params_size, const tdm_map_opts *opts,
                       const tdm__hook *hook, tdm__job **out)
{
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", fn);
    int frc = tdm__check_fork(rt, fn);
    if (frc < 0)
        return frc;
    if (n_in < 0 || n_out < 0 || n_in > 16 || n_out > 16)
        return tdm__err(rt, TDM_EINVAL, "%s: tensor counts in %d / out %d not in 0..16", fn, n_in,
                        n_out);
    if (!outputs && n_out > 0 && !streaming)
        return tdm__err(rt, TDM_EINVAL, "%s: outputs is NULL", fn);
    /* Devices open on first use, before the job counts its workers. */
    if (wants_devices(rt, opts, kernel, inputs, n_in, outputs, n_out)) {
        int rc = tdm__devices_ensure(rt);
        if (rc < 0)
            return rc;
    }
    tdm__job *job = job_alloc(rt, fn);
    if (!job)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", fn);
    job->streaming = streaming;
    tdm_tensor_desc descs[16];
    memset(descs, 0, sizeof descs);
    int rc = check_opts(rt, fn, opts, &job->opts, streaming);
    if (rc == 0)
        rc = setup_map(job, fn, kernel, inputs, n_in, outputs, n_out, params, params_size, descs);
    if (rc == 0 && streaming)
        rc = setup_streaming(job, fn);
    if (rc == 0 && streaming && !outputs && n_out > 0)
        rc = setup_ring(job, fn, descs);
    if (rc == 0 && job->opts.policy == TDM_POLICY_ROUND_ROBIN && !job->opts.batch_size) {
        int64_t bs = job->n_items / (16 * (int64_t)(job->n_eligible > 0 ? job->n_eligible : 1));
        job->opts.batch_size = bs > 0 ? bs : 1;
    }
    if (rc == 0 && !streaming && job->only_worker < 0 &&
        job->opts.policy != TDM_POLICY_ROUND_ROBIN)
        rc = tdm__jsched_create(job);
    return launch(job, fn, params, params_size, rc, hook, out);
}

static int prepare_pfor(tdm_runtime *rt, const char *fn, bool streaming, int64_t n_items,
                        tdm_range_fn body, const void *params, size_t params_size,
                        const tdm_map_opts *opts, const tdm__hook *hook, tdm__job **out)
{
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", fn);
    int frc = tdm__check_fork(rt, fn);
    if (frc < 0)
        return frc;
    if (!body)
        return tdm__err(rt, TDM_EINVAL, "%s: fn is NULL", fn);
    if (n_items < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: n_items %lld is negative", fn, (long long)n_items);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", fn, params_size);
    tdm__job *job = job_alloc(rt, fn);
    if (!job)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", fn);
    job->dl.kind = TDM__JOB_PFOR;
    job->dl.fn = body;
    job->dl.n_workers = job->n_workers;
    job->n_items = n_items;
    snprintf(job->what, sizeof job->what, "parallel_for");
    int rc = check_opts(rt, fn, opts, &job->opts, streaming);
    if (rc == 0)
        /* Only an explicit PROCS policy sends a body to worker processes: it may write to
         * memory they do not share, which would be lost silently. */
        rc = place(job, fn, true, job->opts.policy == TDM_POLICY_PROCS, "",
                   "a parallel_for body is a host function: it runs on threads or processes");
    if (rc == 0 && streaming)
        rc = setup_streaming(job, fn);
    return launch(job, fn, params, params_size, rc, hook, out);
}

static int finish_sync(tdm__job *job, tdm_report *report)
{
    int rc = tdm__job_wait(job, report);
    job->wait_status_valid = true;
    tdm__job_destroy(job);
    return rc;
}

static int check_report(tdm_runtime *rt, const char *fn, const tdm_report *report)
{
    if (report && report->size < sizeof(tdm_report))
        return tdm__err(rt, TDM_EINVAL, "%s: report size %u is too small (use TDM_REPORT_INIT)", fn,
                        report->size);
    return 0;
}

int tdm_map(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs, int n_in,
            tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
            const tdm_map_opts *opts, tdm_report *report)
{
    int rc = check_report(rt, "tdm_map", report);
    tdm__job *job;
    if (rc == 0)
        rc = prepare_map(rt, "tdm_map", false, kernel, inputs, n_in, outputs, n_out, params,
                         params_size, opts, NULL, &job);
    return rc < 0 ? rc : finish_sync(job, report);
}

int tdm_parallel_for(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn, const void *params,
                     size_t params_size, const tdm_map_opts *opts, tdm_report *report)
{
    int rc = check_report(rt, "tdm_parallel_for", report);
    tdm__job *job;
    if (rc == 0)
        rc = prepare_pfor(rt, "tdm_parallel_for", false, n_items, fn, params, params_size, opts,
                          NULL, &job);
    return rc < 0 ? rc : finish_sync(job, report);
}

int tdm_map_async(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs, int n_in,
                  tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
                  const tdm_map_opts *opts, tdm_job **job)
{
    if (!job)
        return tdm__err(rt, TDM_EINVAL, "tdm_map_async: job is NULL");
    tdm__job *j;
    int rc = prepare_map(rt, "tdm_map_async", true, kernel, inputs, n_in, outputs, n_out, params,
                         params_size, opts, NULL, &j);
    *job = rc < 0 ? NULL : (tdm_job *)j;
    return rc;
}

int tdm_parallel_for_async(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn, const void *params,
                           size_t params_size, const tdm_map_opts *opts, tdm_job **job)
{
    if (!job)
        return tdm__err(rt, TDM_EINVAL, "tdm_parallel_for_async: job is NULL");
    tdm__job *j;
    int rc = prepare_pfor(rt, "tdm_parallel_for_async", true, n_items, fn, params, params_size,
                          opts, NULL, &j);
    *job = rc < 0 ? NULL : (tdm_job *)j;
    return rc;
}

int tdm__map_async_hook(tdm_runtime *rt, const char *fn, const char *kernel,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const void *params, size_t params_size, const tdm_map_opts *opts,
                        void (*hook)(void *), void *hook_arg, tdm__job **job)
{
    tdm__hook h = {hook, hook_arg};
    return prepare_map(rt, fn, false, kernel, inputs, n_in, outputs, n_out, params, params_size,
                       opts, &h, job);
}

int tdm__pfor_async_hook(tdm_runtime *rt, const char *name, int64_t n_items, tdm_range_fn fn,
                         const void *params, size_t params_size, const tdm_map_opts *opts,
                         void (*hook)(void *), void *hook_arg, tdm__job **job)
{
    tdm__hook h = {hook, hook_arg};
    return prepare_pfor(rt, name, false, n_items, fn, params, params_size, opts, &h, job);
}
