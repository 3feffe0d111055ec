/* SPDX-License-Identifier: MIT */
/* bench_pi — the seed's pi batch (joblib + tqdm_batch): serial C vs tandem on every core.
 *
 * Items are independent and CPU-bound (the Leibniz series), so the ideal speedup is the number
 * of cores: the figure that matters is speedup / cores (target >= 0.97). The seed measured
 * joblib at ~5x on 8 cores (0.62 per core) and, on this machine kind, 200 items of 10^5 terms:
 * serial 0.855 s, batched on 2 workers 0.425 s (0.99 per core), tqdm_batch 0.511 s (0.84).
 *
 * Two serial baselines: the seed's C function (terms summed in pairs, one running sum), which
 * tdm_parallel_for runs, and the built-in kernel's own CPU code (kernels/pi_cpu.c: the same
 * terms dealt to four running sums, the four lanes of a vector register), which tdm_map runs;
 * each parallel run's speedup is taken against its own code run serially, and the kernel's
 * serial speed against the C function's is printed beside them. The kernel's items take 4x the
 * terms (its lanes run them in about the C function's time), so both maps last about as long.
 * Items are sized so the C loop takes about 1 s unless --items is given.
 *
 * Options: --items N (auto), --terms T (1e6), --reps N (5), --threads N (0 = one per core).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>

#include "pi_cpu.h"

static double leibniz_pi(int64_t terms)
{
    double s = 0.0;
    int64_t k = 0;
    for (; k + 1 < terms; k += 2)
        s += 1.0 / (double)(2 * k + 1) - 1.0 / (double)(2 * k + 3);
    if (k < terms)
        s += 1.0 / (double)(2 * k + 1);
    return 4.0 * s;
}

typedef struct pi_for_params {
    int64_t terms;
    double *out;
} pi_for_params;

static int pi_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const pi_for_params *p = params;
    const volatile int64_t *terms = &p->terms; /* see main() */
    (void)task;
    for (int64_t i = begin; i < end; i++)
        p->out[i] = leibniz_pi(*terms);
    return 0;
}

static double max_abs_err(const double *a, const double *b, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (e > m || e != e)
            m = e;
    }
    return m;
}

int main(int argc, char **argv)
{
    int64_t items = bench_opt(argc, argv, "--items", 0);
    int64_t terms = bench_opt(argc, argv, "--terms", 1000000);
    int reps = (int)bench_opt(argc, argv, "--reps", 5);
    int threads = (int)bench_opt(argc, argv, "--threads", 0);
    if (terms < 1 || reps < 1) {
        fprintf(stderr, "--terms and --reps must be >= 1\n");
        return 2;
    }

    tdm_runtime *rt = bench_open(threads);
    int nw = tdm_runtime_threads(rt);
    tdm_system_info si;
    BENCH_CHECK(NULL, tdm_system_info_get(&si));
    int cores = nw < si.usable_cores ? nw : si.usable_cores; /* what the pool can really use */
    bench_header("bench_pi", "Leibniz pi batch, serial C loop vs tandem on every core", rt, reps);

    /* `terms` is read through a volatile for every item: leibniz_pi() is a pure function of it,
     * and otherwise the compiler computes it once and copies the value into every item (GCC -O2
     * does). Each item must do its own work, in the serial loop as in tandem's. */
    volatile int64_t vterms = terms, vkterms = 4 * terms; /* the kernel's: 4x (see the header) */
    volatile double sink = 0.0;
    if (items == 0) { /* calibrate: ~1 s serial */
        double t0 = bench_now();
        for (int i = 0; i < 3; i++)
            sink += leibniz_pi(vterms);
        double per_item = (bench_now() - t0) / 3.0;
        items = (int64_t)ceil(1.0 / per_item / 10.0) * 10;
        if (items < 4 * nw)
            items = 4 * nw;
    }
    printf("   %" PRId64 " items x %" PRId64 " terms (tdm_map: %" PRId64 "); speedup ideal = %d "
           "cores\n",
           items, terms, (int64_t)vkterms, cores);

    tdm_tensor *ty = NULL;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){items}, TDM_MEM_HOST, &ty));
    double *y = tdm_tensor_data(ty);
    double *ref = calloc((size_t)items, sizeof *ref);
    double *ref_k = calloc((size_t)items, sizeof *ref_k);
    double *t_kernel = calloc((size_t)reps, sizeof(double));
    double *t_serial = calloc((size_t)reps, sizeof(double));
    double *t_map = calloc((size_t)reps, sizeof(double));
    double *t_for = calloc((size_t)reps, sizeof(double));
    if (!ref || !ref_k || !t_kernel || !t_serial || !t_map || !t_for) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    tdm_pi_params kp = {vkterms};
    pi_for_params fp = {terms, y};
    double err_map = 0.0, err_for = 0.0, e;
    tdm_report rep = TDM_REPORT_INIT;

    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (int64_t i = 0; i < items; i++)
            ref[i] = leibniz_pi(vterms);
        t_serial[r] = bench_now() - t0;

        t0 = bench_now();
        for (int64_t i = 0; i < items; i++)
            tdm__pi_leibniz_cpu(NULL, vkterms, &ref_k[i], 1);
        t_kernel[r] = bench_now() - t0;

        t0 = bench_now();
        BENCH_CHECK(rt, tdm_map(rt, "pi_leibniz", NULL, 0, &ty, 1, &kp, sizeof kp, &o, &rep));
        t_map[r] = bench_now() - t0;
        if ((e = max_abs_err(ref_k, y, items)) > err_map || e != e)
            err_map = e;

        memset(y, 0, (size_t)items * sizeof *y);
        t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, items, pi_body, &fp, sizeof fp, &o, NULL));
        t_for[r] = bench_now() - t0;
        if ((e = max_abs_err(ref, y, items)) > err_for || e != e)
            err_for = e;
    }

    double mn, mx;
    bench_minmax(t_serial, reps, &mn, &mx);
    double m_serial = bench_median(t_serial, reps);
    double m_kernel = bench_median(t_kernel, reps);
    double m_map = bench_median(t_map, reps);
    double m_for = bench_median(t_for, reps);
    printf("\n   %-34s %9s %9s %13s\n", "variant", "wall", "speedup", "per core");
    printf("   %-34s %7.3f s %8.2fx %13s   (min %.3f, max %.3f)\n", "serial C loop", m_serial, 1.0,
           "-", mn, mx);
    char kl[48];
    snprintf(kl, sizeof kl, "serial, the kernel's code (%s)", tdm__pi_cpu_isa());
    printf("   %-34s %7.3f s %9s %13s   (4x the terms; tdm_map's baseline)\n", kl, m_kernel, "-",
           "-");
    printf("   %-34s %7.3f s %8.2fx %13.3f   (vs the kernel's code serially; batches %" PRId64
           "..%" PRId64 " items)\n",
           "tdm_map(pi_leibniz)", m_map, m_kernel / m_map, m_kernel / m_map / cores,
           rep.batch_size_min, rep.batch_size);
    printf("   %-34s %7.3f s %8.2fx %13.3f\n", "tdm_parallel_for(C function)", m_for,
           m_serial / m_for, m_serial / m_for / cores);
    printf("\n   seed anchors: joblib 8 jobs ~5x on 8 cores (0.62/core); 2 workers here: "
           "batched 2.01x (1.00/core), tqdm_batch 1.67x (0.84/core)\n");
    printf("   the kernel's code, serially, runs %.2fx the C loop's terms per second (its vector "
           "lanes)\n",
           4.0 * m_serial / m_kernel);
    printf("   check: max |err| vs its serial code: tdm_map %.1e, tdm_parallel_for %.1e (pi[0] = "
           "%.12f, %.12f)\n\n",
           err_map, err_for, ref[0], ref_k[0]);

    char t[96];
    snprintf(t, sizeof t, "tdm_map speedup >= 0.97 x %d cores, per core", cores);
    bench_target(t, m_kernel / m_map / cores, m_kernel / m_map >= 0.97 * cores);
    snprintf(t, sizeof t, "tdm_parallel_for speedup >= 0.97 x %d cores, per core", cores);
    bench_target(t, m_serial / m_for / cores, m_serial / m_for >= 0.97 * cores);

    int bad = !(err_map == 0.0 && err_for <= 1e-12);
    if (bad)
        fprintf(stderr, "results differ from the serial loop\n");
    (void)sink;
    tdm_tensor_release(ty);
    free(ref);
    free(ref_k);
    free(t_kernel);
    free(t_serial);
    free(t_map);
    free(t_for);
    bench_close(rt);
    return bad;
}
