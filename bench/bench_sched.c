/* SPDX-License-Identifier: MIT */
/* bench_sched — tandem's per-batch scheduler (policy AUTO) on this machine.
 *
 * Part 1: exp_sinh over --elems f64 (2e7, host tensors) and pi_leibniz over --pi-items (2000,
 * terms sized to ~0.5 s on the pool), each under policy CPU (the baseline), OPENCL, AUTO warm
 * and ROUND_ROBIN, interleaved, medians of --reps (5), the warm target the median of the
 * per-rep ratios AUTO / the better one; plus --reps AUTO runs with a cold model (each a
 * runtime on a fresh empty sched_model_dir, closed after it: the first one saves the model
 * the warm runtime then loads), one after each warm rep. Each runtime first opens the devices
 * with an untimed 64-item OPENCL map (pi moves 16 KB: AUTO would not open them), so the cold
 * run times the model, not the driver; its target compares it with the better one alone in
 * the same conditions (a fresh runtime, devices opened untimed: a CPU-only and an OpenCL-only
 * run beside each cold run), the median of the per-rep ratios. And, as a user's very first
 * run, the first map of a fresh runtime under CPU, OPENCL and AUTO, devices opened and
 * programs built inside it (the target: the median of the per-rep ratios). Every group of
 * runs taken in turn (a warm rep's four, a cold run and its two baselines, the three first
 * maps) runs in a Williams order (williams()).
 * Every result is checked against a serial loop. With PoCL on the host's cores (host_cpu = 1)
 * threads and device share them: AUTO should match the better one alone, not their sum.
 * Part 2: one CPU budget: the same two workloads on a runtime with one thread AND one worker
 * process per core (as `tandem demo` opens it), policies THREADS, PROCS and AUTO, warm and
 * cold (medians of --reps, the warm ones interleaved in a Williams order, their target the
 * median of the per-rep ratios; the cold AUTO run against threads-only and processes-only runs
 * in the same cold conditions, each rep's three in a row, the median of the per-rep ratios):
 * AUTO should match the better side alone (issue 16).
 * Part 3: ns per tdm__sched_decide (internal: links tandem_static), 16 / 64 / 256 lanes, and
 * ns per tdm__est_add (the estimator, on a replay of a CPU thread's batches).
 * Nothing about time is asserted: exit 1 only when a tandem call fails or a result is wrong.
 * Options: --elems, --pi-items, --pi-terms (0 = sized), --reps, --decisions (1e7 at 16 lanes),
 * --short-reps (31): the exp_sinh rows take max(--reps, --short-reps) reps. Its maps take 20 to
 * 30 ms and swing by 10 to 30% from one to the next on a shared 2-core VM: medians of 7 moved
 * by 10 to 20% from run to run. Medians of 31 still moved by up to 12% between two runs here:
 * read the exp_sinh ratios over several runs.
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "pi_cpu.h"
#include "sched/sched_model.h"

enum { V_CPU, V_OCL, V_AUTO, V_RR, NV, V_COLD = NV };
static const char *const vname[NV + 1] = {"CPU only (threads)", "OpenCL only", "AUTO, warm model",
                                          "ROUND_ROBIN", "AUTO, cold model"};
static const tdm_policy vpol[NV + 1] = {TDM_POLICY_CPU, TDM_POLICY_OPENCL, TDM_POLICY_AUTO,
                                        TDM_POLICY_ROUND_ROBIN, TDM_POLICY_AUTO};

typedef struct wl {
    const char *name, *unit;
    int is_pi;
    int64_t n;         /* items */
    double unit_items; /* items per unit of throughput */
    tdm_pi_params pi;
    double pi_ref;     /* serial value of every pi item */
    const double *ref; /* exp_sinh: serial results */
} wl;

static int g_bad;      /* a result differed from the serial reference */
static int g_host_cpu; /* the OpenCL device computes on the host's cores */

/* The kernel's own CPU code, one item (kernels/pi_cpu.c: its four sums in vector lanes). */
static double leibniz_pi(int64_t terms)
{
    double y;
    tdm__pi_leibniz_cpu(NULL, terms, &y, 1);
    return y;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* A fresh, empty model dir from tmpl ("...XXXXXX", rewritten in place); exits on failure. */
static char *model_dir_new(char *tmpl)
{
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        exit(1);
    }
    return tmpl;
}

static tdm_runtime *open_rt(const char *model_dir)
{
    tdm_runtime *rt = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.sched_model_dir = model_dir;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    return rt;
}

/* Tensors of n items in rt: x (exp_sinh only, filled) and y. */
static void alloc_io(tdm_runtime *rt, const wl *w, int64_t n, tdm_tensor **x, tdm_tensor **y)
{
    *x = NULL;
    if (!w->is_pi) {
        BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, x));
        double *xd = tdm_tensor_data(*x);
        for (int64_t i = 0; i < n; i++)
            xd[i] = (double)(i % 1000) * 1e-3;
    }
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, y));
}

static int run_map(tdm_runtime *rt, const wl *w, tdm_tensor *x, tdm_tensor *y, tdm_policy p,
                   tdm_report *rep)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = p;
    o.progress = TDM_PROGRESS_OFF;
    if (w->is_pi)
        return tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &w->pi, sizeof w->pi, &o, rep);
    return tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, rep);
}

/* Untimed: a 64-item OPENCL map opens the devices and builds their program. 1 if it ran. */
static int open_devices(tdm_runtime *rt, const wl *w)
{
    tdm_tensor *x, *y;
    alloc_io(rt, w, 64, &x, &y);
    int rc = run_map(rt, w, x, y, TDM_POLICY_OPENCL, NULL);
    if (rc != 0 && rc != TDM_ENODEV)
        bench_die(rt, "tdm_map (opening the devices)", rc);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    return rc == 0;
}

/* One timed map of variant v. The output is poisoned (NaN) first and compared with the serial
 * reference after (exp_sinh: max abs error, pi: max relative); *err keeps the worst. Returns
 * the seconds, or -1 when OPENCL finds no device. */
static double timed(tdm_runtime *rt, const wl *w, tdm_tensor *x, tdm_tensor *y, int v,
                    tdm_report *rep, double *err)
{
    double *yd = tdm_tensor_data(y), m = 0.0;
    memset(yd, 0xff, (size_t)w->n * sizeof *yd);
    double t0 = bench_now();
    int rc = run_map(rt, w, x, y, vpol[v], rep);
    double t = bench_now() - t0;
    if (rc == TDM_ENODEV && v == V_OCL)
        return -1.0;
    if (rc != 0)
        bench_die(rt, "tdm_map", rc);
    for (int64_t i = 0; i < w->n; i++) {
        double e = w->is_pi ? fabs(yd[i] - w->pi_ref) / fabs(w->pi_ref) : fabs(yd[i] - w->ref[i]);
        if (e > m || e != e)
            m = e;
    }
    if (!(m <= (w->is_pi ? 1e-9 : 1e-12))) {
        fprintf(stderr, "%s, %s: result differs from the serial loop (err %.3g)\n", w->name,
                vname[v], m);
        g_bad = 1;
    }
    if (m > *err || m != m)
        *err = m;
    return t;
}

static double dev_share(const tdm_report *r) /* % of the items run on a device */
{
    int64_t d = 0;
    for (int i = 0; i < r->n_workers; i++)
        if (r->workers[i].kind != TDM_BACKEND_CPU_THREADS &&
            r->workers[i].kind != TDM_BACKEND_CPU_PROCS)
            d += r->workers[i].items;
    return r->items > 0 ? 100.0 * (double)d / (double)r->items : 0.0;
}

static void print_workers(const tdm_report *r)
{
    printf("     %-8s %3s %9s %8s %9s %9s %9s\n", "backend", "#", "items %", "batches", "busy_s",
           "est_s", "est/busy");
    for (int i = 0; i < r->n_workers; i++) {
        const tdm_report_worker *k = &r->workers[i];
        printf("     %-8s %3d %8.1f%% %8" PRId64 " %9.4f %9.4f ", tdm_backend_kind_name(k->kind),
               k->index, r->items ? 100.0 * (double)k->items / (double)r->items : 0.0, k->batches,
               k->busy_s, k->est_s);
        if (k->est_s > 0 && k->busy_s > 0)
            printf("%8.2fx\n", k->est_s / k->busy_s);
        else
            printf("%9s\n", "-");
    }
}

/* The files of the model dir: printed (lines without '#') and / or removed, dir included. */
static void model_files(const char *dir, int print, int remove)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512], line[512];
    while (d && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        FILE *f = print ? fopen(p, "r") : NULL;
        while (f && fgets(line, sizeof line, f))
            if (line[0] != '#')
                printf("     %s", line);
        if (f)
            fclose(f);
        if (remove)
            unlink(p);
    }
    if (d)
        closedir(d);
    if (remove)
        rmdir(dir);
}

static void print_load(const char *when) /* other work on these cores slows every variant */
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf", &l) == 1)
        printf("   load average (1 min) %s: %.2f\n", when, l);
    if (f)
        fclose(f);
}

/* One map of variant v on a fresh runtime over an empty model dir (`dir`, or a fresh one
 * removed after), closed after it (which saves the model); its seconds (-1 when OPENCL finds
 * no device), its report in rep (may be NULL), and with `second` the same map timed again (what
 * the first one taught the runtime). Two uses:
 *  - a cold AUTO run (V_COLD, devices_first): the devices opened by an untimed map first, so
 *    it times the scheduler's exploration, not the driver;
 *  - a user's very first run (CPU, OPENCL or AUTO, no devices_first): devices opened and
 *    programs built inside it. */
/* A median of per-rep ratios, its 95% interval (the targets' medians are read against it: a
 * 2-core VM's maps of 40 ms swing by 10-20% from one to the next) and the ratios' count. */
typedef struct ratio_ci {
    double lo, hi;
    int n;
} ratio_ci;

/* The median of num[r] / den[r] over the reps where both ran (> 0): the runs of a rep ran one
 * after the other, and the median of their ratios is steadier on a shared machine than the
 * ratio of the medians. ci gets its interval. */
static double ratio_median(const double *num, const double *den, int reps, ratio_ci *ci)
{
    double *q = xcalloc((size_t)reps, sizeof(double));
    int k = 0;
    for (int r = 0; r < reps; r++)
        if (num[r] > 0 && den[r] > 0)
            q[k++] = num[r] / den[r];
    double m = bench_median(q, k);
    bench_median_ci(q, k, &ci->lo, &ci->hi);
    ci->n = k;
    free(q);
    return m;
}

/* A target on a median of per-rep ratios (ratio_median()), its interval after it. */
static void ratio_target(const char *text, double q, const ratio_ci *ci)
{
    bench_target(text, q, q >= 0.97);
    printf("   (95%% interval of that median, from the order statistics of its %d per-rep "
           "ratios: %.3f .. %.3f)\n",
           ci->n, ci->lo, ci->hi);
}

/* The variant run i-th in rep r of n variants taken in turn, from a Williams design: over n
 * reps (2n when n is odd) each variant runs right after each other one equally often, so a
 * carry-over from the run before (threads asleep, memory just freed, caches) cannot weigh on
 * one side only: a plain rotation put AUTO right after OpenCL in 3 warm reps of 4, and the
 * CPU-only cold run, never AUTO's, in 1 rep of 2. */
static int williams(int n, int r, int i)
{
    int rows = n % 2 ? 2 * n : n;
    r %= rows;
    if (r >= n) /* odd n: the mirrored rows */
        i = n - 1 - i;
    int f = i == 0 ? 0 : i % 2 ? (i + 1) / 2 : n - i / 2; /* the first row: 0, 1, n-1, 2, ... */
    return (f + r % n) % n;
}

static double fresh_run(const wl *w, int v, const char *dir, int devices_first, tdm_report *rep,
                        double *err, double *second)
{
    char tmp[] = "/tmp/tdm_bench_sched.XXXXXX";
    if (!dir)
        dir = model_dir_new(tmp);
    tdm_runtime *rt = open_rt(dir);
    if (devices_first)
        open_devices(rt, w);
    tdm_tensor *x, *y;
    alloc_io(rt, w, w->n, &x, &y);
    if (rep)
        rep->size = sizeof *rep;
    double t = timed(rt, w, x, y, v, rep, err);
    if (second)
        *second = timed(rt, w, x, y, v, NULL, err);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    bench_close(rt);
    if (dir == tmp)
        model_files(tmp, 0, 1);
    return t;
}

static void bench_workload(const wl *w, int reps)
{
    char dir[] = "/tmp/tdm_bench_sched.XXXXXX";
    model_dir_new(dir);
    printf("\n-- %s: %" PRId64 " items %s %" PRId64 "%s\n", w->name, w->n,
           w->is_pi ? "of" : "(MB in and out:", w->is_pi ? w->pi.terms : w->n * 8 / 1000000,
           w->is_pi ? " terms" : ", host tensors)");

    /* cold: a runtime on an empty model dir, one map, closed (which saves the model); the
     * first dir's model is the one the warm runtime loads */
    static tdm_report rtmp = TDM_REPORT_INIT;
    tdm_report *rcold = xcalloc((size_t)reps, sizeof *rcold);
    double err[NV + 1] = {0}, *t[NV], *sh[NV], med[NV] = {0}, thr[NV + 1] = {0}, mn = 0, mx = 0;
    double *tc = xcalloc((size_t)reps, sizeof(double));
    /* the better one alone in the cold run's conditions: a fresh runtime, its devices opened
     * untimed, one map (CPU only, OpenCL only) */
    double *tcb[2] = {xcalloc((size_t)reps, sizeof(double)), xcalloc((size_t)reps, sizeof(double))};
    enum { NF = 3 }; /* first maps of fresh runtimes: CPU only, OpenCL only, AUTO */
    static const int fvar[NF] = {V_CPU, V_OCL, V_COLD};
    double *tf[NF], *t2 = xcalloc((size_t)reps, sizeof(double));
    for (int f = 0; f < NF; f++)
        tf[f] = xcalloc((size_t)reps, sizeof(double));
    tc[0] = fresh_run(w, V_COLD, dir, 1, &rcold[0], &err[V_COLD], NULL);
    printf("   model saved by the cold run (kernel, lane, size class, ns/item, ns/batch, n):\n");
    model_files(dir, 1, 0);

    /* warm: the same dir; every variant in turn, rep after rep, each rep followed by the
     * next cold run (on a fresh dir of its own) */
    tdm_runtime *rt = open_rt(dir);
    int have_ocl = open_devices(rt, w);
    tdm_tensor *x, *y;
    alloc_io(rt, w, w->n, &x, &y);
    tdm_report *rauto = xcalloc((size_t)reps, sizeof *rauto);
    for (int v = 0; v < NV; v++) {
        t[v] = xcalloc((size_t)reps, sizeof(double));
        sh[v] = xcalloc((size_t)reps, sizeof(double));
    }
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < NV; i++) { /* (the order: see williams()) */
            int v = williams(NV, r, i);
            tdm_report *rep = v == V_AUTO ? &rauto[r] : &rtmp;
            rep->size = sizeof *rep;
            if (v != V_OCL || have_ocl)
                t[v][r] = timed(rt, w, x, y, v, rep, &err[v]);
            if (t[v][r] < 0)
                have_ocl = 0;
            sh[v][r] = dev_share(rep);
        }
        /* the cold runs and their baselines, each rep's three in a row (rep 0's AUTO ran
         * first of all, for the warm runtime's model: its baselines as the first rep ends) */
        for (int k = r == 0 ? 0 : r + 1; k <= r + 1 && k < reps; k++)
            for (int i = 0; i < 3; i++) {
                int b = williams(3, k, i); /* 0: CPU only, 1: OpenCL only, 2: AUTO cold */
                if (b == 2) {
                    if (k > 0)
                        tc[k] = fresh_run(w, V_COLD, NULL, 1, &rcold[k], &err[V_COLD], NULL);
                    continue;
                }
                tcb[b][k] = b == 0 || have_ocl
                                ? fresh_run(w, b == 0 ? V_CPU : V_OCL, NULL, 1, NULL,
                                            &err[b == 0 ? V_CPU : V_OCL], NULL)
                                : -1;
            }
        for (int i = 0; i < NF; i++) {
            int f = williams(NF, r, i);
            tf[f][r] = (f != 1 || have_ocl)
                           ? fresh_run(w, fvar[f], NULL, 0, NULL, &err[fvar[f]],
                                       f == 2 ? &t2[r] : NULL)
                           : -1;
        }
    }

    int mid = 0, cmid = 0; /* the AUTO reps nearest the medians: their reports are shown */
    printf("   %-24s %9s %17s %12s %9s %7s\n", "variant", "wall", "(min .. max)", w->unit, "vs CPU",
           "device");
    for (int v = 0; v <= NV; v++) {
        if (v == V_OCL && !have_ocl) {
            printf("   %-24s skipped: no OpenCL device runs %s (TDM_ENODEV)\n", vname[v], w->name);
            continue;
        }
        const double *tv = v < NV ? t[v] : tc;
        bench_minmax(tv, reps, &mn, &mx);
        double *c = xcalloc((size_t)reps, sizeof(double));
        memcpy(c, tv, (size_t)reps * sizeof(double));
        double m = bench_median(c, reps);
        free(c);
        if (v < NV)
            med[v] = m;
        for (int r = 1; v == V_AUTO && r < reps; r++)
            if (fabs(t[v][r] - m) < fabs(t[v][mid] - m))
                mid = r;
        for (int r = 1; v == V_COLD && r < reps; r++)
            if (fabs(tc[r] - m) < fabs(tc[cmid] - m))
                cmid = r;
        thr[v] = (double)w->n / w->unit_items / m;
        printf("   %-24s %7.3f s   ", vname[v], m);
        printf("(%.3f .. %.3f)", mn, mx);
        printf(" %12.1f %8.3fx %6.1f%%\n", thr[v], med[V_CPU] / m,
               v < NV ? bench_median(sh[v], reps) : dev_share(&rcold[cmid]));
    }
    printf("   (vs CPU: CPU-only wall / variant wall; device: share of items run on the device)\n");
    printf("   AUTO cold, per worker (cold run %d, the one nearest the median; an empty model: "
           "exploration batches first):\n",
           cmid + 1);
    print_workers(&rcold[cmid]);
    printf("   AUTO warm, per worker (rep %d, the one nearest the median):\n", mid + 1);
    print_workers(&rauto[mid]);

    int ocl_best = have_ocl && thr[V_OCL] > thr[V_CPU];
    double best = ocl_best ? thr[V_OCL] : thr[V_CPU];
    double best_s = ocl_best ? med[V_OCL] : med[V_CPU]; /* its wall time, seconds */
    if (have_ocl) {
        double sum = thr[V_CPU] + thr[V_OCL];
        printf("   sum of each alone (CPU + OpenCL): %.1f %s; AUTO warm / sum = %.3f\n", sum,
               w->unit, thr[V_AUTO] / sum);
        if (g_host_cpu)
            printf("   the OpenCL device is PoCL on the same cores as the threads (host_cpu = 1): "
                   "the sum is not reachable here; the better one alone is the aim\n");
    }
    /* (the target: the median of the per-rep ratios; the ratio of the medians shown too) */
    ratio_ci wci;
    double wq = ratio_median(t[ocl_best ? V_OCL : V_CPU], t[V_AUTO], reps, &wci);
    printf("   AUTO warm / better one alone (%s): median of the per-rep ratios %.3f, of the "
           "medians %.3f; AUTO cold / better one alone = %.3f\n",
           ocl_best ? "OpenCL" : "CPU", wq, thr[V_AUTO] / best, thr[V_COLD] / best);
    printf("   check vs serial (%s): CPU %.1e, OpenCL %.1e, AUTO warm %.1e, cold %.1e, RR %.1e\n",
           w->is_pi ? "max rel err" : "max abs err", err[V_CPU], err[V_OCL], err[V_AUTO],
           err[V_COLD], err[V_RR]);
    char line[128];
    snprintf(line, sizeof line, "%s: auto warm >= 0.97x the better one alone", w->name);
    ratio_target(line, wq, &wci);
    /* The cold row's target: the cold AUTO run against the better one alone in the same
     * conditions (a fresh runtime, devices opened untimed, one map): what the fresh runtime
     * costs either way (its pool's first wake-ups, its first batches) is not the empty
     * model's. The ratio above, against the warm runtime, is printed as well. */
    /* (rep r's three fresh runs ran one after the other: the median of their per-rep ratios,
     * the ratio of medians shown too) */
    double cb[2], *q = xcalloc((size_t)reps, sizeof(double));
    int cb_ocl = 0;
    for (int b = 0; b < 2; b++) {
        memcpy(q, tcb[b], (size_t)reps * sizeof(double));
        cb[b] = b == 0 || have_ocl ? bench_median(q, reps) : -1;
    }
    cb_ocl = cb[1] > 0 && cb[1] < cb[0];
    memcpy(q, tc, (size_t)reps * sizeof(double)); /* (tc is indexed like rcold) */
    double cm = bench_median(q, reps);
    free(q);
    ratio_ci cci;
    double cq = ratio_median(tcb[cb_ocl], tc, reps, &cci);
    printf("   on fresh runtimes, devices opened untimed (medians): CPU only %.3f s, OpenCL only "
           "%.3f s, AUTO cold %.3f s (%.3f); AUTO cold / better one alone (%s), median of the "
           "per-rep ratios = %.3f\n",
           cb[0], cb[1], cm, cb[cb_ocl] / cm, cb_ocl ? "OpenCL" : "CPU", cq);
    snprintf(line, sizeof line, "%s: auto cold >= 0.97x the better one alone (fresh runtimes)",
             w->name);
    ratio_target(line, cq, &cci);

    /* A user's very first run: nothing opened, nothing built, nothing known. */
    double fm[NF];
    printf("   first map of a fresh runtime (devices opened, programs built inside; medians):\n");
    for (int f = 0; f < NF; f++) {
        if (f == 1 && !have_ocl) {
            fm[f] = -1;
            continue;
        }
        bench_minmax(tf[f], reps, &mn, &mx);
        double *c = xcalloc((size_t)reps, sizeof(double)); /* (tf[f] keeps its rep order) */
        memcpy(c, tf[f], (size_t)reps * sizeof(double));
        fm[f] = bench_median(c, reps);
        free(c);
        printf("     %-22s %7.3f s   (%.3f .. %.3f)\n",
               f == 0 ? "CPU only" : f == 1 ? "OpenCL only" : "AUTO", fm[f], mn, mx);
    }
    bench_minmax(t2, reps, &mn, &mx);
    double m2 = bench_median(t2, reps);
    printf("     %-22s %7.3f s   (%.3f .. %.3f)\n", "AUTO, its second map", m2, mn, mx);
    int fb = fm[1] > 0 && fm[1] < fm[0]; /* the better one's first map: OpenCL's? */
    double fbest = fm[fb];
    /* rep r's three first maps ran one after the other (a Williams order): as for the cold
     * row, the target is the median of the per-rep ratios, the ratio of medians shown too */
    ratio_ci fci;
    double fr = ratio_median(tf[fb], tf[2], reps, &fci);
    printf("   AUTO first map / better one's first map (%s): ratio of the medians %.3f, median of "
           "the per-rep ratios %.3f; AUTO's second map / better one alone, warm = %.3f\n",
           fb ? "OpenCL" : "CPU", fbest / fm[2], fr, best_s / m2);
    snprintf(line, sizeof line, "%s: auto first map of a runtime >= 0.97x the better one's",
             w->name);
    ratio_target(line, fr, &fci);
    for (int f = 0; f < NF; f++)
        free(tf[f]);
    free(t2);

    tdm_tensor_release(x);
    tdm_tensor_release(y);
    bench_close(rt);
    model_files(dir, 0, 1);
    for (int v = 0; v < NV; v++) {
        free(t[v]);
        free(sh[v]);
    }
    free(rauto);
    free(rcold);
    free(tc);
    free(tcb[0]);
    free(tcb[1]);
}

/* ---- one CPU budget: AUTO over threads + worker processes, as many of each as cores -------- */

/* One map of workload w (exp_sinh over shared x -> y, or pi into y) under policy p; seconds.
 * Checks the result against the serial reference. */
static double budget_once(tdm_runtime *rt, const wl *w, tdm_tensor *x, tdm_tensor *y,
                          tdm_policy p, const double *ref)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = p;
    double *yd = tdm_tensor_data(y);
    memset(yd, 0, (size_t)w->n * sizeof *yd);
    double t0 = bench_now();
    if (w->is_pi)
        BENCH_CHECK(rt, tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &w->pi, sizeof w->pi, &o, NULL));
    else
        BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL));
    double t = bench_now() - t0;
    for (int64_t i = 0; i < w->n; i++) {
        double want = w->is_pi ? w->pi_ref : ref[i];
        if (!(fabs(yd[i] - want) <= 1e-12 * (1 + fabs(want)))) {
            fprintf(stderr, "%s: item %" PRId64 " differs from the serial loop\n", w->name, i);
            g_bad = 1;
            break;
        }
    }
    return t;
}

/* A runtime with one thread and one worker process per core (what `tandem demo` opens) on the
 * model dir `dir`, and its tensors (x filled for exp_sinh). */
static tdm_runtime *budget_rt(const wl *w, const char *dir, int cores, tdm_tensor **x,
                              tdm_tensor **y)
{
    tdm_runtime *rt = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = cores;
    cfg.procs = cores;
    cfg.backends = "cpu,procs";
    cfg.sched_model_dir = dir;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    *x = *y = NULL;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){w->n}, TDM_MEM_SHARED, y));
    if (!w->is_pi) {
        BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){w->n}, TDM_MEM_SHARED, x));
        double *xd = tdm_tensor_data(*x);
        for (int64_t i = 0; i < w->n; i++)
            xd[i] = (double)(i % 1000) * 1e-3;
    }
    return rt;
}

/* One cold run: a fresh runtime on a fresh, empty model dir. Its first map (untimed, *first
 * gets its seconds) runs on the processes alone, which faults the shared tensors into the
 * worker processes' page tables (a map on one kind of worker stores no model); then the timed
 * map under policy p (AUTO: on the empty model; THREADS or PROCS: the single backends in the
 * same conditions). */
static double budget_cold(const wl *w, const double *ref, int cores, double *first, tdm_policy p)
{
    char dir[] = "/tmp/bench-budget-XXXXXX";
    tdm_tensor *x, *y;
    tdm_runtime *rt = budget_rt(w, model_dir_new(dir), cores, &x, &y);
    *first = budget_once(rt, w, x, y, TDM_POLICY_PROCS, ref);
    double t = budget_once(rt, w, x, y, p, ref);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    bench_close(rt);
    model_files(dir, 0, 1);
    return t;
}

/* On the demo's runtime (one thread and one worker process per core) the two sides are twice
 * the cores, so AUTO must run the better side alone, not both at once. THREADS, PROCS and AUTO
 * interleaved on one warm runtime, each rep followed by a cold AUTO run on a fresh runtime and
 * model (budget_cold); medians of reps. */
static void budget_workload(const wl *w, const double *ref, int reps, int cores)
{
    char dir[] = "/tmp/bench-budget-XXXXXX";
    tdm_tensor *x, *y;
    tdm_runtime *rt = budget_rt(w, model_dir_new(dir), cores, &x, &y);
    enum { B_THR, B_PROCS, B_AUTO, B_COLD, B_FIRST, B_THR_COLD, B_PROCS_COLD, NB };
    static const char *const bname[NB] = {
        "threads only",        "processes only",          "AUTO, warm model",
        "AUTO, cold model",    "processes, first map",    "threads only, cold",
        "processes only, cold"};
    static const tdm_policy bpol[B_COLD] = {TDM_POLICY_THREADS, TDM_POLICY_PROCS,
                                            TDM_POLICY_AUTO};
    budget_once(rt, w, x, y, TDM_POLICY_AUTO, ref); /* the warm runtime's model */
    double *t[NB];
    for (int v = 0; v < NB; v++)
        t[v] = xcalloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < B_COLD; i++) { /* (the order: see williams()) */
            int v = williams(B_COLD, r, i);
            t[v][r] = budget_once(rt, w, x, y, bpol[v], ref);
        }
        double first = 0;
        for (int i = 0; i < 3; i++) {
            int c = williams(3, r, i);
            int v = c == 0 ? B_COLD : c == 1 ? B_THR_COLD : B_PROCS_COLD;
            t[v][r] = budget_cold(w, ref, cores, c == 0 ? &t[B_FIRST][r] : &first,
                                  c == 0 ? TDM_POLICY_AUTO : bpol[c - 1]);
        }
    }
    double m[NB], mn, mx, *sorted = xcalloc((size_t)reps, sizeof(double));
    printf("\n-- one CPU budget, %s: %d threads + %d worker processes on %d cores (shared "
           "tensors)\n",
           w->name, cores, cores, cores);
    for (int v = 0; v < NB; v++) { /* (t[v] keeps its reps' order: paired below) */
        bench_minmax(t[v], reps, &mn, &mx);
        memcpy(sorted, t[v], (size_t)reps * sizeof(double));
        m[v] = bench_median(sorted, reps);
        printf("   %-22s %8.3f s (%.3f .. %.3f)\n", bname[v], m[v], mn, mx);
    }
    printf("   (cold: a fresh runtime and model each time, after an untimed first map on the "
           "processes alone, the \"first map\" row: their first touch of the shared tensors, "
           "not timed in the cold rows)\n");
    int bw = m[B_THR] < m[B_PROCS] ? B_THR : B_PROCS;
    double best = m[bw];
    int bc = m[B_THR_COLD] < m[B_PROCS_COLD] ? B_THR_COLD : B_PROCS_COLD;
    /* (a rep's warm runs, and its three cold runs, ran one after the other: the medians of
     * their per-rep ratios, the ratios of the medians shown too) */
    ratio_ci wci, cci;
    double wq = ratio_median(t[bw], t[B_AUTO], reps, &wci);
    double cq = ratio_median(t[bc], t[B_COLD], reps, &cci);
    free(sorted);
    printf("   AUTO warm / better one alone (%s): median of the per-rep ratios %.3f, of the "
           "medians %.3f; AUTO cold / better one alone, cold too (fresh runtimes): median of "
           "the per-rep ratios %.3f, of the medians %.3f (against the warm runtime's: %.3f)\n",
           bw == B_THR ? "threads" : "processes", wq, best / m[B_AUTO], cq, m[bc] / m[B_COLD],
           best / m[B_COLD]);
    char line[160];
    snprintf(line, sizeof line, "%s: auto (threads + procs) warm >= 0.97x the better one alone",
             w->name);
    ratio_target(line, wq, &wci);
    snprintf(line, sizeof line,
             "%s: auto (threads + procs) cold >= 0.97x the better one alone (fresh runtimes)",
             w->name);
    ratio_target(line, cq, &cci);
    for (int v = 0; v < NB; v++)
        free(t[v]);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    bench_close(rt);
    model_files(dir, 0, 1);
}

/* ns per tdm__sched_decide with n calibrated lanes (threads, processes, devices mixed). */
static double decide_ns(int n, int64_t iters, int reps)
{
    tdm__lane_view *v = xcalloc((size_t)n, sizeof *v);
    double *t = xcalloc((size_t)reps, sizeof(double));
    static const double lat[4] = {200.0, 200.0, 5e3, 5e4}, tgt[4] = {1e5, 1e5, 1e6, 4e6};
    for (int j = 0; j < n; j++) {
        int k = j % 4; /* 0, 1: threads; 2: a process; 3: a device */
        double tpi = k == 3 ? 0.4 + 0.1 * (j % 5) : 8.0 + k + j % 7;
        v[j] = (tdm__lane_view){
            tpi, (double)((j * 7919) % 1000) * 1e3, lat[k], tgt[k], INT64_MAX, 0, true, false};
    }
    volatile int64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        int64_t acc = 0;
        int w = 0;
        double t0 = bench_now();
        for (int64_t i = 0; i < iters; i++) {
            tdm__decision d;
            tdm__sched_decide(v, n, w, (double)(i & 1023) * 977.0, 1 + (i % 100003) * 37, &d);
            acc += d.items + d.best_other;
            if (++w == n)
                w = 0;
        }
        t[r] = (bench_now() - t0) * 1e9 / (double)iters;
        sink += acc;
    }
    (void)sink;
    double m = bench_median(t, reps);
    free(v);
    free(t);
    return m;
}

/* ns per tdm__est_add on a CPU thread's batches in a warm AUTO exp_sinh map: about 19,000
 * items each, every 8th doubled (the scheduler's probe of the fixed cost), at 200 ns + 5.2 ns
 * per item, scattered as this machine's batches are (a spread of +-5% around the line, and
 * every 16th batch 40% slow). */
static double est_add_ns(int64_t iters, int reps)
{
    double *t = xcalloc((size_t)reps, sizeof(double));
    volatile double sink = 0;
    for (int r = 0; r < reps; r++) {
        tdm__est e;
        tdm__est_init(&e, 200.0);
        uint64_t x = 88172645463325252ull;
        double t0 = bench_now();
        for (int64_t i = 0; i < iters; i++) {
            double n = i % 8 == 7 ? 38000.0 : 19000.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            double u = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
            double f = i % 16 == 15 ? 1.4 : 0.95 + 0.1 * u;
            tdm__est_add(&e, n, (200.0 + 5.2 * n) * f);
        }
        t[r] = (bench_now() - t0) * 1e9 / (double)iters;
        sink += e.tpi;
    }
    (void)sink;
    double m = bench_median(t, reps);
    free(t);
    return m;
}

int main(int argc, char **argv)
{
    int64_t n = bench_opt(argc, argv, "--elems", 20000000);
    int64_t pi_items = bench_opt(argc, argv, "--pi-items", 2000);
    int64_t pi_terms = bench_opt(argc, argv, "--pi-terms", 0);
    int reps = (int)bench_opt(argc, argv, "--reps", 5);
    int short_reps = (int)bench_opt(argc, argv, "--short-reps", 31);
    int es_reps = reps > short_reps ? reps : short_reps;
    int64_t decisions = bench_opt(argc, argv, "--decisions", 10000000);
    if (n < 1 || pi_items < 1 || reps < 1 || decisions < 1 || short_reps < 1) {
        fprintf(stderr, "--elems, --pi-items, --reps, --short-reps and --decisions must be >= 1\n");
        return 2;
    }
    int env_model = getenv("TDM_SCHED_MODEL") != NULL;
    unsetenv("TDM_SCHED_MODEL"); /* it would override the fresh model dirs */

    tdm_runtime *rt = open_rt("off");
    int nw = tdm_runtime_threads(rt);
    bench_header("bench_sched", "the per-batch scheduler (AUTO) vs CPU only / OpenCL only", rt,
                 reps);
    for (int i = 0; i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        BENCH_CHECK(rt, tdm_runtime_device(rt, i, &di));
        printf("   device %d: %s %s, %d compute units, host_cpu %d\n", i, di.backend, di.name,
               di.compute_units, di.host_cpu);
        g_host_cpu |= di.kind == TDM_BACKEND_OPENCL && di.host_cpu;
    }
    bench_close(rt);
    if (env_model)
        printf("   (TDM_SCHED_MODEL is ignored: the cold and warm runs use fresh model dirs)\n");
    print_load("at start");

    double *ref = xcalloc((size_t)n, sizeof *ref);
    for (int64_t i = 0; i < n; i++)
        ref[i] = exp((double)(i % 1000) * 1e-3) * sinh((double)(i % 1000) * 1e-3);
    wl es = {"exp_sinh", "Melem/s", 0, n, 1e6, {0}, 0.0, ref};
    printf("   (exp_sinh rows: medians of %d runs, its maps being short)\n", es_reps);
    bench_workload(&es, es_reps);

    if (pi_terms == 0) { /* ~0.5 s on the pool: time 16M terms of the kernel's code serially */
        double t0 = bench_now();
        volatile double s = leibniz_pi(16000000);
        (void)s;
        double per_term = (bench_now() - t0) / 16e6;
        pi_terms = (int64_t)(0.5 * nw / ((double)pi_items * per_term) / 1000.0) * 1000;
        pi_terms = pi_terms < 1000 ? 1000 : pi_terms;
    }
    wl pw = {"pi_leibniz", "items/s", 1, pi_items, 1.0, {pi_terms}, leibniz_pi(pi_terms), NULL};
    bench_workload(&pw, reps);

    tdm_system_info si;
    BENCH_CHECK(NULL, tdm_system_info_get(&si));
    budget_workload(&es, ref, es_reps, si.usable_cores);
    budget_workload(&pw, NULL, reps, si.usable_cores);
    free(ref);

    printf("\n-- decision cost: tdm__sched_decide, calibrated lanes (threads, processes, devices "
           "mixed)\n");
    double ns16 = 0;
    for (int lanes = 16; lanes <= 256; lanes *= 4) {
        int64_t it = decisions * 16 / lanes < 1 ? 1 : decisions * 16 / lanes;
        double ns = decide_ns(lanes, it, reps);
        ns16 = lanes == 16 ? ns : ns16;
        printf("   %3d lanes: %8.1f ns per decision (%" PRId64 " decisions per run)\n", lanes, ns,
               it);
    }
    bench_target("scheduler cost per decision with 16 backends < 1 us, ns", ns16, ns16 < 1000.0);
    double est_ns = est_add_ns(decisions / 10 < 1 ? 1 : decisions / 10, reps);
    printf("   the estimator: %.1f ns per batch measured (tdm__est_add, a CPU thread's batches "
           "of an exp_sinh map), %.2f%% of a 100 us batch\n",
           est_ns, est_ns / 1e3);
    print_load("at the end");
    if (g_bad)
        fprintf(stderr, "bench_sched: some results differ from the serial loops\n");
    return g_bad;
}
