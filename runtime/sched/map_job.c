/* SPDX-License-Identifier: MIT */
/* A job's life: allocation, the descriptor workers read (on the heap or in the shared arena),
 * streaming ring buffers, start and teardown. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "sched/costmodel.h"
#include "sched/job.h"
#include "sched/job_sched.h"
#include "sched/map_internal.h"
#include "sched/sched_model.h"
#include "observe/progress_internal.h"
#include "core/core.h"

tdm__job *tdm__map_job_alloc(tdm_runtime *rt, const char *fn)
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
    atomic_init(&job->reoffered_ns, 0);
    atomic_init(&job->reoffers, 0);
    atomic_init(&job->bytes_to_device, 0);
    atomic_init(&job->bytes_from_device, 0);
    job->max_bs = INT64_MAX;
    (void)fn;
    return job;
}

/* Lanes a lazy job keeps for devices not yet opened when the runtime has not probed its
 * device backends (probing is most of opening them): devices past these do not join it. */
#define TDM__LAZY_DEVICE_LANES 8

bool tdm__map_job_lazy_devices(tdm__job *job)
{
    tdm_runtime *rt = job->rt;
    int n = TDM__LAZY_DEVICE_LANES;
    if (atomic_load_explicit(&rt->probed, memory_order_acquire)) {
        n = 0;
        for (int k = TDM_BACKEND_OPENCL; k <= TDM_BACKEND_CUDA; k++)
            if (rt->backends[k].enabled)
                n += rt->backends[k].n_devices;
        if (n == 0)
            return false; /* probed, and there is nothing to open */
    }
    if (n > TDM__MAX_DEVICES)
        n = TDM__MAX_DEVICES;
    /* Drivers are added to the pool after its threads and process drivers, by the one open. */
    int need = job->n_threads + job->n_procs + n;
    if (job->n_workers < need)
        job->n_workers = need;
    return true;
}

/* A CPU-only map of a named kernel teaches the stored model the CPU threads' time per item
 * (the median over the threads of busy time / items), so a later map that mixes in a device
 * starts with the CPU calibrated. Maps of a few batches say too little and are skipped. (Not
 * the threads' auto-batching estimate: it follows the last batches, the map's smallest, whose
 * fixed cost read as 30x the time per item of a 20M-element exp_sinh.) */
static void learn_cpu(tdm__job *job)
{
    if (!job->kernel || job->sched || job->fixed_bs || !job->ws || !(job->on & TDM__ON_THREADS) ||
        atomic_load(&job->first_error) != 0)
        return;
    double tpis[256];
    int k = 0;
    int64_t batches = 0, items = 0;
    for (int w = 0; w < job->n_threads && w < job->n_workers && k < 256; w++) {
        if (job->ws[w].items > 0 && job->ws[w].busy_ns > 0 && job->ws[w].batches >= 4) {
            tpis[k++] = (double)job->ws[w].busy_ns / (double)job->ws[w].items;
            batches += job->ws[w].batches;
            items += job->ws[w].items;
        }
    }
    tdm__costmodel *cm = batches >= 8 && k > 0 ? tdm__runtime_costmodel(job->rt) : NULL;
    if (!cm)
        return;
    /* (busy time folds the small fixed cost of a thread's batch in) */
    tdm__cm_put_read(cm, job->model_key, "cpu", tdm__cm_size_class(items / batches),
                     tdm__median(tpis, k), 0, batches > 1000000 ? 1000000 : (int)batches);
}

/* A map on the devices alone teaches the stored model each device's time per item
 * (tdm__job_run_device measures it over its batches), merged into the figure the scheduler reads
 * (tdm__cm_put_read), as learn_cpu does for the threads: a later map that mixes the device with
 * the CPU starts from what it ran at alone, not only from what the scheduler's maps measured
 * of it (PoCL, pi: stored at 2.32e5 ns per item by a cold map, where it explored beside the
 * threads and then alone, while it ran pi alone at 1.23x the threads' 2.47e5 together).
 * Counted as batches of a device's target length (4 ms: what the scheduler's batches of it
 * would be), at least its own batches: a pi map on PoCL is 4 batches, 0.3 s in all. A device
 * that ran under 16 of those in all says too little: its first batch's wake-ups weigh in (56
 * items of a 64-item pi map of 1000 terms on PoCL took 1.6 ms, 30x their time per item after,
 * and past 4 ms on busy cores). A map with batches run on the host instead (a device lost, out
 * of its memory) teaches nothing. */
#define TDM__LEARN_DEVICE_NS (16 * TDM__TARGET_DEVICE)
static void learn_devices(tdm__job *job)
{
    if (!job->kernel || job->sched || !job->ws || !tdm__job_whole(job) ||
        atomic_load(&job->fallback_batches) != 0)
        return;
    tdm__costmodel *cm = NULL;
    for (int w = 0; w < job->n_workers; w++) {
        const tdm__wstat *ws = &job->ws[w];
        const tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
        if (tdm__worker_kind(job, w) != TDM__ON_DEVICES || !ds || !(ws->learn_tpi > 0) ||
            !(ws->learn_ns >= TDM__LEARN_DEVICE_NS) || ws->items <= 0 || ws->batches <= 0)
            continue;
        if (!cm && !(cm = tdm__runtime_costmodel(job->rt)))
            return;
        char lane[96];
        tdm__device_lane_key(lane, sizeof lane, ds);
        double n = ws->learn_ns / TDM__TARGET_DEVICE;
        if (n < (double)ws->batches)
            n = (double)ws->batches;
        tdm__cm_put_read(cm, job->model_key, lane, tdm__cm_size_class(ws->items / ws->batches),
                         ws->learn_tpi, ws->learn_lat, n > 1e6 ? 1000000 : (int)n);
    }
}

/* A map that ended well with the devices left closed, as the stored model said: one more map
 * run without each device it holds for the kernel (tdm__cm_measure_again measures a device's
 * figure again after a few). */
static void pass_devices(tdm__job *job)
{
    if (!job->devices_skipped || !job->kernel || !tdm__job_whole(job))
        return;
    tdm__costmodel *cm = tdm__runtime_costmodel(job->rt);
    if (cm)
        tdm__cm_pass_devices(cm, job->model_key);
}

void tdm__job_destroy(tdm__job *job)
{
    if (!job)
        return;
    if (job->finished) {
        learn_cpu(job);
        learn_devices(job);
        pass_devices(job);
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
            tdm__ring_give(job->rt, job->ring[i]); /* (kept for the next, or released) */
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
int tdm__map_finalize(tdm__job *job, const char *fn, const void *params, size_t psize)
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

/* Ring buffers for a streaming map with NULL outputs: max_in_flight slots of max_bs rows. */
int tdm__map_setup_ring(tdm__job *job, const char *fn, const tdm_tensor_desc *descs)
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
    if (rows > job->n_items) /* (a batch_size past the rows: one batch of them all) */
        rows = job->n_items > 0 ? job->n_items : 1;
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
            tdm_tensor **t = &job->ring[s * dl->n_out + o];
            if (mem == TDM_MEM_HOST) /* (the last streamed map's, if it had these shapes) */
                *t = tdm__ring_take(rt, d.dtype, d.ndim, d.shape);
            int rc = *t ? 0 : tdm_tensor_empty(rt, d.dtype, d.ndim, d.shape, mem, t);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int tdm__map_setup_streaming(tdm__job *job, const char *fn)
{
    job->streaming = true;
    job->max_in_flight = job->opts.max_in_flight ? job->opts.max_in_flight : 2 * job->n_workers;
    /* (no more batches can be in flight than there are items: no slot, or ring buffer, for more;
     * 65536 asked over one row allocated 65536 ring slots) */
    if (job->max_in_flight > job->n_items)
        job->max_in_flight = job->n_items > 0 ? (int)job->n_items : 1;
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
int tdm__map_start(tdm__job *job)
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
