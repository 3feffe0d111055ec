/* SPDX-License-Identifier: MIT */
/* The CPU thread backend: a fixed pool of workers that pull batches from the jobs in flight.
 *
 * Workers sleep on a condition variable when no job is runnable (an idle runtime uses no CPU).
 * Inside a job, a worker claims batches with one atomic operation each (runtime/sched/job.c), so
 * load balancing is dynamic self-scheduling: a worker that finishes early simply claims more,
 * and batches shrink towards the end of the range so no core waits on a straggler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/job.h"
#include "sched/spin.h"

struct tdm__pool {
    tdm_runtime *rt;
    int n;   /* workers started (threads, process drivers, then device drivers) */
    int cap; /* room in threads[] / args[]: arrays never move, workers hold &args[i] */
    pthread_t *threads;
    struct tdm__worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work arrived, or shutdown */
    tdm__job *head;
    int n_jobs;
    bool shutdown;
    /* Bumped (under mu) whenever a job arrives or becomes runnable again, so a worker that
     * just ran out of work can spin on it for a few microseconds before sleeping: a burst of
     * small maps (a training loop) then never pays a futex wake-up per call. */
    atomic_uint gen;
};

struct tdm__worker_arg {
    tdm__pool *pool;
    int index;
};

pthread_mutex_t *tdm__pool_mutex(tdm__pool *pool)
{
    return &pool->mu;
}

static void unlink_locked(tdm__pool *pool, tdm__job *job)
{
    if (!job->in_list)
        return;
    for (tdm__job **p = &pool->head; *p; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    job->next = NULL;
    job->in_list = false;
    pool->n_jobs--;
}

bool tdm__pool_try_finish_locked(tdm__pool *pool, tdm__job *job)
{
    if (job->finished)
        return true;
    if (job->active > 0 || !tdm__job_exhausted(job))
        return false;
    unlink_locked(pool, job);
    job->finished = true;
    job->t_end = tdm__now_ns();
    atomic_store_explicit(&job->done_flag, 1, memory_order_release);
    pthread_cond_broadcast(&job->cv);
    if (job->on_finish)
        job->on_finish(job->on_finish_arg);
    return true;
}

/* Picks a runnable job, starting at a different one per worker so concurrent jobs share the
 * pool instead of the first one starving the others. */
static tdm__job *pick_locked(tdm__pool *pool, int w)
{
    if (pool->n_jobs == 0)
        return NULL;
    int skip = w % pool->n_jobs;
    tdm__job *first = NULL;
    for (tdm__job *j = pool->head; j; j = j->next) {
        if (!tdm__job_runnable(j, w))
            continue;
        if (!first)
            first = j;
        if (skip-- <= 0)
            return j;
    }
    return first;
}

static void *worker_main(void *p)
{
    struct tdm__worker_arg *arg = p;
    tdm__pool *pool = arg->pool;
    int w = arg->index;
    pthread_mutex_lock(&pool->mu);
    bool declined = false; /* it left a scheduled job with work left, and has not slept since */
    while (!pool->shutdown) {
        tdm__job *job = pick_locked(pool, w);
        if (!job) {
            unsigned g = atomic_load_explicit(&pool->gen, memory_order_relaxed);
            pthread_mutex_unlock(&pool->mu);
            /* (a worker that has just declined a scheduled job, leaving it work, sleeps without
             * spinning: it is offered the job again by a wake-up (job.c, reoffer_due), and its
             * spin ran on a core the job's workers were using, after each decline; the next
             * time it finds nothing to do, it spins again) */
            if (!declined)
                tdm__spin_while_equal(&pool->gen, g, TDM__SPIN_NS);
            pthread_mutex_lock(&pool->mu);
            /* Re-checked under the mutex, where submit bumps it: no wake-up can be lost. */
            if (atomic_load_explicit(&pool->gen, memory_order_relaxed) == g && !pool->shutdown)
                pthread_cond_wait(&pool->cv, &pool->mu);
            declined = false;
            continue;
        }
        job->active++;
        pthread_mutex_unlock(&pool->mu);
        tdm__job_run(job, w);
        pthread_mutex_lock(&pool->mu);
        /* (only a scheduled job is declined; a streaming job's worker leaves it for a free
         * result slot, which a consumer gives back at once: it spins as before) */
        declined = job->declined_gen && !tdm__job_exhausted(job);
        job->active--;
        if (job->active == 0 && declined && atomic_load(&job->n_declined) > 0) {
            /* Everyone left a job with work left (each declined, counting on another): offer
             * it to all of them again; the next to ask finds nobody else inside and takes it. */
            atomic_fetch_add(&job->done_gen, 1);
            tdm__pool_kick(pool);
        }
        tdm__pool_try_finish_locked(pool, job);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

int tdm__pool_create(tdm_runtime *rt, int n_threads, tdm__pool **out)
{
    *out = NULL;
    tdm__pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (pool)");
    pool->rt = rt;
    pool->cap = n_threads + TDM__MAX_DEVICES;
    pool->threads = calloc((size_t)pool->cap, sizeof *pool->threads);
    pool->args = calloc((size_t)pool->cap, sizeof *pool->args);
    if (!pool->threads || !pool->args) {
        free(pool->threads);
        free(pool->args);
        free(pool);
        return tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (pool)");
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    atomic_init(&pool->gen, 0);
    for (int i = 0; i < n_threads; i++) {
        pool->args[i].pool = pool;
        pool->args[i].index = i;
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->args[i]);
        if (rc != 0) {
            pool->n = i;
            tdm__pool_destroy(pool);
            return tdm__err(rt, TDM_ESYS,
                            "tdm_runtime_open: could not start worker thread %d "
                            "of %d: %s",
                            i, n_threads, strerror(rc));
        }
    }
    pool->n = n_threads;
    tdm__log(rt, TDM_DEBUG_POOL, "pool: %d worker thread(s) started", n_threads);
    *out = pool;
    return 0;
}

void tdm__pool_destroy(tdm__pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->shutdown = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->threads);
    free(pool->args);
    free(pool);
}

int tdm__pool_threads(tdm__pool *pool)
{
    /* (under the mutex: device drivers may be added by a background open meanwhile) */
    pthread_mutex_lock(&pool->mu);
    int n = pool->n;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

int tdm__pool_add_worker(tdm__pool *pool, int *index)
{
    pthread_mutex_lock(&pool->mu);
    int i = pool->n;
    if (i >= pool->cap) {
        pthread_mutex_unlock(&pool->mu);
        return tdm__err(pool->rt, TDM_ENOMEM, "pool: no room for another device driver");
    }
    pool->args[i].pool = pool;
    pool->args[i].index = i;
    int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->args[i]);
    if (rc == 0)
        pool->n++;
    pthread_mutex_unlock(&pool->mu);
    if (rc != 0)
        return tdm__err(pool->rt, TDM_ESYS, "pool: could not start a device driver thread: %s",
                        strerror(rc));
    *index = i;
    return 0;
}

void tdm__pool_submit(tdm__pool *pool, struct tdm__job *job)
{
    pthread_mutex_lock(&pool->mu);
    job->next = NULL;
    tdm__job **p = &pool->head;
    while (*p)
        p = &(*p)->next;
    *p = job;
    job->in_list = true;
    pool->n_jobs++;
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_relaxed);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

void tdm__pool_reoffer(tdm__pool *pool)
{
    for (tdm__job *j = pool->head; j; j = j->next)
        if (j->declined_gen && atomic_load(&j->n_declined) > 0)
            atomic_fetch_add(&j->done_gen, 1);
    tdm__pool_kick(pool);
}

void tdm__pool_kick(tdm__pool *pool)
{
    /* Called with the pool mutex held (see job.c): wake idle workers to re-check jobs. */
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_relaxed);
    pthread_cond_broadcast(&pool->cv);
}
