/* SPDX-License-Identifier: MIT */
/* tandem — one distributed map's state, shared by the rank's loop (mpi/dist_run.c) and
 * rank 0's coordinator (mpi/dist_coord.c). Not API. Built only with MPI. */
#ifndef TANDEM_DIST_RUN_H
#define TANDEM_DIST_RUN_H

#include "dist_internal.h"

enum { M_REQ = 1, M_GRANT, M_DONE, M_PROG, M_SEND_ROWS, M_HOME, M_END };

/* A control message (one layout for all kinds; the MPI tag gives the kind). */
typedef struct {
    int32_t rank, status, owner, no_more;
    int64_t id, begin, end, items;
    double busy_s, rate;
    double bw; /* DONE of a stolen partitioned chunk: bytes/s its rows arrived at, 0 if none */
    char msg[384];
} dmsg;

/* A growable set of MPI requests. */
typedef struct {
    MPI_Request *r;
    int n, cap;
} reqv;

typedef enum { C_RECV, C_RUN, C_SEND, C_FREE } cstate;

/* A chunk this rank runs. */
typedef struct {
    cstate state;
    int64_t id, begin, end;
    int owner; /* the rank whose rows these are (PARTITIONED), else this rank */
    tdm__job *job;
    tdm_tensor *tin[16], *tout[16]; /* references this chunk holds */
    void *pblock;                   /* parallel_for parameter wrapper */
    reqv reqs;
    uint64_t t0;
    uint64_t t_grant; /* when the grant arrived (rows from another rank: their transfer time) */
    double in_bw;     /* bytes/s the rows arrived at, 0 if they were local */
    int launch_rc;    /* the local map could not start */
    char launch_msg[384];
} chunk;

/* Rows this rank lends to a thief (PARTITIONED): inputs out, results back. */
typedef struct {
    bool active;
    int64_t id;
    reqv reqs;
} lend;

/* A finished chunk of this rank, for the gather. */
typedef struct {
    int64_t id, begin, end;
    int status;
} donec;

/* A control message being sent. */
typedef struct {
    MPI_Request req;
    dmsg m;
} csend;

/* Rank 0's view of the run. */
typedef struct {
    int64_t *b, *e;    /* each rank's ungranted range */
    int *owner, *from; /* whose rows the range holds; whose range it was */
    double *rate;      /* measured items/s, 0 = unknown */
    bool *finished;    /* told there is no more */
    int n_finished;
    int64_t *items, *chunks, *stolen, *prog;
    double *busy;
    int *status;
    int64_t ungranted, next_id, outstanding, steals, bytes_moved;
    bool stop;
    int err;
    char err_msg[384];
    struct {
        int64_t id, b, e;
        int rank, owner, status;
    } * log;
    int64_t n_log, cap_log;
    bool end_sent;      /* END went to every rank */
    double bpi;         /* PARTITIONED: bytes a stolen item moves (rows in, results back) */
    double bw;          /* bytes/s stolen rows were seen to arrive at (0: not yet seen) */
    int lines;          /* progress lines drawn */
    uint64_t next_draw; /* ns */
} coord;

/* Everything one rank holds during the run. */
typedef struct {
    tdm_dist *d;
    tdm__dcall *c;
    /* a finished chunk wakes the loop at once (its job's finish hook); MPI messages are polled */
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
    bool woken;
    chunk *ch;
    int n_ch;
    lend *ln;
    int n_ln;
    donec *dn;
    int64_t n_dn, cap_dn;
    csend **cs;
    int n_cs, cap_cs;
    bool want, req_pending, ended;
    int end_status;
    char end_msg[384];
    int64_t done_items, prog_sent;
    uint64_t busy_ns, busy_since, next_prog, prog_step, t_start;
    int running;
    size_t in_rb[16], out_rb[16]; /* bytes per row */
    coord k;                      /* rank 0 only */
} run;

/* Sends a control message of kind `type` to `dest` without blocking (the message is copied;
 * its `rank` is set to this rank). Returns 0, TDM_ENOMEM or TDM_ECOMM. (dist_run.c) */
int tdm__drun_send(run *s, int type, int dest, const dmsg *m);

/* Items this rank finished so far in the call, running chunks' finished batches included.
 * (dist_run.c) */
int64_t tdm__drun_items_done(const run *s);

/* Rank 0 (dist_coord.c): the ranges, split by the learned rates (or the partition); frees them;
 * handles a request, progress, chunk-done or rows-home message from a rank; draws the
 * progress bar (or calls the callback) from every rank's counters. */
int tdm__dcoord_init(run *s);
void tdm__dcoord_free(coord *k);
int tdm__dcoord_msg(run *s, int tag, const dmsg *m);
void tdm__dcoord_draw(run *s, bool final);

/* dist_chunk.c, for the loop in dist_run.c */
void tdm__drun_release_chunk(chunk *k);
int tdm__drun_reap_ctl(run *s);
int tdm__drun_on_send_rows(run *s, const dmsg *m);
int tdm__drun_tag_of(const run *s, int64_t id);
double tdm__drun_my_rate(const run *s);
int tdm__drun_poll_chunks(run *s);
int tdm__drun_post(run *s, bool send, void *p, size_t bytes, int peer, int tag, reqv *v);
int tdm__drun_on_grant(run *s, const dmsg *m);

#endif
