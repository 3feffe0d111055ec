/* SPDX-License-Identifier: MIT */
/* bench_dist — the seed workloads across MPI ranks. Run it under mpirun with 1, 2, 4 ranks
 * (bench/bench_dist.sh does, and computes the efficiency against one rank); rank 0 prints one
 * line per workload: the median wall time of --reps runs, items/s, and the per-rank split.
 *
 *   pi        the pi batch: --pi-items items of --terms Leibniz terms (pi_leibniz), gathered
 *   exp_sinh  y = exp(x) sinh(x) over --elems f64 elements, x replicated (broadcast once,
 *             outside the timing), y gathered to rank 0
 *   uneven    a parallel_for of --uneven-items items sleeping 1 ms each, 4 ms on the last rank
 *             (a rank slowed on purpose): the time against the ideal split for the rates the
 *             ranks showed (n / sum of rates), first run (no rates known: equal ranges, then
 *             stealing) and second (split by the learned rates)
 *
 * Output lines start with "dist:" and carry key=value fields for the script. */
#include <time.h>

#include "bench_common.h"

static int g_rank, g_size;

static int sleepy(const void *p, int64_t b, int64_t e, tdm_task *task)
{
    (void)p, (void)task;
    long us = g_rank == g_size - 1 && g_size > 1 ? 4000 : 1000;
    for (int64_t i = b; i < e; i++) {
        struct timespec ts = {0, us * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void split_text(const tdm_dist_report *r, char *buf, size_t len)
{
    size_t at = 0;
    for (int i = 0; i < r->n_ranks && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "/" : "", (long long)r->ranks[i].items);
}

int main(int argc, char **argv)
{
    int reps = (int)bench_opt(argc, argv, "--reps", 5);
    int64_t pi_items = bench_opt(argc, argv, "--pi-items", 400);
    int64_t terms = bench_opt(argc, argv, "--terms", 1000000);
    int64_t elems = bench_opt(argc, argv, "--elems", 50000000);
    int64_t uneven = bench_opt(argc, argv, "--uneven-items", 400);
    int threads = (int)bench_opt(argc, argv, "--threads", 0);
    if (reps < 1 || reps > 100)
        reps = 5;
    tdm_runtime *rt = bench_open(threads);
    tdm_dist *d = NULL;
    tdm_dist_config dc = TDM_DIST_CONFIG_INIT;
    dc.argc = &argc;
    dc.argv = &argv;
    BENCH_CHECK(rt, tdm_dist_open(&d, rt, &dc));
    g_rank = tdm_dist_rank(d);
    g_size = tdm_dist_size(d);
    if (g_rank == 0)
        printf("bench_dist: %d rank(s)%s, %d thread(s) per rank, %d reps (medians)\n", g_size,
               tdm_dist_is_mpi(d) ? " over MPI" : "", tdm_runtime_threads(rt), reps);
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.progress = TDM_PROGRESS_OFF;
    mo.policy = TDM_POLICY_CPU;
    char split[512];
    double *t = calloc((size_t)reps, sizeof *t);

    /* pi */
    int64_t shape[1] = {pi_items};
    tdm_tensor *y = NULL;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, shape, 0, &y));
    tdm_pi_params pp = {terms};
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    for (int r = 0; r < reps; r++) {
        BENCH_CHECK(rt, tdm_dist_map(d, "pi_leibniz", NULL, 0, &y, 1, &pp, sizeof pp, &mo, NULL,
                                     &rep));
        t[r] = rep.wall_s;
    }
    split_text(&rep, split, sizeof split);
    double med = bench_median(t, reps);
    if (g_rank == 0)
        printf("dist: workload=pi ranks=%d wall_s=%.4f items_per_s=%.1f steals=%lld split=%s\n",
               g_size, med, (double)pi_items / med, (long long)rep.steals, split);
    tdm_tensor_release(y);

    /* exp_sinh */
    int64_t es[1] = {elems};
    tdm_tensor *x = NULL, *z = NULL;
    if (g_rank == 0) {
        BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, es, TDM_MEM_SHARED, &x));
        double *xp = tdm_tensor_data(x);
        for (int64_t i = 0; i < elems; i++)
            xp[i] = 1.0;
    }
    double tb = bench_now();
    BENCH_CHECK(rt, tdm_dist_bcast(d, &x, 0, TDM_MEM_SHARED));
    tb = bench_now() - tb;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, es, TDM_MEM_SHARED, &z));
    for (int r = 0; r < reps; r++) {
        BENCH_CHECK(rt, tdm_dist_map(d, "exp_sinh", &x, 1, &z, 1, NULL, 0, &mo, NULL, &rep));
        t[r] = rep.wall_s;
    }
    split_text(&rep, split, sizeof split);
    med = bench_median(t, reps);
    if (g_rank == 0)
        printf("dist: workload=exp_sinh ranks=%d wall_s=%.4f melem_per_s=%.1f gather_s=%.4f "
               "bcast_s=%.3f steals=%lld split=%s\n",
               g_size, med, (double)elems / med * 1e-6, rep.gather_s, tb, (long long)rep.steals,
               split);
    tdm_tensor_release(x);
    tdm_tensor_release(z);

    /* uneven: the last rank slowed on purpose */
    tdm_map_opts uo = mo;
    uo.desc = "uneven";
    for (int round = 0; round < 2; round++) {
        BENCH_CHECK(rt, tdm_dist_parallel_for(d, uneven, sleepy, NULL, 0, &uo, NULL, &rep));
        double sum = 0;
        for (int i = 0; i < rep.n_ranks; i++)
            sum += rep.ranks[i].rate;
        double ideal = sum > 0 ? (double)uneven / sum : 0;
        split_text(&rep, split, sizeof split);
        if (g_rank == 0)
            printf("dist: workload=uneven round=%d ranks=%d wall_s=%.4f compute_s=%.4f "
                   "ideal_s=%.4f ratio=%.3f steals=%lld split=%s\n",
                   round, g_size, rep.wall_s, rep.compute_s, ideal,
                   ideal > 0 ? rep.compute_s / ideal : 0, (long long)rep.steals, split);
    }
    free(t);
    BENCH_CHECK(rt, tdm_dist_close(d));
    bench_close(rt);
    return 0;
}
