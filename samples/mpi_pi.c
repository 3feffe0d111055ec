/* SPDX-License-Identifier: MIT */
/* mpi_pi — the pi batch across MPI ranks: one program, any number of machines.
 *
 * The seeds' first workload (1,000 items, each pi from 10^6 Leibniz terms) over every rank of
 * an MPI job: each rank computes with all its cores (and devices), rank 0 hands out chunks in
 * proportion to each rank's speed, a rank that runs dry takes the tail of a slower one, and the
 * results are gathered on rank 0, which draws one progress bar for the whole job and prints
 * the per-rank report. Shown with a replicated payload too: a 200 MB-style tensor broadcast
 * once to every rank (the seeds' lesson: send it once, not once per item).
 *
 * Build:  cc -O2 mpi_pi.c -ltandem -lm
 * Run:    mpirun -np 4 ./mpi_pi [items] [terms]        (as root add --allow-run-as-root;
 *         on a machine with fewer cores than ranks add --oversubscribe)
 *         ./mpi_pi [items] [terms]                      (no mpirun: a single rank)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <tandem.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "rank %d: %s failed: %s: %s\n", tdm_dist_rank(d), #call,              \
                    tdm_status_name(rc_), tdm_errmsg(rt));                                         \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    int64_t items = argc > 1 ? atoll(argv[1]) : 1000;
    int64_t terms = argc > 2 ? atoll(argv[2]) : 1000000;
    if (items < 1 || terms < 1) {
        fprintf(stderr, "usage: %s [items >= 1] [terms >= 1]\n", argv[0]);
        return 2;
    }
    tdm_runtime *rt = NULL;
    tdm_dist *d = NULL;
    tdm_tensor *y = NULL, *payload = NULL;
    int status = 1;

    /* 1. The local runtime first (its worker processes fork before MPI starts), then the
     *    ranks. Without mpirun this is a single rank and nothing below changes. */
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    tdm_dist_config dc = TDM_DIST_CONFIG_INIT;
    dc.argc = &argc;
    dc.argv = &argv;
    CHECK(tdm_dist_open(&d, rt, &dc));
    int rank = tdm_dist_rank(d), size = tdm_dist_size(d);
    if (rank == 0)
        printf("mpi_pi: %d rank(s)%s, %lld items of %lld terms\n", size,
               tdm_dist_is_mpi(d) ? " over MPI" : "", (long long)items, (long long)terms);

    /* 2. A payload every item may read: made on rank 0, broadcast once (MPI_Bcast). */
    int64_t pshape[2] = {1000, 1000};
    if (rank == 0) {
        CHECK(tdm_tensor_empty(rt, TDM_F64, 2, pshape, TDM_MEM_SHARED, &payload));
        double *p = tdm_tensor_data(payload);
        for (int64_t i = 0; i < pshape[0] * pshape[1]; i++)
            p[i] = (double)(i % 97);
    }
    CHECK(tdm_dist_bcast(d, &payload, 0, TDM_MEM_SHARED));

    /* 3. The map: pi_leibniz over `items` rows, split across ranks, gathered on rank 0. Every
     *    rank passes the same (replicated) output tensor; only rank 0's ends up complete. */
    int64_t shape[1] = {items};
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, shape, TDM_MEM_HOST, &y));
    tdm_pi_params pp = {terms};
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.desc = "pi";
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    CHECK(tdm_dist_map(d, "pi_leibniz", NULL, 0, &y, 1, &pp, sizeof pp, &mo, NULL, &rep));

    if (rank == 0) {
        const double *v = tdm_tensor_data(y);
        double worst = 0;
        for (int64_t i = 0; i < items; i++)
            worst = fmax(worst, fabs(v[i] - 3.14159265358979323846));
        char buf[16384];
        tdm_dist_report_format(&rep, buf, sizeof buf);
        printf("%s", buf);
        printf("pi ~ %.12f (largest error %.2e over %lld items); %.1f items/s in all\n", v[0],
               worst, (long long)items, (double)items / rep.wall_s);
    }
    status = 0;
fail:
    tdm_tensor_release(y);
    tdm_tensor_release(payload);
    if (tdm_dist_close(d) != 0)
        status = 1;
    tdm_runtime_close(rt);
    return status;
}
