/* SPDX-License-Identifier: MIT */
/* The chunks of a distributed map on one rank (dist_run.c runs the loop): small helpers for
 * requests and tags, starting a chunk as a local asynchronous map, receiving granted and
 * lent rows, and polling running chunks until their results are sent. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dist_run.h"
/* ---- small helpers ---------------------------------------------------------------------- */

int tdm__drun_tag_of(const run *s, int64_t id)
{
    return 16 + (int)(id % (int64_t)(s->d->tag_ub - 16));
}

static int reqv_push(reqv *v, MPI_Request r)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        MPI_Request *g = realloc(v->r, (size_t)cap * sizeof *g);
        if (!g)
            return TDM_ENOMEM;
        v->r = g;
        v->cap = cap;
    }
    v->r[v->n++] = r;
    return 0;
}

/* Posts the transfer of `bytes` at p to or from `peer` in pieces of at most 1 GiB. */
int tdm__drun_post(run *s, bool send, void *p, size_t bytes, int peer, int tag, reqv *v)
{
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < bytes; off += piece) {
        size_t n = bytes - off < piece ? bytes - off : piece;
        MPI_Request r;
        int rc = send ? MPI_Isend((char *)p + off, (int)n, MPI_BYTE, peer, tag, s->d->dat, &r)
                      : MPI_Irecv((char *)p + off, (int)n, MPI_BYTE, peer, tag, s->d->dat, &r);
        if (rc != MPI_SUCCESS)
            return tdm__mpi_err(s->d, rc, send ? "MPI_Isend" : "MPI_Irecv");
        if (reqv_push(v, r) != 0)
            return tdm__err(s->d->rt, TDM_ENOMEM, "distributed map: out of memory");
    }
    return 0;
}

/* 1 when every request of v completed (v is then emptied), 0 if not yet, <0 on failure. */
static int reqv_test(run *s, reqv *v)
{
    if (v->n == 0)
        return 1;
    int flag = 0;
    int rc = MPI_Testall(v->n, v->r, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        return tdm__mpi_err(s->d, rc, "MPI_Testall");
    if (flag)
        v->n = 0;
    return flag;
}

int tdm__drun_send(run *s, int type, int dest, const dmsg *m)
{
    if (s->n_cs == s->cap_cs) {
        int cap = s->cap_cs ? s->cap_cs * 2 : 16;
        csend **g = realloc(s->cs, (size_t)cap * sizeof *g);
        if (!g)
            return tdm__err(s->d->rt, TDM_ENOMEM, "distributed map: out of memory");
        s->cs = g;
        s->cap_cs = cap;
    }
    csend *c = malloc(sizeof *c);
    if (!c)
        return tdm__err(s->d->rt, TDM_ENOMEM, "distributed map: out of memory");
    c->m = *m;
    c->m.rank = s->d->rank;
    int rc = MPI_Isend(&c->m, (int)sizeof c->m, MPI_BYTE, dest, type, s->d->ctl, &c->req);
    if (rc != MPI_SUCCESS) {
        free(c);
        return tdm__mpi_err(s->d, rc, "MPI_Isend");
    }
    s->cs[s->n_cs++] = c;
    return 0;
}

/* Frees the control messages whose sends completed. */
int tdm__drun_reap_ctl(run *s)
{
    for (int i = 0; i < s->n_cs;) {
        int flag = 0;
        int rc = MPI_Test(&s->cs[i]->req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return tdm__mpi_err(s->d, rc, "MPI_Test");
        if (flag) {
            free(s->cs[i]);
            s->cs[i] = s->cs[--s->n_cs];
        } else {
            i++;
        }
    }
    return 0;
}

void tdm__drun_release_chunk(chunk *k)
{
    for (int i = 0; i < 16; i++) {
        tdm_tensor_release(k->tin[i]);
        tdm_tensor_release(k->tout[i]);
        k->tin[i] = k->tout[i] = NULL;
    }
    free(k->pblock);
    k->pblock = NULL;
    k->state = C_FREE;
}

static chunk *new_chunk(run *s)
{
    for (int i = 0; i < s->n_ch; i++)
        if (s->ch[i].state == C_FREE)
            return &s->ch[i];
    chunk *g = realloc(s->ch, (size_t)(s->n_ch + 1) * sizeof *g);
    if (!g)
        return NULL;
    s->ch = g;
    memset(&g[s->n_ch], 0, sizeof *g);
    g[s->n_ch].state = C_FREE;
    return &g[s->n_ch++];
}

static void busy_change(run *s, int delta)
{
    uint64_t now = tdm__now_ns();
    if (s->running == 0 && delta > 0)
        s->busy_since = now;
    s->running += delta;
    if (s->running == 0 && delta < 0)
        s->busy_ns += now - s->busy_since;
}

/* Items finished so far in this call: chunks done, and the batches done in running chunks. */
int64_t tdm__drun_items_done(const run *s)
{
    int64_t done = s->done_items;
    for (int i = 0; i < s->n_ch; i++)
        if (s->ch[i].state == C_RUN && s->ch[i].job)
            done += tdm__job_items_done(s->ch[i].job);
    return done;
}

/* This rank's items per second while it had chunks, from finished batches (so rank 0 learns a
 * rank's speed within its first chunk, not after it). */
double tdm__drun_my_rate(const run *s)
{
    uint64_t busy = s->busy_ns + (s->running ? tdm__now_ns() - s->busy_since : 0);
    int64_t done = tdm__drun_items_done(s);
    return busy > 0 && done > 0 ? (double)done / ((double)busy * 1e-9) : 0.0;
}

/* ---- parallel_for chunks: global item numbers ------------------------------------------ */

typedef struct {
    tdm_range_fn fn;
    int64_t offset;
    size_t size;
    _Alignas(16) unsigned char p[];
} pwrap;

static int pwrap_fn(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const pwrap *w = params;
    return w->fn(w->size ? w->p : NULL, begin + w->offset, end + w->offset, task);
}

/* ---- running chunks --------------------------------------------------------------------- */

/* A chunk's job finished (called by the pool, its mutex held: only note it and signal). */
static void chunk_finished(void *arg)
{
    run *s = arg;
    pthread_mutex_lock(&s->wake_mu);
    s->woken = true;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->wake_mu);
}

/* Starts the local map of a chunk whose inputs are in place. */
static void start_job(run *s, chunk *k)
{
    tdm__dcall *c = s->c;
    tdm_map_opts lo = c->opts;
    lo.progress = TDM_PROGRESS_OFF;
    lo.keep_on_device = 0;
    int64_t n = k->end - k->begin;
    int rc;
    k->launch_rc = 0;
    if (c->pfor) {
        pwrap *w = calloc(1, sizeof *w + c->params_size);
        if (!w) {
            rc = tdm__err(s->d->rt, TDM_ENOMEM, "distributed map: out of memory");
        } else {
            w->fn = c->fn;
            w->offset = k->begin;
            w->size = c->params_size;
            if (c->params_size)
                memcpy(w->p, c->params, c->params_size);
            k->pblock = w;
            rc = tdm__pfor_async_hook(s->d->rt, "tdm_dist_parallel_for", n, pwrap_fn, w,
                                      sizeof *w + c->params_size, &lo, chunk_finished, s, &k->job);
        }
    } else {
        rc = tdm__map_async_hook(s->d->rt, "tdm_dist_map", c->kernel, k->tin, c->n_in, k->tout,
                                 c->n_out, c->params, c->params_size, &lo, chunk_finished, s,
                                 &k->job);
    }
    k->state = C_RUN;
    k->t0 = tdm__now_ns();
    if (rc != 0) { /* reported as the chunk's failure when the loop polls it */
        k->job = NULL;
        k->launch_rc = rc;
        snprintf(k->launch_msg, sizeof k->launch_msg, "%s", tdm_errmsg(s->d->rt));
    }
}

static int view_or_ref(tdm_tensor *t, bool whole, int64_t b, int64_t e, tdm_tensor **out)
{
    if (whole) {
        *out = tdm_tensor_retain(t);
        return 0;
    }
    return tdm_tensor_view_rows(t, b, e, out);
}

/* A grant arrived: set the chunk up (views of local rows, or buffers for rows that live on
 * another rank, whose transfer is posted here) and start it when its inputs are present. */
int tdm__drun_on_grant(run *s, const dmsg *m)
{
    tdm__dcall *c = s->c;
    tdm_dist *d = s->d;
    chunk *k = new_chunk(s);
    if (!k)
        return tdm__err(d->rt, TDM_ENOMEM, "distributed map: out of memory");
    reqv keep = k->reqs; /* a reused slot keeps its request array */
    memset(k, 0, sizeof *k);
    k->reqs = keep;
    k->reqs.n = 0;
    k->id = m->id;
    k->begin = m->begin;
    k->end = m->end;
    k->owner = m->owner;
    k->state = C_RECV;
    k->t_grant = tdm__now_ns();
    busy_change(s, +1);
    int64_t n = k->end - k->begin;
    int rc = 0;
    if (!c->pfor) {
        bool part = c->dopts.layout == TDM_DIST_PARTITIONED;
        bool remote = part && k->owner != d->rank;
        int64_t base = part && !remote ? c->offset[d->rank] : 0;
        unsigned mem = tdm__runtime_procs(d->rt) > 0 ? TDM_MEM_SHARED : TDM_MEM_HOST;
        for (int i = 0; i < c->n_in && rc == 0; i++) {
            bool whole = c->whole >> i & 1u;
            if (!remote || whole) {
                rc = view_or_ref(c->in[i], whole, k->begin - base, k->end - base, &k->tin[i]);
            } else {
                int64_t shape[TDM_MAX_DIMS];
                memcpy(shape, tdm_tensor_shape(c->in[i]), sizeof shape);
                shape[0] = n;
                rc = tdm_tensor_empty(d->rt, tdm_tensor_dtype(c->in[i]), tdm_tensor_ndim(c->in[i]),
                                      shape, mem, &k->tin[i]);
                if (rc == 0)
                    rc = tdm__drun_post(s, false, tdm_tensor_data(k->tin[i]),
                                        (size_t)n * s->in_rb[i], k->owner,
                                        tdm__drun_tag_of(s, k->id), &k->reqs);
            }
        }
        for (int j = 0; j < c->n_out && rc == 0; j++) {
            if (!remote) {
                rc = tdm_tensor_view_rows(c->out[j], k->begin - base, k->end - base, &k->tout[j]);
            } else {
                int64_t shape[TDM_MAX_DIMS];
                memcpy(shape, tdm_tensor_shape(c->out[j]), sizeof shape);
                shape[0] = n;
                rc = tdm_tensor_empty(d->rt, tdm_tensor_dtype(c->out[j]),
                                      tdm_tensor_ndim(c->out[j]), shape, mem, &k->tout[j]);
            }
        }
    }
    if (rc != 0)
        return rc; /* out of memory here: the run cannot keep its promises */
    if (k->reqs.n == 0)
        start_job(s, k);
    return 0;
}

/* The owner's side of a steal: send the rows, post the receive of their results. */
int tdm__drun_on_send_rows(run *s, const dmsg *m)
{
    tdm__dcall *c = s->c;
    tdm_dist *d = s->d;
    lend *l = NULL;
    for (int i = 0; i < s->n_ln && !l; i++)
        if (!s->ln[i].active)
            l = &s->ln[i];
    if (!l) {
        lend *g = realloc(s->ln, (size_t)(s->n_ln + 1) * sizeof *g);
        if (!g)
            return tdm__err(d->rt, TDM_ENOMEM, "distributed map: out of memory");
        s->ln = g;
        l = &g[s->n_ln++];
        memset(l, 0, sizeof *l);
    }
    l->active = true;
    l->id = m->id;
    int64_t lb = m->begin - c->offset[d->rank], n = m->end - m->begin;
    int tag = tdm__drun_tag_of(s, m->id), rc = 0;
    int thief = m->owner;
    for (int i = 0; i < c->n_in && rc == 0; i++)
        if (!(c->whole >> i & 1u))
            rc = tdm__drun_post(s, true,
                                (char *)tdm__tensor_host(c->in[i]) + (size_t)lb * s->in_rb[i],
                                (size_t)n * s->in_rb[i], thief, tag, &l->reqs);
    for (int j = 0; j < c->n_out && rc == 0; j++)
        rc =
            tdm__drun_post(s, false, (char *)tdm_tensor_data(c->out[j]) + (size_t)lb * s->out_rb[j],
                           (size_t)n * s->out_rb[j], thief, tag, &l->reqs);
    return rc;
}

/* Polls this rank's chunks and loans; returns whether anything moved, or <0 on failure. */
int tdm__drun_poll_chunks(run *s)
{
    tdm__dcall *c = s->c;
    tdm_dist *d = s->d;
    int moved = 0;
    for (int i = 0; i < s->n_ch; i++) {
        chunk *k = &s->ch[i];
        if (k->state == C_RECV) {
            int t = reqv_test(s, &k->reqs);
            if (t < 0)
                return t;
            if (t) {
                size_t bytes = 0;
                for (int x = 0; x < c->n_in && k->owner != d->rank && !c->pfor; x++)
                    if (!(c->whole >> x & 1u))
                        bytes += (size_t)(k->end - k->begin) * s->in_rb[x];
                uint64_t dt = tdm__now_ns() - k->t_grant;
                k->in_bw = bytes && dt ? (double)bytes / ((double)dt * 1e-9) : 0.0;
                start_job(s, k);
                moved = 1;
            }
        } else if (k->state == C_RUN) {
            if (k->job && !tdm__job_finished(k->job))
                continue;
            dmsg m = {0};
            int st;
            if (k->job) {
                st = tdm_job_wait((tdm_job *)k->job, NULL);
                if (st != 0)
                    snprintf(m.msg, sizeof m.msg, "%s", tdm_errmsg(d->rt));
                tdm_job_free((tdm_job *)k->job);
                k->job = NULL;
            } else {
                st = k->launch_rc;
                snprintf(m.msg, sizeof m.msg, "%s", k->launch_msg);
            }
            uint64_t t1 = tdm__now_ns();
            tdm__trace_span(d->rt, TDM__TRACE_DIST_LANE, c->what, k->id, k->begin, k->end, st,
                            k->t0, t1);
            busy_change(s, -1);
            int64_t n = k->end - k->begin;
            if (st == 0)
                s->done_items += n;
            if (s->n_dn == s->cap_dn) {
                int64_t cap = s->cap_dn ? s->cap_dn * 2 : 64;
                donec *g = realloc(s->dn, (size_t)cap * sizeof *g);
                if (!g)
                    return tdm__err(d->rt, TDM_ENOMEM, "distributed map: out of memory");
                s->dn = g;
                s->cap_dn = cap;
            }
            s->dn[s->n_dn++] = (donec){k->id, k->begin, k->end, st};
            m.id = k->id;
            m.begin = k->begin;
            m.end = k->end;
            m.status = st;
            m.items = st == 0 ? n : 0;
            m.busy_s = (double)(s->busy_ns + (s->running ? t1 - s->busy_since : 0)) * 1e-9;
            m.rate = tdm__drun_my_rate(s);
            m.bw = k->in_bw;
            int rc = tdm__drun_send(s, M_DONE, 0, &m);
            if (rc != 0)
                return rc;
            if (!c->pfor && c->dopts.layout == TDM_DIST_PARTITIONED && k->owner != d->rank) {
                /* the results go home (whatever the status: the owner waits for them) */
                for (int j = 0; j < c->n_out && rc == 0; j++)
                    rc = tdm__drun_post(s, true, tdm_tensor_data(k->tout[j]),
                                        (size_t)n * s->out_rb[j], k->owner,
                                        tdm__drun_tag_of(s, k->id), &k->reqs);
                if (rc != 0)
                    return rc;
                k->state = C_SEND;
            } else {
                tdm__drun_release_chunk(k);
            }
            moved = 1;
        } else if (k->state == C_SEND) {
            int t = reqv_test(s, &k->reqs);
            if (t < 0)
                return t;
            if (t) {
                tdm__drun_release_chunk(k);
                moved = 1;
            }
        }
    }
    for (int i = 0; i < s->n_ln; i++) {
        lend *l = &s->ln[i];
        if (!l->active)
            continue;
        int t = reqv_test(s, &l->reqs);
        if (t < 0)
            return t;
        if (t) {
            l->active = false;
            dmsg m = {0};
            m.id = l->id;
            int rc = tdm__drun_send(s, M_HOME, 0, &m);
            if (rc != 0)
                return rc;
            moved = 1;
        }
    }
    return moved;
}
