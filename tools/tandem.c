/* SPDX-License-Identifier: MIT */
/* tandem — the command line: `tandem info`, `tandem demo`, `tandem simulate`, `tandem --version`,
 * `tandem help`.
 *
 * Uses only the public API (tandem.h): this file is also an example of a complete program.
 * Exit codes: 0 success, 1 a tandem call failed or a result did not match, 2 bad usage.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tandem.h>

#include "simulate.h"

#define EXIT_USAGE 2

/* ---- small helpers ----------------------------------------------------------------------------
 */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prints a failed call as "tandem: <what>: TDM_EXXX: <detailed message>". */
static void print_error(const tdm_runtime *rt, const char *what, int rc)
{
    const char *msg = tdm_errmsg(rt);
    if (!msg || !*msg)
        msg = tdm_strerror(rc);
    fprintf(stderr, "tandem: %s: %s: %s\n", what, tdm_status_name(rc), msg);
}

/* Binary units: "23.4 GiB". */
static const char *fmt_bytes(uint64_t b, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (b == UINT64_MAX) {
        snprintf(buf, len, "unlimited");
        return buf;
    }
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", b);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

/* "1000000" -> "10^6" when a power of ten, else the number itself. */
static const char *fmt_count(int64_t n, char *buf, size_t len)
{
    int e = 0;
    int64_t v = n;
    while (v >= 10 && v % 10 == 0) {
        v /= 10;
        e++;
    }
    if (v == 1 && e >= 3)
        snprintf(buf, len, "10^%d", e);
    else if (n >= 1000000 && n % 1000000 == 0)
        snprintf(buf, len, "%" PRId64 "M", n / 1000000);
    else
        snprintf(buf, len, "%" PRId64, n);
    return buf;
}

/* Parses a non-negative integer option value; returns 0 or -1 (message printed). */
static int parse_i64(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    double d = 0;
    long long v = strtoll(s, &end, 10);
    /* accept 1e6-style values too: convenient for sizes */
    if (end && (*end == 'e' || *end == 'E' || *end == '.')) {
        d = strtod(s, &end);
        if (d != floor(d) || d < (double)min || d > (double)max)
            end = (char *)s;
        else
            v = (long long)d;
    }
    if (errno || !end || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "tandem: %s expects an integer in [%" PRId64 ", %" PRId64 "], got '%s'\n",
                opt, min, max, s);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: tandem <command> [options]\n"
               "\n"
               "commands:\n"
               "  info              version, backends, devices, system limits, kernels\n"
               "  demo [options]    run the seed workloads serially and on every backend,\n"
               "                    and compare (start here)\n"
               "  simulate [opts]   what-if: a map on simulated backends (tandem simulate\n"
               "                    --help), makespan, utilisation, the ideal\n"
               "  help              this text\n"
               "  --version         the library version\n"
               "\n"
               "demo options:\n"
               "  --items N         pi batch: number of items (default 1000)\n"
               "  --terms T         pi batch: Leibniz terms per item (default 1000000)\n"
               "  --elems N         exp*sinh: number of f64 elements (default 50000000)\n"
               "  --threads N       CPU worker threads (default: one per core)\n"
               "  --procs N         CPU worker processes (default: one per core; 0 = none)\n"
               "  --no-progress     no progress bars\n"
               "  --report          print the run report of each tandem run\n"
               "\n"
               "info options:\n"
               "  --threads N       CPU worker threads of the runtime it opens\n"
               "  --bandwidth       measure host<->device copy bandwidth of each device\n"
               "\n"
               "environment: TDM_NUM_THREADS, TDM_NUM_PROCS, TDM_BACKENDS=cpu,procs,opencl,...,\n"
               "             TDM_DEBUG=all, TDM_PROGRESS\n"
               "\n"
               "exit status: 0 success, 1 a tandem call failed or a result did not match,\n"
               "             2 bad usage. `tandem <command> --help` works for every command;\n"
               "             man tandem for more.\n");
}

/* Matches "--name VALUE" or "--name=VALUE"; advances *i past the value. 1 = matched,
 * 0 = not this option, -1 = missing value (message printed). */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tandem: %s needs a value\n", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* threads < 0: not given (the default, or TDM_NUM_THREADS). Given on the command line, it wins
 * over TDM_NUM_THREADS, which would otherwise override the config field; the other variables
 * (TDM_BACKENDS, TDM_DEBUG) still apply. */
static int open_runtime(int threads, int procs, tdm_runtime **rt)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    if (threads >= 0) {
        cfg.threads = threads;
        unsetenv("TDM_NUM_THREADS");
    }
    if (procs >= 0) {
        cfg.procs = procs;
        unsetenv("TDM_NUM_PROCS");
    }
    int rc = tdm_runtime_open(rt, &cfg);
    if (rc != 0)
        print_error(NULL, "tdm_runtime_open", rc);
    return rc;
}

/* ---- tandem info ------------------------------------------------------------------------------
 */

static int cmd_info(int argc, char **argv)
{
    int64_t threads = -1;
    int bandwidth = 0;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--bandwidth")) {
            bandwidth = 1;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        int m = opt_value(argc, argv, &i, "--threads", &v);
        if (m < 0)
            return EXIT_USAGE;
        if (m > 0) {
            if (parse_i64("--threads", v, 0, 4096, &threads) != 0)
                return EXIT_USAGE;
            continue;
        }
        fprintf(stderr, "tandem info: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return EXIT_USAGE;
    }

    tdm_runtime *rt = NULL;
    if (open_runtime((int)threads, -1, &rt) != 0)
        return 1;

    int status = 1;
    char b1[32], b2[32];
    printf("tandem %s (headers %s)\n", tdm_version_string(), TDM_VERSION_STRING);

    printf("\nbackends\n");
    printf("  %-8s %-6s %-8s %-13s %-8s %s\n", "name", "built", "enabled", "runs kernels",
           "devices", "note");
    int nb = tdm_backend_count();
    for (int i = 0; i < nb; i++) {
        tdm_backend_info bi;
        int rc = tdm_runtime_backend(rt, i, &bi);
        if (rc != 0) {
            print_error(rt, "tdm_runtime_backend", rc);
            goto done;
        }
        printf("  %-8s %-6s %-8s %-13s %-8d %s\n", bi.name, bi.built ? "yes" : "no",
               bi.enabled ? "yes" : "no", bi.runs_kernels ? "yes" : "no", bi.n_devices, bi.note);
    }

    int nd = tdm_runtime_device_count(rt);
    if (nd < 0) {
        print_error(rt, "tdm_runtime_device_count", nd);
        goto done;
    }
    printf("\ndevices\n");
    printf("  %-3s %-8s %-44s %-24s %6s  %-10s %s\n", "#", "backend", "name", "vendor", "units",
           "memory", "pinned");
    for (int i = 0; i < nd; i++) {
        tdm_device_info di;
        int rc = tdm_runtime_device(rt, i, &di);
        if (rc != 0) {
            print_error(rt, "tdm_runtime_device", rc);
            goto done;
        }
        int dev = di.kind == TDM_BACKEND_OPENCL || di.kind == TDM_BACKEND_CUDA;
        printf("  %-3d %-8s %-44s %-24s %6d  %-10s %s\n", i, di.backend, di.name, di.vendor,
               di.compute_units, fmt_bytes(di.memory_bytes, b1, sizeof b1),
               !dev        ? "-"
               : di.pinned ? "registered"
                           : "driver");
        if (dev && bandwidth) {
            double up, down;
            rc = tdm_device_bandwidth(rt, i, 0, &up, &down);
            if (rc != 0)
                printf("      bandwidth: %s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
            else
                printf("      bandwidth (64 MiB, pageable host memory): host->device %.2f GB/s, "
                       "device->host %.2f GB/s\n",
                       up, down);
        }
    }

    tdm_system_info si;
    int rc = tdm_system_info_get(&si);
    if (rc != 0) {
        print_error(NULL, "tdm_system_info_get", rc);
        goto done;
    }
    printf("\nsystem\n");
    printf("  %-14s %d online, %d usable; runtime pool: %d worker thread(s)\n", "cores",
           si.online_cores, si.usable_cores, tdm_runtime_threads(rt));
    printf("  %-14s %s total, %s available\n", "memory", fmt_bytes(si.memory_bytes, b1, sizeof b1),
           si.memory_available_bytes ? fmt_bytes(si.memory_available_bytes, b2, sizeof b2)
                                     : "unknown");
    /* What this runtime will let shared tensors take (memfd arena pages, not /dev/shm). */
    tdm_shm_info sh;
    rc = tdm_runtime_shm_info(rt, &sh);
    if (rc != 0) {
        print_error(rt, "tdm_runtime_shm_info", rc);
        goto done;
    }
    char b3[32], b4[32];
    printf("  %-14s up to %s now (bound: %s)\n", "shared tensors",
           fmt_bytes(sh.allowed_bytes, b1, sizeof b1), sh.bound);
    printf("  %-14s memory available %s; cgroup: %s%s; cap (shm_limit): %s%s%s\n", "",
           sh.mem_available_bytes ? fmt_bytes(sh.mem_available_bytes, b2, sizeof b2) : "unknown",
           sh.cgroup_free_bytes == UINT64_MAX ? "no limit"
                                              : fmt_bytes(sh.cgroup_free_bytes, b3, sizeof b3),
           sh.cgroup_free_bytes == UINT64_MAX ? "" : " left",
           sh.limit_bytes ? fmt_bytes(sh.limit_bytes, b4, sizeof b4) : "none",
           sh.limit_bytes ? ", held " : "",
           sh.limit_bytes ? fmt_bytes(sh.held_bytes, b1, sizeof b1) : "");
    printf("  %-14s arena (memfd) %s of address space reserved, largest free range %s\n", "",
           fmt_bytes(sh.arena_bytes, b2, sizeof b2), fmt_bytes(sh.arena_free_bytes, b3, sizeof b3));
    if (si.shm_total_bytes)
        printf("  %-14s %s total, %s free (POSIX shm_open; not used by tandem's shared "
               "tensors)\n",
               "/dev/shm", fmt_bytes(si.shm_total_bytes, b1, sizeof b1),
               fmt_bytes(si.shm_free_bytes, b2, sizeof b2));
    else
        printf("  %-14s absent (not used by tandem's shared tensors)\n", "/dev/shm");
    printf("  %-14s %s%s\n", "memlock limit", fmt_bytes(si.memlock_limit_bytes, b1, sizeof b1),
           si.memlock_limit_bytes != UINT64_MAX && si.memlock_limit_bytes < (64ull << 20)
               ? " (pinned tensors beyond this stay unlocked; raise with ulimit -l)"
               : "");
    printf("  %-14s %s\n", "MPI",
           tdm_dist_available()
               ? "built (tandem/dist.h): run under mpirun for a distributed runtime"
               : "not built (tandem/dist.h runs a single rank; TDM_WITH_MPI)");

    int nk = tdm_kernel_count(rt);
    printf("\nkernels (%d)\n ", nk);
    int col = 1;
    for (int i = 0; i < nk; i++) {
        const char *name = tdm_kernel_name(rt, i);
        if (!name)
            continue;
        int w = (int)strlen(name) + 1;
        if (col + w > 96) {
            printf("\n ");
            col = 1;
        }
        printf(" %s", name);
        col += w;
    }
    printf("\n");
    status = 0;
done:
    rc = tdm_runtime_close(rt);
    if (rc != 0) {
        print_error(rt, "tdm_runtime_close", rc);
        status = 1;
    }
    return status;
}

/* ---- tandem demo ------------------------------------------------------------------------------
 */

typedef struct demo_opts {
    int64_t items, terms, elems, threads, procs;
    int progress, report;
} demo_opts;

/* One place the work can run: a backend that executes kernels, named by the policy that
 * selects it. */
typedef struct runner {
    char label[48];
    tdm_policy policy;
    tdm_backend_kind kind;
} runner;

#define MAX_RUNNERS 8

/* The seed's per-item function, in plain C: pi by the Leibniz series, `terms` terms, summed in
 * pairs, 1/(2k+1) - 1/(2k+3), into one running sum. The built-in kernel "pi_leibniz" computes
 * the same terms into four running sums (its CPU code runs them in the lanes of one vector
 * register): its results differ from this loop's in the last bits only (the check's 1e-12). */
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

/* The parameter block of the parallel_for version: copied by value into the run; the pointer
 * inside points into a tensor the runtime allocated. */
typedef struct pi_for_params {
    int64_t terms;
    double *out;
} pi_for_params;

static int pi_for_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const pi_for_params *p = params;
    const volatile int64_t *terms = &p->terms; /* see demo_pi() */
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

static void print_row(const char *workload, const char *where, double wall, double serial_wall,
                      const char *check)
{
    char t[32];
    if (wall >= 1.0)
        snprintf(t, sizeof t, "%.3f s", wall);
    else
        snprintf(t, sizeof t, "%.1f ms", wall * 1e3);
    printf("%-32s %-47s %10s %8.2fx  %s\n", workload, where, t, serial_wall / wall, check);
    fflush(stdout);
}

/* Formats the check column; returns 1 if the error is over the tolerance. */
static int fmt_check(double err, double tol, char *buf, size_t len)
{
    int bad = !(err <= tol);
    snprintf(buf, len, "%s (max |err| %.1e)", bad ? "MISMATCH" : "ok", err);
    return bad;
}

static void demo_print_report(const demo_opts *o, const tdm_report *rep)
{
    if (!o->report)
        return;
    if (tdm_report_print(rep, stdout) != 0)
        fprintf(stderr, "tandem: could not print the run report\n");
    printf("\n");
    fflush(stdout);
}

static int parse_demo(int argc, char **argv, demo_opts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        const char *a = argv[i];
        int m;
        if (!strcmp(a, "--no-progress")) {
            o->progress = 0;
            continue;
        }
        if (!strcmp(a, "--report")) {
            o->report = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if ((m = opt_value(argc, argv, &i, "--items", &v)) != 0) {
            if (m < 0 || parse_i64("--items", v, 1, INT64_C(1) << 40, &o->items) != 0)
                return -1;
        } else if ((m = opt_value(argc, argv, &i, "--terms", &v)) != 0) {
            if (m < 0 || parse_i64("--terms", v, 1, INT64_C(1) << 50, &o->terms) != 0)
                return -1;
        } else if ((m = opt_value(argc, argv, &i, "--elems", &v)) != 0) {
            if (m < 0 || parse_i64("--elems", v, 1, INT64_C(1) << 40, &o->elems) != 0)
                return -1;
        } else if ((m = opt_value(argc, argv, &i, "--threads", &v)) != 0) {
            if (m < 0 || parse_i64("--threads", v, 0, 4096, &o->threads) != 0)
                return -1;
        } else if ((m = opt_value(argc, argv, &i, "--procs", &v)) != 0) {
            if (m < 0 || parse_i64("--procs", v, 0, 4096, &o->procs) != 0)
                return -1;
        } else {
            fprintf(stderr, "tandem demo: unknown option '%s'\n", a);
            return -1;
        }
    }
    return 0;
}

/* Worker processes of the runtime: the compute units of its "procs" device. */
static int proc_count(const tdm_runtime *rt)
{
    int n = tdm_runtime_device_count(rt);
    for (int i = 0; i < n; i++) {
        tdm_device_info di;
        if (tdm_runtime_device(rt, i, &di) == 0 && di.kind == TDM_BACKEND_CPU_PROCS)
            return di.compute_units;
    }
    return 0;
}

/* Lists the backends that run kernels (one runner each, plus "auto" when there are several)
 * and says which device backends were found but only discovered in this build. */
static int find_runners(tdm_runtime *rt, runner *r, int *n_runners, int *any_procs)
{
    int n = 0;
    *any_procs = 0;
    int nb = tdm_backend_count();
    for (int i = 0; i < nb; i++) {
        tdm_backend_info bi;
        int rc = tdm_runtime_backend(rt, i, &bi);
        if (rc != 0) {
            print_error(rt, "tdm_runtime_backend", rc);
            return rc;
        }
        if (!bi.built || !bi.enabled || bi.n_devices <= 0)
            continue;
        if (!bi.runs_kernels) {
            printf("  %s: %d device%s found (discovery only in this build)\n", bi.name,
                   bi.n_devices, bi.n_devices == 1 ? "" : "s");
            continue;
        }
        if (n >= MAX_RUNNERS - 1)
            continue;
        runner *x = &r[n];
        x->kind = bi.kind;
        switch (bi.kind) {
        case TDM_BACKEND_CPU_THREADS:
            x->policy = TDM_POLICY_THREADS;
            snprintf(x->label, sizeof x->label, "cpu threads x%d", tdm_runtime_threads(rt));
            break;
        case TDM_BACKEND_CPU_PROCS:
            x->policy = TDM_POLICY_PROCS;
            *any_procs = 1;
            snprintf(x->label, sizeof x->label, "procs x%d", proc_count(rt));
            break;
        case TDM_BACKEND_OPENCL:
        case TDM_BACKEND_CUDA:
            x->policy = TDM_POLICY_GPU;
            snprintf(x->label, sizeof x->label, "%s (%d device%s)", bi.name, bi.n_devices,
                     bi.n_devices == 1 ? "" : "s");
            break;
        default:
            continue; /* simulated devices run on a virtual clock: no wall time to compare */
        }
        printf("  %s: runs kernels, %d device%s (%s)\n", bi.name, bi.n_devices,
               bi.n_devices == 1 ? "" : "s", bi.note);
        n++;
    }
    if (n > 1) {
        r[n].kind = TDM_BACKEND_KIND_COUNT;
        r[n].policy = TDM_POLICY_AUTO;
        /* "auto (threads + procs + opencl)": what AUTO chooses from */
        size_t len = (size_t)snprintf(r[n].label, sizeof r[n].label, "auto (");
        for (int i = 0; i < n && len < sizeof r[n].label; i++) {
            const char *name = tdm_backend_kind_name(r[i].kind);
            if (r[i].kind == TDM_BACKEND_CPU_THREADS)
                name = "threads";
            len += (size_t)snprintf(r[n].label + len, sizeof r[n].label - len, "%s%s",
                                    i ? " + " : "", name);
        }
        if (len < sizeof r[n].label)
            snprintf(r[n].label + len, sizeof r[n].label - len, ")");
        n++;
    }
    *n_runners = n;
    return 0;
}

static int demo_pi(tdm_runtime *rt, const demo_opts *o, const runner *runners, int n_runners,
                   unsigned mem, int *mismatch)
{
    int status = 1, rc;
    char workload[64], where[96], check[64], c1[24], c2[24];
    tdm_tensor *y = NULL;
    double *ref = malloc((size_t)o->items * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "tandem: out of memory (%" PRId64 " items)\n", o->items);
        return 1;
    }
    snprintf(workload, sizeof workload, "pi batch (%s x %s terms)",
             fmt_count(o->items, c1, sizeof c1), fmt_count(o->terms, c2, sizeof c2));

    /* serial: the plain C loop. */
    /* `terms` is read through a volatile for every item: leibniz_pi() is a pure function of
     * it, and otherwise the compiler computes it once and copies the value into every item
     * (GCC -O2 does: 20 items then cost what one does). Each item must do its own work. */
    const volatile int64_t *terms = &o->terms;
    double t0 = now_s();
    for (int64_t i = 0; i < o->items; i++)
        ref[i] = leibniz_pi(*terms);
    double serial = now_s() - t0;
    print_row(workload, "serial C loop, one running sum", serial, serial, "reference");

    rc = tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){o->items}, mem, &y);
    if (rc != 0) {
        print_error(rt, "tdm_tensor_empty", rc);
        goto done;
    }
    double *yd = tdm_tensor_data(y);
    tdm_pi_params params = {o->terms};

    for (int r = 0; r < n_runners; r++) {
        /* the kernel through tdm_map, with a progress bar */
        tdm_map_opts mo = TDM_MAP_OPTS_INIT;
        mo.policy = runners[r].policy;
        mo.progress = o->progress && isatty(STDERR_FILENO) ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF;
        mo.desc = "pi batch";
        tdm_report rep = TDM_REPORT_INIT;
        memset(yd, 0, (size_t)o->items * sizeof *yd);
        t0 = now_s();
        rc = tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &params, sizeof params, &mo, &rep);
        double wall = now_s() - t0;
        if (rc != 0) {
            print_error(rt, "tdm_map(pi_leibniz)", rc);
            goto done;
        }
        *mismatch |= fmt_check(max_abs_err(ref, yd, o->items), 1e-12, check, sizeof check);
        snprintf(where, sizeof where, "%s, tdm_map", runners[r].label);
        print_row(workload, where, wall, serial, check);
        demo_print_report(o, &rep);

        /* the same C function as the serial loop, through tdm_parallel_for, on threads and
         * on worker processes: the pointer in the parameter block points into a shared tensor,
         * which worker processes map at the same address */
        if (runners[r].kind != TDM_BACKEND_CPU_THREADS && runners[r].kind != TDM_BACKEND_CPU_PROCS)
            continue;
        pi_for_params fp = {o->terms, yd};
        mo.desc = "pi batch (parallel_for)";
        tdm_report rep2 = TDM_REPORT_INIT;
        memset(yd, 0, (size_t)o->items * sizeof *yd);
        t0 = now_s();
        rc = tdm_parallel_for(rt, o->items, pi_for_body, &fp, sizeof fp, &mo, &rep2);
        wall = now_s() - t0;
        if (rc != 0) {
            print_error(rt, "tdm_parallel_for(pi)", rc);
            goto done;
        }
        *mismatch |= fmt_check(max_abs_err(ref, yd, o->items), 1e-12, check, sizeof check);
        snprintf(where, sizeof where, "%s, tdm_parallel_for", runners[r].label);
        print_row(workload, where, wall, serial, check);
        demo_print_report(o, &rep2);
    }
    status = 0;
done:
    tdm_tensor_release(y);
    free(ref);
    return status;
}

static int demo_exp_sinh(tdm_runtime *rt, const demo_opts *o, const runner *runners, int n_runners,
                         unsigned mem, int *mismatch)
{
    int status = 1, rc;
    char workload[64], where[96], check[64], c1[24];
    tdm_tensor *x = NULL, *y = NULL;
    double *ref = malloc((size_t)o->elems * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "tandem: out of memory (%" PRId64 " elements)\n", o->elems);
        return 1;
    }
    snprintf(workload, sizeof workload, "exp*sinh (%s f64)", fmt_count(o->elems, c1, sizeof c1));

    rc = tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){o->elems}, mem, &x);
    if (rc == 0)
        rc = tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){o->elems}, mem, &y);
    if (rc != 0) {
        print_error(rt, "tdm_tensor_empty", rc);
        goto done;
    }
    double *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    /* inputs in [0, 1): exp(x)*sinh(x) stays far from overflow */
    for (int64_t i = 0; i < o->elems; i++)
        xd[i] = (double)(i % 1000) * 1e-3;
    /* touch every page of the outputs first, so no run pays the page faults for the others */
    memset(ref, 0, (size_t)o->elems * sizeof *ref);
    memset(yd, 0, (size_t)o->elems * sizeof *yd);

    double t0 = now_s();
    for (int64_t i = 0; i < o->elems; i++)
        ref[i] = exp(xd[i]) * sinh(xd[i]);
    double serial = now_s() - t0;
    /* (the built-in kernel calls glibc's vector exp and sinh where it has them: part of its
     * speed-up over this loop is per core, not parallel) */
    print_row(workload, "serial C loop, scalar libm", serial, serial, "reference");

    for (int r = 0; r < n_runners; r++) {
        tdm_map_opts mo = TDM_MAP_OPTS_INIT;
        mo.policy = runners[r].policy;
        mo.progress = o->progress && isatty(STDERR_FILENO) ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF;
        mo.desc = "exp*sinh";
        tdm_report rep = TDM_REPORT_INIT;
        t0 = now_s();
        rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, &rep);
        double wall = now_s() - t0;
        if (rc != 0) {
            print_error(rt, "tdm_map(exp_sinh)", rc);
            goto done;
        }
        /* results lie in [0, 3.2): an absolute tolerance is a relative one */
        *mismatch |= fmt_check(max_abs_err(ref, yd, o->elems), 1e-12, check, sizeof check);
        snprintf(where, sizeof where, "%s, tdm_map", runners[r].label);
        print_row(workload, where, wall, serial, check);
        demo_print_report(o, &rep);
        memset(yd, 0, (size_t)o->elems * sizeof *yd);
    }
    status = 0;
done:
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    free(ref);
    return status;
}

static int cmd_demo(int argc, char **argv)
{
    demo_opts o = {1000, 1000000, 50000000, -1, -1, 1, 0};
    if (parse_demo(argc, argv, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    /* The demo times each backend on its own, so by default each gets every core: one thread
     * and one worker process per core (a program that runs both at once would split them). */
    tdm_system_info si;
    tdm_system_info_get(&si);
    if (o.threads < 0 && !getenv("TDM_NUM_THREADS"))
        o.threads = si.usable_cores;
    if (o.procs < 0 && !getenv("TDM_NUM_PROCS"))
        o.procs = si.usable_cores;

    tdm_runtime *rt = NULL;
    if (open_runtime((int)o.threads, (int)o.procs, &rt) != 0)
        return 1;

    int status = 1, mismatch = 0, rc;
    runner runners[MAX_RUNNERS];
    int n_runners = 0, any_procs = 0;
    printf("tandem %s demo: the seed workloads, a serial C loop vs tandem on each backend\n",
           tdm_version_string());
    if (find_runners(rt, runners, &n_runners, &any_procs) != 0)
        goto done;
    if (n_runners == 0) {
        fprintf(stderr, "tandem: no enabled backend runs kernels (check TDM_BACKENDS)\n");
        goto done;
    }
    /* worker processes only see shared storage; threads are fine with private memory */
    unsigned mem = any_procs ? TDM_MEM_SHARED : TDM_MEM_HOST;

    printf("\n%-32s %-47s %10s %9s  %s\n", "workload", "where", "wall", "speedup",
           "check vs serial");
    if (demo_pi(rt, &o, runners, n_runners, mem, &mismatch) != 0)
        goto done;
    if (demo_exp_sinh(rt, &o, runners, n_runners, mem, &mismatch) != 0)
        goto done;
    if (mismatch) {
        fprintf(stderr, "tandem: some results differ from the serial loop (MISMATCH above)\n");
        goto done;
    }
    printf("\nspeedup = serial wall / wall%s\n",
           o.report ? "" : "; --report shows each run's batches and workers");
    printf("tdm_map runs the built-in kernels, whose CPU code is vectorised (pi: the kernel's four\n"
           "running sums in the lanes of one register; exp*sinh: glibc's vector libm), so part of\n"
           "its speed-up is per core; tdm_parallel_for runs the serial loop's own C function\n");
    status = 0;
done:
    rc = tdm_runtime_close(rt);
    if (rc != 0) {
        print_error(rt, "tdm_runtime_close", rc);
        status = 1;
    }
    return status;
}

/* ---- main -------------------------------------------------------------------------------------
 */

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("tandem %s\n", tdm_version_string());
        if (tdm_version() != TDM_VERSION_NUMBER)
            printf("warning: built against headers %s\n", TDM_VERSION_STRING);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "info"))
        return cmd_info(argc, argv);
    if (!strcmp(cmd, "demo"))
        return cmd_demo(argc, argv);
    if (!strcmp(cmd, "simulate"))
        return tandem_cmd_simulate(argc, argv);
    fprintf(stderr, "tandem: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
