/* SPDX-License-Identifier: MIT */
/* The result cache group by group (tdm_cache_map_groups and its streaming form): each group of
 * rows is its own entry, keyed as tdm_cache_map() keys a map of those rows alone. Hits are
 * loaded into their rows; the misses run as concurrent maps (a finish hook wakes the job's
 * thread), each stored as soon as it is done, so that another process running the same groups
 * finds it. The synchronous call runs the job on the caller's thread; the asynchronous one on a
 * thread of its own, settling groups into a list that tdm_cache_job_next() hands out. */
#include <stdlib.h>
#include <string.h>

#include "io/cache_internal.h"
#include "sched/job.h"

typedef struct group {
    int64_t begin, end;
    char key[33];
    tdm_tensor *in[16], *out[TDM__CACHE_MAX_OUTPUTS];
    tdm__job *job; /* while its map runs */
    bool done;     /* its map finished (set by the hook) */
    struct tdm_cache_job *r;
} group;

struct tdm_cache_job {
    tdm_cache *c;
    const char *who;
    /* the call: tensors borrowed (they outlive the job, as for tdm_map_async), the rest copied */
    const tdm__kernel *k;
    tdm_tensor *in[16], *out[TDM__CACHE_MAX_OUTPUTS];
    int n_in, n_out;
    void *params;
    size_t params_size;
    tdm_map_opts opts;
    bool has_opts;
    group *gs;
    int64_t n_groups;
    /* progress, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight;
    tdm_cache_groups_report rep;
    int first_rc;
    char msg[256]; /* its message: messages are per thread, and the job may have its own */
    bool stop;
    /* asynchronous only: groups settled, in that order */
    tdm_cache_group_result *done;
    int64_t n_done, n_taken;
    bool finished, threaded;
    pthread_t th;
    uint64_t t0;
};
typedef struct tdm_cache_job run;

static void on_finish(void *p)
{
    group *g = p;
    pthread_mutex_lock(&g->r->mu);
    g->done = true;
    pthread_cond_broadcast(&g->r->cv);
    pthread_mutex_unlock(&g->r->mu);
}

/* The job's first failure: its code and this thread's message for it. */
static void fail(run *r, int rc)
{
    r->first_rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", tdm_errmsg(r->c->rt));
}

static void release_views(run *r, group *g)
{
    for (int i = 0; i < r->n_in; i++) {
        tdm_tensor_release(g->in[i]);
        g->in[i] = NULL;
    }
    for (int o = 0; o < r->n_out; o++) {
        tdm_tensor_release(g->out[o]);
        g->out[o] = NULL;
    }
}

static uint64_t out_bytes(run *r, group *g)
{
    uint64_t b = 0;
    for (int o = 0; o < r->n_out; o++)
        b += tdm_tensor_nbytes(g->out[o]);
    return b;
}

/* A group is settled (hit, computed or failed): the streaming form hands it out. */
static void settle(run *r, group *g, bool hit, int status)
{
    if (!r->done)
        return;
    pthread_mutex_lock(&r->mu);
    r->done[r->n_done++] = (tdm_cache_group_result){g - r->gs, g->begin, g->end, hit, status};
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Collects a finished group: its status, and its entry stored when it succeeded. */
static void collect(run *r, group *g)
{
    tdm_report rep = TDM_REPORT_INIT;
    int rc = tdm_job_wait((tdm_job *)g->job, &rep);
    tdm_job_free((tdm_job *)g->job);
    g->job = NULL;
    if (rc == 0) {
        uint32_t us = tdm__cache_compute_us(&rep);
        r->rep.compute_s += us / 1e6;
        r->rep.bytes_computed += out_bytes(r, g);
        if (tdm__cache_store(r->c, g->key, g->out, r->n_out, us) == 0) {
            r->rep.stores++;
            tdm__cache_evict(r->c);
        } else {
            r->rep.store_failures++;
            tdm__cache_count(r->c, &r->c->st.store_failures, 1);
        }
    } else if (r->first_rc == 0) {
        fail(r, rc);
    }
    release_views(r, g);
    settle(r, g, false, rc);
}

/* Waits until a running group finishes, then collects it. */
static void collect_one(run *r)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        group *ready = NULL;
        for (int64_t i = 0; i < r->n_groups && !ready; i++)
            if (r->gs[i].job && r->gs[i].done)
                ready = &r->gs[i];
        if (!ready)
            pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
        if (ready) {
            collect(r, ready);
            r->in_flight--;
            return;
        }
    }
}

/* Views of group g's rows (whole inputs stay whole). */
static int make_views(run *r, group *g)
{
    tdm_runtime *rt = r->c->rt;
    for (int i = 0; i < r->n_in; i++) {
        if ((r->k->def.whole_inputs >> i) & 1u) {
            g->in[i] = tdm_tensor_retain(r->in[i]);
            continue;
        }
        int rc = tdm_tensor_view_rows(r->in[i], g->begin, g->end, &g->in[i]);
        if (rc != 0)
            return tdm__io_reerr(rt, rc, r->who);
    }
    for (int o = 0; o < r->n_out; o++) {
        int rc = tdm_tensor_view_rows(r->out[o], g->begin, g->end, &g->out[o]);
        if (rc != 0)
            return tdm__io_reerr(rt, rc, r->who);
    }
    return 0;
}

static bool stopped(run *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s || r->first_rc != 0;
}

/* Looks group g up: 0 a hit (settled), 1 a miss whose map is started, < 0 an error. */
static int start_group(run *r, group *g)
{
    tdm_cache *c = r->c;
    tdm__cache_desc descs[TDM__CACHE_MAX_OUTPUTS];
    bool create;
    int rc = make_views(r, g);
    if (rc == 0)
        rc = tdm__cache_make_key(c, r->who, r->k->def.name, g->in, r->n_in, g->out, r->n_out,
                                 r->params, r->params_size, descs, &create, g->key);
    if (rc != 0)
        return rc;
    uint32_t us = 0;
    int hit = tdm__cache_try_hit(c, g->key, g->out, r->n_out, descs, false, &us);
    if (hit == 0) {
        r->rep.hits++;
        r->rep.bytes_loaded += out_bytes(r, g);
        r->rep.saved_s += us / 1e6;
        tdm__cache_count(c, &c->st.hits, 1);
        release_views(r, g);
        settle(r, g, true, 0);
        return 0;
    }
    if (hit < 0) {
        r->rep.corrupt++;
        tdm__cache_count(c, &c->st.corrupt, 1);
    }
    if (hit < 0 || hit == 2)
        tdm__cache_remove_entry(c, g->key);
    int max_flight = 2 * tdm_runtime_threads(c->rt);
    while (r->in_flight >= (max_flight < 2 ? 2 : max_flight))
        collect_one(r);
    if (stopped(r)) /* a group failed meanwhile, or the job was cancelled: start no more */
        return 1;
    r->rep.misses++;
    tdm__cache_count(c, &c->st.misses, 1);
    g->r = r;
    tdm__err_clear(c->rt);
    rc = tdm__map_async_hook(c->rt, r->who, r->k->def.name, g->in, r->n_in, g->out, r->n_out,
                             r->params, r->params_size, r->has_opts ? &r->opts : NULL, on_finish, g,
                             &g->job);
    if (rc != 0) {
        g->job = NULL;
        return rc;
    }
    r->in_flight++;
    return 1;
}

/* The whole job: every group looked up, the misses run and stored. */
static void run_groups(run *r)
{
    for (int64_t i = 0; i < r->n_groups && !stopped(r); i++) {
        group *g = &r->gs[i];
        int rc = start_group(r, g);
        if (rc < 0) {
            fail(r, rc);
            release_views(r, g);
        } else if (rc == 1 && !g->job) {
            release_views(r, g); /* stopped before its map started */
        }
    }
    while (r->in_flight > 0)
        collect_one(r);
    r->rep.wall_s = (double)(tdm__now_ns() - r->t0) / 1e9;
    pthread_mutex_lock(&r->mu);
    r->finished = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void *run_main(void *p)
{
    run_groups(p);
    return NULL;
}

static void job_free(run *r)
{
    if (!r)
        return;
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->params);
    free(r->gs);
    free(r->done);
    free(r);
}

/* Checks the call and makes its job, each group's row range set. */
static int job_new(tdm_cache *c, const char *who, const char *kernel, tdm_tensor *const *inputs,
                   int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                   size_t params_size, const int64_t *bounds, int64_t n_groups,
                   const tdm_map_opts *opts, bool streaming, run **out)
{
    *out = NULL;
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm_runtime *rt = c->rt;
    tdm__err_clear(rt);
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel is NULL", who);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s'", who, kernel);
    if (n_out < 1 || n_out != k->def.n_out || n_out > TDM__CACHE_MAX_OUTPUTS || !outputs)
        return tdm__err(rt, TDM_EINVAL, "%s: the outputs (%d; the kernel has %d) must be given",
                        who, n_out, k->def.n_out);
    if (n_in < 0 || n_in > 16 || (n_in > 0 && !inputs))
        return tdm__err(rt, TDM_EINVAL, "%s: bad input count %d or NULL inputs", who, n_in);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", who,
                        params_size);
    for (int o = 0; o < n_out; o++)
        if (!outputs[o] || tdm_tensor_ndim(outputs[o]) < 1)
            return tdm__err(rt, TDM_EINVAL, "%s: output %d is NULL or 0-dimensional", who, o);
    for (int i = 0; i < n_in; i++)
        if (!inputs[i])
            return tdm__err(rt, TDM_EINVAL, "%s: input %d is NULL", who, i);
    int64_t rows = tdm_tensor_dim(outputs[0], 0);
    if (n_groups < 0 || (n_groups == 0) != (rows == 0) || n_groups > rows)
        return tdm__err(rt, TDM_EINVAL, "%s: %lld groups for %lld rows", who, (long long)n_groups,
                        (long long)rows);
    if (bounds && (bounds[0] != 0 || bounds[n_groups] != rows))
        return tdm__err(rt, TDM_EINVAL, "%s: bounds run from %lld to %lld, not from 0 to %lld", who,
                        (long long)bounds[0], (long long)bounds[n_groups], (long long)rows);
    run *r = calloc(1, sizeof *r);
    size_t ng = n_groups > 0 ? (size_t)n_groups : 1;
    if (r) {
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        r->gs = calloc(ng, sizeof *r->gs);
        r->params = malloc(params_size ? params_size : 1);
        r->done = streaming ? calloc(ng, sizeof *r->done) : NULL;
    }
    if (!r || !r->gs || !r->params || (streaming && !r->done)) {
        job_free(r);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    r->c = c;
    r->who = who;
    r->k = k;
    r->n_in = n_in;
    r->n_out = n_out;
    memcpy(r->in, inputs, (size_t)n_in * sizeof *inputs);
    memcpy(r->out, outputs, (size_t)n_out * sizeof *outputs);
    if (params_size)
        memcpy(r->params, params, params_size);
    r->params_size = params_size;
    if (opts) {
        if (opts->size < sizeof *opts) { /* (tdm_map checks the rest) */
            job_free(r);
            return tdm__err(rt, TDM_EINVAL, "%s: opts size %u: start from TDM_MAP_OPTS_INIT", who,
                            opts->size);
        }
        r->opts = *opts;
        r->has_opts = true;
    }
    r->n_groups = n_groups;
    r->rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    r->rep.groups = n_groups;
    int64_t size = n_groups > 0 ? (rows + n_groups - 1) / n_groups : 0;
    for (int64_t g = 0; g < n_groups; g++) {
        group *gr = &r->gs[g];
        gr->begin = bounds ? bounds[g] : g * size;
        gr->end = bounds ? bounds[g + 1] : (g + 1 == n_groups ? rows : (g + 1) * size);
        if (gr->end <= gr->begin) {
            int rc = tdm__err(rt, TDM_EINVAL, "%s: group %lld is empty or reversed ([%lld, %lld))",
                              who, (long long)g, (long long)gr->begin, (long long)gr->end);
            job_free(r);
            return rc;
        }
    }
    r->t0 = tdm__now_ns();
    *out = r;
    return 0;
}

static int check_report(tdm_cache *c, const char *who, const tdm_cache_groups_report *report)
{
    if (report && report->size < sizeof *report)
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL,
                        "%s: report size %u is too small (use TDM_CACHE_GROUPS_REPORT_INIT)", who,
                        report->size);
    return 0;
}

/* Ends a job whose groups are all settled: the report, the status (with its message). */
static int job_end(run *r, tdm_cache_groups_report *report)
{
    int rc = r->first_rc;
    if (report)
        *report = r->rep;
    if (rc == 0)
        tdm__err_clear(r->c->rt);
    else /* on the caller's thread, whichever thread failed */
        tdm__err(r->c->rt, rc, "%s", r->msg[0] ? r->msg : tdm_strerror(rc));
    job_free(r);
    return rc;
}

int tdm_cache_map_groups(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                         tdm_tensor *const *outputs, int n_out, const void *params,
                         size_t params_size, const int64_t *bounds, int64_t n_groups,
                         const tdm_map_opts *opts, tdm_cache_groups_report *report)
{
    static const char who[] = "tdm_cache_map_groups";
    int rc = check_report(c, who, report);
    run *r = NULL;
    if (rc == 0)
        rc = job_new(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size, bounds,
                     n_groups, opts, false, &r);
    if (rc != 0)
        return rc;
    run_groups(r);
    return job_end(r, report);
}

int tdm_cache_map_groups_async(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs,
                               int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                               size_t params_size, const int64_t *bounds, int64_t n_groups,
                               const tdm_map_opts *opts, tdm_cache_job **job)
{
    static const char who[] = "tdm_cache_map_groups_async";
    if (!job)
        return tdm__err(c ? c->rt : NULL, TDM_EINVAL, "%s: job is NULL", who);
    *job = NULL;
    run *r;
    int rc = job_new(c, who, kernel, inputs, n_in, outputs, n_out, params, params_size, bounds,
                     n_groups, opts, true, &r);
    if (rc != 0)
        return rc;
    int e = pthread_create(&r->th, NULL, run_main, r);
    if (e != 0) {
        job_free(r);
        return tdm__err(c->rt, TDM_ESYS, "%s: cannot start its thread (%s)", who, strerror(e));
    }
    r->threaded = true;
    *job = r;
    return 0;
}

int tdm_cache_job_next(tdm_cache_job *r, tdm_cache_group_result *res)
{
    if (!r || !res)
        return tdm__err(r ? r->c->rt : NULL, TDM_EINVAL, "tdm_cache_job_next: NULL argument");
    pthread_mutex_lock(&r->mu);
    while (r->n_taken == r->n_done && !r->finished)
        pthread_cond_wait(&r->cv, &r->mu);
    int rc = TDM_EDONE;
    if (r->n_taken < r->n_done) {
        *res = r->done[r->n_taken++];
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int tdm_cache_job_finish(tdm_cache_job *r, tdm_cache_groups_report *report)
{
    if (!r)
        return tdm__err(NULL, TDM_EINVAL, "tdm_cache_job_finish: job is NULL");
    int rc = check_report(r->c, "tdm_cache_job_finish", report);
    if (r->threaded)
        pthread_join(r->th, NULL);
    if (rc != 0) {
        job_free(r);
        return rc;
    }
    return job_end(r, report);
}

int tdm_cache_job_cancel(tdm_cache_job *r)
{
    if (!r)
        return tdm__err(NULL, TDM_EINVAL, "tdm_cache_job_cancel: job is NULL");
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_mutex_unlock(&r->mu);
    return 0;
}
