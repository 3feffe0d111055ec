/* SPDX-License-Identifier: MIT */
/* bench_cache_groups: joblib's "Memory inside Parallel" seed (SEEDS.md, joblib in depth): the 4
 * columns of a 1000 x 4 matrix, each through a costly step (a 1 s sleep, then its mean), with 2
 * workers and each column cached on its own, run twice, each run in a new process: the first
 * computes every column (two at a time), the second loads them all from the cache.
 *
 *   bench_cache_groups [--cost 1.0] [--cols 4] [--workers 2] [--dir DIR] [--reps 3]
 *   bench_cache_groups --once DIR [--cost ...]   (one run in this process; prints its time)
 *
 * Without --once it clears DIR (default /tmp/tdm-bench-cache-groups), then runs itself --once
 * twice, `reps` times, and prints the median of each run. bench_cache_groups.py runs joblib's
 * original in the same way and prints the ratios. The time of a run is taken in the process,
 * from before tdm_runtime_open() to after the cached map returns (joblib's: around the
 * Parallel call, which starts its workers). It asserts no timing. */
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

#define ROWS 1000

typedef struct costly_params {
    double cost_s;
} costly_params;

/* One item = one column (its ROWS values are a row of the transposed matrix): sleep, then mean. */
static int cpu_costly(const tdm_kernel_args *a)
{
    const costly_params *p = a->params;
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        struct timespec ts = {(time_t)p->cost_s, (long)((p->cost_s - floor(p->cost_s)) * 1e9)};
        nanosleep(&ts, NULL);
        const double *x = (const double *)a->in[0] + i * ROWS;
        double s = 0;
        for (int k = 0; k < ROWS; k++)
            s += x[k];
        ((double *)a->out[0])[i] = s / ROWS;
    }
    return 0;
}

static int run_once(const char *dir, double cost, int cols, int workers, int *hits)
{
    double t0 = bench_now();
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = workers;
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return -1;
    tdm_kernel_def kd = TDM_KERNEL_DEF_INIT;
    kd.name = "costly_column";
    kd.n_in_min = kd.n_in_max = 1;
    kd.n_out = 1;
    kd.params_size = sizeof(costly_params);
    kd.cpu = cpu_costly;
    kd.code_hash = 0xc057c01;
    tdm_cache *c = NULL;
    tdm_tensor *x = NULL, *y = NULL;
    int rc = tdm_kernel_register(rt, &kd);
    if (rc == 0)
        rc = tdm_cache_open(rt, dir, NULL, &c);
    if (rc == 0)
        rc = tdm_tensor_empty(rt, TDM_F64, 2, (int64_t[]){cols, ROWS}, 0, &x);
    if (rc == 0)
        rc = tdm_tensor_zeros(rt, TDM_F64, 1, (int64_t[]){cols}, 0, &y);
    if (rc == 0) {
        double *d = tdm_tensor_data(x);
        for (int64_t i = 0; i < (int64_t)cols * ROWS; i++)
            d[i] = (double)(i % 997) * 0.5; /* column j of the matrix is row j here */
        costly_params p = {cost};
        tdm_map_opts mo = TDM_MAP_OPTS_INIT;
        mo.progress = TDM_PROGRESS_OFF;
        mo.policy = TDM_POLICY_THREADS;
        mo.batch_size = 1;
        tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
        rc = tdm_cache_map_groups(c, "costly_column", &x, 1, &y, 1, &p, sizeof p, NULL, cols, &mo,
                                  &rep);
        *hits = (int)rep.hits;
    }
    double t = bench_now() - t0;
    if (rc == 0) /* check the means */
        for (int j = 0; j < cols && rc == 0; j++) {
            double s = 0;
            for (int k = 0; k < ROWS; k++)
                s += (double)(((int64_t)j * ROWS + k) % 997) * 0.5;
            if (fabs(((double *)tdm_tensor_data(y))[j] - s / ROWS) > 1e-9)
                rc = -2;
        }
    if (rc != 0)
        fprintf(stderr, "bench_cache_groups: %s (%s)\n", tdm_strerror(rc), tdm_errmsg(rt));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_cache_close(c);
    tdm_runtime_close(rt);
    return rc == 0 ? (int)(t * 1e6 > 2e9 ? 2e9 : t * 1e6) : -1;
}

int main(int argc, char **argv)
{
    double cost = 1.0;
    int cols = 4, workers = 2, reps = 3;
    const char *dir = "/tmp/tdm-bench-cache-groups", *once = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cost") && i + 1 < argc)
            cost = atof(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--once") && i + 1 < argc)
            once = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--cost S] [--cols N] [--workers N] [--dir D] [--reps N] "
                    "[--once DIR]\n",
                    argv[0]);
            return 2;
        }
    }
    if (cols < 1 || workers < 1 || reps < 1 || cost < 0)
        return 2;
    if (once) {
        int hits = 0, us = run_once(once, cost, cols, workers, &hits);
        if (us < 0)
            return 1;
        printf("%.6f %d\n", us / 1e6, hits);
        return 0;
    }
    double first[64], second[64];
    reps = reps > 64 ? 64 : reps;
    for (int r = 0; r < reps; r++) {
        for (int run = 0; run < 2; run++) {
            char cmd[1024];
            if (run == 0) {
                snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                    return 1;
            }
            snprintf(cmd, sizeof cmd, "'%s' --once '%s' --cost %g --cols %d --workers %d", argv[0],
                     dir, cost, cols, workers);
            FILE *f = popen(cmd, "r");
            double t = -1;
            int hits = -1;
            if (!f || fscanf(f, "%lf %d", &t, &hits) != 2 || pclose(f) != 0 || t < 0)
                return 1;
            if (hits != (run == 0 ? 0 : cols)) {
                fprintf(stderr, "run %d: %d hits\n", run + 1, hits);
                return 1;
            }
            (run == 0 ? first : second)[r] = t;
        }
    }
    double m1 = bench_median(first, reps), m2 = bench_median(second, reps);
    printf("cached per-column map, %d columns x %.2f s, %d workers, median of %d (new process "
           "each run)\n",
           cols, cost, workers, reps);
    printf("  first run  (all computed) %9.4f s   (serial would be %.2f s)\n", m1, cols * cost);
    printf("  second run (all hits)     %9.4f s   first/second %.0fx\n", m2, m1 / m2);
    return 0;
}
