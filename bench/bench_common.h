/* SPDX-License-Identifier: MIT */
/* Helpers shared by the benchmarks: clocks, medians, option parsing, error exits.
 *
 * A benchmark prints its figures and the ratio to a baseline measured in the same run, repeats
 * each measurement and quotes the median (the machines are small and shared: single runs are
 * noise). It never asserts a timing: "target ... not met" is information, and the exit code is
 * 0 unless a tandem call failed or a result was wrong. */
#ifndef TDM_BENCH_COMMON_H
#define TDM_BENCH_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tandem.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (every thread), in seconds. */
static inline double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n-1] (v is sorted in place). */
static inline double bench_median(double *v, int n)
{
    if (n <= 0)
        return 0.0;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A 95% confidence interval for the median of v[0..n-1], from its order statistics (no
 * assumption on the distribution): the k-th smallest and the k-th largest, k the largest with
 * P(Binomial(n, 1/2) < k) <= 2.5%, by the normal approximation (n / 2 - 1.96 sqrt(n) / 2);
 * up to 10 values, the whole range. Sorts v. */
static inline void bench_median_ci(double *v, int n, double *lo, double *hi)
{
    *lo = *hi = 0.0;
    if (n <= 0)
        return;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    double kf = 0.5 * ((double)n - 1.96 * sqrt((double)n)); /* 1-based rank */
    int k = kf >= 1.0 ? (int)kf : 1;
    *lo = v[k - 1];
    *hi = v[n - k];
}

/* Minimum and maximum of v[0..n-1], to show the spread next to the median. */
static inline void bench_minmax(const double *v, int n, double *mn, double *mx)
{
    *mn = *mx = n > 0 ? v[0] : 0.0;
    for (int i = 1; i < n; i++) {
        if (v[i] < *mn)
            *mn = v[i];
        if (v[i] > *mx)
            *mx = v[i];
    }
}

/* Exits the benchmark after a failed tandem call (exit code 1). */
static inline void bench_die(const tdm_runtime *rt, const char *what, int rc)
{
    const char *msg = tdm_errmsg(rt);
    fprintf(stderr, "%s failed: %s: %s\n", what, tdm_status_name(rc),
            msg && *msg ? msg : tdm_strerror(rc));
    exit(1);
}

#define BENCH_CHECK(rt, call)                                                                      \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            bench_die((rt), #call, rc_);                                                           \
    } while (0)

/* "--name VALUE" or "--name=VALUE" anywhere in argv, as an integer (1e6 accepted); `def` when
 * absent. A malformed value exits with code 2. */
static inline int64_t bench_opt(int argc, char **argv, const char *name, int64_t def)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strncmp(argv[i], name, n) != 0)
            continue;
        if (argv[i][n] == '=')
            v = argv[i] + n + 1;
        else if (argv[i][n] == '\0' && i + 1 < argc)
            v = argv[i + 1];
        else
            continue;
        char *end = NULL;
        double d = strtod(v, &end);
        if (end == v || *end != '\0' || d < 0 || d > 9.2e18 || d != (double)(int64_t)d) {
            fprintf(stderr, "%s expects a non-negative integer, got '%s'\n", name, v);
            exit(2);
        }
        return (int64_t)d;
    }
    return def;
}

/* 1 if the flag "--name" is present. */
static inline int bench_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

/* Opens a runtime with `threads` workers (0 = one per core); exits on failure. */
static inline tdm_runtime *bench_open(int threads)
{
    tdm_runtime *rt = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = threads;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    return rt;
}

static inline void bench_close(tdm_runtime *rt)
{
    BENCH_CHECK(rt, tdm_runtime_close(rt));
}

/* "target: <text> ... met" / "not met". */
/* One target line: what is aimed at, the figure measured in this run, met or not. The lines
 * start with "target:" so bench/run_all.sh can gather them into its summary table. */
static inline void bench_target(const char *text, double figure, int met)
{
    printf("target: %-62s %12.4g  %s\n", text, figure, met ? "met" : "NOT met");
}

/* The header every benchmark prints: what it measures, the library, threads and cores. */
static inline void bench_header(const char *name, const char *what, tdm_runtime *rt, int reps)
{
    tdm_system_info si;
    BENCH_CHECK(NULL, tdm_system_info_get(&si));
    printf("== %s: %s\n", name, what);
    printf("   tandem %s, ", tdm_version_string());
    if (rt)
        printf("%d worker thread(s), ", tdm_runtime_threads(rt));
    printf("%d usable / %d online cores, median of %d runs\n", si.usable_cores, si.online_cores,
           reps);
}

#endif
