/* SPDX-License-Identifier: MIT */
/* bench_autobatch — automatic batching of tdm_parallel_for on uneven task durations.
 *
 * A port of the scenarios of joblib's benchmarks/bench_auto_batching.py (which checks that
 * batch_size="auto" stays stable under variance and roughly tracks a cyclic trend). Each item
 * busy-waits on CLOCK_MONOTONIC for its own duration (so cores are really used, unlike joblib's
 * time.sleep), and the durations come from a seeded PRNG:
 *   high_variance  log-normal, median 50 us, sigma 1.5, clipped at 20 ms
 *   cyclic         10 items of 10 us then 1 item of 2 ms, repeated
 *   shuffled       the cyclic durations in a seeded Fisher-Yates order
 * (joblib itself used a censored gaussian and a cos^8 wave of 300 tasks; the shapes are the
 * same: many short tasks, a few long ones, with and without a pattern.)
 *
 * The ideal wall time is sum(durations) / worker threads. For each scenario it prints the
 * median of 5 runs with opts.batch_size = 0 (auto) and with batch_size = 1 (one item per
 * batch, the baseline), their ratios to the ideal, and the batch counts and sizes of the auto
 * runs from the tdm_report. Item counts scale with the worker threads so the ideal is about
 * 0.75 s on any machine.
 *
 * Usage: bench_autobatch [scale]   scale (default 1.0) multiplies item counts; 0.1 = quick.
 * Other arguments (the --options run_all.sh passes to every benchmark) are ignored.
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>

#define REPS 5
#define HV_PER_THREAD 5000.0    /* log-normal mean ~154 us: ~0.77 s per thread */
#define CYC_PER_THREAD 360.0    /* cycles of 11 items, 2.1 ms each: ~0.76 s per thread */
#define CYC_SHORT_NS 10000      /* 10 us */
#define CYC_LONG_NS 2000000     /* 2 ms */
#define CYC_SHORT_PER_CYCLE 10

typedef struct autobatch_params {
    const int64_t *dur_ns; /* host array: threads only */
} autobatch_params;

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int burn_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const autobatch_params *p = params;
    (void)task;
    for (int64_t i = begin; i < end; i++) {
        int64_t t0 = now_ns(), d = p->dur_ns[i];
        while (now_ns() - t0 < d)
            ;
    }
    return 0;
}

/* splitmix64: small, seeded, reproducible on every platform. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double rng_unit(uint64_t *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(uint64_t *s) /* Box-Muller */
{
    double u = rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

typedef struct scenario {
    const char *name;
    int64_t *dur_ns;
    int64_t n;
    double sum_s;
    double auto_s, auto_min, auto_max, one_s;
    int64_t batches_lo, batches_hi, bs_min, bs_max, one_batches;
} scenario;

/* Median wall time of REPS runs with the given batch size; report figures of auto runs. */
static double run_median(tdm_runtime *rt, scenario *sc, int64_t batch_size, double *mn,
                         double *mx)
{
    double t[REPS];
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = TDM_POLICY_THREADS;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = batch_size;
    autobatch_params p = {sc->dur_ns};
    for (int r = 0; r < REPS; r++) {
        tdm_report rep = TDM_REPORT_INIT;
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, sc->n, burn_body, &p, sizeof p, &o, &rep));
        t[r] = bench_now() - t0;
        if (batch_size == 0) {
            if (r == 0 || rep.batches < sc->batches_lo)
                sc->batches_lo = rep.batches;
            if (r == 0 || rep.batches > sc->batches_hi)
                sc->batches_hi = rep.batches;
            if (r == 0 || rep.batch_size_min < sc->bs_min)
                sc->bs_min = rep.batch_size_min;
            if (r == 0 || rep.batch_size > sc->bs_max)
                sc->bs_max = rep.batch_size;
        } else {
            sc->one_batches = rep.batches;
        }
    }
    if (mn && mx)
        bench_minmax(t, REPS, mn, mx);
    return bench_median(t, REPS);
}

static int64_t *alloc_durations(int64_t n)
{
    int64_t *d = malloc((size_t)n * sizeof *d);
    if (!d) {
        fprintf(stderr, "out of memory (%" PRId64 " items)\n", n);
        exit(1);
    }
    return d;
}

static double sum_seconds(const int64_t *d, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)d[i];
    return s * 1e-9;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    if (argc > 1 && strncmp(argv[1], "--", 2) != 0) { /* run_all.sh may pass --options */
        char *end = NULL;
        scale = strtod(argv[1], &end);
        if (end == argv[1] || *end != '\0' || !(scale > 0.0) || scale > 1e4) {
            fprintf(stderr, "usage: %s [scale > 0]   (got '%s')\n", argv[0], argv[1]);
            return 2;
        }
    }

    tdm_runtime *rt = bench_open(0);
    int nt = tdm_runtime_threads(rt);
    bench_header("bench_autobatch", "tdm_parallel_for auto batching on uneven durations", rt,
                 REPS);
    printf("   scale %.3g; items busy-wait their duration; ideal = sum / %d thread(s)\n", scale,
           nt);

    uint64_t seed = 0x7A4D3B00C0FFEEull;
    scenario sc[3] = {{.name = "high_variance"}, {.name = "cyclic"}, {.name = "shuffled"}};

    /* high variance: log-normal, median 50 us, sigma 1.5, clipped at 20 ms */
    int64_t n_hv = (int64_t)llround(HV_PER_THREAD * nt * scale);
    sc[0].n = n_hv < 1 ? 1 : n_hv;
    sc[0].dur_ns = alloc_durations(sc[0].n);
    for (int64_t i = 0; i < sc[0].n; i++) {
        double d = 50000.0 * exp(1.5 * rng_normal(&seed));
        sc[0].dur_ns[i] = d > 2e7 ? 20000000 : (int64_t)d;
    }

    /* cyclic: 10 x 10 us then 1 x 2 ms; shuffled: the same, Fisher-Yates */
    int64_t cycles = (int64_t)llround(CYC_PER_THREAD * nt * scale);
    if (cycles < 1)
        cycles = 1;
    sc[1].n = sc[2].n = cycles * (CYC_SHORT_PER_CYCLE + 1);
    sc[1].dur_ns = alloc_durations(sc[1].n);
    sc[2].dur_ns = alloc_durations(sc[2].n);
    for (int64_t i = 0; i < sc[1].n; i++)
        sc[1].dur_ns[i] = i % (CYC_SHORT_PER_CYCLE + 1) < CYC_SHORT_PER_CYCLE ? CYC_SHORT_NS
                                                                             : CYC_LONG_NS;
    memcpy(sc[2].dur_ns, sc[1].dur_ns, (size_t)sc[1].n * sizeof *sc[1].dur_ns);
    for (int64_t i = sc[2].n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(&seed) % (uint64_t)(i + 1));
        int64_t tmp = sc[2].dur_ns[i];
        sc[2].dur_ns[i] = sc[2].dur_ns[j];
        sc[2].dur_ns[j] = tmp;
    }

    for (int k = 0; k < 3; k++) {
        scenario *s = &sc[k];
        s->sum_s = sum_seconds(s->dur_ns, s->n);
        double ideal = s->sum_s / nt;
        s->auto_s = run_median(rt, s, 0, &s->auto_min, &s->auto_max);
        double one_min, one_max;
        s->one_s = run_median(rt, s, 1, &one_min, &one_max);
        printf("\n-- %s: %" PRId64 " items, sum %.3f s, ideal %.3f s (mean item %.1f us)\n",
               s->name, s->n, s->sum_s, ideal, s->sum_s / (double)s->n * 1e6);
        printf("   %-16s %9s %8s   %s\n", "batch_size", "wall", "/ideal", "details");
        printf("   %-16s %7.3f s %7.3fx   min %.3f max %.3f; batches %" PRId64 "..%" PRId64
               ", sizes %" PRId64 "..%" PRId64 "\n",
               "0 (auto)", s->auto_s, s->auto_s / ideal, s->auto_min, s->auto_max, s->batches_lo,
               s->batches_hi, s->bs_min, s->bs_max);
        printf("   %-16s %7.3f s %7.3fx   min %.3f max %.3f; batches %" PRId64 "\n",
               "1 (baseline)", s->one_s, s->one_s / ideal, one_min, one_max, s->one_batches);
        fflush(stdout);
    }

    printf("\n");
    for (int k = 0; k < 3; k++) {
        double ideal = sc[k].sum_s / nt;
        printf("%s: auto %.2fx ideal (batch_size=1: %.2fx)\n", sc[k].name, sc[k].auto_s / ideal,
               sc[k].one_s / ideal);
        free(sc[k].dur_ns);
    }
    bench_close(rt);
    return 0;
}
