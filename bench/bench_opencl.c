/* SPDX-License-Identifier: MIT */
/* bench_opencl — the OpenCL device layer (backends/opencl/device.c) on device 0 (PoCL here).
 *
 * 1. Host->device and device->host bandwidth by transfer size, 4 KiB ... 256 MiB, through
 *    tdm__opencl_dev_ops (write/read, `iters` copies enqueued on one queue, then finish), from
 *    pageable host memory (malloc) and from pinned host memory as the runtime makes it for
 *    TDM_MEM_PINNED tensors (mmap'd pages, mlock'd, registered with host_register), with the
 *    ratio pinned/pageable, next to a plain memcpy of the same size in the same run.
 * 2. exp(x)*sinh(x) over f64 elements (default 10M): the kernel on device-resident data, the
 *    kernel with its copies (write x, launch, read y on one queue), the same through all the
 *    layer's queues in batches (the pipeline the core runs), and the serial CPU loop, in the same
 *    run: the per-item times a scheduler needs. Also the launch's work-item count, since the
 *    entries loop over their items (the layer caps a launch at 2^20 work items).
 * Every figure is a median of --reps interleaved runs; nothing is asserted about time. The
 * exit code is 1 only when a device call fails or the device's result is wrong.
 *
 * Options: --reps N (7), --elems N (1e7), --max-bytes N (256 MiB), --device N (0).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <errno.h>
#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sched/device.h"

extern const char tdm__builtin_kernel_source[];
extern const tdm__backend_ops tdm__opencl_ops;

static const tdm__dev_ops *ops = &tdm__opencl_dev_ops;
static char detail[1024];

#define DEV(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), detail);           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static tdm__karg karg_buf(tdm__dbuf *b)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_BUF;
    a.buf = b;
    return a;
}

static tdm__karg karg_i64(int64_t v)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_VALUE;
    a.size = sizeof v;
    memcpy(a.value, &v, sizeof v);
    return a;
}

static void launch_exp_sinh(tdm__dev *d, int q, tdm__dbuf *x, tdm__dbuf *y, int64_t begin,
                            int64_t end, int64_t global)
{
    tdm__karg a[4] = {karg_buf(x), karg_buf(y), karg_i64(begin), karg_i64(end)};
    DEV(ops->launch(d, q, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f64", a, 4, global,
                    detail, sizeof detail));
}

static void exp_sinh_loop(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = exp(x[i]) * sinh(x[i]);
}

static double max_rel_err(const double *a, const double *ref, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(a[i] - ref[i]) / (fabs(ref[i]) + 1e-300);
        if (e > m || e != e)
            m = e;
    }
    return m;
}

static const char *size_label(size_t b, char *buf, size_t len)
{
    if (b >= (1u << 20))
        snprintf(buf, len, "%zu MiB", b >> 20);
    else
        snprintf(buf, len, "%zu KiB", b >> 10);
    return buf;
}

/* ---- 1. bandwidth ---------------------------------------------------------------------------- */

/* Host memory as the runtime gives a TDM_MEM_PINNED tensor: whole pages of an anonymous
 * mapping, locked with mlock, then registered with the device (host_register), which is what
 * makes its copies take the pinned path. *why says what was not done, if anything. */
static char *pinned_alloc(tdm__dev *d, size_t n, int *registered, char *why, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    n = (n + page - 1) / page * page;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mmap of %zu bytes failed: %s\n", n, strerror(errno));
        exit(1);
    }
    if (mlock(p, n) != 0 && !*why)
        snprintf(why, len, "mlock of %zu bytes failed (%s): the pages are not locked", n,
                 strerror(errno));
    detail[0] = '\0';
    *registered = ops->host_register(d, p, n, detail, sizeof detail) == 0;
    if (!*registered)
        snprintf(why, len, "host_register refused: %.*s", (int)(len > 24 ? len - 24 : 0), detail);
    return p;
}

static void pinned_free(tdm__dev *d, char *p, size_t n, int registered)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    n = (n + page - 1) / page * page;
    if (registered)
        ops->host_unregister(d, p);
    munlock(p, n);
    munmap(p, n);
}

/* Seconds per copy of `sz` bytes: `iters` writes (dir 0) or reads (dir 1) between host memory
 * `h` and device buffer `db` on queue 0, at rotating offsets, then one finish. */
static double time_copies(tdm__dev *d, int dir, char *h, tdm__dbuf *db, size_t sz, int iters,
                          size_t slots)
{
    double t0 = bench_now();
    for (int i = 0; i < iters; i++) {
        size_t o = (size_t)i % slots * sz;
        if (dir == 0)
            DEV(ops->write(d, 0, db, o, h + o, sz, detail, sizeof detail));
        else
            DEV(ops->read(d, 0, h + o, db, o, sz, detail, sizeof detail));
    }
    DEV(ops->finish(d, 0, detail, sizeof detail));
    return (bench_now() - t0) / iters;
}

static void bench_bandwidth(tdm__dev *d, size_t max_bytes, int reps)
{
    char *src = malloc(max_bytes), *dst = malloc(max_bytes);
    if (!src || !dst) {
        fprintf(stderr, "out of memory for %zu-byte host buffers\n", max_bytes);
        exit(1);
    }
    char why[512] = "";
    int reg_src = 0, reg_dst = 0;
    char *psrc = pinned_alloc(d, max_bytes, &reg_src, why, sizeof why);
    char *pdst = pinned_alloc(d, max_bytes, &reg_dst, why, sizeof why);
    memset(src, 0x5a, max_bytes); /* first touch outside the timings */
    memset(dst, 0xa5, max_bytes);
    memset(psrc, 0x3c, max_bytes);
    memset(pdst, 0xc3, max_bytes);
    tdm__dbuf *db = NULL;
    DEV(ops->alloc(d, max_bytes, &db, detail, sizeof detail));
    DEV(ops->write(d, 0, db, 0, src, max_bytes, detail, sizeof detail)); /* device first touch */
    DEV(ops->finish(d, 0, detail, sizeof detail));

    enum { PG_W, PG_R, PN_W, PN_R, MC, N_T };
    double *t[N_T];
    for (int k = 0; k < N_T; k++)
        if (!(t[k] = calloc((size_t)reps, sizeof(double))))
            exit(1);
    printf(
        "\n   1. copies through the layer (queue 0), pageable vs pinned host memory, vs memcpy\n");
    printf("      pageable: malloc'd; pinned: mmap'd pages, mlock'd and registered with the device "
           "(host_register),\n      as the runtime does for TDM_MEM_PINNED tensors. GB/s are "
           "medians of %d runs.\n",
           reps);
    if (*why)
        printf("      note: %s\n", why);
    printf("   %-8s %6s | %9s %9s %7s | %9s %9s %7s | %9s | %10s %10s\n", "size", "iters",
           "H->D pg", "H->D pin", "pin/pg", "D->H pg", "D->H pin", "pin/pg", "memcpy", "H->D 1 pg",
           "H->D 1 pin");
    for (size_t sz = 4096; sz <= max_bytes; sz *= 4) {
        /* enough copies per sample for a few milliseconds of work at the small sizes */
        int iters = (int)((64u << 20) / sz);
        if (iters < 1)
            iters = 1;
        if (iters > 1024)
            iters = 1024;
        /* the copies land at different offsets, as batches into one buffer would */
        size_t slots = max_bytes / sz;
        /* pageable and pinned interleaved in every run, so drift hits both alike */
        for (int r = 0; r < reps; r++) {
            t[PG_W][r] = time_copies(d, 0, src, db, sz, iters, slots);
            t[PN_W][r] = time_copies(d, 0, psrc, db, sz, iters, slots);
            t[PG_R][r] = time_copies(d, 1, dst, db, sz, iters, slots);
            t[PN_R][r] = time_copies(d, 1, pdst, db, sz, iters, slots);
            double t0 = bench_now();
            for (int i = 0; i < iters; i++)
                memcpy(dst + (size_t)i % slots * sz, src + (size_t)i % slots * sz, sz);
            t[MC][r] = (bench_now() - t0) / iters;
        }
        /* the last reads brought back what the pinned writes sent */
        if (memcmp(pdst, psrc, sz) != 0) {
            fprintf(stderr, "pinned device->host copy of %zu bytes does not match\n", sz);
            exit(1);
        }
        /* one write and its finish alone: the latency a small batch pays */
        double t_one[2][32];
        int n_one = reps < 32 ? reps : 32;
        for (int r = 0; r < n_one; r++)
            for (int k = 0; k < 2; k++) {
                double t0 = bench_now();
                DEV(ops->write(d, 0, db, 0, k ? psrc : src, sz, detail, sizeof detail));
                DEV(ops->finish(d, 0, detail, sizeof detail));
                t_one[k][r] = bench_now() - t0;
            }
        /* and a pageable round trip, checked */
        DEV(ops->write(d, 0, db, 0, src, sz, detail, sizeof detail));
        DEV(ops->read(d, 0, dst, db, 0, sz, detail, sizeof detail));
        DEV(ops->finish(d, 0, detail, sizeof detail));
        if (memcmp(dst, src, sz) != 0) {
            fprintf(stderr, "device->host copy of %zu bytes does not match\n", sz);
            exit(1);
        }
        double m[N_T];
        for (int k = 0; k < N_T; k++)
            m[k] = bench_median(t[k], reps);
        double one_pg = bench_median(t_one[0], n_one), one_pn = bench_median(t_one[1], n_one);
        char lab[32];
        double gb = (double)sz * 1e-9;
        printf(
            "   %-8s %6d | %9.2f %9.2f %6.2fx | %9.2f %9.2f %6.2fx | %9.2f | %7.1f us %7.1f us\n",
            size_label(sz, lab, sizeof lab), iters, gb / m[PG_W], gb / m[PN_W], m[PG_W] / m[PN_W],
            gb / m[PG_R], gb / m[PN_R], m[PG_R] / m[PN_R], gb / m[MC], one_pg * 1e6, one_pn * 1e6);
        if (sz > max_bytes / 4)
            break;
    }
    ops->free(d, db);
    for (int k = 0; k < N_T; k++)
        free(t[k]);
    pinned_free(d, psrc, max_bytes, reg_src);
    pinned_free(d, pdst, max_bytes, reg_dst);
    free(src);
    free(dst);
}

/* ---- 2. exp_sinh throughput ------------------------------------------------------------------ */

static void bench_exp_sinh(tdm__dev *d, int64_t n, int reps, int *bad)
{
    size_t bytes = (size_t)n * sizeof(double);
    double *x = malloc(bytes), *y = malloc(bytes), *ref = malloc(bytes);
    if (!x || !y || !ref) {
        fprintf(stderr, "out of memory for %" PRId64 " elements\n", n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = (double)(i % 1000) * 1e-3;
    memset(y, 0, bytes);
    exp_sinh_loop(x, ref, n); /* first touch and the reference */

    int nq = ops->n_queues(d);
    tdm__dbuf *bx = NULL, *by = NULL;
    DEV(ops->alloc(d, bytes, &bx, detail, sizeof detail));
    DEV(ops->alloc(d, bytes, &by, detail, sizeof detail));
    /* warm-up: the program build (cached by PoCL on disk after the first run) and the first
     * enqueue, when PoCL compiles the kernel for the launch */
    double t0 = bench_now();
    DEV(ops->write(d, 0, bx, 0, x, bytes, detail, sizeof detail));
    launch_exp_sinh(d, 0, bx, by, 0, n, n);
    DEV(ops->read(d, 0, y, by, 0, bytes, detail, sizeof detail));
    DEV(ops->finish(d, 0, detail, sizeof detail));
    double t_first = bench_now() - t0;
    double err = max_rel_err(y, ref, n);

    enum { N_GLOBAL = 3 };
    const int64_t globals[N_GLOBAL] = {1 << 20, 1 << 16, 1 << 12};
    double *t_cpu = calloc((size_t)reps, sizeof(double));
    double *t_k[N_GLOBAL], *t_off = calloc((size_t)reps, sizeof(double));
    double *t_pipe = calloc((size_t)reps, sizeof(double));
    for (int g = 0; g < N_GLOBAL; g++)
        t_k[g] = calloc((size_t)reps, sizeof(double));
    if (!t_cpu || !t_off || !t_pipe || !t_k[0] || !t_k[1] || !t_k[2])
        exit(1);
    /* the pipeline's batches: about 8 per queue */
    int64_t batch = (n + 8 * nq - 1) / (8 * nq);
    tdm__dbuf *px[8], *py[8];
    if (nq > 8)
        nq = 8;
    for (int q = 0; q < nq; q++) {
        DEV(ops->alloc(d, (size_t)batch * sizeof(double), &px[q], detail, sizeof detail));
        DEV(ops->alloc(d, (size_t)batch * sizeof(double), &py[q], detail, sizeof detail));
    }

    for (int r = 0; r < reps; r++) {
        t0 = bench_now();
        exp_sinh_loop(x, ref, n);
        t_cpu[r] = bench_now() - t0;

        for (int g = 0; g < N_GLOBAL; g++) {
            t0 = bench_now();
            launch_exp_sinh(d, 0, bx, by, 0, n, globals[g] < n ? globals[g] : n);
            DEV(ops->finish(d, 0, detail, sizeof detail));
            t_k[g][r] = bench_now() - t0;
        }

        memset(y, 0, bytes);
        t0 = bench_now();
        DEV(ops->write(d, 0, bx, 0, x, bytes, detail, sizeof detail));
        launch_exp_sinh(d, 0, bx, by, 0, n, n);
        DEV(ops->read(d, 0, y, by, 0, bytes, detail, sizeof detail));
        DEV(ops->finish(d, 0, detail, sizeof detail));
        t_off[r] = bench_now() - t0;
        double e = max_rel_err(y, ref, n);
        if (e > err)
            err = e;

        memset(y, 0, bytes);
        int busy[8] = {0};
        t0 = bench_now();
        for (int64_t lo = 0, b = 0; lo < n; lo += batch, b++) {
            int q = (int)(b % nq);
            if (busy[q])
                DEV(ops->finish(d, q, detail, sizeof detail));
            int64_t cnt = n - lo < batch ? n - lo : batch;
            size_t nb = (size_t)cnt * sizeof(double);
            DEV(ops->write(d, q, px[q], 0, x + lo, nb, detail, sizeof detail));
            launch_exp_sinh(d, q, px[q], py[q], 0, cnt, cnt);
            DEV(ops->read(d, q, y + lo, py[q], 0, nb, detail, sizeof detail));
            busy[q] = 1;
        }
        for (int q = 0; q < nq; q++)
            DEV(ops->finish(d, q, detail, sizeof detail));
        t_pipe[r] = bench_now() - t0;
        e = max_rel_err(y, ref, n);
        if (e > err)
            err = e;
    }

    double mel = (double)n * 1e-6;
    double m_cpu = bench_median(t_cpu, reps);
    printf("\n   2. exp(x)*sinh(x), f64, %" PRId64 " elements (%.0f MB in, %.0f MB out)\n", n,
           (double)bytes * 1e-6, (double)bytes * 1e-6);
    printf("   first launch with copies (program build if not cached, kernel compile): %.1f ms\n",
           t_first * 1e3);
    printf("   %-46s %9s %9s %10s %10s\n", "variant", "wall", "Melem/s", "ns/elem", "vs CPU 1T");
    printf("   %-46s %6.1f ms %9.1f %10.2f %9.2fx\n", "CPU loop, 1 thread (baseline)", m_cpu * 1e3,
           mel / m_cpu, m_cpu / mel * 1e3, 1.0);
    for (int g = 0; g < N_GLOBAL; g++) {
        double m = bench_median(t_k[g], reps);
        char lab[64];
        snprintf(lab, sizeof lab, "device kernel, resident data, %" PRId64 " items",
                 globals[g] < n ? globals[g] : n);
        printf("   %-46s %6.1f ms %9.1f %10.2f %9.2fx\n", lab, m * 1e3, mel / m, m / mel * 1e3,
               m_cpu / m);
    }
    double m_off = bench_median(t_off, reps), m_pipe = bench_median(t_pipe, reps);
    printf("   %-46s %6.1f ms %9.1f %10.2f %9.2fx\n", "device: write + kernel + read, 1 queue",
           m_off * 1e3, mel / m_off, m_off / mel * 1e3, m_cpu / m_off);
    char lab[64];
    snprintf(lab, sizeof lab, "device: %d queues, batches of %" PRId64, nq, batch);
    printf("   %-46s %6.1f ms %9.1f %10.2f %9.2fx\n", lab, m_pipe * 1e3, mel / m_pipe,
           m_pipe / mel * 1e3, m_cpu / m_pipe);
    printf("   check: max relative error vs the CPU loop %.1e (PoCL's libm differs in the last "
           "bits)\n",
           err);
    if (!(err <= 1e-12)) {
        fprintf(stderr, "device results differ from the CPU loop (max rel err %.3g)\n", err);
        *bad = 1;
    }
    for (int q = 0; q < nq; q++) {
        ops->free(d, px[q]);
        ops->free(d, py[q]);
    }
    ops->free(d, bx);
    ops->free(d, by);
    free(t_cpu);
    free(t_off);
    free(t_pipe);
    for (int g = 0; g < N_GLOBAL; g++)
        free(t_k[g]);
    free(x);
    free(y);
    free(ref);
}

int main(int argc, char **argv)
{
    int reps = (int)bench_opt(argc, argv, "--reps", 7);
    int64_t n = bench_opt(argc, argv, "--elems", 10000000);
    int64_t max_bytes = bench_opt(argc, argv, "--max-bytes", (int64_t)256 << 20);
    int dev_index = (int)bench_opt(argc, argv, "--device", 0);
    if (reps < 1 || n < 1 || max_bytes < 4096) {
        fprintf(stderr, "--reps, --elems must be >= 1 and --max-bytes >= 4096\n");
        return 2;
    }
    bench_header("bench_opencl", "OpenCL device layer: copy bandwidth, exp_sinh vs CPU", NULL,
                 reps);
    tdm__dev *d = NULL;
    int rc = ops->open(NULL, dev_index, &d, detail, sizeof detail);
    if (rc == TDM_ENOTFOUND) {
        printf("   skipped: %s\n", detail);
        return 0;
    }
    DEV(rc);
    /* what device 0 is, from the backend's probe */
    tdm_device_info *devs = NULL;
    int n_dev = 0;
    char note[160] = "";
    if (tdm__opencl_ops.probe(NULL, &devs, &n_dev, note, sizeof note) == 0 && dev_index < n_dev)
        printf("   device %d: %s (%s), %d compute units, %.1f GiB; %d queues\n", dev_index,
               devs[dev_index].name, devs[dev_index].vendor, devs[dev_index].compute_units,
               (double)devs[dev_index].memory_bytes / (1u << 30), ops->n_queues(d));
    free(devs);
    bench_bandwidth(d, (size_t)max_bytes, reps);
    int bad = 0;
    bench_exp_sinh(d, n, reps, &bad);
    ops->close(d);
    return bad;
}
