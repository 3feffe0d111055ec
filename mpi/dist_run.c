/* SPDX-License-Identifier: MIT */
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
        return tdm__drun_on_grant(s, m);
    case M_SEND_ROWS:
        return tdm__drun_on_send_rows(s, m);
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
            m.rate = tdm__drun_my_rate(s);
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
        if ((rc = tdm__drun_poll_chunks(s)) < 0)
            return rc;
        moved |= rc;
        if ((rc = tdm__drun_reap_ctl(s)) != 0)
            return rc;
        uint64_t now = tdm__now_ns();
        /* progress (and the rate) at a bounded rate, and at once when the first items end */
        int64_t done = s->running > 0 ? tdm__drun_items_done(s) : s->prog_sent;
        if (s->running > 0 && done != s->prog_sent && (now >= s->next_prog || s->prog_sent == 0)) {
            s->next_prog = now + s->prog_step;
            dmsg m = {0};
            m.items = s->prog_sent = done;
            m.rate = tdm__drun_my_rate(s);
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
            tdm__drun_release_chunk(k);
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
                rc = tdm__drun_post(s, false,
                                    (char *)tdm_tensor_data(c->out[j]) + (size_t)b * s->out_rb[j],
                                    (size_t)n * s->out_rb[j], k->log[i].rank,
                                    tdm__drun_tag_of(s, k->log[i].id), &v);
        }
    } else {
        for (int64_t i = 0; i < s->n_dn && rc == 0; i++) {
            if (s->dn[i].status != 0)
                continue;
            int64_t b = s->dn[i].begin, n = s->dn[i].end - b;
            for (int j = 0; j < c->n_out && rc == 0; j++)
                rc = tdm__drun_post(
                    s, true, (char *)tdm_tensor_data(c->out[j]) + (size_t)b * s->out_rb[j],
                    (size_t)n * s->out_rb[j], 0, tdm__drun_tag_of(s, s->dn[i].id), &v);
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
