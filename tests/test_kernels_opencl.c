/* SPDX-License-Identifier: MIT */
/* kernels_opencl: the built-in kernels' single source (tdm__builtin_kernel_source) built by a
 * real OpenCL driver (PoCL in CI) and run, compared with a plain C reference.
 *
 * Without OpenCL in the build, or without a platform or device at run time, main() exits 77
 * so CTest reports the tests as skipped, never as passed. */
#include "tdm_test.h"

#if TDM_HAVE_OPENCL
#include <math.h>
#include <string.h>

#include <CL/cl.h>

#include "builtin_kernels.h"
#include "train_kernels.h"

extern const char tdm__builtin_kernel_source[];

static cl_device_id g_dev;
static cl_context g_ctx;
static cl_command_queue g_queue;
static cl_program g_prog;

/* Finds the first device of the first platform that has one; 0 (with why) when there is none. */
static int find_device(char *why, size_t len)
{
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e != CL_SUCCESS || np == 0) {
        snprintf(why, len, "no OpenCL platform (clGetPlatformIDs returned %d, %u platforms)", e,
                 np);
        return 0;
    }
    cl_platform_id plats[16];
    if (np > 16)
        np = 16;
    if (clGetPlatformIDs(np, plats, NULL) != CL_SUCCESS) {
        snprintf(why, len, "clGetPlatformIDs failed listing %u platforms", np);
        return 0;
    }
    for (cl_uint i = 0; i < np; i++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, 1, &g_dev, &nd) == CL_SUCCESS && nd > 0)
            return 1;
    }
    snprintf(why, len, "no OpenCL device on %u platform(s)", np);
    return 0;
}

static int has_fp64(void)
{
    char ext[8192] = "";
    clGetDeviceInfo(g_dev, CL_DEVICE_EXTENSIONS, sizeof ext - 1, ext, NULL);
    return strstr(ext, "cl_khr_fp64") != NULL;
}

/* Builds the program once per process; fails the test with the build log if it does not. */
static void build(void)
{
    if (g_prog)
        return;
    cl_int e;
    g_ctx = clCreateContext(NULL, 1, &g_dev, NULL, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    g_queue = clCreateCommandQueue(g_ctx, g_dev, 0, &e);
    assert_int_equal(e, CL_SUCCESS);
    const char *src = tdm__builtin_kernel_source;
    cl_program p = clCreateProgramWithSource(g_ctx, 1, &src, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    /* -Werror: the dialect must stay warning-free under OpenCL's compiler too. */
    e = clBuildProgram(p, 1, &g_dev, "-cl-std=CL1.2 -Werror", NULL, NULL);
    if (e != CL_SUCCESS) {
        size_t n = 0;
        clGetProgramBuildInfo(p, g_dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
        char *log = calloc(n + 1, 1);
        assert_non_null(log);
        clGetProgramBuildInfo(p, g_dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        print_error("clBuildProgram returned %d; build log:\n%s\n", e, log);
        free(log);
        clReleaseProgram(p);
        fail_msg("the built-in kernel source does not build under OpenCL");
    }
    g_prog = p;
}

static void release_all(void)
{
    if (g_prog)
        clReleaseProgram(g_prog);
    if (g_queue)
        clReleaseCommandQueue(g_queue);
    if (g_ctx)
        clReleaseContext(g_ctx);
}

static cl_kernel kernel(const char *name)
{
    cl_int e;
    cl_kernel k = clCreateKernel(g_prog, name, &e);
    if (e != CL_SUCCESS)
        fail_msg("clCreateKernel(%s) returned %d", name, e);
    return k;
}

static cl_mem buf_in(const void *host, size_t bytes)
{
    cl_int e;
    cl_mem m =
        clCreateBuffer(g_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)host, &e);
    assert_int_equal(e, CL_SUCCESS);
    return m;
}

/* An output buffer filled with `fill` (so untouched items can be checked). */
static cl_mem buf_out(const void *fill, size_t bytes)
{
    cl_int e;
    cl_mem m =
        clCreateBuffer(g_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, (void *)fill, &e);
    assert_int_equal(e, CL_SUCCESS);
    return m;
}

static void arg(cl_kernel k, cl_uint i, size_t size, const void *v)
{
    cl_int e = clSetKernelArg(k, i, size, v);
    if (e != CL_SUCCESS)
        fail_msg("clSetKernelArg(%u) returned %d", i, e);
}

static void arg_mem(cl_kernel k, cl_uint i, cl_mem m)
{
    arg(k, i, sizeof m, &m);
}

static void arg_idx(cl_kernel k, cl_uint i, cl_long v)
{
    arg(k, i, sizeof v, &v);
}

/* Launches with `global` work items; the entry points loop over their items, so global may be
 * smaller than the item count (and is, in some tests, to exercise that loop). */
static void launch(cl_kernel k, size_t global)
{
    assert_int_equal(clEnqueueNDRangeKernel(g_queue, k, 1, NULL, &global, NULL, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clFinish(g_queue), CL_SUCCESS);
}

/* A 2-D launch of gx x gy work items in TDM_K_TILE x TDM_K_TILE groups (the tiled entries). */
static void launch2(cl_kernel k, size_t gx, size_t gy)
{
    size_t global[2] = {gx, gy}, local[2] = {TDM_K_TILE, TDM_K_TILE};
    assert_int_equal(clEnqueueNDRangeKernel(g_queue, k, 2, NULL, global, local, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clFinish(g_queue), CL_SUCCESS);
}

static void read_back(cl_mem m, void *host, size_t bytes)
{
    assert_int_equal(clEnqueueReadBuffer(g_queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                     CL_SUCCESS);
}

static void check_near(const char *what, long i, double got, double want, double rel,
                       double abs_tol)
{
    double tol = abs_tol + rel * fabs(want);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%ld]: got %.17g, want %.17g (tolerance %.3g)", what, i, got, want, tol);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_source_builds(void **state)
{
    (void)state;
    assert_non_null(strstr(tdm__builtin_kernel_source, "TDM_DIALECT_H"));
    assert_null(strstr(tdm__builtin_kernel_source, "#include \"tdm_dialect.h\""));
    build();
    const char *names[] = {"tdm_exp_sinh_f32",      "tdm_axpy_f32",   "tdm_scale_shift_f32",
                           "tdm_normalize_u8",      "tdm_linear_f32", "tdm_linear_grad_x_f32",
                           "tdm_linear_grad_w_f32", "tdm_colsum_f32", "tdm_softmax_xent_f32",
                           "tdm_sgd_momentum_f32",  "tdm_adam_f32"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        clReleaseKernel(kernel(names[i]));
    if (has_fp64()) {
        const char *names64[] = {"tdm_exp_sinh_f64", "tdm_axpy_f64",  "tdm_scale_shift_f64",
                                 "tdm_sum_f32",      "tdm_sum_f64",   "tdm_mean_f32",
                                 "tdm_mean_f64",     "tdm_sumsq_f32", "tdm_sumsq_f64",
                                 "tdm_pi_leibniz"};
        for (size_t i = 0; i < sizeof names64 / sizeof names64[0]; i++)
            clReleaseKernel(kernel(names64[i]));
    }
}

static void test_exp_sinh_f64(void **state)
{
    (void)state;
    build();
    if (!has_fp64())
        skip();
    enum { N = 1001 };
    static double x[N], y[N], zero[N];
    for (int i = 0; i < N; i++)
        x[i] = -4.0 + 8.0 * i / (N - 1);
    cl_mem bx = buf_in(x, sizeof x), by = buf_out(zero, sizeof zero);
    cl_kernel k = kernel("tdm_exp_sinh_f64");
    arg_mem(k, 0, bx);
    arg_mem(k, 1, by);
    /* items [300, N) only, with fewer work items than items */
    arg_idx(k, 2, 300);
    arg_idx(k, 3, N);
    launch(k, 64);
    read_back(by, y, sizeof y);
    for (int i = 0; i < N; i++) {
        if (i < 300)
            assert_true(y[i] == 0.0);
        else
            check_near("exp_sinh_f64", i, y[i], exp(x[i]) * sinh(x[i]), 1e-13, 1e-300);
    }
    clReleaseKernel(k);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
}

static void test_exp_sinh_f32(void **state)
{
    (void)state;
    build();
    enum { N = 777 };
    static float x[N], y[N], zero[N];
    for (int i = 0; i < N; i++)
        x[i] = -3.0f + 6.0f * (float)i / (N - 1);
    cl_mem bx = buf_in(x, sizeof x), by = buf_out(zero, sizeof zero);
    cl_kernel k = kernel("tdm_exp_sinh_f32");
    arg_mem(k, 0, bx);
    arg_mem(k, 1, by);
    arg_idx(k, 2, 0);
    arg_idx(k, 3, N);
    launch(k, N);
    read_back(by, y, sizeof y);
    for (int i = 0; i < N; i++)
        check_near("exp_sinh_f32", i, y[i], exp((double)x[i]) * sinh((double)x[i]), 2e-6, 1e-30);
    clReleaseKernel(k);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
}

static void test_axpy_f64_in_place(void **state)
{
    (void)state;
    build();
    if (!has_fp64())
        skip();
    enum { N = 515 };
    static double x[N], y[N], z[N];
    for (int i = 0; i < N; i++) {
        x[i] = 0.5 * i - 7.0;
        y[i] = 1.0 / (i + 1);
    }
    cl_mem bx = buf_in(x, sizeof x), by = buf_out(y, sizeof y);
    cl_kernel k = kernel("tdm_axpy_f64");
    double a = -1.75;
    arg_mem(k, 0, bx);
    arg_mem(k, 1, by);
    arg_mem(k, 2, by); /* z is y: the contract allows it */
    arg(k, 3, sizeof a, &a);
    arg_idx(k, 4, 0);
    arg_idx(k, 5, N);
    launch(k, 100);
    read_back(by, z, sizeof z);
    for (int i = 0; i < N; i++)
        check_near("axpy_f64", i, z[i], a * x[i] + y[i], 1e-15, 1e-15);
    clReleaseKernel(k);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
}

static void test_scale_shift_f32(void **state)
{
    (void)state;
    build();
    enum { N = 300 };
    static float x[N], y[N], zero[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)i * 0.25f - 20.0f;
    cl_mem bx = buf_in(x, sizeof x), by = buf_out(zero, sizeof zero);
    cl_kernel k = kernel("tdm_scale_shift_f32");
    float scale = 3.5f, shift = -0.125f;
    arg_mem(k, 0, bx);
    arg_mem(k, 1, by);
    arg(k, 2, sizeof scale, &scale);
    arg(k, 3, sizeof shift, &shift);
    arg_idx(k, 4, 0);
    arg_idx(k, 5, N);
    launch(k, N);
    read_back(by, y, sizeof y);
    for (int i = 0; i < N; i++)
        check_near("scale_shift_f32", i, y[i], (double)x[i] * scale + shift, 1e-6, 1e-6);
    clReleaseKernel(k);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
}

/* sum / mean / sumsq over rows of 13 (not a multiple of the 4 partial sums) */
static void run_reductions(int f64)
{
    enum { ROWS = 37, M = 13 };
    static double xd[ROWS * M], yd[ROWS];
    static float xf[ROWS * M], yf[ROWS];
    for (int i = 0; i < ROWS * M; i++) {
        xd[i] = sin(0.37 * i) * 3.0 + 0.01 * i;
        xf[i] = (float)xd[i];
    }
    const char *ops[] = {"sum", "mean", "sumsq"};
    for (int op = 0; op < 3; op++) {
        char name[32];
        snprintf(name, sizeof name, "tdm_%s_%s", ops[op], f64 ? "f64" : "f32");
        size_t esz = f64 ? sizeof(double) : sizeof(float);
        cl_mem bx = buf_in(f64 ? (void *)xd : (void *)xf, ROWS * M * esz);
        memset(yd, 0, sizeof yd);
        cl_mem by = buf_out(yd, ROWS * esz);
        cl_kernel k = kernel(name);
        arg_mem(k, 0, bx);
        arg_mem(k, 1, by);
        arg_idx(k, 2, M);
        arg_idx(k, 3, 0);
        arg_idx(k, 4, ROWS);
        launch(k, 8);
        read_back(by, f64 ? (void *)yd : (void *)yf, ROWS * esz);
        for (int r = 0; r < ROWS; r++) {
            double want = 0.0;
            for (int j = 0; j < M; j++) {
                double v = f64 ? xd[r * M + j] : (double)xf[r * M + j];
                want += op == 2 ? v * v : v;
            }
            if (op == 1)
                want /= M;
            double got = f64 ? yd[r] : (double)yf[r];
            /* accumulated in double either way; f32 output rounds once */
            check_near(name, r, got, want, f64 ? 1e-13 : 2e-7, f64 ? 1e-13 : 1e-6);
        }
        clReleaseKernel(k);
        clReleaseMemObject(bx);
        clReleaseMemObject(by);
    }
}

static void test_reductions_f64(void **state)
{
    (void)state;
    build();
    if (!has_fp64())
        skip();
    run_reductions(1);
}

static void test_reductions_f32(void **state)
{
    (void)state;
    build();
    if (!has_fp64())
        skip();
    run_reductions(0);
}

/* mode 0: flip 0, no flags; 1: flip 1; 2: per-image flags */
static void run_normalize(int C, int mode)
{
    enum { N = 3, H = 5, W = 7 };
    const int in_n = N * H * W * C, out_n = N * C * H * W;
    uint8_t x[N * H * W * 4], flags[N] = {1, 0, 1};
    float y[N * 4 * H * W], fill[N * 4 * H * W];
    for (int i = 0; i < in_n; i++)
        x[i] = (uint8_t)((i * 37 + 11) % 256);
    for (int i = 0; i < out_n; i++)
        fill[i] = -999.0f;
    tdm_normalize_params p = {
        {0.485f, 0.456f, 0.406f, 0.5f}, {0.229f, 0.224f, 0.225f, 0.25f}, mode == 1, 0};
    cl_mem bx = buf_in(x, (size_t)in_n), by = buf_out(fill, (size_t)out_n * sizeof(float));
    cl_mem bf = mode == 2 ? buf_in(flags, sizeof flags) : NULL;
    cl_kernel k = kernel("tdm_normalize_u8");
    arg_mem(k, 0, bx);
    if (bf)
        arg_mem(k, 1, bf);
    else
        arg(k, 1, sizeof(cl_mem), NULL); /* a NULL buffer argument: no flags */
    arg_mem(k, 2, by);
    arg(k, 3, sizeof p, &p); /* the API's parameter block, as a device backend passes it */
    arg_idx(k, 4, H);
    arg_idx(k, 5, W);
    cl_int cc = C;
    arg(k, 6, sizeof cc, &cc);
    arg_idx(k, 7, 0);
    arg_idx(k, 8, N * H); /* items are image rows */
    launch(k, 4);
    read_back(by, y, (size_t)out_n * sizeof(float));
    for (int n = 0; n < N; n++) {
        int flip = mode == 1 || (mode == 2 && flags[n]);
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    int sw = flip ? W - 1 - w : w;
                    double v = x[((n * H + h) * W + sw) * C + c];
                    double want = (v / 255.0 - p.mean[c]) / p.std[c];
                    long i = ((n * C + c) * H + h) * W + w;
                    check_near("normalize_u8", i, y[i], want, 1e-5, 1e-5);
                }
    }
    clReleaseKernel(k);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
    if (bf)
        clReleaseMemObject(bf);
}

static void test_normalize_u8(void **state)
{
    (void)state;
    build();
    const int cs[] = {1, 3, 4};
    for (int i = 0; i < 3; i++)
        for (int mode = 0; mode < 3; mode++)
            run_normalize(cs[i], mode);
}

static double pi_reference(int64_t terms)
{
    double s = 0.0;
    for (int64_t k = 0; k < terms; k++)
        s += (k % 2 ? -1.0 : 1.0) / (double)(2 * k + 1);
    return 4.0 * s;
}

static void test_pi_leibniz(void **state)
{
    (void)state;
    build();
    if (!has_fp64())
        skip();
    enum { N = 22 };
    /* (every tail of the kernel's step of 8 terms, and counts far past it) */
    int64_t terms[N] = {0, 1,  2,  3,  1000, 100001, 4,  5,  6,  7,  8,
                        9, 10, 11, 12, 13,   14,     15, 16, 17, -3, 1000003};
    double y[N], zero[N] = {0};
    cl_mem bt = buf_in(terms, sizeof terms), by = buf_out(zero, sizeof zero);
    cl_kernel k = kernel("tdm_pi_leibniz");

    /* per-item terms */
    arg_mem(k, 0, bt);
    arg_mem(k, 1, by);
    arg_idx(k, 2, 12345); /* ignored when terms_in is given */
    arg_idx(k, 3, 0);
    arg_idx(k, 4, N);
    launch(k, N);
    read_back(by, y, sizeof y);
    for (int i = 0; i < N; i++)
        check_near("pi_leibniz", i, y[i], pi_reference(terms[i]), 1e-12, 1e-11);
    assert_true(fabs(y[5] - M_PI) < 4.0 / (2.0 * 100001 + 1));
    /* the same operations in the same order as the C build (OpenCL's fp64 division is
     * correctly rounded, and nothing here multiplies): bit for bit */
    for (int i = 0; i < N; i++) {
        double c = tdm_k_pi_leibniz(terms[i]);
        if (memcmp(&c, &y[i], sizeof c) != 0)
            fail_msg("pi_leibniz, %lld terms: OpenCL %.17g, C %.17g", (long long)terms[i], y[i], c);
    }

    /* one count for every item, NULL terms_in */
    arg(k, 0, sizeof(cl_mem), NULL);
    arg_idx(k, 2, 1000);
    launch(k, 2);
    read_back(by, y, sizeof y);
    for (int i = 0; i < N; i++)
        check_near("pi_leibniz", i, y[i], pi_reference(1000), 1e-12, 1e-12);
    /* and the C build of the same body agrees */
    check_near("pi_leibniz C", 0, tdm_k_pi_leibniz(1000), y[0], 1e-15, 1e-15);

    clReleaseKernel(k);
    clReleaseMemObject(bt);
    clReleaseMemObject(by);
}
/* The tiled matrix products launched with fewer work-groups than their output has tiles
 * (37x29 has 3x2 tiles of 16; 53x29 4x2): the entries walk their tiles by group index, so
 * a single group, or one per dimension short, still covers everything. Offsets too: linear and
 * grad_x on rows 5.. of their buffers (begin > 0, as a resident batch), grad_w on dW's rows
 * 11.. (row0). Tolerance: as in tests/test_train.c, the float dot-product error bound
 * (n + 2) 2^-24 sum |a_k b_k|. */
static void mm_ref_check(const char *what, const float *got, int rows, int cols, int n,
                         const float *a, int a_r, int a_j, const float *b, int b_j, int b_c,
                         const float *bias, int relu)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double ref = bias ? bias[c] : 0.0, S = bias ? fabs(bias[c]) : 0.0;
            for (int j = 0; j < n; j++) {
                double t = (double)a[r * a_r + j * a_j] * b[j * b_j + c * b_c];
                ref += t;
                S += fabs(t);
            }
            if (relu && ref < 0)
                ref = 0.0;
            check_near(what, (long)r * cols + c, got[r * cols + c], ref, 0.0,
                       (n + 2) * S / 16777216.0 + 1e-30);
        }
}

static void test_matmul_tiles_by_group(void **state)
{
    (void)state;
    build();
    enum { M = 37, K = 53, N = 29, R0 = 5 };
    static float x[M * K], W[K * N], b[N], dy[M * N], y[M * N], dx[M * K], dW[K * N];
    static float nan_y[M * N], nan_dx[M * K], nan_dW[K * N];
    for (int i = 0; i < M * K; i++)
        x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    for (int i = 0; i < K * N; i++)
        W[i] = (float)((i * 104729) % 2001 - 1000) * 1e-3f;
    for (int i = 0; i < N; i++)
        b[i] = 0.25f - 0.01f * (float)i;
    for (int i = 0; i < M * N; i++)
        dy[i] = (float)((i * 7907) % 2001 - 1000) * 1e-3f;
    for (int i = 0; i < M * N; i++)
        nan_y[i] = NAN;
    for (int i = 0; i < M * K; i++)
        nan_dx[i] = NAN;
    for (int i = 0; i < K * N; i++)
        nan_dW[i] = NAN;
    cl_mem bx = buf_in(x, sizeof x), bW = buf_in(W, sizeof W), bb = buf_in(b, sizeof b),
           bdy = buf_in(dy, sizeof dy);

    /* linear + relu on rows [R0, M), one group for 2x2 tiles */
    cl_mem by = buf_out(nan_y, sizeof nan_y);
    cl_kernel k = kernel("tdm_linear_f32");
    cl_int relu = 1;
    arg_mem(k, 0, bx);
    arg_mem(k, 1, bW);
    arg_mem(k, 2, bb);
    arg_mem(k, 3, by);
    arg_idx(k, 4, K);
    arg_idx(k, 5, N);
    arg(k, 6, sizeof relu, &relu);
    arg_idx(k, 7, (cl_long)R0 * N);
    arg_idx(k, 8, (cl_long)M * N);
    launch2(k, TDM_K_TILE, TDM_K_TILE);
    read_back(by, y, sizeof y);
    for (int i = 0; i < R0 * N; i++)
        assert_true(isnan(y[i])); /* rows before begin untouched */
    mm_ref_check("linear", y + R0 * N, M - R0, N, K, x + R0 * K, K, 1, W, N, 1, b, 1);
    clReleaseKernel(k);

    /* grad_x (no mask) on rows [R0, M): one group along x for 4 tiles, 2 along y for 2 */
    cl_mem bdx = buf_out(nan_dx, sizeof nan_dx);
    k = kernel("tdm_linear_grad_x_f32");
    arg_mem(k, 0, bdy);
    arg_mem(k, 1, bW);
    arg(k, 2, sizeof(cl_mem), NULL);
    arg_mem(k, 3, bdx);
    arg_idx(k, 4, K);
    arg_idx(k, 5, N);
    arg_idx(k, 6, (cl_long)R0 * K);
    arg_idx(k, 7, (cl_long)M * K);
    launch2(k, TDM_K_TILE, 2 * TDM_K_TILE);
    read_back(bdx, dx, sizeof dx);
    for (int i = 0; i < R0 * K; i++)
        assert_true(isnan(dx[i]));
    mm_ref_check("linear_grad_x", dx + R0 * K, M - R0, K, N, dy + R0 * N, N, 1, W, 1, N, NULL, 0);
    clReleaseKernel(k);

    /* grad_w for dW rows [11, K), written from the buffer's start (a batch's buffer) */
    enum { ROW0 = 11 };
    cl_mem bdW = buf_out(nan_dW, sizeof nan_dW);
    k = kernel("tdm_linear_grad_w_f32");
    arg_mem(k, 0, bx);
    arg_mem(k, 1, bdy);
    arg_mem(k, 2, bdW);
    arg_idx(k, 3, M);
    arg_idx(k, 4, K);
    arg_idx(k, 5, N);
    arg_idx(k, 6, ROW0);
    arg_idx(k, 7, 0);
    arg_idx(k, 8, (cl_long)(K - ROW0) * N);
    launch2(k, TDM_K_TILE, TDM_K_TILE);
    read_back(bdW, dW, sizeof dW);
    mm_ref_check("linear_grad_w", dW, K - ROW0, N, M, x + ROW0, 1, K, dy, N, 1, NULL, 0);
    for (int i = (K - ROW0) * N; i < K * N; i++)
        assert_true(isnan(dW[i])); /* past end untouched */
    clReleaseKernel(k);

    cl_mem all[] = {bx, bW, bb, bdy, by, bdx, bdW};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clReleaseMemObject(all[i]);
}
#endif /* TDM_HAVE_OPENCL */

int main(int argc, char **argv)
{
#if !TDM_HAVE_OPENCL
    (void)argc;
    (void)argv;
    printf("kernels_opencl: skipped: this build has no OpenCL (TDM_HAVE_OPENCL=0)\n");
    return 77;
#else
    char why[160];
    if (!find_device(why, sizeof why)) {
        printf("kernels_opencl: skipped: %s\n", why);
        return 77;
    }
    /* One test per line: tests/CMakeLists.txt registers one CTest per matching line. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_builds),
        cmocka_unit_test(test_exp_sinh_f64),
        cmocka_unit_test(test_exp_sinh_f32),
        cmocka_unit_test(test_axpy_f64_in_place),
        cmocka_unit_test(test_scale_shift_f32),
        cmocka_unit_test(test_reductions_f64),
        cmocka_unit_test(test_reductions_f32),
        cmocka_unit_test(test_normalize_u8),
        cmocka_unit_test(test_pi_leibniz),
        cmocka_unit_test(test_matmul_tiles_by_group),
    };
    /* clang-format on */
    int rc = TDM_TEST_MAIN("kernels_opencl", tests);
    release_all();
    return rc;
#endif
}
