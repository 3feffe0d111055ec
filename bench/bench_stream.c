/* SPDX-License-Identifier: MIT */
/* bench_stream — what streaming a map costs against the same map through a blocking call.
 *
 * exp_sinh over --elems f64 (2^23) on the CPU threads (policy CPU in all three, so only the
 * way results come back differs):
 *   A. tdm_map(x -> y): the blocking call, the baseline;
 *   B. tdm_map_async(x -> y), every batch taken with tdm_job_next() as it finishes (the
 *      consumer reads one value of each), then tdm_job_wait();
 *   C. tdm_map_async(x -> NULL): outputs in max_in_flight ring slots of one batch each, the
 *      consumer reads one value of each batch's view (memory flat however long the input).
 * Interleaved, the order rotated each rep, medians of --reps (15); the targets compare B and C
 * with A, median of the per-rep ratios (speed: A's time over theirs). Every result is checked
 * against exp(x) * sinh(x). Nothing about time is asserted: exit 1 only when a tandem call
 * fails or a result is wrong. Options: --reps N, --elems N, --threads N (0 = one per core),
 * --max-in-flight N (0 = the default, twice the workers).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>

enum { V_SYNC, V_ASYNC, V_RING, NV };
static const char *const vname[NV] = {"tdm_map (blocking), the baseline",
                                      "tdm_map_async into the outputs, drained",
                                      "tdm_map_async into ring slots, drained"};

static int g_wrong;

static void check(double x, double y, const char *what)
{
    double want = exp(x) * sinh(x);
    if (!(fabs(y - want) <= 1e-12 * fabs(want) + 1e-300) && !g_wrong) {
        fprintf(stderr, "WRONG RESULT: %s: exp_sinh(%g) = %.17g, want %.17g\n", what, x, y, want);
        g_wrong = 1;
    }
}

static double run(tdm_runtime *rt, int v, tdm_tensor *x, tdm_tensor *y, int max_in_flight,
                  double *sink)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = TDM_POLICY_CPU;
    o.progress = TDM_PROGRESS_OFF;
    o.max_in_flight = max_in_flight;
    const double *xd = tdm_tensor_data(x);
    double t0 = bench_now();
    if (v == V_SYNC) {
        BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL));
    } else {
        tdm_job *job = NULL;
        tdm_tensor *const *outs = v == V_ASYNC ? &y : NULL;
        BENCH_CHECK(rt, tdm_map_async(rt, "exp_sinh", &x, 1, outs, 1, NULL, 0, &o, &job));
        const double *yd = tdm_tensor_data(y);
        tdm_batch_result r;
        while (tdm_job_next(job, &r) == 0) {
            if (r.status != 0)
                bench_die(rt, "a streamed batch", r.status);
            /* (one value of each batch: the view's for C, the output tensor's for B) */
            double got = v == V_RING ? ((const double *)tdm_tensor_data(r.out[0]))[0]
                                     : yd[r.begin];
            *sink += got;
            check(xd[r.begin], got, vname[v]);
        }
        BENCH_CHECK(rt, tdm_job_wait(job, NULL));
        tdm_job_free(job);
    }
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    int reps = (int)bench_opt(argc, argv, "--reps", 15);
    int64_t n = bench_opt(argc, argv, "--elems", (int64_t)1 << 23);
    int threads = (int)bench_opt(argc, argv, "--threads", 0);
    int mif = (int)bench_opt(argc, argv, "--max-in-flight", 0);
    if (reps < 1 || n < 1) {
        fprintf(stderr, "--reps and --elems must be at least 1\n");
        return 2;
    }
    tdm_runtime *rt = bench_open(threads);
    bench_header("bench_stream", "a streamed map against the same blocking map", rt, reps);
    tdm_tensor *x, *y;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x));
    BENCH_CHECK(rt, tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y));
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)(i % 1000) * 1e-3;
    double sink = 0;
    for (int v = 0; v < NV; v++) /* warm-up: first touch, first batches */
        run(rt, v, x, y, mif, &sink);
    double *t[NV], *ratio[NV];
    for (int v = 0; v < NV; v++) {
        t[v] = calloc((size_t)reps, sizeof(double));
        ratio[v] = calloc((size_t)reps, sizeof(double));
        if (!t[v] || !ratio[v])
            return 1;
    }
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < NV; i++) {
            int v = (r + i) % NV;
            t[v][r] = run(rt, v, x, y, mif, &sink);
        }
        for (int v = 0; v < NV; v++)
            ratio[v][r] = t[V_SYNC][r] / t[v][r];
    }
    const double *yd = tdm_tensor_data(y); /* (B wrote every element last time round) */
    for (int64_t i = 0; i < n; i += n / 1000 + 1)
        check(xd[i], yd[i], "the outputs after the runs");
    printf("\n-- exp_sinh over %lld f64, policy CPU, max_in_flight %d\n", (long long)n,
           mif ? mif : 2 * tdm_runtime_threads(rt));
    double med[NV];
    for (int v = 0; v < NV; v++) {
        double mn, mx;
        bench_minmax(t[v], reps, &mn, &mx);
        med[v] = bench_median(t[v], reps);
        printf("   %-45s %8.2f ms (%.2f .. %.2f)  %7.1f Melem/s\n", vname[v], med[v] * 1e3,
               mn * 1e3, mx * 1e3, (double)n / med[v] * 1e-6);
    }
    double rb = bench_median(ratio[V_ASYNC], reps), rc = bench_median(ratio[V_RING], reps);
    printf("   speed against the blocking map, median of the per-rep ratios: into the outputs "
           "%.3f, into ring slots %.3f\n",
           rb, rc);
    bench_target("streamed map (tdm_map_async, drained) >= 0.95x tdm_map", rb, rb >= 0.95);
    bench_target("streamed into ring slots >= 0.95x tdm_map", rc, rc >= 0.95);
    if (sink == 42.0) /* (keeps the reads) */
        printf(" ");
    for (int v = 0; v < NV; v++) {
        free(t[v]);
        free(ratio[v]);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    bench_close(rt);
    return g_wrong;
}
