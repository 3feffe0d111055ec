/* SPDX-License-Identifier: MIT */
/* Training kernels (kernels/train_kernels.h): dense layer forward/backward, softmax
 * cross-entropy, SGD with momentum, Adam — against plain C references on the CPU and on the
 * OpenCL device (PoCL in CI; skipped without one), gradients against finite differences, and
 * inputs given whole (weights): any row count, uploaded once, refused as views on devices. The
 * matrix products (tiled on devices) also at shapes that are not multiples of the tile, and at
 * 256x512 @ 512x384, against a double-precision reference with a stated error bound. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tdm_test.h"

static tdm_tensor *randn(tdm_runtime *rt, int nd, int64_t d0, int64_t d1, unsigned seed)
{
    tdm_tensor *t;
    int64_t shape[2] = {d0, d1};
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, nd, shape, TDM_MEM_HOST, &t), 0);
    float *p = tdm_tensor_data(t);
    srand(seed);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        p[i] = (float)(rand() % 2001 - 1000) * 1e-3f;
    return t;
}

static tdm_tensor *empty(tdm_runtime *rt, tdm_dtype dt, int nd, int64_t d0, int64_t d1)
{
    tdm_tensor *t;
    int64_t shape[2] = {d0, d1};
    assert_int_equal(tdm_tensor_zeros(rt, dt, nd, shape, TDM_MEM_HOST, &t), 0);
    return t;
}

static tdm_map_opts opts(tdm_policy p)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = p;
    o.batch_size = 7; /* several batches, the last one short */
    return o;
}

static void close_to(const tdm_tensor *a, const float *ref, double tol)
{
    const float *x = tdm_tensor_data((tdm_tensor *)a);
    for (int64_t i = 0; i < tdm_tensor_numel(a); i++)
        if (!(fabs(x[i] - ref[i]) <= tol * (1 + fabs(ref[i]))))
            fail_msg("element %lld: %.7g, expected %.7g", (long long)i, x[i], ref[i]);
}

enum { M = 37, K = 13, N = 11 };

/* Runs every kernel under `pol` and checks it against the references. */
static void check_all(tdm_runtime *rt, tdm_policy pol)
{
    tdm_map_opts o = opts(pol);
    tdm_tensor *x = randn(rt, 2, M, K, 1), *W = randn(rt, 2, K, N, 2), *b = randn(rt, 1, N, 0, 3);
    tdm_tensor *y = empty(rt, TDM_F32, 2, M, N);
    const float *xp = tdm_tensor_data(x), *Wp = tdm_tensor_data(W), *bp = tdm_tensor_data(b);
    static float ref[M * N > K * N ? M * N : K * N];
    /* linear + relu */
    tdm_linear_params lp = {1, 0};
    tdm_tensor *in3[3] = {x, W, b};
    assert_int_equal(tdm_map(rt, "linear", in3, 3, &y, 1, &lp, sizeof lp, &o, NULL), 0);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double a = bp[n];
            for (int k = 0; k < K; k++)
                a += (double)xp[m * K + k] * Wp[k * N + n];
            ref[m * N + n] = a < 0 ? 0.0f : (float)a;
        }
    close_to(y, ref, 1e-5);
    /* linear_grad_x with the ReLU mask of x itself */
    tdm_tensor *dy = randn(rt, 2, M, N, 4), *dx = empty(rt, TDM_F32, 2, M, K);
    const float *dyp = tdm_tensor_data(dy);
    tdm_tensor *gin[3] = {dy, W, x};
    assert_int_equal(tdm_map(rt, "linear_grad_x", gin, 3, &dx, 1, NULL, 0, &o, NULL), 0);
    static float refx[M * K];
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            double a = 0;
            for (int n = 0; n < N; n++)
                a += (double)dyp[m * N + n] * Wp[k * N + n];
            refx[m * K + k] = xp[m * K + k] <= 0 ? 0.0f : (float)a;
        }
    close_to(dx, refx, 1e-5);
    /* linear_grad_w: rows of dW (K of them) from inputs given whole (M rows) */
    tdm_tensor *dW = empty(rt, TDM_F32, 2, K, N);
    tdm_tensor *win[2] = {x, dy};
    assert_int_equal(tdm_map(rt, "linear_grad_w", win, 2, &dW, 1, NULL, 0, &o, NULL), 0);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) {
            double a = 0;
            for (int m = 0; m < M; m++)
                a += (double)xp[m * K + k] * dyp[m * N + n];
            ref[k * N + n] = (float)a;
        }
    close_to(dW, ref, 1e-5);
    /* colsum */
    tdm_tensor *db = empty(rt, TDM_F32, 1, N, 0);
    assert_int_equal(tdm_map(rt, "colsum", &dy, 1, &db, 1, NULL, 0, &o, NULL), 0);
    for (int n = 0; n < N; n++) {
        double a = 0;
        for (int m = 0; m < M; m++)
            a += dyp[m * N + n];
        ref[n] = (float)a;
    }
    close_to(db, ref, 1e-5);
    /* softmax_xent */
    tdm_tensor *lab = empty(rt, TDM_I32, 1, M, 0), *dz = empty(rt, TDM_F32, 2, M, N),
               *loss = empty(rt, TDM_F32, 1, M, 0), *pred = empty(rt, TDM_I32, 1, M, 0);
    int32_t *lp32 = tdm_tensor_data(lab);
    for (int m = 0; m < M; m++)
        lp32[m] = m % N;
    tdm_softmax_xent_params xp2 = {1.0f / M, 0};
    tdm_tensor *xin[2] = {dy, lab}, *xout[3] = {dz, loss, pred};
    assert_int_equal(tdm_map(rt, "softmax_xent", xin, 2, xout, 3, &xp2, sizeof xp2, &o, NULL), 0);
    static float refl[M];
    const int32_t *pp = tdm_tensor_data(pred);
    for (int m = 0; m < M; m++) {
        double mx = dyp[m * N], s = 0;
        int arg = 0;
        for (int n = 1; n < N; n++)
            if (dyp[m * N + n] > mx) {
                mx = dyp[m * N + n];
                arg = n;
            }
        for (int n = 0; n < N; n++)
            s += exp(dyp[m * N + n] - mx);
        for (int n = 0; n < N; n++)
            ref[m * N + n] = (float)((exp(dyp[m * N + n] - mx) / s - (n == m % N)) / M);
        refl[m] = (float)(log(s) + mx - dyp[m * N + m % N]);
        assert_int_equal(pp[m], arg);
    }
    close_to(dz, ref, 1e-5);
    close_to(loss, refl, 1e-5);
    /* sgd_momentum, in place */
    tdm_tensor *g = randn(rt, 1, 100, 0, 5), *w = randn(rt, 1, 100, 0, 6), *v = randn(rt, 1, 100, 0, 7);
    static float w0[100], v0[100], m0[100];
    memcpy(w0, tdm_tensor_data(w), sizeof w0);
    memcpy(v0, tdm_tensor_data(v), sizeof v0);
    const float *gp = tdm_tensor_data(g);
    tdm_sgd_params sp = {0.1f, 0.9f, 0.01f, 0};
    tdm_tensor *sin_[3] = {g, w, v}, *sout[2] = {w, v};
    assert_int_equal(tdm_map(rt, "sgd_momentum", sin_, 3, sout, 2, &sp, sizeof sp, &o, NULL), 0);
    static float refv[100];
    for (int i = 0; i < 100; i++) {
        refv[i] = 0.9f * v0[i] + gp[i] + 0.01f * w0[i];
        ref[i] = w0[i] - 0.1f * refv[i];
    }
    close_to(w, ref, 1e-6);
    close_to(v, refv, 1e-6);
    /* adam, in place, step 3 */
    tdm_tensor *m_ = randn(rt, 1, 100, 0, 8), *v2 = empty(rt, TDM_F32, 1, 100, 0);
    memcpy(w0, tdm_tensor_data(w), sizeof w0);
    memcpy(m0, tdm_tensor_data(m_), sizeof m0);
    for (int i = 0; i < 100; i++)
        ((float *)tdm_tensor_data(v2))[i] = 0.01f * (float)i;
    tdm_adam_params ap = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 3};
    tdm_tensor *ain[4] = {g, w, m_, v2}, *aout[3] = {w, m_, v2};
    assert_int_equal(tdm_map(rt, "adam", ain, 4, aout, 3, &ap, sizeof ap, &o, NULL), 0);
    for (int i = 0; i < 100; i++) {
        double mm = 0.9 * m0[i] + 0.1 * gp[i];
        double vv = 0.999 * (0.01 * i) + 0.001 * gp[i] * gp[i];
        double mh = mm / (1 - pow(0.9, 3)), vh = vv / (1 - pow(0.999, 3));
        ref[i] = (float)(w0[i] - 1e-2 * mh / (sqrt(vh) + 1e-8));
    }
    close_to(w, ref, 1e-5);
    tdm_tensor *all[] = {x, W, b, y, dy, dx, dW, db, lab, dz, loss, pred, g, w, v, m_, v2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
}

static void test_kernels_on_cpu(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    check_all(rt, TDM_POLICY_THREADS);
    tdm_test_close(rt);
}

static void test_kernels_on_opencl(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *a = randn(rt, 2, 4, 3, 1), *W = randn(rt, 2, 3, 2, 2), *y = empty(rt, TDM_F32, 2, 4, 2);
    tdm_map_opts o = opts(TDM_POLICY_OPENCL);
    tdm_linear_params lp = {0, 0};
    tdm_tensor *in[2] = {a, W};
    int rc = tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &o, NULL);
    tdm_tensor_release(a);
    tdm_tensor_release(W);
    tdm_tensor_release(y);
    if (rc == TDM_ENODEV) {
        tdm_test_close(rt);
        skip();
    }
    assert_int_equal(rc, 0);
    check_all(rt, TDM_POLICY_OPENCL);
    tdm_test_close(rt);
}

/* ---- the matrix products at sizes that are not multiples of the device tile (16) ----------
 * Each of linear (with bias, with and without ReLU), linear_grad_x (with and without the ReLU
 * mask) and linear_grad_w against a plain C reference accumulated in double.
 *
 * Tolerance: a float dot product of n terms summed in any order (recursively, in partial sums
 * or with fused multiply-adds) is within gamma * S of the exact value, S = sum |a_k b_k| (plus
 * |bias|), gamma = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability of Numerical
 * Algorithms, 3.1); the inputs are floats, so their products are exact in the double reference,
 * whose own error (n 2^-53 S) is negligible. So each element must be within (n + 2) u S of the
 * reference (n + 1 roundings with the bias, one more for slack), plus 1e-30. ReLU and the mask
 * cannot widen the gap (ReLU is 1-Lipschitz; the mask reads inputs). A tiled kernel that read
 * a wrong or missing element is off by about |a_k b_k|, far beyond that. */

typedef struct {
    int64_t M, K, N;
} mm_shape;

static void mm_fill(tdm_tensor *t, unsigned seed)
{
    float *p = tdm_tensor_data(t);
    uint32_t s = seed * 2654435761u + 1u;
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)((int)(s >> 9) % 2001 - 1000) * 1e-3f;
    }
}

static tdm_tensor *mm_new(tdm_runtime *rt, int nd, int64_t d0, int64_t d1, unsigned seed)
{
    tdm_tensor *t = empty(rt, TDM_F32, nd, d0, d1);
    if (seed)
        mm_fill(t, seed);
    return t;
}

/* got[r * cols + c] against sum_j a[r, j] * b[j, c] (+ bias[c]) with a and b given by strides,
 * then ReLU (relu) or the mask h <= 0 -> 0 (h, same layout as got). */
static void mm_check(const char *what, const mm_shape *sh, const tdm_tensor *got_t, int64_t rows,
                     int64_t cols, int64_t n, const float *a, int64_t a_r, int64_t a_j,
                     const float *b, int64_t b_j, int64_t b_c, const float *bias, int relu,
                     const float *h)
{
    const float *got = tdm_tensor_data((tdm_tensor *)got_t);
    const double u = 1.0 / 16777216.0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double ref = bias ? bias[c] : 0.0, S = bias ? fabs(bias[c]) : 0.0;
            for (int64_t j = 0; j < n; j++) {
                double t = (double)a[r * a_r + j * a_j] * b[j * b_j + c * b_c];
                ref += t;
                S += fabs(t);
            }
            if ((relu && ref < 0) || (h && h[r * cols + c] <= 0.0f))
                ref = 0.0;
            double tol = (double)(n + 2) * u * S + 1e-30, g = got[r * cols + c];
            if (!(fabs(g - ref) <= tol))
                fail_msg("%s %lldx%lld @ %lldx%lld: [%lld, %lld] = %.9g, reference %.9g "
                         "(tolerance %.3g)",
                         what, (long long)sh->M, (long long)sh->K, (long long)sh->K,
                         (long long)sh->N, (long long)r, (long long)c, g, ref, tol);
        }
}

/* The run went to one device backend, wholly (no batch fell back to the CPU). */
static void mm_ran_on(const tdm_report *rep, tdm_policy pol, int64_t rows)
{
    if (pol != TDM_POLICY_OPENCL)
        return;
    assert_int_equal(rep->status, 0);
    assert_int_equal(rep->fallback_batches, 0);
    int64_t on = 0;
    for (int i = 0; i < rep->n_workers; i++)
        if (rep->workers[i].kind == TDM_BACKEND_OPENCL)
            on += rep->workers[i].items;
    assert_int_equal(on, rows);
}

static void check_matmuls(tdm_runtime *rt, tdm_policy pol, const mm_shape *sh, int64_t batch)
{
    const int64_t Mr = sh->M, Kr = sh->K, Nr = sh->N;
    tdm_map_opts o = opts(pol);
    o.batch_size = batch;
    tdm_tensor *x = mm_new(rt, 2, Mr, Kr, 1), *W = mm_new(rt, 2, Kr, Nr, 2),
               *b = mm_new(rt, 1, Nr, 0, 3);
    tdm_tensor *dy = mm_new(rt, 2, Mr, Nr, 4), *y = mm_new(rt, 2, Mr, Nr, 0);
    tdm_tensor *dx = mm_new(rt, 2, Mr, Kr, 0), *dW = mm_new(rt, 2, Kr, Nr, 0);
    const float *xp = tdm_tensor_data(x), *Wp = tdm_tensor_data(W), *bp = tdm_tensor_data(b),
                *dyp = tdm_tensor_data(dy);
    tdm_report rep = TDM_REPORT_INIT;
    /* y = x W + b, then again with ReLU: on a device the second run finds W, b (and x) there */
    tdm_tensor *lin[3] = {x, W, b};
    for (int relu = 0; relu < 2; relu++) {
        tdm_linear_params lp = {relu, 0};
        assert_int_equal(tdm_map(rt, "linear", lin, 3, &y, 1, &lp, sizeof lp, &o, &rep), 0);
        mm_ran_on(&rep, pol, Mr);
        mm_check(relu ? "linear+relu" : "linear", sh, y, Mr, Nr, Kr, xp, Kr, 1, Wp, Nr, 1, bp, relu,
                 NULL);
    }
    /* dx = dy W^T, plain and masked by x itself (about half its entries are <= 0) */
    tdm_tensor *gx[3] = {dy, W, x};
    for (int mask = 0; mask < 2; mask++) {
        assert_int_equal(tdm_map(rt, "linear_grad_x", gx, 2 + mask, &dx, 1, NULL, 0, &o, &rep), 0);
        mm_ran_on(&rep, pol, Mr);
        mm_check(mask ? "linear_grad_x+mask" : "linear_grad_x", sh, dx, Mr, Kr, Nr, dyp, Nr, 1, Wp,
                 1, Nr, NULL, 0, mask ? xp : NULL);
    }
    /* dW = x^T dy: the map's rows are dW's (K of them) */
    tdm_tensor *gw[2] = {x, dy};
    assert_int_equal(tdm_map(rt, "linear_grad_w", gw, 2, &dW, 1, NULL, 0, &o, &rep), 0);
    mm_ran_on(&rep, pol, Kr);
    mm_check("linear_grad_w", sh, dW, Kr, Nr, Mr, xp, 1, Kr, dyp, Nr, 1, NULL, 0, NULL);
    tdm_tensor *all[] = {x, W, b, dy, y, dx, dW};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
}

static const mm_shape mm_shapes[] = {
    {37, 53, 29}, {1, 1, 1}, {64, 128, 10}, {128, 10, 64}, {17, 16, 33}, {16, 16, 16},
};

static void run_matmul_shapes(tdm_policy pol)
{
    tdm_runtime *rt = tdm_test_open(2);
    if (pol == TDM_POLICY_OPENCL) {
        tdm_tensor *a = mm_new(rt, 2, 2, 2, 1), *c = mm_new(rt, 2, 2, 2, 0);
        tdm_tensor *in[2] = {a, a};
        tdm_map_opts o = opts(pol);
        tdm_linear_params lp = {0, 0};
        int rc = tdm_map(rt, "linear", in, 2, &c, 1, &lp, sizeof lp, &o, NULL);
        tdm_tensor_release(a);
        tdm_tensor_release(c);
        if (rc == TDM_ENODEV) {
            tdm_test_close(rt);
            skip();
        }
        assert_int_equal(rc, 0);
    }
    for (size_t i = 0; i < sizeof mm_shapes / sizeof mm_shapes[0]; i++) {
        check_matmuls(rt, pol, &mm_shapes[i], 7); /* several batches, the last one short */
        check_matmuls(rt, pol, &mm_shapes[i], 0); /* automatic batches */
    }
    const mm_shape big = {256, 512, 384};
    check_matmuls(rt, pol, &big, 0);
    tdm_test_close(rt);
}

static void test_matmul_shapes_on_cpu(void **state)
{
    run_matmul_shapes(TDM_POLICY_THREADS);
}

static void test_matmul_shapes_on_opencl(void **state)
{
    run_matmul_shapes(TDM_POLICY_OPENCL);
}

/* A user kernel whose device launch asks for a malformed 2-D shape is refused before it runs. */
static int bad_2d_dev(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_linear_f32");
    l->items_per_row = 1;
    l->dims = 2;
    l->local[0] = *(const int32_t *)params;
    l->local[1] = 64;
    return 0;
}

static int copy_cpu(const tdm_kernel_args *a)
{
    memcpy(a->out[0], a->in[0], (size_t)(a->end - a->begin) * sizeof(float));
    return 0;
}

static void test_malformed_2d_launch_is_refused(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    tdm_kernel_def d = TDM_KERNEL_DEF_INIT;
    d.name = "bad_2d";
    d.n_in_min = d.n_in_max = 1;
    d.n_out = 1;
    d.params_size = sizeof(int32_t);
    d.cpu = copy_cpu;
    d.source = "/* nothing of its own */";
    d.dev = bad_2d_dev;
    assert_int_equal(tdm_kernel_register(rt, &d), 0);
    tdm_tensor *x = mm_new(rt, 1, 8, 0, 1), *y = mm_new(rt, 1, 8, 0, 0);
    tdm_map_opts o = opts(TDM_POLICY_OPENCL);
    int32_t lx = 32; /* 32 x 64 = 2048 work items per group: more than any backend runs */
    int rc = tdm_map(rt, "bad_2d", &x, 1, &y, 1, &lx, sizeof lx, &o, NULL);
    if (rc != TDM_ENODEV) {
        assert_int_equal(rc, TDM_EINVAL);
        assert_non_null(strstr(tdm_errmsg(rt), "malformed"));
        lx = 0;
        assert_int_equal(tdm_map(rt, "bad_2d", &x, 1, &y, 1, &lx, sizeof lx, &o, NULL), TDM_EINVAL);
    }
    /* the CPU does not look at the launch */
    tdm_map_opts c = opts(TDM_POLICY_THREADS);
    assert_int_equal(tdm_map(rt, "bad_2d", &x, 1, &y, 1, &lx, sizeof lx, &c, NULL), 0);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* d loss / d W by finite differences against linear_grad_w of softmax_xent's gradient. */
static void test_gradient_matches_finite_differences(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = opts(TDM_POLICY_THREADS);
    enum { B = 5, I = 4, C = 3 };
    tdm_tensor *x = randn(rt, 2, B, I, 11), *W = randn(rt, 2, I, C, 12);
    tdm_tensor *z = empty(rt, TDM_F32, 2, B, C), *lab = empty(rt, TDM_I32, 1, B, 0);
    tdm_tensor *dz = empty(rt, TDM_F32, 2, B, C), *loss = empty(rt, TDM_F32, 1, B, 0),
               *pred = empty(rt, TDM_I32, 1, B, 0), *dW = empty(rt, TDM_F32, 2, I, C);
    for (int i = 0; i < B; i++)
        ((int32_t *)tdm_tensor_data(lab))[i] = i % C;
    tdm_linear_params lp = {0, 0};
    tdm_softmax_xent_params xp = {1.0f / B, 0};
    tdm_tensor *fin[2] = {x, W}, *xin[2] = {z, lab}, *xout[3] = {dz, loss, pred}, *gin[2] = {x, dz};
#define LOSS(out)                                                                                  \
    do {                                                                                           \
        assert_int_equal(tdm_map(rt, "linear", fin, 2, &z, 1, &lp, sizeof lp, &o, NULL), 0);       \
        assert_int_equal(tdm_map(rt, "softmax_xent", xin, 2, xout, 3, &xp, sizeof xp, &o, NULL),   \
                         0);                                                                       \
        double s_ = 0;                                                                             \
        for (int i_ = 0; i_ < B; i_++)                                                             \
            s_ += ((float *)tdm_tensor_data(loss))[i_];                                            \
        (out) = s_ / B;                                                                            \
    } while (0)
    double l0;
    LOSS(l0);
    assert_int_equal(tdm_map(rt, "linear_grad_w", gin, 2, &dW, 1, NULL, 0, &o, NULL), 0);
    float *Wp = tdm_tensor_data(W);
    const float *g = tdm_tensor_data(dW);
    for (int i = 0; i < I * C; i++) {
        float keep = Wp[i];
        double lp_, lm;
        Wp[i] = keep + 1e-2f;
        LOSS(lp_);
        Wp[i] = keep - 1e-2f;
        LOSS(lm);
        Wp[i] = keep;
        double num = (lp_ - lm) / 2e-2;
        if (!(fabs(num - g[i]) < 2e-3))
            fail_msg("dW[%d]: analytic %.6f, numeric %.6f", i, g[i], num);
    }
    (void)l0;
    tdm_tensor *all[] = {x, W, z, lab, dz, loss, pred, dW};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    tdm_test_close(rt);
}

/* Inputs given whole: any row count; contiguity required; views are not sent to devices; on a
 * device the whole input is uploaded once and reused while current. */
static void test_whole_inputs(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = randn(rt, 2, 64, 8, 1), *W = randn(rt, 2, 8, 4, 2), *y = empty(rt, TDM_F32, 2, 64, 4);
    tdm_linear_params lp = {0, 0};
    tdm_map_opts o = opts(TDM_POLICY_THREADS);
    /* W as a view of a bigger tensor: fine on the CPU, not on a device */
    tdm_tensor *big = randn(rt, 2, 16, 4, 3), *Wv;
    assert_int_equal(tdm_tensor_view_rows(big, 8, 16, &Wv), 0);
    tdm_tensor *in[2] = {x, Wv};
    assert_int_equal(tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &o, NULL), 0);
    tdm_map_opts g = opts(TDM_POLICY_GPU);
    int rc = tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &g, NULL);
    assert_true(rc == TDM_ENODEV);
    if (strstr(tdm_errmsg(rt), "no OpenCL or CUDA device") == NULL)
        assert_non_null(strstr(tdm_errmsg(rt), "given whole is a view"));
    /* a wrong-shaped whole input is refused by the kernel's checks */
    tdm_tensor *bad = randn(rt, 2, 9, 4, 4);
    in[1] = bad;
    assert_int_equal(tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &o, NULL), TDM_ESHAPE);
    /* on a device: x goes up by batches and W whole, once. W is then current on the device,
     * so the next map runs resident (x whole, once); the one after moves nothing but what the
     * host changed: W, written through tdm_tensor_data() */
    in[1] = W;
    tdm_report r1 = TDM_REPORT_INIT, r2 = TDM_REPORT_INIT, r3 = TDM_REPORT_INIT;
    rc = tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &g, &r1);
    if (rc == 0) {
        assert_int_equal(r1.bytes_to_device, 64 * 8 * 4 + 8 * 4 * 4);
        assert_int_equal(tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &g, &r2), 0);
        assert_int_equal(r2.bytes_to_device, 64 * 8 * 4);
        ((float *)tdm_tensor_data(W))[0] += 1.0f;
        assert_int_equal(tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &g, &r3), 0);
        assert_int_equal(r3.bytes_to_device, 8 * 4 * 4);
        /* and the result is the new W's */
        const float *xp = tdm_tensor_data(x), *Wp = tdm_tensor_data(W), *yp = tdm_tensor_data(y);
        double a = 0;
        for (int k = 0; k < 8; k++)
            a += (double)xp[k] * Wp[k * 4];
        assert_true(fabs(yp[0] - a) < 1e-5);
    } else {
        assert_int_equal(rc, TDM_ENODEV);
    }
    /* a kernel registered with whole inputs beyond its count is refused */
    tdm_kernel_def d = TDM_KERNEL_DEF_INIT;
    d.name = "bad_whole";
    d.n_in_min = d.n_in_max = 1;
    d.n_out = 1;
    d.cpu = (tdm_kernel_cpu_fn)1;
    d.whole_inputs = 0x2u;
    assert_int_equal(tdm_kernel_register(rt, &d), TDM_EINVAL);
    tdm_tensor *all[] = {x, W, y, big, Wv, bad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    tdm_test_close(rt);
}

static void test_bad_arguments(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    tdm_map_opts o = opts(TDM_POLICY_THREADS);
    tdm_tensor *x = randn(rt, 2, 4, 3, 1), *W = randn(rt, 2, 3, 2, 2), *y = empty(rt, TDM_F32, 2, 4, 2);
    tdm_tensor *xi = empty(rt, TDM_I32, 2, 4, 3);
    tdm_linear_params lp = {0, 0};
    tdm_tensor *in[2] = {xi, W};
    assert_int_equal(tdm_map(rt, "linear", in, 2, &y, 1, &lp, sizeof lp, &o, NULL), TDM_EDTYPE);
    in[0] = x;
    tdm_tensor *y3 = empty(rt, TDM_F32, 2, 4, 3);
    assert_int_equal(tdm_map(rt, "linear", in, 2, &y3, 1, &lp, sizeof lp, &o, NULL), TDM_ESHAPE);
    tdm_adam_params ap = {1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0}; /* step 0 */
    tdm_tensor *g = randn(rt, 1, 10, 0, 1), *w = randn(rt, 1, 10, 0, 2), *m = randn(rt, 1, 10, 0, 3),
               *v = randn(rt, 1, 10, 0, 4);
    tdm_tensor *ain[4] = {g, w, m, v}, *aout[3] = {w, m, v};
    assert_int_equal(tdm_map(rt, "adam", ain, 4, aout, 3, &ap, sizeof ap, &o, NULL), TDM_EINVAL);
    tdm_tensor *short_ = randn(rt, 1, 9, 0, 5);
    ain[2] = short_;
    ap.step = 1;
    assert_int_equal(tdm_map(rt, "adam", ain, 4, aout, 3, &ap, sizeof ap, &o, NULL), TDM_ESHAPE);
    tdm_tensor *lab = empty(rt, TDM_F32, 1, 4, 0), *dz = empty(rt, TDM_F32, 2, 4, 2),
               *loss = empty(rt, TDM_F32, 1, 4, 0), *pred = empty(rt, TDM_I32, 1, 4, 0);
    tdm_softmax_xent_params xp = {1, 0};
    tdm_tensor *xin[2] = {y, lab}, *xout[3] = {dz, loss, pred};
    assert_int_equal(tdm_map(rt, "softmax_xent", xin, 2, xout, 3, &xp, sizeof xp, &o, NULL),
                     TDM_EDTYPE);
    tdm_tensor *all[] = {x, W, y, xi, y3, g, w, m, v, short_, lab, dz, loss, pred};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    tdm_test_close(rt);
}

/* Kernels whose inputs are all given whole (colsum, linear_grad_w) take their rows from the
 * outputs: a map with more (or fewer) rows than the kernel makes from its inputs is refused
 * with TDM_ESHAPE before any batch runs (colsum of x[64, 1000] into y[1005] read past x, under
 * ASan, before), as tdm_map, tdm_map_async and tdm_map_async_rows; the right rows still run. */
static void test_whole_input_kernels_refuse_other_rows(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = opts(TDM_POLICY_THREADS);
    tdm_tensor *x = randn(rt, 2, 64, 1000, 1), *dy = randn(rt, 2, 64, 8, 2);
    tdm_tensor *y_more = empty(rt, TDM_F32, 1, 1005, 0), *y_less = empty(rt, TDM_F32, 1, 999, 0),
               *y = empty(rt, TDM_F32, 1, 1000, 0);
    assert_int_equal(tdm_map(rt, "colsum", &x, 1, &y_more, 1, NULL, 0, &o, NULL), TDM_ESHAPE);
    assert_non_null(strstr(tdm_errmsg(rt), "1005 rows"));
    assert_int_equal(tdm_map(rt, "colsum", &x, 1, &y_less, 1, NULL, 0, &o, NULL), TDM_ESHAPE);
    tdm_job *job = NULL;
    assert_int_equal(tdm_map_async(rt, "colsum", &x, 1, &y_more, 1, NULL, 0, &o, &job), TDM_ESHAPE);
    assert_null(job);
    assert_int_equal(tdm_map_async_rows(rt, "colsum", 1005, &x, 1, NULL, 1, NULL, 0, &o, &job),
                     TDM_ESHAPE);
    assert_null(job);
    assert_int_equal(tdm_map(rt, "colsum", &x, 1, &y, 1, NULL, 0, &o, NULL), 0);
    const float *xp = tdm_tensor_data(x), *yp = tdm_tensor_data(y);
    for (int n = 0; n < 1000; n += 37) {
        double a = 0;
        for (int m = 0; m < 64; m++)
            a += xp[m * 1000 + n];
        assert_true(fabs(yp[n] - a) <= 1e-4 * (1 + fabs(a)));
    }
    tdm_tensor *win[2] = {x, dy};
    tdm_tensor *dW_more = empty(rt, TDM_F32, 2, 1001, 8), *dW = empty(rt, TDM_F32, 2, 1000, 8);
    assert_int_equal(tdm_map(rt, "linear_grad_w", win, 2, &dW_more, 1, NULL, 0, &o, NULL),
                     TDM_ESHAPE);
    assert_int_equal(tdm_map(rt, "linear_grad_w", win, 2, &dW, 1, NULL, 0, &o, NULL), 0);
    tdm_tensor *all[] = {x, dy, y_more, y_less, y, dW_more, dW};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    tdm_test_close(rt);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_on_cpu),
        cmocka_unit_test(test_kernels_on_opencl),
        cmocka_unit_test(test_gradient_matches_finite_differences),
        cmocka_unit_test(test_whole_inputs),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_whole_input_kernels_refuse_other_rows),
        cmocka_unit_test(test_matmul_shapes_on_cpu),
        cmocka_unit_test(test_matmul_shapes_on_opencl),
        cmocka_unit_test(test_malformed_2d_launch_is_refused),
    };
    return TDM_TEST_MAIN("train", tests);
}
