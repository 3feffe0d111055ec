/* SPDX-License-Identifier: MIT */
/* Simulated clusters: the distributed map's protocol (tandem/dist.h, described in tandem/sim.h)
 * over N simulated nodes on a virtual clock. A discrete-event run whose events are few — a
 * request reaching rank 0, a grant reaching a rank, a chunk ending — because chunks are large:
 * the nodes' insides are summarised by one tdm_simulate() per group beforehand. Deterministic:
 * no threads, no real clock inside the simulation, noise from a seeded generator, ties broken
 * by the order the events were made in. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "tandem/sim.h"

enum { EV_REQ, EV_GRANT, EV_DONE };

typedef struct {
    double t;
    uint64_t seq;
    int kind;
    int rank;
} event;

typedef struct {
    event *v;
    size_t n, cap;
    uint64_t seq;
} heap;

static bool ev_before(const event *a, const event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static bool heap_push(heap *h, double t, int kind, int rank)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 256;
        event *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return false;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    event e = {.t = t, .seq = h->seq++, .kind = kind, .rank = rank};
    while (i > 0 && ev_before(&e, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = e;
    return true;
}

static event heap_pop(heap *h)
{
    event top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && ev_before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!ev_before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* A node group as the cluster sees it: its lanes (for whole-item chunk times) and the factor
 * its own scheduler loses to them. */
typedef struct {
    int nb;
    int count[TDM_SIM_MAX_BACKENDS];
    double lat[TDM_SIM_MAX_BACKENDS]; /* s */
    double eff[TDM_SIM_MAX_BACKENDS]; /* s per item on one lane, transfers included */
    double lanes_rate;                /* items/s, all lanes */
    double rate;                      /* items/s under the node's scheduler */
    double k;                         /* lanes_rate / rate */
} group_model;

/* The shortest time in which the group's lanes finish n whole items, each lane paying its
 * latency once: the least T with sum_j count_j * floor((T - lat_j) / eff_j) >= n. */
static double whole_items_s(const group_model *g, int64_t n)
{
    double hi = INFINITY;
    for (int j = 0; j < g->nb; j++) {
        double t = g->lat[j] + ceil((double)n / g->count[j]) * g->eff[j];
        hi = t < hi ? t : hi;
    }
    double lo = 0;
    for (int it = 0; it < 80 && hi - lo > 1e-12 * hi; it++) {
        double mid = 0.5 * (lo + hi), done = 0;
        for (int j = 0; j < g->nb; j++)
            if (mid > g->lat[j])
                done += g->count[j] * floor((mid - g->lat[j]) / g->eff[j]);
        if (done >= (double)n)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

typedef struct {
    int64_t n;
    double ready; /* its inputs are on the node */
    int home;     /* the rank whose partition the items belong to */
} chunk;

typedef struct {
    int group;
    double slow;    /* time multiplier of its chunks */
    int64_t lo, hi; /* its range's ungranted items */
    double ready;   /* when the range's inputs are here (after a partitioned steal) */
    int home;       /* whose partition the range is part of */
    chunk q[TDM_SIM_MAX_IN_FLIGHT]; /* chunks in flight; q[0] computes while `busy` */
    int nq;
    bool busy;
    double cur_s;  /* duration of the chunk computing */
    bool asking;   /* a request is travelling or queued at rank 0 */
    bool finished; /* rank 0 answered "no more work" */
    chunk grant;   /* the answer travelling to it */
    bool grant_none;
    int64_t done_items;
    double done_busy;
    int64_t chunks, steals, stolen;
    double end_s;
    bool measured; /* rank 0 has its measured rate */
    double measured_rate;
    double send_free, recv_free; /* its link's two directions */
    int64_t part;                /* items of its initial range (its partition) */
} rank_state;

typedef struct {
    const tdm_sim_cluster_config *cfg;
    group_model g[TDM_SIM_MAX_GROUPS];
    rank_state *r;
    int P;
    int in_flight;  /* chunks a rank keeps in flight */
    double divisor; /* chunk = ungranted * rate share / divisor; 0: the protocol's 4 or 16 */
    heap h;
    uint64_t rng;
    double L, B;
    double coord_free;
    int64_t ungranted;
    /* rank 0's view of the rates: est(r) = measured, else the group's (calibrated) or the
     * mean of the measured ones (else 1: all equal) */
    double sum_measured, sum_prior_unmeasured;
    int n_measured;
    double compute_end;
    tdm_sim_cluster_result *res;
} cluster_run;

static double uniform01(uint64_t *s) /* splitmix64, as in sim.c */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static double est_rate(const cluster_run *c, int r)
{
    const rank_state *s = &c->r[r];
    if (s->measured)
        return s->measured_rate;
    if (c->cfg->calibrated)
        return c->g[s->group].rate;
    return c->n_measured ? c->sum_measured / c->n_measured : 1.0;
}

static double est_sum(const cluster_run *c)
{
    if (c->cfg->calibrated)
        return c->sum_measured + c->sum_prior_unmeasured;
    double mean = c->n_measured ? c->sum_measured / c->n_measured : 1.0;
    return c->sum_measured + (double)(c->P - c->n_measured) * mean;
}

/* One-way latency of a message from or to rank r (rank 0 talks to itself for free). */
static double hop(const cluster_run *c, int r)
{
    return r == 0 ? 0.0 : c->L;
}

/* Moves `bytes` from rank a to rank b, not before t: holds a's sending and b's receiving link
 * for bytes / bandwidth; returns the arrival. */
static double transfer(cluster_run *c, int a, int b, double bytes, double t)
{
    rank_state *A = &c->r[a], *Bs = &c->r[b];
    double start = t;
    start = A->send_free > start ? A->send_free : start;
    start = Bs->recv_free > start ? Bs->recv_free : start;
    double end = start + bytes / c->B;
    A->send_free = Bs->recv_free = end;
    c->res->steal_bytes += bytes;
    return end + c->L;
}

static bool ask(cluster_run *c, int r, double t)
{
    rank_state *s = &c->r[r];
    if (s->finished || s->asking || s->nq >= c->in_flight)
        return true;
    s->asking = true;
    return heap_push(&c->h, t + hop(c, r), EV_REQ, r);
}

static bool start_chunk(cluster_run *c, int r, double t)
{
    rank_state *s = &c->r[r];
    const chunk *k = &s->q[0];
    double start = k->ready > t ? k->ready : t;
    const group_model *g = &c->g[s->group];
    double d = whole_items_s(g, k->n) * g->k * s->slow;
    if (c->cfg->node_noise > 0)
        d *= 1.0 + c->cfg->node_noise * (2.0 * uniform01(&c->rng) - 1.0);
    s->busy = true;
    s->cur_s = d;
    return heap_push(&c->h, start + d, EV_DONE, r);
}

/* Rank 0 serves a request of rank r that reached it at t. Requests are served one at a time
 * in the order they arrive, and only rank 0 changes what the decisions read, so deciding when
 * the request arrives is deciding when it is served. */
static bool serve(cluster_run *c, int r, double t)
{
    const tdm_sim_cluster_config *cfg = c->cfg;
    rank_state *s = &c->r[r];
    double start = t > c->coord_free ? t : c->coord_free;
    c->coord_free = start + cfg->coord_service_s;
    c->res->coord_busy_s += cfg->coord_service_s;
    c->res->requests++;
    /* the request carries the rank's measured throughput */
    if (s->done_items > 0 && s->done_busy > 0) {
        double m = (double)s->done_items / s->done_busy;
        if (!s->measured) {
            s->measured = true;
            c->n_measured++;
            c->sum_prior_unmeasured -= c->g[s->group].rate;
            s->measured_rate = 0;
        }
        c->sum_measured += m - s->measured_rate;
        s->measured_rate = m;
    }
    if (s->hi == s->lo) { /* steal: the back of the longest remaining range */
        int v = -1;
        double worst = -1;
        for (int j = 0; j < c->P; j++) {
            int64_t u = c->r[j].hi - c->r[j].lo;
            if (j == r || u < 2)
                continue;
            double tj = (double)u / est_rate(c, j);
            if (tj > worst) {
                worst = tj;
                v = j;
            }
        }
        int64_t k = 0;
        if (v >= 0) {
            /* as the real coordinator: split so both end together, the thief's share paying
             * for its rows' transfer when they must travel (partitioned, not its own rows; the
             * real one learns the bandwidth from the transfers it sees, this one knows it) */
            rank_state *V = &c->r[v];
            double rt = est_rate(c, r), rv = est_rate(c, v);
            double bpi = cfg->in_bytes_per_item + cfg->out_bytes_per_item;
            double move = cfg->partitioned && bpi > 0 && V->home != r ? bpi / c->B : 0.0;
            k = (int64_t)floor((double)(V->hi - V->lo) / rv / (1.0 / rv + 1.0 / rt + move));
        }
        if (k >= 1) {
            rank_state *V = &c->r[v];
            V->hi -= k;
            s->lo = V->hi;
            s->hi = V->hi + k;
            s->home = V->home;
            s->ready = 0;
            if (cfg->partitioned && cfg->in_bytes_per_item > 0 && s->home != r) {
                /* rank 0 tells the victim, which sends once the inputs are there */
                double go = c->coord_free + hop(c, v);
                go = V->ready > go ? V->ready : go;
                s->ready = transfer(c, v, r, (double)k * cfg->in_bytes_per_item, go);
            }
            c->res->steals++;
            s->steals++;
            V->stolen += k;
        }
    }
    int64_t u = s->hi - s->lo;
    if (u == 0) {
        s->grant_none = true;
    } else {
        /* as the real coordinator: a quarter of the rank's share when its rate is known (measured
         * or calibrated), a sixteenth while it is a guess; at least 2 ms of its work */
        bool known = s->measured || cfg->calibrated;
        double div = c->divisor > 0 ? c->divisor : known ? 4.0 : 16.0;
        double share = (double)c->ungranted * est_rate(c, r) / est_sum(c) / div;
        double want = ceil(share);
        int64_t min_chunk = cfg->min_chunk > 0 ? cfg->min_chunk
                            : known ? (int64_t)(est_rate(c, r) * 0.002)
                                    : 1;
        if (min_chunk < 1)
            min_chunk = 1;
        int64_t n = want >= (double)u ? u : (int64_t)want;
        n = n < min_chunk ? min_chunk : n;
        n = n > u ? u : n;
        s->grant = (chunk){.n = n, .ready = s->ready, .home = s->home};
        s->grant_none = false;
        s->lo += n;
        c->ungranted -= n;
        c->res->grants++;
        s->chunks++;
    }
    return heap_push(&c->h, c->coord_free + hop(c, r), EV_GRANT, r);
}

static bool granted(cluster_run *c, int r, double t)
{
    rank_state *s = &c->r[r];
    s->asking = false;
    if (s->grant_none) {
        s->finished = true;
        return true;
    }
    s->q[s->nq++] = s->grant;
    if (!s->busy && !start_chunk(c, r, t))
        return false;
    return ask(c, r, t);
}

static bool chunk_done(cluster_run *c, int r, double t)
{
    const tdm_sim_cluster_config *cfg = c->cfg;
    rank_state *s = &c->r[r];
    chunk k = s->q[0];
    memmove(&s->q[0], &s->q[1], (size_t)(s->nq - 1) * sizeof s->q[0]);
    s->nq--;
    s->busy = false;
    s->done_items += k.n;
    s->done_busy += s->cur_s;
    s->end_s = t;
    c->compute_end = t > c->compute_end ? t : c->compute_end;
    if (cfg->partitioned && cfg->out_bytes_per_item > 0 && k.home != r) {
        double at = transfer(c, r, k.home, (double)k.n * cfg->out_bytes_per_item, t);
        c->compute_end = at > c->compute_end ? at : c->compute_end;
    }
    if (s->nq > 0 && !start_chunk(c, r, t))
        return false;
    return ask(c, r, t);
}

static int check_cluster(const tdm_sim_cluster_config *cfg, int *nodes_out)
{
    if (!cfg)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: config is NULL");
    if (cfg->size < sizeof *cfg || cfg->version != TDM_SIM_CLUSTER_CONFIG_VERSION)
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate_cluster: config size %u / version %u not supported (start "
                        "from TDM_SIM_CLUSTER_CONFIG_INIT)",
                        cfg->size, cfg->version);
    if (cfg->n_groups < 1 || cfg->n_groups > TDM_SIM_MAX_GROUPS)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: %d node groups (1..%d)",
                        cfg->n_groups, TDM_SIM_MAX_GROUPS);
    int nodes = 0;
    for (int g = 0; g < cfg->n_groups; g++) {
        int n = cfg->groups[g].count;
        if (n < 1 || n > TDM_SIM_MAX_NODES || nodes + n > TDM_SIM_MAX_NODES)
            return tdm__err(NULL, TDM_EINVAL,
                            "tdm_simulate_cluster: group %d has %d nodes (each group at least "
                            "1, at most %d nodes in all)",
                            g, n, TDM_SIM_MAX_NODES);
        nodes += n;
    }
    if (cfg->items < 1)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: items %lld must be > 0",
                        (long long)cfg->items);
    if (!(cfg->net_bandwidth > 0) || !isfinite(cfg->net_bandwidth))
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate_cluster: network bandwidth %g must be > 0 bytes/s",
                        cfg->net_bandwidth);
    const struct {
        const char *name;
        double v;
    } nonneg[] = {{"net_latency_s", cfg->net_latency_s},
                  {"coord_service_s", cfg->coord_service_s},
                  {"payload_bytes", cfg->payload_bytes},
                  {"in_bytes_per_item", cfg->in_bytes_per_item},
                  {"out_bytes_per_item", cfg->out_bytes_per_item}};
    for (size_t i = 0; i < sizeof nonneg / sizeof nonneg[0]; i++)
        if (!(nonneg[i].v >= 0) || !isfinite(nonneg[i].v))
            return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: %s %g must be >= 0",
                            nonneg[i].name, nonneg[i].v);
    if ((int)cfg->gather < TDM_SIM_GATHER_ROOT || cfg->gather > TDM_SIM_GATHER_NONE)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: unknown gather mode %d",
                        (int)cfg->gather);
    if (cfg->min_chunk < 0)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: min_chunk is negative");
    if (cfg->max_in_flight < 0 || cfg->max_in_flight > TDM_SIM_MAX_IN_FLIGHT)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: max_in_flight %d not in 0..%d",
                        cfg->max_in_flight, TDM_SIM_MAX_IN_FLIGHT);
    if (cfg->chunk_divisor != 0 && (!(cfg->chunk_divisor >= 1) || !isfinite(cfg->chunk_divisor)))
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate_cluster: chunk_divisor %g must be 0 (the default) or >= 1",
                        cfg->chunk_divisor);
    if (!(cfg->node_noise >= 0) || cfg->node_noise >= 1)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: node_noise %g not in [0, 1)",
                        cfg->node_noise);
    if (cfg->slow_node < -1 || cfg->slow_node >= nodes)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: slow_node %d not in -1..%d",
                        cfg->slow_node, nodes - 1);
    if (cfg->slow_node >= 0 && (!(cfg->slow_factor > 0) || !isfinite(cfg->slow_factor)))
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: slow_factor %g must be > 0",
                        cfg->slow_factor);
    *nodes_out = nodes;
    return 0;
}

/* Each group's node alone on the whole map, under its own scheduler. */
static int model_groups(cluster_run *c)
{
    const tdm_sim_cluster_config *cfg = c->cfg;
    for (int g = 0; g < cfg->n_groups; g++) {
        tdm_sim_config node = cfg->groups[g].node;
        node.items = cfg->items;
        if (cfg->calibrated)
            node.calibrated = 1;
        tdm_sim_result sr;
        int rc = tdm_simulate(&node, &sr);
        if (rc != 0) {
            char why[TDM__ERRMSG_LEN];
            snprintf(why, sizeof why, "%s", tdm_errmsg(NULL));
            return tdm__err(NULL, rc, "tdm_simulate_cluster: group %d: %s", g, why);
        }
        group_model *m = &c->g[g];
        m->nb = node.n_backends;
        m->lanes_rate = 0;
        for (int b = 0; b < node.n_backends; b++) {
            const tdm_sim_backend *k = &node.backends[b];
            m->count[b] = k->count;
            m->lat[b] = k->latency_s;
            m->eff[b] =
                (k->ns_per_item + (k->bandwidth > 0 ? k->bytes_per_item / k->bandwidth * 1e9 : 0)) *
                1e-9;
            m->lanes_rate += k->count / m->eff[b];
        }
        m->rate = (double)cfg->items / sr.makespan_s;
        m->k = m->lanes_rate / m->rate;
        c->res->groups[g].rate = m->rate;
        c->res->groups[g].lanes_rate = m->lanes_rate;
    }
    return 0;
}

/* Contiguous initial ranges, in proportion to the groups' rates (calibrated) or equal. */
static void split(cluster_run *c)
{
    double total = 0;
    for (int r = 0; r < c->P; r++)
        total += c->cfg->calibrated ? c->g[c->r[r].group].rate : 1.0;
    double cum = 0;
    int64_t lo = 0, N = c->cfg->items;
    for (int r = 0; r < c->P; r++) {
        cum += c->cfg->calibrated ? c->g[c->r[r].group].rate : 1.0;
        int64_t hi = r == c->P - 1 ? N : (int64_t)floor((long double)N * cum / total + 0.5L);
        hi = hi < lo ? lo : hi > N ? N : hi;
        c->r[r].lo = lo;
        c->r[r].hi = hi;
        c->r[r].part = hi - lo;
        lo = hi;
    }
}

static int rounds(int P) /* ceil(log2 P) */
{
    int k = 0;
    while ((1 << k) < P)
        k++;
    return k;
}

int tdm_simulate_cluster(const tdm_sim_cluster_config *cfg, tdm_sim_cluster_result *res,
                         tdm_sim_node_result *nodes, size_t n_nodes)
{
    int P = 0;
    int rc = check_cluster(cfg, &P);
    if (rc < 0)
        return rc;
    if (!res)
        return tdm__err(NULL, TDM_EINVAL, "tdm_simulate_cluster: result is NULL");
    if (nodes && n_nodes < (size_t)P)
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate_cluster: room for %zu node results, the cluster has %d",
                        n_nodes, P);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(res, 0, sizeof *res);
    res->nodes = P;
    res->n_groups = cfg->n_groups;
    cluster_run c = {.cfg = cfg,
                     .P = P,
                     .res = res,
                     .rng = cfg->seed,
                     .L = cfg->net_latency_s,
                     .B = cfg->net_bandwidth,
                     .in_flight = cfg->max_in_flight > 0 ? cfg->max_in_flight : 2,
                     .divisor = cfg->chunk_divisor > 0 ? cfg->chunk_divisor : 0.0,
                     .ungranted = cfg->items};
    rc = model_groups(&c);
    if (rc < 0)
        return rc;
    c.r = calloc((size_t)P, sizeof *c.r);
    if (!c.r)
        return tdm__err(NULL, TDM_ENOMEM, "tdm_simulate_cluster: out of memory");
    double sum_rate = 0;
    for (int g = 0, r = 0; g < cfg->n_groups; g++) {
        for (int i = 0; i < cfg->groups[g].count; i++, r++) {
            rank_state *s = &c.r[r];
            s->group = g;
            s->home = r;
            s->slow = r == cfg->slow_node ? cfg->slow_factor : 1.0;
            c.sum_prior_unmeasured += c.g[g].rate;
            sum_rate += c.g[g].rate / s->slow;
        }
    }
    split(&c);

    res->broadcast_s = cfg->payload_bytes > 0 ? rounds(P) * (c.L + cfg->payload_bytes / c.B) : 0.0;
    double begin = res->broadcast_s;
    c.compute_end = begin;
    bool ok = true;
    for (int r = 0; r < P && ok; r++)
        ok = ask(&c, r, begin);
    while (ok && c.h.n > 0) {
        event e = heap_pop(&c.h);
        if (e.kind == EV_REQ)
            ok = serve(&c, e.rank, e.t);
        else if (e.kind == EV_GRANT)
            ok = granted(&c, e.rank, e.t);
        else
            ok = chunk_done(&c, e.rank, e.t);
    }
    free(c.h.v);
    int64_t computed = 0;
    for (int r = 0; r < P; r++)
        computed += c.r[r].done_items;
    if (!ok) {
        free(c.r);
        return tdm__err(NULL, TDM_ENOMEM, "tdm_simulate_cluster: out of memory");
    }
    if (computed != cfg->items) { /* not reached: every item is granted exactly once */
        free(c.r);
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_simulate_cluster: internal error: %lld of %lld items computed",
                        (long long)computed, (long long)cfg->items);
    }
    res->compute_s = c.compute_end - begin;

    /* the gather, after the last chunk: every other rank's outputs through rank 0's link */
    if (cfg->gather != TDM_SIM_GATHER_NONE && cfg->out_bytes_per_item > 0 && P > 1) {
        for (int r = 1; r < P; r++) {
            int64_t held = cfg->partitioned ? c.r[r].part : c.r[r].done_items;
            if (held > 0) {
                double b = (double)held * cfg->out_bytes_per_item;
                res->gather_s += c.L + b / c.B;
                res->gather_bytes += b;
            }
        }
        if (cfg->gather == TDM_SIM_GATHER_ALL)
            res->gather_s += rounds(P) * (c.L + (double)cfg->items * cfg->out_bytes_per_item / c.B);
    }
    for (int r = 0; r < P; r++) {
        const rank_state *s = &c.r[r];
        tdm_sim_group_result *gr = &res->groups[s->group];
        gr->items += s->done_items;
        gr->busy_s += s->done_busy;
        gr->steals += s->steals;
        if (nodes)
            nodes[r] = (tdm_sim_node_result){.group = s->group,
                                             .rate = c.g[s->group].rate / s->slow,
                                             .items = s->done_items,
                                             .chunks = s->chunks,
                                             .busy_s = s->done_busy,
                                             .steals = s->steals,
                                             .stolen_items = s->stolen,
                                             .end_s = s->end_s};
    }
    free(c.r);

    res->makespan_s = res->broadcast_s + res->compute_s + res->gather_s;
    res->ideal_s = (double)cfg->items / sum_rate;
    res->single_s = (double)cfg->items / c.g[0].rate;
    res->speedup = res->single_s / res->makespan_s;
    res->ideal_speedup = res->single_s / res->ideal_s;
    res->efficiency = res->ideal_s / res->makespan_s;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    res->host_s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return 0;
}
