/* The result cache group by group (tdm_cache_map_groups): each group of rows is its own entry,
 * keyed as tdm_cache_map() keys a map of those rows alone. Hits are loaded into their rows;
 * the misses run as concurrent maps (a finish hook wakes this thread), each stored as soon as
 * it is done, so that another process running the same groups finds it. */
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
} group;

typedef struct run {
    tdm_cache *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight;
    tdm_cache_groups_report *rep;
    int first_rc;
} run;

typedef struct hook_arg {
    run *r;
    group *g;
} hook_arg;

static void on_finish(void *p)
{
    hook_arg *h = p;
    pthread_mutex_lock(&h->r->mu);
    h->g->done = true;
    pthread_cond_broadcast(&h->r->cv);
    pthread_mutex_unlock(&h->r->mu);
}

static void release_views(group *g, int n_in, int n_out)
{
    for (int i = 0; i < n_in; i++) {
        tdm_tensor_release(g->in[i]);
        g->in[i] = NULL;
    }
    for (int o = 0; o < n_out; o++) {
        tdm_tensor_release(g->out[o]);
        g->out[o] = NULL;
    }
}

static uint64_t out_bytes(group *g, int n_out)
{
    uint64_t b = 0;
    for (int o = 0; o < n_out; o++)
        b += tdm_tensor_nbytes(g->out[o]);
    return b;
}

/* Collects a finished group: its status, and its entry stored when it succeeded. */
static void collect(run *r, group *g, int n_in, int n_out)
{
    tdm_report rep = TDM_REPORT_INIT;
    int rc = tdm_job_wait((tdm_job *)g->job, &rep);
    tdm_job_free((tdm_job *)g->job);
    g->job = NULL;
    if (rc == 0) {
        uint32_t us = tdm__cache_compute_us(&rep);
        r->rep->compute_s += us / 1e6;
        r->rep->bytes_computed += out_bytes(g, n_out);
        if (tdm__cache_store(r->c, g->key, g->out, n_out, us) == 0) {
            r->rep->stores++;
            tdm__cache_evict(r->c);
        } else {
            r->rep->store_failures++;
            tdm__cache_count(r->c, &r->c->st.store_failures, 1);
        }
    } else if (r->first_rc == 0) {
        r->first_rc = rc; /* (its message is the runtime's now) */
    }
    release_views(g, n_in, n_out);
}

/* Waits until a running group finishes, then collects it. */
static void collect_one(run *r, group *gs, int64_t n, int n_in, int n_out)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        group *ready = NULL;
        for (int64_t i = 0; i < n && !ready; i++)
            if (gs[i].job && gs[i].done)
                ready = &gs[i];
        if (!ready)
            pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
        if (ready) {
            collect(r, ready, n_in, n_out);
            r->in_flight--;
            return;
        }
    }
}

/* Views of group g's rows (whole inputs stay whole). */
static int make_views(tdm_runtime *rt, const char *who, const tdm__kernel *k,
                      tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                      group *g)
{
    for (int i = 0; i < n_in; i++) {
        if ((k->def.whole_inputs >> i) & 1u) {
            tdm_tensor_retain(inputs[i]);
            g->in[i] = inputs[i];
            continue;
        }
        int rc = tdm_tensor_view_rows(inputs[i], g->begin, g->end, &g->in[i]);
        if (rc != 0)
            return tdm__io_reerr(rt, rc, who);
    }
    for (int o = 0; o < n_out; o++) {
        int rc = tdm_tensor_view_rows(outputs[o], g->begin, g->end, &g->out[o]);
        if (rc != 0)
            return tdm__io_reerr(rt, rc, who);
    }
    return 0;
}

/* Checks the call and fills each group's row range. */
static int check_groups(tdm_cache *c, const char *who, const tdm__kernel *k,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const int64_t *bounds, int64_t n_groups,
                        const tdm_cache_groups_report *report, group **out)
{
    tdm_runtime *rt = c->rt;
    *out = NULL;
    if (report && report->size < sizeof *report)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: report size %u is too small (use TDM_CACHE_GROUPS_REPORT_INIT)", who,
                        report->size);
    if (n_out < 1 || n_out != k->def.n_out || n_out > TDM__CACHE_MAX_OUTPUTS || !outputs)
        return tdm__err(rt, TDM_EINVAL, "%s: the outputs (%d; the kernel has %d) must be given",
                        who, n_out, k->def.n_out);
    if (n_in < 0 || n_in > 16 || (n_in > 0 && !inputs))
        return tdm__err(rt, TDM_EINVAL, "%s: bad input count %d or NULL inputs", who, n_in);
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
    group *gs = calloc(n_groups > 0 ? (size_t)n_groups : 1, sizeof *gs);
    if (!gs)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    int64_t size = n_groups > 0 ? (rows + n_groups - 1) / n_groups : 0;
    for (int64_t g = 0; g < n_groups; g++) {
        gs[g].begin = bounds ? bounds[g] : g * size;
        gs[g].end = bounds ? bounds[g + 1] : (g + 1 == n_groups ? rows : (g + 1) * size);
        if (gs[g].end <= gs[g].begin) {
            free(gs);
            return tdm__err(rt, TDM_EINVAL, "%s: group %lld is empty or reversed ([%lld, %lld))",
                            who, (long long)g, (long long)gs[g].begin, (long long)gs[g].end);
        }
    }
    *out = gs;
    return 0;
}

int tdm_cache_map_groups(tdm_cache *c, const char *kernel, tdm_tensor *const *inputs, int n_in,
                         tdm_tensor *const *outputs, int n_out, const void *params,
                         size_t params_size, const int64_t *bounds, int64_t n_groups,
                         const tdm_map_opts *opts, tdm_cache_groups_report *report)
{
    static const char who[] = "tdm_cache_map_groups";
    if (!c)
        return tdm__err(NULL, TDM_EINVAL, "%s: cache is NULL", who);
    tdm_runtime *rt = c->rt;
    tdm__err_clear(rt);
    uint64_t t0 = tdm__now_ns();
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel is NULL", who);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s'", who, kernel);
    group *gs;
    int rc = check_groups(c, who, k, inputs, n_in, outputs, n_out, bounds, n_groups, report, &gs);
    if (rc != 0)
        return rc;
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    rep.groups = n_groups;
    hook_arg *hooks = calloc(n_groups > 0 ? (size_t)n_groups : 1, sizeof *hooks);
    if (!hooks) {
        free(gs);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    run r = {.c = c, .rep = &rep};
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    int max_flight = 2 * tdm_runtime_threads(rt);
    if (max_flight < 2)
        max_flight = 2;
    for (int64_t i = 0; i < n_groups && r.first_rc == 0; i++) {
        group *g = &gs[i];
        tdm__cache_desc descs[TDM__CACHE_MAX_OUTPUTS];
        bool create;
        rc = make_views(rt, who, k, inputs, n_in, outputs, n_out, g);
        if (rc == 0)
            rc = tdm__cache_make_key(c, who, kernel, g->in, n_in, g->out, n_out, params,
                                     params_size, descs, &create, g->key);
        if (rc != 0) {
            r.first_rc = rc;
            release_views(g, n_in, n_out);
            break;
        }
        uint32_t us = 0;
        int hit = tdm__cache_try_hit(c, g->key, g->out, n_out, descs, false, &us);
        if (hit == 0) {
            rep.hits++;
            rep.bytes_loaded += out_bytes(g, n_out);
            rep.saved_s += us / 1e6;
            tdm__cache_count(c, &c->st.hits, 1);
            release_views(g, n_in, n_out);
            continue;
        }
        if (hit < 0) {
            rep.corrupt++;
            tdm__cache_count(c, &c->st.corrupt, 1);
        }
        if (hit < 0 || hit == 2)
            tdm__cache_remove_entry(c, g->key);
        rep.misses++;
        tdm__cache_count(c, &c->st.misses, 1);
        while (r.in_flight >= max_flight)
            collect_one(&r, gs, n_groups, n_in, n_out);
        if (r.first_rc != 0) { /* a group failed meanwhile: start no more */
            release_views(g, n_in, n_out);
            break;
        }
        hooks[i] = (hook_arg){&r, g};
        tdm__err_clear(rt);
        rc = tdm__map_async_hook(rt, who, kernel, g->in, n_in, g->out, n_out, params, params_size,
                                 opts, on_finish, &hooks[i], &g->job);
        if (rc != 0) {
            g->job = NULL;
            r.first_rc = rc;
            release_views(g, n_in, n_out);
            break;
        }
        r.in_flight++;
    }
    while (r.in_flight > 0)
        collect_one(&r, gs, n_groups, n_in, n_out);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    free(hooks);
    free(gs);
    rep.wall_s = (double)(tdm__now_ns() - t0) / 1e9;
    if (report)
        *report = rep;
    if (r.first_rc == 0)
        tdm__err_clear(rt);
    return r.first_rc;
}
