/* SPDX-License-Identifier: MIT */
/* bench_exp_sinh — y = exp(x) * sinh(x) over 50M f64: tdm_map vs a hand-written pthread loop.
 *
 * The pthread baseline uses the same thread count as the runtime's pool, gives each thread one
 * contiguous share, and computes the same formula on the same input; it is what a careful C
 * programmer writes by hand, so tandem/pthread is the price of the runtime (StarPU 1.3 with 2
 * CPU workers: 0.95-1.01x with blocks of 1e5-1e6, 0.85x with blocks of 1e7). Also the serial
 * figure (about 100 Melem/s per core on this machine kind).
 *
 * The per-element code is the library's own (kernels/simd_math.c, compiled into this program
 * too): glibc's vector exp and sinh where the build has libmvec. So the pthread loop computes
 * exactly what the kernel does and tandem/pthread stays the price of the runtime; the row
 * "serial, scalar libm" shows what the vector calls bring.
 *
 * Options: --elems N (5e7), --reps N (5), --threads N (0 = one per core).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>
#include <pthread.h>

#include "simd_math.h"

typedef struct slice {
    const double *x;
    double *y;
    int64_t begin, end;
} slice;

static void exp_sinh_loop(const double *x, double *y, int64_t begin, int64_t end)
{
    tdm__simd_exp_sinh_f64(x + begin, y + begin, end - begin);
}

static void exp_sinh_scalar(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = exp(x[i]) * sinh(x[i]);
}

static void *slice_main(void *p)
{
    slice *s = p;
    exp_sinh_loop(s->x, s->y, s->begin, s->end);
    return NULL;
}

/* The baseline: nt threads, one contiguous share each, created and joined per run (that costs
 * tens of microseconds against a run of ~100 ms). */
static int pthread_run(const double *x, double *y, int64_t n, int nt)
{
    pthread_t th[256];
    slice sl[256];
    if (nt > 256)
        nt = 256;
    for (int t = 0; t < nt; t++) {
        sl[t] = (slice){x, y, n * t / nt, n * (t + 1) / nt};
        if (pthread_create(&th[t], NULL, slice_main, &sl[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return -1;
        }
    }
    for (int t = 0; t < nt; t++)
        pthread_join(th[t], NULL);
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

#define N_FORCED 3
static const int64_t forced_bs[N_FORCED] = {100000, 1000000, 10000000};

int main(int argc, char **argv)
{
    int64_t n = bench_opt(argc, argv, "--elems", 50000000);
    int reps = (int)bench_opt(argc, argv, "--reps", 5);
    int threads = (int)bench_opt(argc, argv, "--threads", 0);
    if (n < 1 || reps < 1) {
        fprintf(stderr, "--elems and --reps must be >= 1\n");
        return 2;
    }

    tdm_runtime *rt = bench_open(threads);
    int nw = tdm_runtime_threads(rt);
    bench_header("bench_exp_sinh", "exp(x)*sinh(x) over f64, tdm_map vs hand-written pthreads", rt,
                 reps);
    printf("   %" PRId64 " elements (%.0f MB in, %.0f MB out), x_i = (i %% 1000) * 1e-3\n", n,
           (double)n * 8e-6, (double)n * 8e-6);

    tdm_tensor *tx = NULL, *ty = NULL;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, &tx));
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, &ty));
    double *x = tdm_tensor_data(tx), *y = tdm_tensor_data(ty);
    double *ref = malloc((size_t)n * sizeof *ref);
    double *t_serial = calloc((size_t)reps, sizeof(double));
    double *t_scalar = calloc((size_t)reps, sizeof(double)), scalar_err = 0;
    double *t_pth = calloc((size_t)reps, sizeof(double));
    double *t_auto = calloc((size_t)reps, sizeof(double));
    double *t_forced[N_FORCED];
    for (int k = 0; k < N_FORCED; k++)
        t_forced[k] = calloc((size_t)reps, sizeof(double));
    if (!ref || !t_serial || !t_scalar || !t_pth || !t_auto || !t_forced[0] || !t_forced[1] || !t_forced[2]) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = (double)(i % 1000) * 1e-3;

    tdm_map_opts o_auto = TDM_MAP_OPTS_INIT;
    o_auto.progress = TDM_PROGRESS_OFF;
    tdm_map_opts o_forced[N_FORCED];
    for (int k = 0; k < N_FORCED; k++) {
        tdm_map_opts d = TDM_MAP_OPTS_INIT;
        o_forced[k] = d;
        o_forced[k].progress = TDM_PROGRESS_OFF;
        o_forced[k].batch_size = forced_bs[k];
    }

    /* warm-up: first touch of every page, and a correctness check of both parallel versions */
    exp_sinh_loop(x, ref, 0, n);
    if (pthread_run(x, y, n, nw) != 0)
        return 1;
    double err_pth = max_abs_err(ref, y, n);
    memset(y, 0, (size_t)n * sizeof *y);
    tdm_report rep_auto = TDM_REPORT_INIT;
    BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &tx, 1, &ty, 1, NULL, 0, &o_auto, &rep_auto));
    double err_tdm = max_abs_err(ref, y, n);

    /* interleaved repetitions: every variant sees the same phases of a noisy machine */
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        exp_sinh_scalar(x, y, n);
        t_scalar[r] = bench_now() - t0;
        scalar_err = fmax(scalar_err, max_abs_err(ref, y, n));

        t0 = bench_now();
        exp_sinh_loop(x, ref, 0, n);
        t_serial[r] = bench_now() - t0;

        t0 = bench_now();
        if (pthread_run(x, y, n, nw) != 0)
            return 1;
        t_pth[r] = bench_now() - t0;

        t0 = bench_now();
        BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &tx, 1, &ty, 1, NULL, 0, &o_auto, &rep_auto));
        t_auto[r] = bench_now() - t0;

        for (int k = 0; k < N_FORCED; k++) {
            t0 = bench_now();
            BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &tx, 1, &ty, 1, NULL, 0, &o_forced[k], NULL));
            t_forced[k][r] = bench_now() - t0;
        }
    }
    double err_last = max_abs_err(ref, y, n);

    double mn, mx;
    char label[64];
    double m_serial = bench_median(t_serial, reps);
    double m_scalar = bench_median(t_scalar, reps);
    double m_pth = bench_median(t_pth, reps);
    double m_auto = bench_median(t_auto, reps);
    double mel = (double)n * 1e-6;
    printf("\n   %-34s %9s %11s %11s\n", "variant", "wall", "Melem/s", "vs pthread");
    printf("   %-34s %7.3f s %11.1f %10.3fx   (max |diff| %.1e)\n", "serial, scalar libm, 1 thread",
           m_scalar, mel / m_scalar, m_pth / m_scalar, scalar_err);
    snprintf(label, sizeof label, "serial, %s, 1 thread", tdm__simd_math_isa());
    printf("   %-34s %7.3f s %11.1f %10.3fx\n", label, m_serial, mel / m_serial,
           m_pth / m_serial);
    bench_minmax(t_pth, reps, &mn, &mx);
    snprintf(label, sizeof label, "pthread, %d threads (baseline)", nw);
    printf("   %-34s %7.3f s %11.1f %10.3fx   (min %.3f, max %.3f)\n", label, m_pth, mel / m_pth,
           1.0, mn, mx);
    bench_minmax(t_auto, reps, &mn, &mx);
    snprintf(label, sizeof label, "tdm_map, auto batch (%" PRId64 "..%" PRId64 ")",
             rep_auto.batch_size_min, rep_auto.batch_size);
    printf("   %-34s %7.3f s %11.1f %10.3fx   (min %.3f, max %.3f)\n", label, m_auto, mel / m_auto,
           m_pth / m_auto, mn, mx);
    double ratio_forced[N_FORCED];
    for (int k = 0; k < N_FORCED; k++) {
        double m = bench_median(t_forced[k], reps);
        ratio_forced[k] = m_pth / m;
        snprintf(label, sizeof label, "tdm_map, batch %.0e", (double)forced_bs[k]);
        printf("   %-34s %7.3f s %11.1f %10.3fx\n", label, m, mel / m, ratio_forced[k]);
    }
    printf("\n   pthread speedup over serial %.2fx; tandem (auto) %.2fx, on %d threads\n",
           m_serial / m_pth, m_serial / m_auto, nw);
    printf(
        "   StarPU 1.3 anchors (2 CPU workers vs pthread): 0.95-1.01x at 1e5-1e6, 0.85x at 1e7\n");
    printf("   serial anchor: ~100 Melem/s per core\n");
    printf("   check: max |err| vs serial: pthread %.1e, tdm_map %.1e / %.1e\n\n", err_pth, err_tdm,
           err_last);

    bench_target("tdm_map auto batch >= 0.98x pthread", m_pth / m_auto, m_pth / m_auto >= 0.98);
    bench_target("tdm_map batch 1e5..1e6 >= 0.95x pthread (StarPU's low end)",
                 ratio_forced[0] < ratio_forced[1] ? ratio_forced[0] : ratio_forced[1],
                 ratio_forced[0] >= 0.95 && ratio_forced[1] >= 0.95);
    bench_target("tdm_map batch 1e7 >= 0.85x pthread (StarPU)", ratio_forced[2],
                 ratio_forced[2] >= 0.85);

    int bad = !(err_pth <= 1e-12 && err_tdm <= 1e-12 && err_last <= 1e-12);
    if (bad)
        fprintf(stderr, "results differ from the serial loop\n");
    tdm_tensor_release(tx);
    tdm_tensor_release(ty);
    free(ref);
    free(t_serial);
    free(t_scalar);
    free(t_pth);
    free(t_auto);
    for (int k = 0; k < N_FORCED; k++)
        free(t_forced[k]);
    bench_close(rt);
    return bad;
}
