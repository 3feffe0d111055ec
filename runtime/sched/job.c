/* SPDX-License-Identifier: MIT */
/* Running a job's batches on a worker, streaming finished batches, waiting, reporting. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/device.h"
#include "sched/job.h"
#include "sched/job_sched.h"
#include "observe/progress_internal.h"
#include "sched/spin.h"
#include "observe/trace.h"

/* Auto batching aims at batches of about this long: long enough that the ~0.1 µs cost of a
 * batch is noise, short enough that the tail of a run balances across workers. */
#define TDM__TARGET_BATCH_NS 100000.0

/* Claims up to `want` items. Returns false when nothing is left or the job stopped. */
static bool claim(tdm__job *job, int64_t want, int64_t *begin, int64_t *end)
{
    int64_t n = job->n_items;
    if (want < 1)
        want = 1;
    long long cur = atomic_load_explicit(&job->cursor, memory_order_relaxed); /* atomic_llong */
    for (;;) {
        /* The cursor never passes n: every claim takes at most what is left (a fetch_add of a
         * huge fixed batch size would overflow it). */
        if (cur >= n)
            return false;
        int64_t left = n - cur;
        if (job->fixed_bs) {
            int64_t b = want < left ? want : left;
            if (atomic_compare_exchange_weak_explicit(&job->cursor, &cur, cur + b,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                *begin = cur;
                *end = cur + b;
                return true;
            }
            continue;
        }
        /* Guided self-scheduling: never take more than a share of what is left, so the last
         * batches are small and finish together. */
        int64_t share = left / (2 * (int64_t)job->n_eligible);
        int64_t b = want;
        if (b > share)
            b = share;
        if (b > job->max_bs)
            b = job->max_bs;
        if (b < 1)
            b = 1;
        if (b > left)
            b = left;
        if (atomic_compare_exchange_weak_explicit(&job->cursor, &cur, cur + b, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *begin = cur;
            *end = cur + b;
            return true;
        }
    }
}

/* Maps a batch's rows of shared (memfd) outputs into this process's page tables before the
 * kernel writes them. Pages of the shared arena that another process wrote first (the parent,
 * for a worker; a worker, for the parent's threads) are not mapped in this one yet, and a write
 * takes one fault per 4 KiB page: about 1 us each here, 100 ms for 400 MB. A read fault maps
 * its whole fault-around window (64 KiB by default), and writable, since shmem needs no write
 * notification: the same 400 MB then cost 13 ms. So one byte is read every 64 KiB of the rows.
 * On pages mapped already that is a few loads per batch, of lines the kernel writes next; on
 * pages not allocated yet the read allocates its page as the write would have. Only bytes of
 * the batch's own rows are read, which no other worker writes meanwhile. Private memory is left
 * alone: there a read fault maps the zero page and the write faults again. */
static void prefault_outputs(const tdm__jdesc *d, int64_t begin, int64_t end)
{
    const uintptr_t step = (uintptr_t)64 << 10;
    for (int k = 0; k < d->n_out; k++) {
        if (!((d->shared_out >> k) & 1u))
            continue;
        const volatile uint8_t *lo =
            (const volatile uint8_t *)(d->out_base[k] + begin * d->out_row_bytes[k]);
        uintptr_t n = (uintptr_t)((end - begin) * d->out_row_bytes[k]);
        if (n == 0)
            continue;
        (void)lo[0];
        uintptr_t a = (uintptr_t)lo;
        for (uintptr_t off = ((a + step) & ~(step - 1)) - a; off < n; off += step)
            (void)lo[off];
    }
}

int tdm__run_batch(const tdm__jdesc *d, int64_t begin, int64_t end, tdm_task *task)
{
    if (d->kind == TDM__JOB_PFOR)
        return d->fn(d->params, begin, end, task);
    if (d->shared_out && !d->ring_base)
        prefault_outputs(d, begin, end);

    const void *in[16];
    void *out[16];
    for (int k = 0; k < d->n_in; k++)
        in[k] = d->in_base[k] + ((d->whole >> k) & 1u ? 0 : begin * d->in_row_bytes[k]);
    for (int k = 0; k < d->n_out; k++) {
        if (d->ring_base) /* streaming into ring slots: each batch starts at its slot's row 0 */
            out[k] = d->ring_base[task->slot * d->n_out + k];
        else
            out[k] = d->out_base[k] + begin * d->out_row_bytes[k];
    }
    tdm_kernel_args a = {
        .begin = begin,
        .end = end,
        .n_in = d->n_in,
        .n_out = d->n_out,
        .in = in,
        .out = out,
        .tin = d->tin,
        .tout = d->ring_t ? &d->ring_t[task->slot * d->n_out] : d->tout,
        .in_row_elems = d->in_row_elems,
        .out_row_elems = d->out_row_elems,
        .params = d->params,
        .params_size = d->params_size,
        .worker = task->worker,
    };
    return d->kcpu(&a);
}

static void record_error(tdm__job *job, int rc, int64_t batch, int64_t begin, int64_t end, int w,
                         const char *detail)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&job->first_error, &expected, rc)) {
        /* Only the winner writes these; they are read after the job finished. */
        job->err_batch = batch;
        job->err_begin = begin;
        job->err_end = end;
        job->err_worker = w;
        snprintf(job->err_detail, sizeof job->err_detail, "%s", detail);
    }
    if (job->opts.on_error == TDM_ON_ERROR_STOP) {
        int zero = 0;
        atomic_compare_exchange_strong(&job->d->stop, &zero, 1);
    }
}

/* Whether a completion may offer the job again to the workers that declined it: not within
 * TDM__REOFFER_NS of the last time, nor while a host-CPU device explores alone (and then this
 * caller does). Each offer wakes a standing-down
 * driver, which takes a core from the workers running the map to decline again. Offered every
 * 8 completions (and spinning 50 us after each decline: see the pool's worker loop), a
 * host-CPU device standing down through an AUTO pi map of 0.5 s on 2 cores (2000 items of
 * 1.2M terms, one a batch) left the threads 0.96-0.98 of the speed they ran the same map at
 * under policy CPU on the same runtime (medians of 8 pairs, three runs); offered at most every
 * 5 ms, and waiting without the spin, 0.99-1.00 in runs taking turns with them. (The
 * calibration changes that may change a side still offer it at once: offer_again in
 * job_sched.c.) */
static bool reoffer_due(tdm__job *job)
{
    /* (the last one read before the clock: read after, another completion's newer time could
     * make now - last wrap round) */
    uint64_t last = atomic_load_explicit(&job->reoffered_ns, memory_order_relaxed);
    uint64_t now = tdm__now_ns();
    if (now <= last || now - last < TDM__REOFFER_NS || tdm__jsched_device_explores(job))
        return false;
    return atomic_compare_exchange_strong_explicit(&job->reoffered_ns, &last, now,
                                                   memory_order_relaxed, memory_order_relaxed);
}

void tdm__job_batch_done(tdm__job *job, int w, const tdm_task *task, int64_t begin, int64_t end,
                         int rc, const char *detail)
{
    tdm__wstat *ws = &job->ws[w];
    int64_t n = end - begin;
    /* Items count as completed only when their batch succeeded (the report's `items`). */
    if (rc == 0)
        ws->items += n;
    ws->batches++;
    if (ws->bs_min == 0 || n < ws->bs_min)
        ws->bs_min = n;
    if (n > ws->bs_max)
        ws->bs_max = n;
    if (n > task->reported)
        atomic_fetch_add_explicit(&ws->progress, n - task->reported, memory_order_relaxed);
    if (rc > 0)
        rc = TDM_EKERNEL;
    /* A body that returns early because the job was cancelled is not a failure. */
    if (rc < 0 && atomic_load_explicit(&job->d->stop, memory_order_relaxed) != 2) {
        atomic_fetch_add_explicit(&job->failed_batches, 1, memory_order_relaxed);
        record_error(job, rc, task->batch, begin, end, w, detail);
    }
    if (job->streaming) {
        pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
        pthread_mutex_lock(mu);
        if (job->waited) {
            /* Its waiter reads no results (tdm_job_wait, tdm_job_wait_for): the slot is free
             * at once, and nobody is woken for it (the job's end wakes the waiter). */
            if (job->n_free++ == 0) /* (a worker may be waiting for a slot) */
                tdm__pool_kick(job->rt->pool);
            job->free_slots[job->n_free - 1] = task->slot;
        } else {
            job->done[job->n_done++] = (tdm__done){task->batch, begin, end, rc, w, task->slot};
            pthread_cond_broadcast(&job->cv);
        }
        pthread_mutex_unlock(mu);
    }
    if (job->declined_gen) {
        /* Workers that declined may see things differently now: offer them the job again
         * (at most every TDM__REOFFER_NS, so a standing-down device is not woken per CPU
         * batch: reoffer_due), but not while a host-CPU device explores alone: its
         * exploration's end calls them back, and woken sooner they would only stand down
         * again, on the cores its threads are starting on (tdm__jsched_device_explores). */
        atomic_fetch_add_explicit(&job->done_gen, 1, memory_order_acq_rel);
        bool declined = atomic_load_explicit(&job->n_declined, memory_order_relaxed) > 0;
        bool again = declined && reoffer_due(job);
        if (again)
            atomic_fetch_add_explicit(&job->reoffers, 1, memory_order_relaxed);
        if (again || (declined && tdm__job_exhausted(job))) {
            pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
            pthread_mutex_lock(mu);
            tdm__pool_kick(job->rt->pool);
            pthread_mutex_unlock(mu);
        }
    }
}

void tdm__job_decline(tdm__job *job, int w)
{
    job->declined_gen[w] = atomic_load_explicit(&job->done_gen, memory_order_acquire);
    atomic_fetch_add_explicit(&job->n_declined, 1, memory_order_relaxed);
}

bool tdm__job_claim(tdm__job *job, int64_t want, int64_t *begin, int64_t *end)
{
    return claim(job, want, begin, end);
}

bool tdm__job_claim_exact(tdm__job *job, int64_t want, int64_t *begin, int64_t *end)
{
    if (atomic_load_explicit(&job->d->stop, memory_order_relaxed))
        return false;
    long long cur = atomic_load_explicit(&job->cursor, memory_order_relaxed);
    for (;;) {
        if (cur >= job->n_items)
            return false;
        int64_t b = want < job->n_items - cur ? want : job->n_items - cur;
        if (b > job->max_bs)
            b = job->max_bs;
        if (atomic_compare_exchange_weak_explicit(&job->cursor, &cur, cur + b, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *begin = cur;
            *end = cur + b;
            return true;
        }
    }
}

/* The batch of about target_ns at t_item ns per item: at least 1, at most INT64_MAX / 64 (so
 * 8x that cannot overflow). */
static int64_t batch_for(double target_ns, double t_item)
{
    double n = target_ns / t_item;
    return n < 1.0 ? 1 : n > (double)(INT64_MAX / 64) ? INT64_MAX / 64 : (int64_t)n;
}

void tdm__job_run(tdm__job *job, int w)
{
    if (tdm__worker_kind(job, w) == TDM__ON_DEVICES) {
        tdm__job_run_device(job, w);
        return;
    }
    tdm__jsched_presence(job, w, 1);
    tdm__wstat *ws = &job->ws[w];
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    bool in_proc = w >= job->n_threads;
    /* A batch sent to a worker process costs a few microseconds of hand-off: aim longer. So
     * does each batch of a streaming job: its consumer wakes for it, on a core the workers are
     * using when there are as many workers as cores (bench_stream, exp_sinh over 8M items on 2
     * threads: at 100 us batches the streamed map ran at 0.83x the blocking one, at 1 ms
     * 0.97x). */
    double target_ns =
        in_proc || job->streaming ? TDM__TARGET_BATCH_NS * 10.0 : TDM__TARGET_BATCH_NS;
    /* Auto batching starts at one item, or, for a worker back in a job it left (a streaming
     * job's worker leaves whenever every result slot is taken, and comes back as the consumer
     * frees one), at the size its time per item there asked for: starting again at one item
     * each time made exp_sinh over 8M items, streamed, 870 to 3,400 batches, most of them a few
     * items, 1.4-3.2x the time of the same map through tdm_map. */
    double t_item = ws->tpi > 0 ? ws->tpi : -1.0;
    int64_t want = job->fixed_bs ? job->fixed_bs : t_item > 0 ? batch_for(target_ns, t_item) : 1;
    char detail[256];

    while (!atomic_load_explicit(&job->d->stop, memory_order_relaxed)) {
        tdm_task task = {job->d, w, -1, 0, 0};
        int64_t begin, end;
        double est = 0;
        if (job->sched) {
            int64_t b = tdm__jsched_want(job, w, &est);
            if (b == 0) {
                /* A faster worker finishes it sooner: leave the job (the pool may have another
                 * for this worker) until one of its batches completes. */
                if (!tdm__job_exhausted(job))
                    tdm__job_decline(job, w);
                break;
            }
            if (!tdm__job_claim_exact(job, b, &begin, &end)) {
                tdm__jsched_claimed(job, w, b, 0, est);
                break;
            }
            tdm__jsched_claimed(job, w, b, end - begin, est);
        } else if (job->streaming) {
            pthread_mutex_lock(mu);
            bool ok = job->n_free > 0 && claim(job, want, &begin, &end);
            if (ok)
                task.slot = job->free_slots[--job->n_free];
            pthread_mutex_unlock(mu);
            if (!ok)
                break;
        } else if (!claim(job, want, &begin, &end)) {
            break;
        }
        task.batch = atomic_fetch_add_explicit(&job->next_batch, 1, memory_order_relaxed);

        uint64_t t0 = tdm__now_ns();
        detail[0] = '\0';
        int rc = in_proc ? tdm__procs_run_batch(job, w - job->n_threads, begin, end, &task, detail,
                                                sizeof detail)
                         : tdm__run_batch(job->d, begin, end, &task);
        uint64_t dt = tdm__now_ns() - t0;
        ws->busy_ns += dt;
        tdm__trace_span(job->rt, w, job->what, task.batch, begin, end, rc, t0, t0 + dt);
        tdm__job_batch_done(job, w, &task, begin, end, rc, detail);

        int64_t n = end - begin;
        if (job->sched) {
            tdm__jsched_done(job, w, n, (double)dt, true);
        } else if (!job->fixed_bs) {
            double per = (double)dt / (double)n;
            if (per < 0.25)
                per = 0.25;
            t_item = t_item < 0 ? per : 0.5 * t_item + 0.5 * per;
            int64_t desired = batch_for(target_ns, t_item);
            want = desired < want * 8 ? desired : want * 8;
        }
    }
    if (t_item > 0)
        ws->tpi = t_item;
    tdm__jsched_presence(job, w, 0);
}

/* ---- streaming -------------------------------------------------------------------------- */

static void release_views(tdm__job *job)
{
    for (int k = 0; k < 16; k++) {
        tdm_tensor_release(job->views[k]);
        job->views[k] = NULL;
    }
}

/* Returns the held slot to the free stack; pool mutex held. */
static void release_held_locked(tdm__job *job)
{
    if (job->held_slot >= 0) {
        job->free_slots[job->n_free++] = job->held_slot;
        job->held_slot = -1;
        tdm__pool_kick(job->rt->pool);
    }
}

/* Index in job->done of the next result to hand out, or -1. Pool mutex held. */
static int pick_done_locked(tdm__job *job)
{
    if (job->n_done == 0)
        return -1;
    if (job->opts.order == TDM_ORDER_COMPLETION)
        return 0;
    int best = -1;
    for (int i = 0; i < job->n_done; i++) {
        if (job->done[i].begin == job->next_begin)
            return i;
        if (best < 0 || job->done[i].begin < job->done[best].begin)
            best = i;
    }
    /* After a stop, batches past the failing one never ran: once nothing else can arrive,
     * hand out what did run, in order. */
    return job->finished ? best : -1;
}

int tdm_job_next(tdm_job *j, tdm_batch_result *r)
{
    tdm__job *job = (tdm__job *)j;
    if (!job || !r)
        return tdm__err(job ? job->rt : NULL, TDM_EINVAL, "tdm_job_next: NULL argument");
    int frc = tdm__check_fork(job->rt, "tdm_job_next");
    if (frc < 0)
        return frc;
    if (job->waited)
        return TDM_EDONE;
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    release_views(job);
    pthread_mutex_lock(mu);
    release_held_locked(job);
    int i;
    while ((i = pick_done_locked(job)) < 0) {
        if (job->finished && job->n_done == 0) {
            pthread_mutex_unlock(mu);
            return TDM_EDONE;
        }
        pthread_cond_wait(&job->cv, mu);
    }
    tdm__done d = job->done[i];
    /* Keep completion order FIFO: shift the rest down (n_done <= max_in_flight, small). */
    memmove(&job->done[i], &job->done[i + 1], (size_t)(job->n_done - i - 1) * sizeof d);
    job->n_done--;
    if (d.end > job->next_begin)
        job->next_begin = d.end;
    job->held_slot = d.slot;
    pthread_mutex_unlock(mu);

    memset(r, 0, sizeof *r);
    r->batch = d.batch;
    r->begin = d.begin;
    r->end = d.end;
    r->status = d.status;
    r->worker = d.worker;
    r->slot = d.slot;
    if (job->ring) {
        for (int k = 0; k < job->d->n_out; k++) {
            int rc = tdm_tensor_view_rows(job->ring[d.slot * job->d->n_out + k], 0, d.end - d.begin,
                                          &job->views[k]);
            if (rc < 0) {
                release_views(job);
                return rc;
            }
        }
        r->out = job->views;
        r->n_out = job->d->n_out;
    }
    return 0;
}

/* ---- waiting and reporting ---------------------------------------------------------------- */

static void fill_report(tdm__job *job, int status, tdm_report *rep)
{
    uint32_t size = rep->size;
    memset(rep, 0, sizeof *rep);
    rep->size = size;
    snprintf(rep->what, sizeof rep->what, "%s", job->what);
    rep->status = status;
    rep->wall_s = (double)(job->t_end - job->t_start) * 1e-9;
    rep->items_total = job->n_items;
    rep->first_error = atomic_load(&job->first_error);
    rep->first_error_batch = rep->first_error ? job->err_batch : -1;
    rep->first_error_begin = rep->first_error ? job->err_begin : -1;
    rep->first_error_end = rep->first_error ? job->err_end : -1;
    int nw = tdm__job_workers(job);
    int shown = nw < TDM_REPORT_MAX_WORKERS ? nw : TDM_REPORT_MAX_WORKERS;
    rep->n_workers = shown;
    for (int w = 0; w < nw; w++) {
        const tdm__wstat *ws = &job->ws[w];
        tdm_report_worker *row = &rep->workers[w < shown ? w : shown - 1];
        unsigned kind = tdm__worker_kind(job, w);
        if (kind == TDM__ON_THREADS) {
            row->kind = TDM_BACKEND_CPU_THREADS;
            row->index = w;
        } else if (kind == TDM__ON_PROCS) {
            row->kind = TDM_BACKEND_CPU_PROCS;
            row->index = w - job->n_threads;
        } else {
            const tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
            row->kind = ds ? ds->info.kind : TDM_BACKEND_OPENCL;
            row->index = ds ? ds->info.index : 0;
        }
        row->items += ws->items;
        row->batches += ws->batches;
        row->busy_s += (double)ws->busy_ns * 1e-9;
        row->bytes += ws->bytes;
        if (job->sched && w < job->sched->n)
            row->est_s += job->sched->lanes[w].est_sum_ns * 1e-9;
        rep->items += ws->items;
        rep->batches += ws->batches;
        if (ws->bs_max > rep->batch_size)
            rep->batch_size = ws->bs_max;
        if (ws->bs_min && (rep->batch_size_min == 0 || ws->bs_min < rep->batch_size_min))
            rep->batch_size_min = ws->bs_min;
    }
    rep->failed_batches = atomic_load(&job->failed_batches);
    rep->fallback_batches = atomic_load(&job->fallback_batches);
    rep->bytes_to_device = atomic_load(&job->bytes_to_device);
    rep->bytes_from_device = atomic_load(&job->bytes_from_device);
}

/* Waits for the job to finish, until `until` (CLOCK_MONOTONIC, job->cv's clock) or without a
 * limit (NULL); the results of a streaming job nobody has read are dropped, which frees their
 * slots so that the job can go on. Pool mutex held. True when the job has finished. */
static bool wait_finished_locked(tdm__job *job, const struct timespec *until)
{
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    if (job->streaming) {
        job->waited = true;
        release_held_locked(job);
    }
    for (;;) {
        if (job->streaming && job->n_done > 0) {
            for (int i = 0; i < job->n_done; i++)
                job->free_slots[job->n_free++] = job->done[i].slot;
            job->n_done = 0;
            tdm__pool_kick(job->rt->pool);
        }
        if (job->finished || tdm__pool_try_finish_locked(job->rt->pool, job))
            return true;
        if (!until)
            pthread_cond_wait(&job->cv, mu);
        else if (pthread_cond_timedwait(&job->cv, mu, until) == ETIMEDOUT)
            return job->finished || tdm__pool_try_finish_locked(job->rt->pool, job);
    }
}

int tdm__job_wait(tdm__job *job, tdm_report *report)
{
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    if (!job->streaming) /* a short job is often done within microseconds: skip the sleep */
        tdm__spin_until_set(&job->done_flag, TDM__SPIN_NS);
    pthread_mutex_lock(mu);
    if (!tdm__progress_wait_locked(job, wait_finished_locked)) /* (a blocking map's display) */
        wait_finished_locked(job, NULL);
    pthread_mutex_unlock(mu);
    tdm__progress_stop(job);
    release_views(job);

    int status = atomic_load(&job->first_error);
    if (status == 0 && atomic_load(&job->d->stop) == 2)
        status = TDM_ECANCELED;
    if (report)
        fill_report(job, status, report);
    if (status == TDM_ECANCELED)
        return tdm__err(job->rt, status, "%s: cancelled after %lld of %lld items", job->what,
                        (long long)tdm__job_items_done(job), (long long)job->n_items);
    if (status < 0)
        return tdm__err(job->rt, status,
                        "%s: batch %lld (items %lld..%lld) failed on worker %d: %s (%s)%s%s",
                        job->what, (long long)job->err_batch, (long long)job->err_begin,
                        (long long)job->err_end, job->err_worker, tdm_status_name(status),
                        tdm_strerror(status), job->err_detail[0] ? ": " : "", job->err_detail);
    return 0;
}

int tdm__job_workers(tdm__job *job)
{
    int n = job->n_workers;
    const tdm__jsched *s = job->sched; /* (a lazy job always has one: it mixes kinds) */
    while (job->lazy_devices && s && n > job->n_threads + job->n_procs && n - 1 < s->n &&
           !atomic_load(&s->lanes[n - 1].joined))
        n--;
    return n;
}

int64_t tdm__job_items_done(tdm__job *job)
{
    int64_t done = 0;
    for (int w = 0; w < job->n_workers; w++)
        done += atomic_load_explicit(&job->ws[w].progress, memory_order_relaxed);
    return done;
}

int tdm_job_wait(tdm_job *j, tdm_report *report)
{
    tdm__job *job = (tdm__job *)j;
    if (!job)
        return tdm__err(NULL, TDM_EINVAL, "tdm_job_wait: job is NULL");
    if (report && report->size < sizeof(tdm_report))
        return tdm__err(job->rt, TDM_EINVAL,
                        "tdm_job_wait: report size %u is too small (use "
                        "TDM_REPORT_INIT)",
                        report->size);
    int frc = tdm__check_fork(job->rt, "tdm_job_wait");
    if (frc < 0)
        return frc;
    if (job->wait_status_valid)
        return tdm__err(job->rt, TDM_EINVAL, "tdm_job_wait: already waited for this job");
    job->wait_status = tdm__job_wait(job, report);
    job->wait_status_valid = true;
    return job->wait_status;
}

int tdm_job_wait_for(tdm_job *j, double timeout_s)
{
    tdm__job *job = (tdm__job *)j;
    if (!job)
        return tdm__err(NULL, TDM_EINVAL, "tdm_job_wait_for: job is NULL");
    if (!(timeout_s >= 0))
        return tdm__err(job->rt, TDM_EINVAL, "tdm_job_wait_for: timeout %g s is not >= 0",
                        timeout_s);
    int frc = tdm__check_fork(job->rt, "tdm_job_wait_for");
    if (frc < 0)
        return frc;
    /* (job->cv runs on CLOCK_MONOTONIC, tdm__now_ns()'s clock; at most ~31 years ahead) */
    uint64_t at = tdm__now_ns() + (uint64_t)((timeout_s < 1e9 ? timeout_s : 1e9) * 1e9);
    struct timespec until = {(time_t)(at / 1000000000ull), (long)(at % 1000000000ull)};
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    pthread_mutex_lock(mu);
    bool done = wait_finished_locked(job, &until);
    pthread_mutex_unlock(mu);
    return done ? 1 : 0;
}

int tdm_job_cancel(tdm_job *j)
{
    tdm__job *job = (tdm__job *)j;
    if (!job)
        return tdm__err(NULL, TDM_EINVAL, "tdm_job_cancel: job is NULL");
    int zero = 0;
    atomic_compare_exchange_strong(&job->d->stop, &zero, 2);
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    pthread_mutex_lock(mu);
    tdm__pool_try_finish_locked(job->rt->pool, job);
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(mu);
    return 0;
}

void tdm_job_free(tdm_job *j)
{
    tdm__job *job = (tdm__job *)j;
    if (!job)
        return;
    if (tdm__check_fork(job->rt, "tdm_job_free") < 0)
        return; /* a forked child: the job is the parent's (nothing here could finish it) */
    if (!job->wait_status_valid)
        (void)tdm__job_wait(job, NULL);
    tdm__job_destroy(job);
}

/* ---- task accessors ------------------------------------------------------------------------ */

int tdm_task_worker(const tdm_task *task)
{
    return task ? task->worker : -1;
}

int tdm_task_slot(const tdm_task *task)
{
    return task ? task->slot : -1;
}

int64_t tdm_task_batch(const tdm_task *task)
{
    return task ? task->batch : -1;
}

void *tdm_task_tensor_data(const tdm_task *task, int i)
{
    if (!task || i < 0 || i >= task->d->n_in)
        return NULL;
    return task->d->in_base[i];
}

const tdm_tensor *tdm_task_tensor(const tdm_task *task, int i)
{
    if (!task || i < 0 || i >= task->d->n_in)
        return NULL;
    return task->d->tin[i];
}

void tdm_task_progress(tdm_task *task, int64_t n)
{
    if (!task || n <= 0)
        return;
    task->reported += n;
    atomic_fetch_add_explicit(&task->d->ws[task->worker].progress, n, memory_order_relaxed);
}

int tdm_task_cancelled(const tdm_task *task)
{
    return task && atomic_load_explicit(&task->d->stop, memory_order_relaxed) != 0;
}
