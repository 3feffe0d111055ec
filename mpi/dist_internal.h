/* SPDX-License-Identifier: MIT */
/* tandem — the distributed runtime's internals (runtime/dist*.c). Not API. */
#ifndef TANDEM_DIST_INTERNAL_H
#define TANDEM_DIST_INTERNAL_H

#include "seam.h"

#if TDM_HAVE_MPI
#include <mpi.h>
#endif

/* Throughput learned per kernel (or parallel_for desc): items/s of each rank, 0 = unknown. */
typedef struct tdm__drate {
    char what[64];
    double *rate; /* [size] */
} tdm__drate;

struct tdm_dist {
    tdm_runtime *rt;
    int rank, size;
    bool mpi;     /* the ranks talk through MPI */
    bool we_init; /* tdm_dist_open() initialised MPI: close finalises it */
#if TDM_HAVE_MPI
    MPI_Comm ctl; /* control messages of distributed maps, and collectives */
    MPI_Comm dat; /* bulk data of distributed maps (rows, results) */
    int tag_ub;   /* largest tag */
#endif
    uint64_t t_sync; /* tdm__now_ns() right after a barrier at open: the merged trace's origin */
    tdm__drate *rates;
    int n_rates;
};

/* ---- communication (mpi/dist_comm.c): every function is collective unless it says
 * otherwise, returns 0 or TDM_ECOMM with the message set on d->rt, and works for a single
 * rank without MPI. Byte counts may exceed INT_MAX (sent in pieces). */
int tdm__dcomm_open(tdm_dist *d, const tdm_dist_config *cfg);
int tdm__dcomm_close(tdm_dist *d);
/* all[r * bytes ...] = rank r's `mine` on every rank. */
int tdm__dcomm_allgather(tdm_dist *d, const void *mine, size_t bytes, void *all);
int tdm__dcomm_bcast(tdm_dist *d, void *buf, size_t bytes, int root);
/* Point-to-point on the data communicator (not collective). */
int tdm__dcomm_send(tdm_dist *d, const void *buf, size_t bytes, int dest, int tag);
int tdm__dcomm_recv(tdm_dist *d, void *buf, size_t bytes, int src, int tag);
int tdm__dcomm_barrier(tdm_dist *d);
#if TDM_HAVE_MPI
/* Turns an MPI error code into TDM_ECOMM with MPI's text in the runtime's message. */
int tdm__mpi_err(tdm_dist *d, int mpi_rc, const char *what);
#endif

/* ---- agreement (mpi/dist.c) --------------------------------------------------------
 * Every rank brings its local status and message; every rank returns the same verdict: 0
 * when all are 0, else its own error, or the first failing rank's code with "rank R: msg". */
int tdm__dist_agree(tdm_dist *d, int rc, const char *where);

/* ---- learned rates (mpi/dist.c) ---------------------------------------------------- */
/* The rates of `what` ([size] items/s, 0 = unknown), or NULL. Not collective. */
const double *tdm__dist_rates(const tdm_dist *d, const char *what);
/* Records measured rates (zeros keep the old value). Returns 0 or TDM_ENOMEM. */
int tdm__dist_rates_set(tdm_dist *d, const char *what, const double *rate);

/* ---- one distributed map (mpi/dist_run.c) ------------------------------------------ */
typedef struct tdm__dcall {
    bool pfor;
    const char *what; /* kernel name or the parallel_for desc */
    /* MAP */
    const char *kernel;
    tdm_tensor *const *in;
    int n_in;
    tdm_tensor *const *out;
    int n_out;
    uint32_t whole; /* inputs given whole (not split) */
    /* PFOR */
    tdm_range_fn fn;
    /* both */
    const void *params;
    size_t params_size;
    tdm_map_opts opts;
    tdm_dist_opts dopts;
    int64_t n_items;      /* global items */
    int64_t *offset;      /* [size + 1]: PARTITIONED: first global item of each rank */
    tdm_dist_report *rep; /* filled on every rank */
} tdm__dcall;

#if TDM_HAVE_MPI
/* Runs a validated call over size >= 2 ranks. Collective. */
int tdm__dist_run(tdm_dist *d, tdm__dcall *c);
#endif

#endif
