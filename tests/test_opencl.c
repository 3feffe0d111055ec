/* SPDX-License-Identifier: MIT */
/* opencl: the OpenCL device layer (backends/opencl/device.c) driven directly through
 * tdm__opencl_dev_ops, on a real driver (PoCL in CI): open/close, buffers, copies, launches of
 * the built-in kernels, pipelining over the queues, build errors, the memory cap, bad input,
 * and registered (pinned) host memory, written by the host and by other processes between
 * copies.
 *
 * Without OpenCL in the build, or without a platform or device at run time (for example under
 * OCL_ICD_VENDORS=/nonexistent), main() exits 77 so CTest reports the tests as skipped. */
#include "tdm_test.h"

#if TDM_HAVE_OPENCL
#include <math.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sched/device.h"

extern const char tdm__builtin_kernel_source[];

static const tdm__dev_ops *ops = &tdm__opencl_dev_ops;
static char detail[1024];

#define OK(call)                                                                                   \
    do {                                                                                           \
        detail[0] = '\0';                                                                          \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s: %s", #call, tdm_status_name(rc_), detail);                           \
    } while (0)

static tdm__dev *open0(void)
{
    tdm__dev *d = NULL;
    OK(ops->open(NULL, 0, &d, detail, sizeof detail));
    assert_non_null(d);
    return d;
}

static tdm__karg karg_buf(tdm__dbuf *b)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_BUF;
    a.buf = b;
    return a;
}

static tdm__karg karg_null(void)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_NULL;
    return a;
}

static tdm__karg karg_value(const void *v, uint32_t size)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_VALUE;
    a.size = size;
    memcpy(a.value, v, size);
    return a;
}

static tdm__karg karg_i64(int64_t v)
{
    return karg_value(&v, sizeof v);
}

static void check_near(const char *what, long i, double got, double want, double rel,
                       double abs_tol)
{
    double tol = abs_tol + rel * fabs(want);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%ld]: got %.17g, want %.17g (tolerance %.3g)", what, i, got, want, tol);
}

/* Launches tdm_exp_sinh_f64(x, y, begin, end); skips the test on a device without fp64. */
static void launch_exp_sinh(tdm__dev *d, int q, tdm__dbuf *x, tdm__dbuf *y, int64_t begin,
                            int64_t end, int64_t global)
{
    tdm__karg a[4] = {karg_buf(x), karg_buf(y), karg_i64(begin), karg_i64(end)};
    detail[0] = '\0';
    int rc = ops->launch(d, q, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f64", a, 4,
                         global, detail, sizeof detail);
    if (rc == TDM_ENOTFOUND) {
        ops->close(d);
        print_message("no tdm_exp_sinh_f64 on this device (no cl_khr_fp64): %s\n", detail);
        skip();
    }
    if (rc != 0)
        fail_msg("launch tdm_exp_sinh_f64: %s: %s", tdm_status_name(rc), detail);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_open_close(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm__dev *d = NULL;
    OK(ops->open(rt, 0, &d, detail, sizeof detail));
    assert_non_null(d);
    assert_int_equal(ops->kind, TDM_BACKEND_OPENCL);
    assert_true(ops->n_queues(d) >= 2);
    for (int q = 0; q < ops->n_queues(d); q++)
        OK(ops->finish(d, q, detail, sizeof detail)); /* nothing enqueued: fine */
    ops->close(d);
    ops->close(NULL);
    /* twice in a row, and two devices open at once */
    tdm__dev *a = open0(), *b = open0();
    ops->close(a);
    ops->close(b);
    tdm_test_close(rt);
}

static void test_bad_device_index(void **state)
{
    (void)state;
    tdm__dev *d = (tdm__dev *)&d;
    detail[0] = '\0';
    assert_int_equal(ops->open(NULL, -1, &d, detail, sizeof detail), TDM_EINVAL);
    assert_null(d);
    assert_non_null(strstr(detail, "-1"));
    d = (tdm__dev *)&d;
    assert_int_equal(ops->open(NULL, 100000, &d, detail, sizeof detail), TDM_ENOTFOUND);
    assert_null(d);
    assert_non_null(strstr(detail, "no device 100000"));
    /* no room for a message is fine too */
    assert_int_equal(ops->open(NULL, 100000, &d, NULL, 0), TDM_ENOTFOUND);
    assert_int_equal(ops->open(NULL, 0, NULL, detail, sizeof detail), TDM_EINVAL);
}

/* alloc / write / launch / read against the C reference, items [begin, end) of the buffers. */
static void test_exp_sinh_round_trip(void **state)
{
    (void)state;
    enum { N = 100003 };
    const int64_t begin = 1000, end = N - 7;
    double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int i = 0; i < N; i++) {
        x[i] = -5.0 + 10.0 * i / (N - 1);
        y[i] = -1.0; /* sentinel: items outside [begin, end) must keep it */
    }
    tdm__dev *d = open0();
    tdm__dbuf *bx = NULL, *by = NULL;
    OK(ops->alloc(d, N * sizeof(double), &bx, detail, sizeof detail));
    OK(ops->alloc(d, N * sizeof(double), &by, detail, sizeof detail));
    OK(ops->write(d, 0, bx, 0, x, N * sizeof(double), detail, sizeof detail));
    OK(ops->write(d, 0, by, 0, y, N * sizeof(double), detail, sizeof detail));
    /* fewer work items than items: the entry's grid-stride loop covers the rest */
    launch_exp_sinh(d, 0, bx, by, begin, end, 1000);
    memset(y, 0, N * sizeof *y);
    OK(ops->read(d, 0, y, by, 0, N * sizeof(double), detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    for (int i = 0; i < N; i++) {
        if (i < begin || i >= end)
            assert_true(y[i] == -1.0);
        else
            check_near("exp_sinh_f64", i, y[i], exp(x[i]) * sinh(x[i]), 1e-13, 1e-300);
    }
    /* again on another queue with more work items than items, reading a sub-range back */
    launch_exp_sinh(d, 1, bx, by, 0, N, 3 * (int64_t)N);
    double part[64];
    OK(ops->read(d, 1, part, by, 10 * sizeof(double), sizeof part, detail, sizeof detail));
    OK(ops->finish(d, 1, detail, sizeof detail));
    for (int i = 0; i < 64; i++)
        check_near("exp_sinh_f64 part", i, part[i], exp(x[10 + i]) * sinh(x[10 + i]), 1e-13,
                   1e-300);
    ops->free(d, bx);
    ops->free(d, by);
    ops->close(d);
    free(x);
    free(y);
}

/* Batches round-robin over every queue, each queue with its own buffers, up to n_queues
 * batches in flight; a queue is finished only when it is reused, as the core does. */
static void test_pipeline_queues(void **state)
{
    (void)state;
    enum { BATCH = 65536, BATCHES = 14, QMAX = 8 };
    const int64_t n = (int64_t)BATCH * BATCHES - 123; /* the last batch is short */
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++) {
        x[i] = sin((double)i * 1e-3) * 4.0;
        y[i] = NAN;
    }
    tdm__dev *d = open0();
    int nq = ops->n_queues(d);
    assert_true(nq >= 3 && nq <= QMAX);
    tdm__dbuf *bx[QMAX], *by[QMAX];
    int busy[QMAX] = {0}, in_flight = 0, max_in_flight = 0;
    for (int q = 0; q < nq; q++) {
        OK(ops->alloc(d, BATCH * sizeof(double), &bx[q], detail, sizeof detail));
        OK(ops->alloc(d, BATCH * sizeof(double), &by[q], detail, sizeof detail));
    }
    for (int b = 0; b < BATCHES; b++) {
        int q = b % nq;
        if (busy[q]) {
            OK(ops->finish(d, q, detail, sizeof detail));
            busy[q] = 0;
            in_flight--;
        }
        int64_t lo = (int64_t)b * BATCH, cnt = n - lo < BATCH ? n - lo : BATCH;
        size_t bytes = (size_t)cnt * sizeof(double);
        OK(ops->write(d, q, bx[q], 0, x + lo, bytes, detail, sizeof detail));
        launch_exp_sinh(d, q, bx[q], by[q], 0, cnt, cnt);
        OK(ops->read(d, q, y + lo, by[q], 0, bytes, detail, sizeof detail));
        busy[q] = 1;
        if (++in_flight > max_in_flight)
            max_in_flight = in_flight;
    }
    for (int q = 0; q < nq; q++)
        OK(ops->finish(d, q, detail, sizeof detail));
    assert_int_equal(max_in_flight, nq);
    for (int64_t i = 0; i < n; i++)
        check_near("pipelined exp_sinh_f64", (long)i, y[i], exp(x[i]) * sinh(x[i]), 1e-13, 1e-300);
    for (int q = 0; q < nq; q++) {
        ops->free(d, bx[q]);
        ops->free(d, by[q]);
    }
    ops->close(d);
    free(x);
    free(y);
}

/* One entry launched round-robin on every queue of a device, each launch 4% wider than the one
 * before (1 to 2^20 work items: every work-group size and power-of-two group count the layer
 * uses, each a new entry in PoCL's cache); every result checked. Runs in a thread of its own
 * too, so it reports instead of asserting: 0, or the status with msg filled in. */
typedef struct growing_run {
    tdm__dev *d;
    int rc;
    char msg[600];
} growing_run;

static void *launch_growing(void *arg)
{
    growing_run *g = arg;
    enum { N = 1 << 15, LAUNCHES = 360, QMAX = 8 };
    char det[512] = "";
    tdm__dev *d = g->d;
    int nq = ops->n_queues(d), rc = 0;
    double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    tdm__dbuf *bx = NULL, *by[QMAX] = {NULL};
    g->rc = TDM_ENOMEM;
    snprintf(g->msg, sizeof g->msg, "out of memory, or %d queues", nq);
    if (!x || !y || nq < 2 || nq > QMAX)
        goto out;
    for (int64_t i = 0; i < N; i++)
        x[i] = cos((double)i * 1e-4) * 3.0;
    rc = ops->alloc(d, N * sizeof(double), &bx, det, sizeof det);
    for (int q = 0; q < nq && rc == 0; q++)
        rc = ops->alloc(d, N * sizeof(double), &by[q], det, sizeof det);
    if (rc == 0)
        rc = ops->write(d, 0, bx, 0, x, N * sizeof(double), det, sizeof det);
    for (int i = 0; i < LAUNCHES && rc == 0; i++) {
        int q = i % nq;
        tdm__karg a[4] = {karg_buf(bx), karg_buf(by[q]), karg_i64(0), karg_i64(N)};
        int64_t global = (int64_t)pow(1.04, i < 354 ? i : 354);
        rc = ops->launch(d, q, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f64", a, 4,
                         global, det, sizeof det);
        if (rc != 0 || (i % (4 * nq) != 4 * nq - 1 && i != LAUNCHES - 1))
            continue;
        for (q = 0; q < nq && rc == 0; q++) {
            memset(y, 0, N * sizeof *y);
            rc = ops->read(d, q, y, by[q], 0, N * sizeof(double), det, sizeof det);
            int frc = ops->finish(d, q, rc ? NULL : det, rc ? 0 : sizeof det);
            rc = rc ? rc : frc;
            for (int64_t j = 0; j < N && rc == 0; j += 997)
                if (!(fabs(y[j] - exp(x[j]) * sinh(x[j])) <=
                      1e-13 * fabs(exp(x[j]) * sinh(x[j])))) {
                    rc = TDM_EINVAL;
                    snprintf(det, sizeof det, "after launch %d, queue %d: y[%lld] = %.17g", i, q,
                             (long long)j, y[j]);
                }
        }
    }
    g->rc = rc;
    snprintf(g->msg, sizeof g->msg, "%s", det);
out:
    if (bx)
        ops->free(d, bx);
    for (int q = 0; q < QMAX; q++)
        if (by[q])
            ops->free(d, by[q]);
    free(x);
    free(y);
    return NULL;
}

static void check_growing(const growing_run *g)
{
    if (g->rc == TDM_ENOTFOUND) {
        print_message("no tdm_exp_sinh_f64 on this device (no cl_khr_fp64): %s\n", g->msg);
        skip();
    }
    if (g->rc != 0)
        fail_msg("%s: %s", tdm_status_name(g->rc), g->msg);
}

/* PoCL (3.1) keys its cache of loaded work-group functions by entry, group size and grid
 * width, but a finished kernel gives its handle back by entry and group size alone: while
 * launches of one entry with different sizes ran at once on several queues, the process
 * aborted ("pocl_release_dlhandle_cache: Assertion found->ref_count > 0", 10 runs in 10 of this
 * test). Launches of one entry now overlap only when their sizes are the same. */
static void test_kernels_of_many_queues_with_growing_sizes(void **state)
{
    (void)state;
    growing_run g = {.d = open0()};
    launch_growing(&g);
    ops->close(g.d);
    check_growing(&g);
}


/* The same on two devices opened at once (two contexts on one driver; PoCL's cache is one per
 * process), each driven by a thread of its own, as two runtimes of one process would. The two
 * contexts shared cache entries: with both built alike, 3 runs in 30 aborted (1 in 20 of
 * this version); a device opened while another is open now builds with an option of its own. */
static void test_kernels_of_two_devices_with_growing_sizes(void **state)
{
    (void)state;
    growing_run g[2] = {{.d = open0()}, {.d = open0()}};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, launch_growing, &g[1]), 0);
    launch_growing(&g[0]);
    assert_int_equal(pthread_join(t, NULL), 0);
    ops->close(g[0].d);
    ops->close(g[1].d);
    check_growing(&g[0]);
    check_growing(&g[1]);
}

/* A NULL buffer argument and a scalar: pi_leibniz(NULL terms_in, y, terms, begin, end). */
static void test_null_and_value_args(void **state)
{
    (void)state;
    enum { N = 5 };
    tdm__dev *d = open0();
    tdm__dbuf *by = NULL;
    OK(ops->alloc(d, N * sizeof(double), &by, detail, sizeof detail));
    tdm__karg a[5] = {karg_null(), karg_buf(by), karg_i64(1001), karg_i64(0), karg_i64(N)};
    detail[0] = '\0';
    int rc = ops->launch(d, 2, "builtin", tdm__builtin_kernel_source, "tdm_pi_leibniz", a, 5, N,
                         detail, sizeof detail);
    if (rc == TDM_ENOTFOUND) {
        ops->free(d, by);
        ops->close(d);
        skip();
    }
    assert_int_equal(rc, 0);
    double y[N];
    OK(ops->read(d, 2, y, by, 0, sizeof y, detail, sizeof detail));
    OK(ops->finish(d, 2, detail, sizeof detail));
    double want = 0.0;
    for (int k = 0; k < 1001; k++)
        want += (k % 2 ? -1.0 : 1.0) / (2.0 * k + 1.0);
    for (int i = 0; i < N; i++)
        check_near("pi_leibniz", i, y[i], 4.0 * want, 1e-13, 1e-13);
    ops->free(d, by);
    ops->close(d);
}

/* The API's parameter block by value (a struct: its size is not checked by type name) and a
 * NULL flags buffer: normalize_u8 over 2 images of 3x4 RGB. */
static void test_struct_by_value(void **state)
{
    (void)state;
    enum { N = 2, H = 3, W = 4, C = 3 };
    uint8_t x[N * H * W * C];
    float y[N * C * H * W];
    for (int i = 0; i < N * H * W * C; i++)
        x[i] = (uint8_t)(i * 29 + 3);
    tdm_normalize_params p = {{0.485f, 0.456f, 0.406f, 0.0f}, {0.229f, 0.224f, 0.225f, 1.0f}, 1, 0};
    tdm__dev *d = open0();
    tdm__dbuf *bx = NULL, *by = NULL;
    OK(ops->alloc(d, sizeof x, &bx, detail, sizeof detail));
    OK(ops->alloc(d, sizeof y, &by, detail, sizeof detail));
    OK(ops->write(d, 1, bx, 0, x, sizeof x, detail, sizeof detail));
    int32_t c = C;
    tdm__karg a[9] = {karg_buf(bx),   karg_null(), karg_buf(by),      karg_value(&p, sizeof p),
                      karg_i64(H),    karg_i64(W), karg_value(&c, 4), karg_i64(0),
                      karg_i64(N * H)};
    /* C is a tdm_i32: 8 bytes for it is refused (the dialect's typedefs are known by name) */
    a[6] = karg_i64(C);
    assert_int_equal(ops->launch(d, 1, "builtin", tdm__builtin_kernel_source, "tdm_normalize_u8", a,
                                 9, N * H, detail, sizeof detail),
                     TDM_EINVAL);
    assert_non_null(strstr(detail, "tdm_i32 (4 bytes)"));
    a[6] = karg_value(&c, 4);
    OK(ops->launch(d, 1, "builtin", tdm__builtin_kernel_source, "tdm_normalize_u8", a, 9, N * H,
                   detail, sizeof detail));
    OK(ops->read(d, 1, y, by, 0, sizeof y, detail, sizeof detail));
    OK(ops->finish(d, 1, detail, sizeof detail));
    for (int n = 0; n < N; n++)
        for (int ch = 0; ch < C; ch++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    double v = x[((n * H + h) * W + (W - 1 - w)) * C + ch]; /* flip = 1 */
                    long i = ((n * C + ch) * H + h) * W + w;
                    check_near("normalize_u8", i, y[i], (v / 255.0 - p.mean[ch]) / p.std[ch], 1e-5,
                               1e-5);
                }
    ops->free(d, bx);
    ops->free(d, by);
    ops->close(d);
}

static void test_compile_error_gives_log(void **state)
{
    (void)state;
    static const char bad[] = "__kernel void broken(__global float *x)\n"
                              "{\n"
                              "    x[0] = tdm_undeclared_thing * 2.0f;\n"
                              "}\n";
    tdm__dev *d = open0();
    tdm__dbuf *b = NULL;
    OK(ops->alloc(d, 64, &b, detail, sizeof detail));
    tdm__karg a[1] = {karg_buf(b)};
    detail[0] = '\0';
    assert_int_equal(
        ops->launch(d, 0, "user:broken:1", bad, "broken", a, 1, 1, detail, sizeof detail),
        TDM_EKERNEL);
    print_message("build failure: %s\n", detail);
    assert_non_null(strstr(detail, "did not build"));
    assert_non_null(strstr(detail, "tdm_undeclared_thing")); /* from the build log */
    assert_null(strchr(detail, '\n'));                       /* one line */
    /* cached: the same error again, without rebuilding */
    char first[sizeof detail];
    memcpy(first, detail, sizeof first);
    detail[0] = '\0';
    assert_int_equal(
        ops->launch(d, 0, "user:broken:1", bad, "broken", a, 1, 1, detail, sizeof detail),
        TDM_EKERNEL);
    assert_string_equal(detail, first);
    /* a short detail buffer gets a truncated message, still terminated */
    char tiny[24];
    assert_int_equal(ops->launch(d, 0, "user:broken:1", bad, "broken", a, 1, 1, tiny, sizeof tiny),
                     TDM_EKERNEL);
    assert_true(strlen(tiny) < sizeof tiny);
    /* the device stays usable: a good program under another key builds and runs */
    static const char good[] = "__kernel void fill(__global float *x, float v) { x[get_global_id"
                               "(0)] = v; }\n";
    float v = 2.5f, out[16];
    tdm__karg g[2] = {karg_buf(b), karg_value(&v, sizeof v)};
    OK(ops->launch(d, 0, "user:fill:1", good, "fill", g, 2, 16, detail, sizeof detail));
    OK(ops->read(d, 0, out, b, 0, sizeof out, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    for (int i = 0; i < 16; i++)
        assert_true(out[i] == 2.5f);
    /* the same key with another source is refused, not silently run */
    static const char other[] = "__kernel void fill(__global float *x, float v) { x[0] = v; }\n";
    assert_int_equal(
        ops->launch(d, 0, "user:fill:1", other, "fill", g, 2, 16, detail, sizeof detail),
        TDM_EINVAL);
    ops->free(d, b);
    ops->close(d);
}

static void test_bad_entry_and_args(void **state)
{
    (void)state;
    tdm__dev *d = open0();
    tdm__dbuf *b = NULL;
    OK(ops->alloc(d, 1024, &b, detail, sizeof detail));
    tdm__karg a[4] = {karg_buf(b), karg_buf(b), karg_i64(0), karg_i64(1)};
    const char *src = tdm__builtin_kernel_source;
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_no_such_entry", a, 4, 1, detail, sizeof detail),
        TDM_ENOTFOUND);
    assert_non_null(strstr(detail, "tdm_no_such_entry"));
    /* wrong argument count */
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", a, 3, 1, detail, sizeof detail),
        TDM_EINVAL);
    assert_non_null(strstr(detail, "takes 4 arguments"));
    /* a scalar of the wrong size (4 bytes for a 64-bit index) */
    tdm__karg w[4] = {karg_buf(b), karg_buf(b), karg_value(&(int32_t){0}, 4), karg_i64(1)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", w, 4, 1, detail, sizeof detail),
        TDM_EINVAL);
    assert_non_null(strstr(detail, "argument 2"));
    /* a value where a buffer goes, and a buffer where a value goes */
    tdm__karg vb[4] = {karg_i64(0), karg_buf(b), karg_i64(0), karg_i64(1)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", vb, 4, 1, detail, sizeof detail),
        TDM_EINVAL);
    tdm__karg bv[4] = {karg_buf(b), karg_buf(b), karg_buf(b), karg_i64(1)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", bv, 4, 1, detail, sizeof detail),
        TDM_EINVAL);
    /* a buffer argument without a buffer; an oversized value */
    tdm__karg nb[4] = {karg_buf(NULL), karg_buf(b), karg_i64(0), karg_i64(1)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", nb, 4, 1, detail, sizeof detail),
        TDM_EINVAL);
    tdm__karg big = karg_i64(0);
    big.size = 65;
    tdm__karg ob[4] = {karg_buf(b), karg_buf(b), big, karg_i64(1)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_exp_sinh_f32", ob, 4, 1, detail, sizeof detail),
        TDM_EINVAL);
    /* bad queues, ranges and pointers */
    char host[2048];
    assert_int_equal(ops->write(d, 3, b, 0, host, 8, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->write(d, -1, b, 0, host, 8, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->finish(d, 99, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->write(d, 0, b, 1000, host, 25, detail, sizeof detail), TDM_EINVAL);
    assert_non_null(strstr(detail, "outside"));
    assert_int_equal(ops->read(d, 0, host, b, 0, 1025, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->read(d, 0, host, b, SIZE_MAX, 2, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->read(d, 0, NULL, b, 0, 8, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->write(d, 0, NULL, 0, host, 8, detail, sizeof detail), TDM_EINVAL);
    assert_int_equal(ops->launch(d, 0, NULL, src, "x", a, 4, 1, detail, sizeof detail), TDM_EINVAL);
    OK(ops->finish(d, 0, detail, sizeof detail));
    ops->free(d, b);
    ops->close(d);
}

/* 2-D launches of a tiled entry (tdm_linear_f32: work-groups of exactly 16x16): a product whose
 * sizes are not multiples of the group comes out right; the wrong group size, and a 1-D launch
 * of a tiled entry, are TDM_EINVAL with the reason; an empty range is a no-op. */
static void test_tiled_launch_2d(void **state)
{
    (void)state;
    tdm__dev *d = open0();
    enum { M = 21, K = 19, N = 35 };
    float x[M * K], W[K * N], y[M * N];
    for (int i = 0; i < M * K; i++)
        x[i] = (float)(i % 13) * 0.125f - 0.75f;
    for (int i = 0; i < K * N; i++)
        W[i] = (float)(i % 7) * 0.25f - 0.5f;
    tdm__dbuf *bx = NULL, *bW = NULL, *by = NULL;
    OK(ops->alloc(d, sizeof x, &bx, detail, sizeof detail));
    OK(ops->alloc(d, sizeof W, &bW, detail, sizeof detail));
    OK(ops->alloc(d, sizeof y, &by, detail, sizeof detail));
    OK(ops->write(d, 0, bx, 0, x, sizeof x, detail, sizeof detail));
    OK(ops->write(d, 0, bW, 0, W, sizeof W, detail, sizeof detail));
    int32_t relu = 0;
    tdm__karg a[9] = {karg_buf(bx), karg_buf(bW),         karg_null(), karg_buf(by),   karg_i64(K),
                      karg_i64(N),  karg_value(&relu, 4), karg_i64(0), karg_i64(M * N)};
    const char *src = tdm__builtin_kernel_source;
    tdm__range2 r = {{N, M}, {16, 16}};
    OK(ops->launch_2d(d, 0, "builtin", src, "tdm_linear_f32", a, 9, &r, detail, sizeof detail));
    OK(ops->read(d, 0, y, by, 0, sizeof y, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = 0; /* exact: every product and partial sum is a multiple of 1/32 */
            for (int k = 0; k < K; k++)
                ref += (double)x[m * K + k] * W[k * N + n];
            check_near("linear 2-D", m * N + n, y[m * N + n], ref, 0.0, 0.0);
        }
    /* the entry requires 16x16 groups */
    tdm__range2 r8 = {{N, M}, {8, 8}};
    assert_int_equal(
        ops->launch_2d(d, 0, "builtin", src, "tdm_linear_f32", a, 9, &r8, detail, sizeof detail),
        TDM_EINVAL);
    assert_non_null(strstr(detail, "requires work-groups of 16x16x1"));
    assert_int_equal(
        ops->launch(d, 0, "builtin", src, "tdm_linear_f32", a, 9, M * N, detail, sizeof detail),
        TDM_EINVAL);
    assert_non_null(strstr(detail, "2-D launch"));
    tdm__range2 r0 = {{0, M}, {16, 16}}, rbad = {{N, M}, {0, 16}};
    OK(ops->launch_2d(d, 0, "builtin", src, "tdm_linear_f32", a, 9, &r0, detail, sizeof detail));
    assert_int_equal(
        ops->launch_2d(d, 0, "builtin", src, "tdm_linear_f32", a, 9, &rbad, detail, sizeof detail),
        TDM_EINVAL);
    assert_int_equal(
        ops->launch_2d(d, 0, "builtin", src, "tdm_linear_f32", a, 9, NULL, detail, sizeof detail),
        TDM_EINVAL);
    OK(ops->finish(d, 0, detail, sizeof detail));
    ops->free(d, bx);
    ops->free(d, bW);
    ops->free(d, by);
    ops->close(d);
}

/* Empty buffers, empty copies and launches with no items are no-ops, not errors. */
static void test_empty_work(void **state)
{
    (void)state;
    tdm__dev *d = open0();
    tdm__dbuf *e = NULL;
    OK(ops->alloc(d, 0, &e, detail, sizeof detail));
    assert_non_null(e);
    OK(ops->write(d, 0, e, 0, NULL, 0, detail, sizeof detail));
    OK(ops->read(d, 0, NULL, e, 0, 0, detail, sizeof detail));
    tdm__karg a[4] = {karg_buf(e), karg_buf(e), karg_i64(0), karg_i64(0)};
    OK(ops->launch(d, 0, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f32", a, 4, 0, detail,
                   sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    ops->free(d, e);
    ops->free(d, NULL);
    ops->close(d);
}

static void test_memory_cap(void **state)
{
    (void)state;
    const char *old = getenv("TDM_DEVICE_MEM_CAP");
    char *saved = old ? strdup(old) : NULL;

    setenv("TDM_DEVICE_MEM_CAP", "1M", 1);
    tdm__dev *d = open0();
    tdm__dbuf *a = NULL, *b = NULL, *c = NULL;
    OK(ops->alloc(d, 600 * 1024, &a, detail, sizeof detail));
    detail[0] = '\0';
    assert_int_equal(ops->alloc(d, 600 * 1024, &b, detail, sizeof detail), TDM_ENOMEM);
    assert_null(b);
    assert_non_null(strstr(detail, "TDM_DEVICE_MEM_CAP"));
    print_message("over the cap: %s\n", detail);
    OK(ops->alloc(d, 400 * 1024, &c, detail, sizeof detail)); /* what is left still fits */
    ops->free(d, a);
    OK(ops->alloc(d, 600 * 1024, &b, detail, sizeof detail)); /* room again after a free */
    ops->free(d, b);
    ops->free(d, c);
    OK(ops->alloc(d, 1024 * 1024, &a, detail, sizeof detail)); /* exactly the cap */
    ops->free(d, a);
    ops->close(d);

    /* spellings, and a malformed value is refused at open */
    const char *good[] = {"1048576", "64MiB", "2g", " 512 KB ", "0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("TDM_DEVICE_MEM_CAP", good[i], 1);
        ops->close(open0());
    }
    const char *bad[] = {"lots", "12X", "-5", "99999999999999999999", "20000000T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("TDM_DEVICE_MEM_CAP", bad[i], 1);
        d = (tdm__dev *)&d;
        assert_int_equal(ops->open(NULL, 0, &d, detail, sizeof detail), TDM_EINVAL);
        assert_null(d);
        assert_non_null(strstr(detail, "TDM_DEVICE_MEM_CAP"));
    }

    if (saved) {
        setenv("TDM_DEVICE_MEM_CAP", saved, 1);
        free(saved);
    } else {
        unsetenv("TDM_DEVICE_MEM_CAP");
    }
}

/* A buffer larger than CL_DEVICE_MAX_MEM_ALLOC_SIZE is TDM_ENOMEM with a clear message. */
static void test_over_max_alloc(void **state)
{
    (void)state;
    tdm__dev *d = open0();
    tdm__dbuf *b = NULL;
    detail[0] = '\0';
    assert_int_equal(ops->alloc(d, SIZE_MAX / 2, &b, detail, sizeof detail), TDM_ENOMEM);
    assert_null(b);
    assert_non_null(strstr(detail, "CL_DEVICE_MAX_MEM_ALLOC_SIZE"));
    print_message("too large: %s\n", detail);
    ops->close(d);
}

/* close() with work in flight and buffers the caller did not free: waits and releases all
 * (LeakSanitizer checks the "releases" under ASan). */
static void test_close_releases_everything(void **state)
{
    (void)state;
    enum { N = 200000 };
    double *x = calloc(N, sizeof *x);
    assert_non_null(x);
    tdm__dev *d = open0();
    for (int q = 0; q < ops->n_queues(d); q++) {
        /* buffers of its own per queue: queues are not ordered with each other */
        tdm__dbuf *bx = NULL, *by = NULL;
        OK(ops->alloc(d, N * sizeof(double), &bx, detail, sizeof detail));
        OK(ops->alloc(d, N * sizeof(double), &by, detail, sizeof detail));
        OK(ops->write(d, q, bx, 0, x, N * sizeof(double), detail, sizeof detail));
        tdm__karg a[4] = {karg_buf(bx), karg_buf(by), karg_i64(0), karg_i64(N)};
        OK(ops->launch(d, q, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f32", a, 4, N,
                       detail, sizeof detail));
    }
    ops->close(d); /* no finish, no free */
    free(x);
}

/* ---- registered (pinned) host memory --------------------------------------------------------- */

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31u + seed);
}

/* -1 if p[0..n) is fill(seed)'s pattern, else the first index that differs. */
static long mismatch(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31u + seed))
            return (long)i;
    return -1;
}

#define SAME(p, n, seed)                                                                           \
    do {                                                                                           \
        long at_ = mismatch((p), (n), (seed));                                                     \
        if (at_ >= 0)                                                                              \
            fail_msg("%s: byte %ld of %zu differs from pattern %u", #p, at_, (size_t)(n),          \
                     (unsigned)(seed));                                                            \
    } while (0)

/* Registered memory as the runtime's pinned tensors use it: the registration leaves the bytes
 * alone; host writes made after it (and after an earlier upload) are what the next upload
 * sends; a download is in host memory once its queue finishes, while the host writes other
 * ranges of the same registered range; all queues copy different ranges of it at once; the
 * unregistration leaves the bytes alone too. Plus the ranges it refuses. */
static void test_registered_host_memory(void **state)
{
    (void)state;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 48 * page, h = n / 2;
    unsigned char *p =
        mmap(NULL, n + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    (void)mlock(p, n); /* as the runtime does; the layer does not depend on it */
    unsigned char *back = malloc(n);
    assert_non_null(back);
    fill(p, n, 1);
    tdm__dev *d = open0();
    tdm__dbuf *db = NULL, *db2 = NULL;
    OK(ops->alloc(d, n, &db, detail, sizeof detail));
    OK(ops->alloc(d, n, &db2, detail, sizeof detail));

    OK(ops->host_register(d, p, n, detail, sizeof detail));
    SAME(p, n, 1);                                                    /* the map left them alone */
    OK(ops->host_register(d, p, n, detail, sizeof detail));           /* again: nothing to do */
    OK(ops->host_register(d, p + page, page, detail, sizeof detail)); /* inside it: the same */
    detail[0] = '\0';
    assert_int_equal(ops->host_register(d, p + n - page, 2 * page, detail, sizeof detail),
                     TDM_EINVAL); /* partly over it */
    assert_non_null(strstr(detail, "overlap"));
    detail[0] = '\0';
    assert_int_equal(ops->host_register(d, p + n + 1, 64, detail, sizeof detail), TDM_EINVAL);
    assert_non_null(strstr(detail, "aligned"));
    assert_int_equal(ops->host_register(d, NULL, 64, detail, sizeof detail), TDM_EINVAL);

    /* host writes after the registration go up with the next upload (queue 1); meanwhile the
     * host writes another range of the registered memory */
    fill(p, h, 2);
    OK(ops->write(d, 1, db, 0, p, h, detail, sizeof detail));
    fill(p + h, h, 3);
    OK(ops->finish(d, 1, detail, sizeof detail));
    OK(ops->read(d, 0, back, db, 0, h, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    SAME(back, h, 2);
    SAME(p + h, h, 3);

    /* a download into the registered memory (queue 2) is there once the queue finishes, while
     * the host writes the first page meanwhile */
    fill(back, n, 4);
    OK(ops->write(d, 0, db2, 0, back, n, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    OK(ops->read(d, 2, p + h, db2, 0, h, detail, sizeof detail));
    fill(p, page, 5);
    OK(ops->finish(d, 2, detail, sizeof detail));
    SAME(p + h, h, 4);
    SAME(p, page, 5);

    /* the host changed the first page after it was uploaded: the next upload sends the new
     * bytes (a driver caching a device-side copy of the range would send the old ones) */
    OK(ops->write(d, 0, db, 0, p, page, detail, sizeof detail));
    OK(ops->read(d, 0, back, db, 0, page, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    SAME(back, page, 5);

    /* every queue at once, each on its own ranges of the one registered range: up from the
     * first half, back down into the second */
    int nq = ops->n_queues(d);
    size_t t = h / (size_t)nq / 128 * 128;
    for (int q = 0; q < nq; q++)
        fill(p + (size_t)q * t, t, 10u + (unsigned)q);
    memset(p + h, 0, h);
    for (int q = 0; q < nq; q++) {
        size_t o = (size_t)q * t;
        OK(ops->write(d, q, db, o, p + o, t, detail, sizeof detail));
        OK(ops->read(d, q, p + h + o, db, o, t, detail, sizeof detail));
    }
    for (int q = 0; q < nq; q++)
        OK(ops->finish(d, q, detail, sizeof detail));
    for (int q = 0; q < nq; q++)
        SAME(p + h + (size_t)q * t, t, 10u + (unsigned)q);

    /* unregistered: the bytes stay; an unknown pointer is ignored */
    fill(p, n, 6);
    ops->host_unregister(d, p);
    ops->host_unregister(d, p + 1);
    SAME(p, n, 6);
    /* registered again, and left registered: close releases it */
    OK(ops->host_register(d, p, n, detail, sizeof detail));
    OK(ops->write(d, 0, db, 0, p, n, detail, sizeof detail));
    OK(ops->read(d, 0, back, db, 0, n, detail, sizeof detail));
    OK(ops->finish(d, 0, detail, sizeof detail));
    SAME(back, n, 6);
    ops->free(d, db);
    ops->free(d, db2);
    ops->close(d);
    SAME(p, n, 6);
    free(back);
    munlock(p, n);
    munmap(p, n + 2 * page);
}

/* Exit status of a child that checks (or, with write != 0, writes) fill(seed) at p[0..n). */
static int in_child(unsigned char *p, size_t n, unsigned seed, int write)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (write)
            fill(p, n, seed);
        _exit(write || mismatch(p, n, seed) < 0 ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Registered shared memory, as shared + pinned tensors that worker processes fill: what a
 * child process wrote goes up with the next upload, and a download is visible to a child
 * process once the queue finishes. */
static void test_registered_shared_memory_processes(void **state)
{
    (void)state;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 16 * page, h = n / 2;
    unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    (void)mlock(p, n);
    unsigned char *back = malloc(n);
    assert_non_null(back);
    memset(p, 0, n);
    tdm__dev *d = open0();
    tdm__dbuf *db = NULL;
    OK(ops->alloc(d, n, &db, detail, sizeof detail));
    OK(ops->host_register(d, p, n, detail, sizeof detail));
    for (unsigned round = 0; round < 3; round++) {
        /* a worker process writes the first half; it goes up and comes back down */
        assert_int_equal(in_child(p, h, 20u + round, 1), 0);
        OK(ops->write(d, 1, db, 0, p, h, detail, sizeof detail));
        OK(ops->read(d, 1, back, db, 0, h, detail, sizeof detail));
        OK(ops->finish(d, 1, detail, sizeof detail));
        SAME(back, h, 20u + round);
        /* a download into the second half: a worker process sees it after the finish */
        fill(back, h, 30u + round);
        OK(ops->write(d, 2, db, h, back, h, detail, sizeof detail));
        OK(ops->read(d, 2, p + h, db, h, h, detail, sizeof detail));
        OK(ops->finish(d, 2, detail, sizeof detail));
        assert_int_equal(in_child(p + h, h, 30u + round, 0), 0);
    }
    ops->host_unregister(d, p);
    ops->free(d, db);
    ops->close(d);
    free(back);
    munlock(p, n);
    munmap(p, n);
}
/* A device lost (here: TDM_DEVICE_FAULT=write:2, its second copy in failing as a driver error
 * would) answers every later entry with TDM_EDEVLOST at once, naming the first cause; finish
 * still drains its queue; close releases everything. */
static void test_lost_device_refuses_every_entry(void **state)
{
    setenv("TDM_DEVICE_FAULT", "write:2", 1);
    tdm__dev *d = open0();
    unsetenv("TDM_DEVICE_FAULT");
    double x[64] = {0}, y[64];
    tdm__dbuf *b = NULL, *b2 = (tdm__dbuf *)0x1;
    OK(ops->alloc(d, sizeof x, &b, detail, sizeof detail));
    OK(ops->write(d, 0, b, 0, x, sizeof x, detail, sizeof detail));
    assert_int_equal(ops->write(d, 1, b, 0, x, sizeof x, detail, sizeof detail), TDM_EDEVLOST);
    assert_non_null(strstr(detail, "TDM_DEVICE_FAULT=write:2"));
    assert_int_equal(ops->finish(d, 0, detail, sizeof detail), TDM_EDEVLOST);
    assert_int_equal(ops->alloc(d, 64, &b2, detail, sizeof detail), TDM_EDEVLOST);
    assert_null(b2);
    assert_non_null(strstr(detail, "lost earlier"));
    assert_non_null(strstr(detail, "write 2"));
    assert_int_equal(ops->write(d, 0, b, 0, x, sizeof x, detail, sizeof detail), TDM_EDEVLOST);
    assert_int_equal(ops->read(d, 0, y, b, 0, sizeof y, detail, sizeof detail), TDM_EDEVLOST);
    tdm__karg a[4] = {karg_buf(b), karg_buf(b), karg_i64(0), karg_i64(8)};
    assert_int_equal(ops->launch(d, 0, "builtin", tdm__builtin_kernel_source, "tdm_exp_sinh_f64",
                                 a, 4, 8, detail, sizeof detail),
                     TDM_EDEVLOST);
    assert_int_equal(ops->finish(d, 2, detail, sizeof detail), TDM_EDEVLOST);
    void *page = NULL;
    assert_int_equal(posix_memalign(&page, 4096, 4096), 0);
    assert_int_equal(ops->host_register(d, page, 4096, detail, sizeof detail), TDM_EDEVLOST);
    ops->free(d, b);
    ops->close(d);
    free(page);
    /* a malformed value keeps the device from opening */
    setenv("TDM_DEVICE_FAULT", "copy:1", 1);
    tdm__dev *d2 = (tdm__dev *)0x1;
    assert_int_equal(ops->open(NULL, 0, &d2, detail, sizeof detail), TDM_EINVAL);
    unsetenv("TDM_DEVICE_FAULT");
    assert_null(d2);
    assert_non_null(strstr(detail, "TDM_DEVICE_FAULT"));
}

#endif /* TDM_HAVE_OPENCL */

int main(int argc, char **argv)
{
#if !TDM_HAVE_OPENCL
    (void)argc;
    (void)argv;
    printf("opencl: skipped: this build has no OpenCL (TDM_HAVE_OPENCL=0)\n");
    return 77;
#else
    tdm__dev *d = NULL;
    char why[512] = "";
    int rc = tdm__opencl_dev_ops.open(NULL, 0, &d, why, sizeof why);
    if (rc == TDM_ENOTFOUND) {
        printf("opencl: skipped: %s\n", why);
        return 77;
    }
    if (d)
        tdm__opencl_dev_ops.close(d);
    /* any other failure to open device 0 is left for the tests to report */
    /* One test per line: tests/CMakeLists.txt registers one CTest per matching line. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_close),
        cmocka_unit_test(test_bad_device_index),
        cmocka_unit_test(test_exp_sinh_round_trip),
        cmocka_unit_test(test_pipeline_queues),
        cmocka_unit_test(test_kernels_of_many_queues_with_growing_sizes),
        cmocka_unit_test(test_kernels_of_two_devices_with_growing_sizes),
        cmocka_unit_test(test_null_and_value_args),
        cmocka_unit_test(test_struct_by_value),
        cmocka_unit_test(test_compile_error_gives_log),
        cmocka_unit_test(test_bad_entry_and_args),
        cmocka_unit_test(test_tiled_launch_2d),
        cmocka_unit_test(test_empty_work),
        cmocka_unit_test(test_memory_cap),
        cmocka_unit_test(test_over_max_alloc),
        cmocka_unit_test(test_close_releases_everything),
        cmocka_unit_test(test_registered_host_memory),
        cmocka_unit_test(test_registered_shared_memory_processes),
        cmocka_unit_test(test_lost_device_refuses_every_entry),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("opencl", tests);
#endif
}
