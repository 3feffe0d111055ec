/* SPDX-License-Identifier: MIT */
/* Simulated backends on a virtual clock: a discrete-event run of the scheduler's decision code
 * (runtime/sched/sched_model.c) over modelled lanes. Deterministic: no threads, no real clock inside the
 * simulation, noise from a seeded generator. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "sched/sched_model.h"
#include "tandem/sim.h"

typedef struct {
    int b;          /* backend index */
    double lat;     /* ns */
    double eff;     /* true ns per item, transfers included */
    tdm__est est;   /* what the scheduler has learned */
    bool busy;
    double end;     /* ns, while busy */
    int64_t n;      /* items of the batch in flight */
    double dur;     /* its true duration */
    int64_t batches;
    int long_rungs; /* (tdm__explore_next) */
} sim_lane;

typedef struct {
    const tdm_sim_config *cfg;
    unsigned mask; /* backends taking part */
    sim_lane *lanes;
    tdm__lane_view *views;
    int n;
    uint64_t rng;
    double ideal_ns;
} sim_run;

static double uniform01(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static double eff_tpi(const tdm_sim_backend *b)
{
    double t = b->ns_per_item;
    if (b->bandwidth > 0)
        t += b->bytes_per_item / b->bandwidth * 1e9;
    return t;
}

/* True duration of a batch of n items on lane l. */
static double batch_ns(sim_run *s, sim_lane *l, int64_t n)
{
    const tdm_sim_backend *b = &s->cfg->backends[l->b];
    double d = l->lat + (double)n * l->eff;
    if (b->noise > 0)
        d *= 1.0 + b->noise * (2.0 * uniform01(&s->rng) - 1.0);
    l->batches++;
    if (b->outlier_every > 0 && l->batches % b->outlier_every == 0)
        d *= b->outlier_factor;
    return d;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Runs the map once under s->mask; fills per-backend figures of `res` when res is given.
 * Returns the makespan in ns. */
static double run(sim_run *s, tdm_sim_policy policy, tdm_sim_result *res)
{
    const tdm_sim_config *cfg = s->cfg;
    int L = 0;
    for (int b = 0; b < cfg->n_backends; b++) {
        if (!(s->mask & (1u << b)))
            continue;
        for (int k = 0; k < cfg->backends[b].count; k++, L++) {
            sim_lane *l = &s->lanes[L];
            memset(l, 0, sizeof *l);
            l->b = b;
            l->lat = cfg->backends[b].latency_s * 1e9;
            l->eff = eff_tpi(&cfg->backends[b]);
            tdm__est_init(&l->est, l->lat);
            if (cfg->calibrated)
                tdm__est_seed(&l->est, l->eff, l->lat, TDM__EST_WIN, 0);
        }
    }
    s->n = L;
    s->rng = cfg->seed;
    double *a = malloc((size_t)L * sizeof *a), *rate = malloc((size_t)L * sizeof *rate);
    if (!a || !rate) {
        free(a);
        free(rate);
        return -1;
    }
    for (int j = 0; j < L; j++) {
        a[j] = s->lanes[j].lat;
        rate[j] = 1.0 / s->lanes[j].eff;
    }
    s->ideal_ns = tdm__waterfill(a, rate, L, (double)cfg->items);
    free(a);
    free(rate);

    int64_t remaining = cfg->items;
    double now = 0, makespan = 0;
    if (policy == TDM_SIM_ROUND_ROBIN) {
        int64_t bs = cfg->batch_size > 0 ? cfg->batch_size : max64(1, cfg->items / (64 * L));
        double *t = calloc((size_t)L, sizeof *t);
        if (!t)
            return -1;
        for (int64_t i = 0; remaining > 0; i++) {
            sim_lane *l = &s->lanes[i % L];
            int64_t n = remaining < bs ? remaining : bs;
            double d = batch_ns(s, l, n);
            t[i % L] += d;
            remaining -= n;
            if (res) {
                tdm_sim_backend_result *br = &res->backends[l->b];
                br->items += n;
                br->batches++;
                br->busy_s += d * 1e-9;
                res->batches++;
            }
        }
        for (int j = 0; j < L; j++)
            makespan = t[j] > makespan ? t[j] : makespan;
        free(t);
        return makespan;
    }

    /* Batches aim at a small slice of the run: a simulated hour is thousands of batches per
     * lane, not billions, and each pays its latency rarely. */
    for (int j = 0; j < L; j++) {
        double tgt = s->ideal_ns / 2000.0;
        if (tgt < 50.0 * s->lanes[j].lat)
            tgt = 50.0 * s->lanes[j].lat;
        if (tgt < 1000.0)
            tgt = 1000.0;
        s->views[j] = (tdm__lane_view){.tpi = s->lanes[j].est.tpi,
                                       .free_at = 0,
                                       .lat = s->lanes[j].lat,
                                       .target_ns = tgt,
                                       .cap_left = INT64_MAX,
                                       .explore = cfg->calibrated ? 0 : 1,
                                       .eligible = true};
    }
    for (;;) {
        /* Every free lane asks for work, in lane order. */
        int busy = 0;
        for (int j = 0; j < L && remaining > 0; j++) {
            sim_lane *l = &s->lanes[j];
            if (l->busy)
                continue;
            tdm__decision d;
            s->views[j].tpi = l->est.tpi;
            s->views[j].lat = l->est.tpi > 0 ? l->est.lat : l->lat;
            if (policy == TDM_SIM_AUTO) {
                tdm__sched_decide(s->views, L, j, now, remaining, &d);
            } else { /* EAGER: guided share, never declines */
                memset(&d, 0, sizeof d);
                int64_t share = max64(1, remaining / (2 * (int64_t)L));
                int64_t want = s->views[j].explore > 0 || !(l->est.tpi > 0)
                                   ? max64(1, s->views[j].explore)
                                   : max64(1, (int64_t)(s->views[j].target_ns / l->est.tpi));
                d.items = want < share ? want : share;
                d.explore = s->views[j].explore > 0;
                if (d.items > remaining)
                    d.items = remaining;
                d.est_ns = l->est.lat + (double)d.items * l->est.tpi;
            }
            if (d.items <= 0) {
                if (res)
                    res->declines++;
                continue;
            }
            l->busy = true;
            l->n = d.items;
            l->dur = batch_ns(s, l, d.items);
            l->end = now + l->dur;
            s->views[j].free_at = d.explore ? l->end : now + d.est_ns;
            remaining -= d.items;
            if (res) {
                tdm_sim_backend_result *br = &res->backends[l->b];
                br->items += d.items;
                br->batches++;
                br->busy_s += l->dur * 1e-9;
                br->est_s += d.est_ns * 1e-9;
                res->batches++;
                res->explorations += d.explore;
            }
        }
        int next = -1;
        for (int j = 0; j < L; j++) {
            if (s->lanes[j].busy) {
                busy++;
                if (next < 0 || s->lanes[j].end < s->lanes[next].end)
                    next = j;
            }
        }
        if (next < 0 && remaining > 0) {
            /* Not reached (the lane finishing an item first never declines); kept so a model
             * bug cannot loop forever: lane 0 takes one item. */
            sim_lane *l = &s->lanes[0];
            l->busy = true;
            l->n = 1;
            l->dur = batch_ns(s, l, 1);
            l->end = now + l->dur;
            remaining--;
            next = 0;
        }
        if (next < 0)
            break;
        sim_lane *l = &s->lanes[next];
        now = l->end;
        makespan = now > makespan ? now : makespan;
        l->busy = false;
        tdm__est_add(&l->est, (double)l->n, l->dur);
        s->views[next].explore =
            tdm__explore_next(s->views[next].explore, l->n, l->dur, s->views[next].target_ns,
                              l->lat, 1, &l->long_rungs);
        s->views[next].free_at = now;
    }
    return makespan;
}

static int check_cfg(const tdm_sim_config *cfg)
{
    if (!cfg)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: config is NULL");
    if (cfg->size < sizeof *cfg || cfg->version != TDM_SIM_CONFIG_VERSION)
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate: config size %u / version %u not supported (start from "
                        "TDM_SIM_CONFIG_INIT)",
                        cfg->size, cfg->version);
    if (cfg->n_backends < 1 || cfg->n_backends > TDM_SIM_MAX_BACKENDS)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: %d backends (1..%d)", cfg->n_backends,
                        TDM_SIM_MAX_BACKENDS);
    if (cfg->items < 1)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: items %lld must be > 0",
                        (long long)cfg->items);
    if ((int)cfg->policy < TDM_SIM_AUTO || cfg->policy > TDM_SIM_ROUND_ROBIN)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: unknown policy %d", (int)cfg->policy);
    if (cfg->batch_size < 0)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: batch_size is negative");
    int lanes = 0;
    for (int b = 0; b < cfg->n_backends; b++) {
        const tdm_sim_backend *k = &cfg->backends[b];
        if (k->count < 1 || k->count > TDM_SIM_MAX_LANES || !(k->ns_per_item > 0) ||
            !isfinite(k->ns_per_item) || !(k->latency_s >= 0) || !isfinite(k->latency_s) ||
            !(k->bandwidth >= 0) || !(k->bytes_per_item >= 0) || !(k->noise >= 0) ||
            k->noise >= 1 || k->outlier_every < 0 ||
            (k->outlier_every > 0 && !(k->outlier_factor > 0)))
            return tdm__err(NULL, TDM_EINVAL,
                            "tdm_simulate: backend %d ('%s') has a figure out of range (count "
                            "1..%d, tpi > 0, latency >= 0, bandwidth >= 0, noise in [0, 1))",
                            b, k->name, TDM_SIM_MAX_LANES);
        lanes += k->count;
    }
    if (lanes > TDM_SIM_MAX_LANES)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: %d lanes in all (at most %d)", lanes,
                        TDM_SIM_MAX_LANES);
    return 0;
}

int tdm_simulate(const tdm_sim_config *cfg, tdm_sim_result *res)
{
    int rc = check_cfg(cfg);
    if (rc < 0)
        return rc;
    if (!res)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate: result is NULL");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(res, 0, sizeof *res);
    sim_run s = {.cfg = cfg};
    s.lanes = calloc(TDM_SIM_MAX_LANES, sizeof *s.lanes);
    s.views = calloc(TDM_SIM_MAX_LANES, sizeof *s.views);
    if (!s.lanes || !s.views) {
        free(s.lanes);
        free(s.views);
        return tdm__err(NULL, TDM_ENOMEM, "tdm_simulate: out of memory");
    }
    res->n_backends = cfg->n_backends;
    res->best_single = -1;
    for (int b = 0; b < cfg->n_backends && rc == 0; b++) {
        s.mask = 1u << b;
        double t = run(&s, cfg->policy, NULL);
        if (t < 0)
            rc = TDM_ENOMEM;
        res->backends[b].alone_s = t * 1e-9;
        if (res->best_single < 0 || t * 1e-9 < res->best_single_s) {
            res->best_single = b;
            res->best_single_s = t * 1e-9;
        }
    }
    s.mask = (1u << cfg->n_backends) - 1u;
    double t = rc == 0 ? run(&s, cfg->policy, res) : -1;
    free(s.lanes);
    free(s.views);
    if (t < 0)
        return tdm__err(NULL, TDM_ENOMEM, "tdm_simulate: out of memory");
    res->makespan_s = t * 1e-9;
    res->ideal_s = s.ideal_ns * 1e-9;
    for (int b = 0; b < cfg->n_backends; b++) {
        const tdm_sim_backend *k = &cfg->backends[b];
        tdm_sim_backend_result *br = &res->backends[b];
        br->utilisation = t > 0 ? br->busy_s / ((double)k->count * res->makespan_s) : 0;
        br->bytes_moved = k->bandwidth > 0 ? (double)br->items * k->bytes_per_item : 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    res->host_s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return 0;
}
