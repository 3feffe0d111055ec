/* One distributed map over two or more MPI ranks.
 *
 * Rank 0 coordinates; every rank (rank 0 too) computes. The calling thread of each rank runs
 * an event loop: it asks rank 0 for chunks (keeping two running, so it never waits for an
 * answer), runs each chunk as a local asynchronous map on its own runtime (threads, worker
 * processes, devices: its own scheduler), reports chunks done and progress, and answers rank
 * 0's requests to lend rows. Rank 0 also keeps the ranges: each rank owns a contiguous range,
 * split in proportion to its throughput; a chunk is a guided share of what is left (a
 * sixteenth of the rank's share of all ungranted items while its rate is unknown, a quarter
 * after, at least 2 ms of its work), so chunks shrink
 * towards the end; a rank whose range is empty takes the back of the range with the most time
 * left, split in proportion to the two ranks' rates (stealing). In a partitioned layout the
 * stolen rows travel from their owner to the thief and the results travel back.
 * Messages: small control messages on one communicator, bulk rows on another, all
 * non-blocking, so no two ranks can block each other. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist_run.h"

/* ---- small helpers ---------------------------------------------------------------------- */

static int tag_of(const run *s, int64_t id)
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
static int post(run *s, bool send, void *p, size_t bytes, int peer, int tag, reqv *v)
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
static int reap_ctl(run *s)
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

static void release_chunk(chunk *k)
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
static double my_rate(const run *s)
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
static int on_grant(run *s, const dmsg *m)
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
                    rc = post(s, false, tdm_tensor_data(k->tin[i]), (size_t)n * s->in_rb[i],
                              k->owner, tag_of(s, k->id), &k->reqs);
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
static int on_send_rows(run *s, const dmsg *m)
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
    int tag = tag_of(s, m->id), rc = 0;
    int thief = m->owner;
    for (int i = 0; i < c->n_in && rc == 0; i++)
        if (!(c->whole >> i & 1u))
            rc = post(s, true, (char *)tdm__tensor_host(c->in[i]) + (size_t)lb * s->in_rb[i],
                      (size_t)n * s->in_rb[i], thief, tag, &l->reqs);
    for (int j = 0; j < c->n_out && rc == 0; j++)
        rc = post(s, false, (char *)tdm_tensor_data(c->out[j]) + (size_t)lb * s->out_rb[j],
                  (size_t)n * s->out_rb[j], thief, tag, &l->reqs);
    return rc;
}

/* Polls this rank's chunks and loans; returns whether anything moved, or <0 on failure. */
static int poll_chunks(run *s)
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
            m.rate = my_rate(s);
            m.bw = k->in_bw;
            int rc = tdm__drun_send(s, M_DONE, 0, &m);
            if (rc != 0)
                return rc;
            if (!c->pfor && c->dopts.layout == TDM_DIST_PARTITIONED && k->owner != d->rank) {
                /* the results go home (whatever the status: the owner waits for them) */
                for (int j = 0; j < c->n_out && rc == 0; j++)
                    rc = post(s, true, tdm_tensor_data(k->tout[j]), (size_t)n * s->out_rb[j],
                              k->owner, tag_of(s, k->id), &k->reqs);
                if (rc != 0)
                    return rc;
                k->state = C_SEND;
            } else {
                release_chunk(k);
            }
            moved = 1;
        } else if (k->state == C_SEND) {
            int t = reqv_test(s, &k->reqs);
            if (t < 0)
                return t;
            if (t) {
                release_chunk(k);
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

/* ---- the loop --------------------------------------------------------------------------- */

static int handle(run *s, int tag, const dmsg *m)
{
    switch (tag) {
    case M_GRANT:
        s->req_pending = false;
        if (m->no_more) {
            s->want = false;
            return 0;
        }
        return on_grant(s, m);
    case M_SEND_ROWS:
        return on_send_rows(s, m);
    case M_END:
        s->ended = true;
        s->end_status = m->status;
        snprintf(s->end_msg, sizeof s->end_msg, "%s", m->msg);
        return 0;
    default:
        return s->d->rank == 0 ? tdm__dcoord_msg(s, tag, m) : 0;
    }
}

static int loop(run *s)
{
    tdm_dist *d = s->d;
    long nap_us = 20;
    while (!s->ended) {
        int moved = 0, rc;
        if (s->want && !s->req_pending && s->running < 2) {
            dmsg m = {0};
            m.rate = my_rate(s);
            if ((rc = tdm__drun_send(s, M_REQ, 0, &m)) != 0)
                return rc;
            s->req_pending = true;
        }
        for (;;) {
            int flag = 0;
            MPI_Status st;
            rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, d->ctl, &flag, &st);
            if (rc != MPI_SUCCESS)
                return tdm__mpi_err(d, rc, "MPI_Iprobe");
            if (!flag)
                break;
            dmsg m;
            rc = MPI_Recv(&m, (int)sizeof m, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, d->ctl,
                          MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS)
                return tdm__mpi_err(d, rc, "MPI_Recv");
            if ((rc = handle(s, st.MPI_TAG, &m)) != 0)
                return rc;
            moved = 1;
        }
        if ((rc = poll_chunks(s)) < 0)
            return rc;
        moved |= rc;
        if ((rc = reap_ctl(s)) != 0)
            return rc;
        uint64_t now = tdm__now_ns();
        /* progress (and the rate) at a bounded rate, and at once when the first items end */
        int64_t done = s->running > 0 ? tdm__drun_items_done(s) : s->prog_sent;
        if (s->running > 0 && done != s->prog_sent && (now >= s->next_prog || s->prog_sent == 0)) {
            s->next_prog = now + s->prog_step;
            dmsg m = {0};
            m.items = s->prog_sent = done;
            m.rate = my_rate(s);
            if ((rc = tdm__drun_send(s, M_PROG, 0, &m)) != 0)
                return rc;
        }
        if (d->rank == 0) {
            coord *k = &s->k;
            if (now >= k->next_draw) {
                k->next_draw = now + s->prog_step;
                tdm__dcoord_draw(s, false);
            }
            if (k->n_finished == d->size && k->outstanding == 0 && !k->end_sent) {
                k->end_sent = true; /* once: a second END would be read by the next map */
                dmsg e = {0};
                e.status = k->err;
                snprintf(e.msg, sizeof e.msg, "%s", k->err_msg);
                for (int r = 0; r < d->size; r++)
                    if ((rc = tdm__drun_send(s, M_END, r, &e)) != 0)
                        return rc;
                moved = 1;
            }
        }
        if (moved) {
            nap_us = 20;
        } else {
            /* Nothing happened: wait for a chunk to finish, or a while (MPI messages can only
             * be polled), backing off to 1 ms so an idle rank costs little CPU. Two chunks in
             * flight per rank hide the delay from the work. */
            uint64_t until = tdm__now_ns() + (uint64_t)nap_us * 1000u;
            struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
            pthread_mutex_lock(&s->wake_mu);
            while (!s->woken && pthread_cond_timedwait(&s->wake_cv, &s->wake_mu, &ts) == 0)
                ;
            s->woken = false;
            pthread_mutex_unlock(&s->wake_mu);
            nap_us = nap_us * 2 > 1000 ? 1000 : nap_us * 2;
        }
    }
    return 0;
}

/* Waits for every request this rank still has in flight. */
static int drain(run *s)
{
    int rc = 0;
    for (int i = 0; i < s->n_ch; i++) {
        chunk *k = &s->ch[i];
        if (k->state == C_RUN && k->job) { /* only after a failure */
            tdm_job_cancel((tdm_job *)k->job);
            tdm_job_free((tdm_job *)k->job);
            k->job = NULL;
        }
        if (k->reqs.n && MPI_Waitall(k->reqs.n, k->reqs.r, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            rc = TDM_ECOMM;
        k->reqs.n = 0;
        if (k->state != C_FREE)
            release_chunk(k);
        free(k->reqs.r);
    }
    for (int i = 0; i < s->n_ln; i++) {
        if (s->ln[i].reqs.n &&
            MPI_Waitall(s->ln[i].reqs.n, s->ln[i].reqs.r, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            rc = TDM_ECOMM;
        free(s->ln[i].reqs.r);
    }
    for (int i = 0; i < s->n_cs; i++) {
        if (MPI_Wait(&s->cs[i]->req, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            rc = TDM_ECOMM;
        free(s->cs[i]);
    }
    s->n_cs = 0;
    return rc;
}

/* REPLICATED: the chunks' results to rank 0 (and then to all). */
static int gather(run *s)
{
    tdm_dist *d = s->d;
    tdm__dcall *c = s->c;
    reqv v = {0};
    int rc = 0;
    if (d->rank == 0) {
        coord *k = &s->k;
        for (int64_t i = 0; i < k->n_log && rc == 0; i++) {
            if (k->log[i].rank == 0 || k->log[i].status != 0)
                continue;
            int64_t b = k->log[i].b, n = k->log[i].e - b;
            for (int j = 0; j < c->n_out && rc == 0; j++)
                rc = post(s, false, (char *)tdm_tensor_data(c->out[j]) + (size_t)b * s->out_rb[j],
                          (size_t)n * s->out_rb[j], k->log[i].rank, tag_of(s, k->log[i].id), &v);
        }
    } else {
        for (int64_t i = 0; i < s->n_dn && rc == 0; i++) {
            if (s->dn[i].status != 0)
                continue;
            int64_t b = s->dn[i].begin, n = s->dn[i].end - b;
            for (int j = 0; j < c->n_out && rc == 0; j++)
                rc = post(s, true, (char *)tdm_tensor_data(c->out[j]) + (size_t)b * s->out_rb[j],
                          (size_t)n * s->out_rb[j], 0, tag_of(s, s->dn[i].id), &v);
        }
    }
    if (v.n && MPI_Waitall(v.n, v.r, MPI_STATUSES_IGNORE) != MPI_SUCCESS && rc == 0)
        rc = tdm__err(d->rt, TDM_ECOMM, "distributed map: gathering results failed");
    free(v.r);
    if (rc == 0 && c->dopts.gather == TDM_DIST_GATHER_ALL)
        for (int j = 0; j < c->n_out && rc == 0; j++)
            rc = tdm__dcomm_bcast(d, tdm_tensor_data(c->out[j]), tdm_tensor_nbytes(c->out[j]), 0);
    return rc;
}

int tdm__dist_run(tdm_dist *d, tdm__dcall *c)
{
    run s;
    memset(&s, 0, sizeof s);
    s.d = d;
    s.c = c;
    s.want = true;
    s.t_start = tdm__now_ns();
    double iv = c->dopts.progress_interval_s > 0  ? c->dopts.progress_interval_s
                : c->opts.progress_interval_s > 0 ? c->opts.progress_interval_s
                                                  : 0.1;
    s.prog_step = (uint64_t)(iv * 1e9);
    s.next_prog = s.t_start + s.prog_step;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* tdm__now_ns()'s clock */
    pthread_cond_init(&s.wake_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s.wake_mu, NULL);
    int rc = 0;
    if (!c->pfor) {
        for (int i = 0; i < c->n_in && rc == 0; i++) {
            rc = tdm_tensor_to_host(c->in[i]); /* read only: the device copy stays valid */
            s.in_rb[i] = c->whole >> i & 1u
                             ? 0
                             : tdm__row_bytes(tdm_tensor_dtype(c->in[i]), tdm_tensor_ndim(c->in[i]),
                                              tdm_tensor_shape(c->in[i]));
        }
        for (int j = 0; j < c->n_out; j++)
            s.out_rb[j] = tdm__row_bytes(tdm_tensor_dtype(c->out[j]), tdm_tensor_ndim(c->out[j]),
                                         tdm_tensor_shape(c->out[j]));
    }
    if (rc == 0 && d->rank == 0)
        rc = tdm__dcoord_init(&s);
    rc = tdm__dist_agree(d, rc, c->pfor ? "tdm_dist_parallel_for" : "tdm_dist_map");
    if (rc == 0)
        rc = loop(&s);
    if (rc != 0) {
        /* an MPI failure or no memory mid-run: nothing more can be promised */
        drain(&s);
        if (d->rank == 0)
            tdm__dcoord_free(&s.k);
        free(s.ch), free(s.ln), free(s.dn), free(s.cs);
        pthread_cond_destroy(&s.wake_cv);
        pthread_mutex_destroy(&s.wake_mu);
        return rc;
    }
    int drc = drain(&s); /* every chunk's job is freed here: no hook runs after this */
    pthread_cond_destroy(&s.wake_cv);
    pthread_mutex_destroy(&s.wake_mu);
    uint64_t t_compute = tdm__now_ns();
    if (d->rank == 0)
        tdm__dcoord_draw(&s, true);
    int status = s.end_status;
    if (drc != 0)
        rc = tdm__err(d->rt, TDM_ECOMM, "distributed map: a transfer failed");
    if (rc == 0 && !c->pfor && c->dopts.layout == TDM_DIST_REPLICATED)
        rc = gather(&s);
    tdm_dist_report *r = c->rep;
    if (d->rank == 0) {
        coord *k = &s.k;
        uint64_t t_end = tdm__now_ns();
        r->wall_s = (double)(t_end - s.t_start) * 1e-9;
        r->compute_s = (double)(t_compute - s.t_start) * 1e-9;
        r->gather_s = (double)(t_end - t_compute) * 1e-9;
        r->chunks = k->next_id;
        r->steals = k->steals;
        r->bytes_moved = k->bytes_moved;
        int64_t items = 0;
        for (int i = 0; i < d->size; i++) {
            items += k->items[i];
            if (i < TDM_DIST_MAX_REPORT_RANKS) {
                r->ranks[i].items = k->items[i];
                r->ranks[i].chunks = k->chunks[i];
                r->ranks[i].stolen_items = k->stolen[i];
                r->ranks[i].busy_s = k->busy[i];
                r->ranks[i].rate = k->busy[i] > 0 ? (double)k->items[i] / k->busy[i] : 0;
                r->ranks[i].status = k->status[i];
            }
        }
        r->items = items;
        if (!c->pfor && c->dopts.layout == TDM_DIST_REPLICATED) {
            size_t rb = 0;
            for (int j = 0; j < c->n_out; j++)
                rb += s.out_rb[j];
            r->bytes_moved += (int64_t)rb * (items - k->items[0]) *
                              (c->dopts.gather == TDM_DIST_GATHER_ALL ? d->size : 1);
        }
        tdm__dcoord_free(k);
    }
    free(s.ch), free(s.ln), free(s.dn), free(s.cs);
    uint32_t keep = r->size;
    int brc = tdm__dcomm_bcast(d, r, sizeof *r, 0);
    r->size = keep;
    rc = tdm__dist_agree(d, rc ? rc : brc, c->pfor ? "tdm_dist_parallel_for" : "tdm_dist_map");
    if (rc != 0)
        return rc;
    if (status != 0)
        return tdm__err(d->rt, status, "%s: %s", c->pfor ? "tdm_dist_parallel_for" : "tdm_dist_map",
                        s.end_msg);
    return 0;
}
