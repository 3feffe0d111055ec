/* SPDX-License-Identifier: MIT */
/* Rank 0's side of a distributed map: the ranges of items each rank owns, split in proportion
 * to the ranks' rates; the chunks it grants (a sixteenth of the rank's share of what is left
 * while its rate is unknown, then a quarter; at least 2 ms of its work, capped by its range);
 * stealing for a rank whose range is empty (the back of the range with the most time left, split by
 * the two ranks' rates), with the rows' transfer ordered from their owner in a partitioned layout;
 * the first error; the global progress bar. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_run.h"

static double rate_of(const run *s, int r)
{
    const coord *k = &s->k;
    if (k->rate[r] > 0)
        return k->rate[r];
    double sum = 0;
    int n = 0;
    for (int i = 0; i < s->d->size; i++)
        if (k->rate[i] > 0) {
            sum += k->rate[i];
            n++;
        }
    return n ? sum / n : 1.0;
}

int tdm__dcoord_init(run *s)
{
    tdm_dist *d = s->d;
    tdm__dcall *c = s->c;
    coord *k = &s->k;
    size_t n = (size_t)d->size;
    k->b = calloc(n, sizeof *k->b);
    k->e = calloc(n, sizeof *k->e);
    k->owner = calloc(n, sizeof *k->owner);
    k->from = calloc(n, sizeof *k->from);
    k->rate = calloc(n, sizeof *k->rate);
    k->finished = calloc(n, sizeof *k->finished);
    k->items = calloc(n, sizeof *k->items);
    k->chunks = calloc(n, sizeof *k->chunks);
    k->stolen = calloc(n, sizeof *k->stolen);
    k->prog = calloc(n, sizeof *k->prog);
    k->busy = calloc(n, sizeof *k->busy);
    k->status = calloc(n, sizeof *k->status);
    int64_t *rows = calloc(n, sizeof *rows);
    if (!k->b || !k->e || !k->owner || !k->from || !k->rate || !k->finished || !k->items ||
        !k->chunks || !k->stolen || !k->prog || !k->busy || !k->status || !rows) {
        free(rows);
        return tdm__err(d->rt, TDM_ENOMEM, "distributed map: out of memory");
    }
    const double *prior = tdm__dist_rates(d, c->what);
    for (int r = 0; r < d->size; r++)
        k->rate[r] = prior ? prior[r] : 0;
    if (c->dopts.layout == TDM_DIST_PARTITIONED) {
        for (int r = 0; r < d->size; r++)
            rows[r] = c->offset[r + 1] - c->offset[r];
    } else {
        tdm_dist_split(d, c->n_items, c->what, rows);
    }
    int64_t at = 0;
    for (int r = 0; r < d->size; r++) {
        k->b[r] = at;
        k->e[r] = at += rows[r];
        k->owner[r] = k->from[r] = r;
    }
    free(rows);
    k->ungranted = c->n_items;
    if (c->dopts.layout == TDM_DIST_PARTITIONED && !c->pfor) {
        for (int i = 0; i < c->n_in; i++)
            if (!(c->whole >> i & 1u))
                k->bpi += (double)s->in_rb[i];
        for (int j = 0; j < c->n_out; j++)
            k->bpi += (double)s->out_rb[j];
    }
    return 0;
}

void tdm__dcoord_free(coord *k)
{
    free(k->b), free(k->e), free(k->owner), free(k->from), free(k->rate), free(k->finished);
    free(k->items), free(k->chunks), free(k->stolen), free(k->prog), free(k->busy);
    free(k->status), free(k->log);
}

/* Moves the back of the range with the most time left to rank r. */
static bool steal_for(run *s, int r)
{
    coord *k = &s->k;
    int v = -1;
    double best = 0;
    for (int i = 0; i < s->d->size; i++) {
        int64_t rem = k->e[i] - k->b[i];
        double t = (double)rem / rate_of(s, i);
        if (i != r && rem >= 2 && t > best) {
            best = t;
            v = i;
        }
    }
    if (v < 0)
        return false;
    int64_t rem = k->e[v] - k->b[v];
    double rr = rate_of(s, r), rv = rate_of(s, v);
    /* Split so that both end together: the victim's rem - amt items at rv against the thief's
     * amt items at rr plus, when the rows must travel to it (partitioned, not its own rows),
     * their transfer at the bandwidth seen so far (1 GB/s until one is seen). A transfer
     * slower than the victim's own work leaves the items where they are. */
    double move = k->bpi > 0 && k->owner[v] != r ? k->bpi / (k->bw > 0 ? k->bw : 1e9) : 0.0;
    int64_t amt = (int64_t)floor((double)rem / rv / (1.0 / rv + 1.0 / rr + move));
    k->b[r] = k->e[v] - amt;
    k->e[r] = k->e[v];
    k->e[v] -= amt;
    k->owner[r] = k->owner[v];
    k->from[r] = v;
    k->steals++;
    return true;
}

static int coord_grant(run *s, int r)
{
    coord *k = &s->k;
    tdm__dcall *c = s->c;
    dmsg g = {0};
    if (!k->stop && k->e[r] == k->b[r] && !c->dopts.no_steal)
        (void)steal_for(s, r);
    int64_t rem = k->e[r] - k->b[r];
    if (k->stop || rem <= 0) {
        tdm__log(s->d->rt, TDM_DEBUG_MAP, "dist: rank %d has no more work", r);
        g.no_more = 1;
        if (!k->finished[r]) {
            k->finished[r] = true;
            k->n_finished++;
        }
        return tdm__drun_send(s, M_GRANT, r, &g);
    }
    double sum = 0;
    for (int i = 0; i < s->d->size; i++)
        sum += rate_of(s, i);
    /* a rank whose speed is not known yet gets a smaller bite (the share is a guess) */
    double div = k->rate[r] > 0 ? 4.0 : 16.0;
    int64_t want = (int64_t)ceil((double)k->ungranted * rate_of(s, r) / sum / div);
    int64_t minc = c->dopts.min_chunk > 0 ? c->dopts.min_chunk
                   : k->rate[r] > 0       ? (int64_t)(k->rate[r] * 0.002)
                                          : 1;
    if (minc < 1)
        minc = 1;
    if (want < minc)
        want = minc;
    if (want > rem)
        want = rem;
    g.id = k->next_id++;
    g.begin = k->b[r];
    g.end = k->b[r] + want;
    g.owner = c->dopts.layout == TDM_DIST_PARTITIONED ? k->owner[r] : r;
    k->b[r] += want;
    k->ungranted -= want;
    k->outstanding++;
    if (k->from[r] != r)
        k->stolen[r] += want;
    if (k->n_log == k->cap_log) {
        int64_t cap = k->cap_log ? k->cap_log * 2 : 256;
        void *gl = realloc(k->log, (size_t)cap * sizeof *k->log);
        if (!gl)
            return tdm__err(s->d->rt, TDM_ENOMEM, "distributed map: out of memory");
        k->log = gl;
        k->cap_log = cap;
    }
    k->log[k->n_log].id = g.id;
    k->log[k->n_log].b = g.begin;
    k->log[k->n_log].e = g.end;
    k->log[k->n_log].rank = r;
    k->log[k->n_log].owner = g.owner;
    k->log[k->n_log++].status = 0;
    tdm__log(s->d->rt, TDM_DEBUG_MAP,
             "dist: chunk %lld [%lld, %lld) to rank %d (rows of rank %d)%s", (long long)g.id,
             (long long)g.begin, (long long)g.end, r, g.owner, k->from[r] != r ? ", stolen" : "");
    int rc = 0;
    if (g.owner != r) {
        dmsg sr = g;
        sr.owner = r; /* to the owner: `owner` names the thief */
        rc = tdm__drun_send(s, M_SEND_ROWS, g.owner, &sr);
        size_t rb = 0;
        for (int i = 0; i < c->n_in; i++)
            if (!(c->whole >> i & 1u))
                rb += s->in_rb[i];
        for (int j = 0; j < c->n_out; j++)
            rb += s->out_rb[j];
        k->bytes_moved += (int64_t)rb * want;
    }
    return rc ? rc : tdm__drun_send(s, M_GRANT, r, &g);
}

int tdm__dcoord_msg(run *s, int tag, const dmsg *m)
{
    coord *k = &s->k;
    int r = m->rank;
    switch (tag) {
    case M_REQ:
        if (m->rate > 0)
            k->rate[r] = m->rate;
        return coord_grant(s, r);
    case M_PROG:
        k->prog[r] = m->items;
        if (m->rate > 0)
            k->rate[r] = m->rate;
        return 0;
    case M_DONE: {
        if (m->bw > 0) /* a smoothed estimate of how fast stolen rows travel */
            k->bw = k->bw > 0 ? 0.5 * k->bw + 0.5 * m->bw : m->bw;
        tdm__log(s->d->rt, TDM_DEBUG_MAP, "dist: chunk %lld done on rank %d (%s), %.0f items/s",
                 (long long)m->id, r, tdm_status_name(m->status), m->rate);
        if (m->rate > 0)
            k->rate[r] = m->rate;
        k->busy[r] = m->busy_s;
        k->items[r] += m->items;
        k->prog[r] = k->prog[r] > k->items[r] ? k->prog[r] : k->items[r];
        k->chunks[r]++;
        bool remote = false;
        for (int64_t i = k->n_log - 1; i >= 0; i--)
            if (k->log[i].id == m->id) {
                k->log[i].status = m->status;
                remote = k->log[i].owner != r; /* its results go home first */
                break;
            }
        if (!remote)
            k->outstanding--;
        if (m->status != 0) {
            if (!k->status[r])
                k->status[r] = m->status;
            if (!k->err) {
                k->err = m->status;
                snprintf(k->err_msg, sizeof k->err_msg,
                         "rank %d, chunk %lld (items %lld..%lld): %.300s", r, (long long)m->id,
                         (long long)m->begin, (long long)m->end, m->msg);
            }
            if (s->c->opts.on_error == TDM_ON_ERROR_STOP)
                k->stop = true;
        }
        return 0;
    }
    case M_HOME:
        k->outstanding--;
        return 0;
    default:
        return 0;
    }
}

void tdm__dcoord_draw(run *s, bool final)
{
    tdm__dcall *c = s->c;
    coord *k = &s->k;
    int mode = c->opts.progress;
    if (mode == TDM_PROGRESS_AUTO)
        mode = tdm__progress_auto_on() ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF;
    if (mode == TDM_PROGRESS_OFF)
        return;
    k->prog[0] = tdm__drun_items_done(s);
    int64_t done = 0;
    for (int r = 0; r < s->d->size; r++)
        done += k->prog[r];
    if (final)
        done = 0;
    for (int r = 0; final && r < s->d->size; r++)
        done += k->prog[r] = k->items[r];
    tdm_progress p = {0};
    p.done = done;
    p.total = c->n_items;
    p.elapsed_s = (double)(tdm__now_ns() - s->t_start) * 1e-9;
    p.rate = p.elapsed_s > 0 ? (double)done / p.elapsed_s : 0;
    p.eta_s = final ? 0 : p.rate > 0 ? (double)(c->n_items - done) / p.rate : -1;
    p.n_workers = s->d->size;
    p.per_worker = k->prog;
    p.final = final;
    if (mode == TDM_PROGRESS_CALLBACK) {
        if (c->opts.progress_fn)
            c->opts.progress_fn(&p, c->opts.progress_user);
        return;
    }
    char desc[96];
    snprintf(desc, sizeof desc, "%s x%d ranks", c->opts.desc ? c->opts.desc : c->what, s->d->size);
    tdm__progress_render(&p, desc, mode == TDM_PROGRESS_PER_WORKER, "rank", NULL,
                         tdm__progress_width(), &k->lines);
}
