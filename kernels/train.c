/* SPDX-License-Identifier: MIT */
/* tandem — the training kernels on the CPU: argument checks (infer), batch loops, registration.
 * The arithmetic is train_kernels.h's, in the single-source dialect; the dense layer's CPU loop
 * runs a row of x against W row by row of W (contiguous, vectorised) instead of one dot
 * product per output element.
 *
 * The matrix products are cache-blocked. linear and linear_grad_w update CPU_RB output rows at
 * a time (each element of W, or of dy, loaded once serves CPU_RB outputs) over column blocks of
 * CPU_NB (the accumulators stay in L1); linear_grad_x keeps its dot products (two contiguous
 * rows, vectorised) and walks W in blocks of rows that stay in L2. Every output's sum runs in
 * the same order as the plain loops', so the results are the same bits as unblocked. axpy4's
 * pointers are restrict: a kernel's outputs never overlap its inputs (nor its own rows). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "train_kernels.h"
#include "core/core.h"

extern const char tdm__builtin_kernel_source[];
tdm_kernel_dev_fn tdm__train_dev_fn(const char *name);

/* t is f32 with `nd` dims; the dims given (>= 0) must match. */
static int want(const char *k, const char *role, const tdm_tensor *t, tdm_dtype dt, int nd,
                int64_t d0, int64_t d1, char *msg, size_t len)
{
    if (tdm_tensor_dtype(t) != dt)
        return tdm__msg(msg, len, TDM_EDTYPE, "%s: %s must be %s, not %s", k, role,
                    tdm_dtype_name(dt), tdm_dtype_name(tdm_tensor_dtype(t)));
    if (tdm_tensor_ndim(t) != nd || (d0 >= 0 && tdm_tensor_dim(t, 0) != d0) ||
        (nd > 1 && d1 >= 0 && tdm_tensor_dim(t, 1) != d1))
        return tdm__msg(msg, len, TDM_ESHAPE, "%s: %s has the wrong shape (%d dims, [%lld, %lld]; "
                    "expected %d dims, [%lld, %lld], -1 = any)",
                    k, role, tdm_tensor_ndim(t), (long long)tdm_tensor_dim(t, 0),
                    (long long)(tdm_tensor_ndim(t) > 1 ? tdm_tensor_dim(t, 1) : 0), nd,
                    (long long)d0, (long long)d1);
    return 0;
}

static void desc2(tdm_tensor_desc *d, tdm_dtype dt, int nd, int64_t a, int64_t b)
{
    memset(d, 0, sizeof *d);
    d->dtype = dt;
    d->ndim = nd;
    d->shape[0] = a;
    d->shape[1] = b;
}

/* ---- linear ------------------------------------------------------------------------------ */

static int infer_linear(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc;
    if ((rc = want("linear", "x", in[0], TDM_F32, 2, -1, -1, msg, len)) ||
        (rc = want("linear", "W", in[1], TDM_F32, 2, tdm_tensor_dim(in[0], 1), -1, msg, len)))
        return rc;
    int64_t N = tdm_tensor_dim(in[1], 1);
    if (n_in > 2 && (rc = want("linear", "b", in[2], TDM_F32, 1, N, -1, msg, len)))
        return rc;
    desc2(&out[0], TDM_F32, 2, tdm_tensor_dim(in[0], 0), N);
    return 0;
}

#define CPU_RB 4 /* axpy4 updates 4 rows */
#define CPU_NB 256
_Static_assert(CPU_RB == 4, "the blocked loops are unrolled for 4 rows");

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* y_i[n] += a_i * w[n], n < nn, for four rows y_i: one step of a blocked product. */
static void axpy4(int64_t nn, float a0, float a1, float a2, float a3, const float *restrict w,
                  float *restrict y0, float *restrict y1, float *restrict y2, float *restrict y3)
{
    for (int64_t n = 0; n < nn; n++) {
        y0[n] += a0 * w[n];
        y1[n] += a1 * w[n];
        y2[n] += a2 * w[n];
        y3[n] += a3 * w[n];
    }
}

/* y[i, 0 .. nn) += sum_k x[i, k] W[k, 0 .. nn), k in order, for the CPU_RB rows i */
static void linear_block(const float *x, const float *W, float *y, int64_t K, int64_t N, int64_t nn)
{
    for (int64_t k = 0; k < K; k++)
        axpy4(nn, x[k], x[K + k], x[2 * K + k], x[3 * K + k], W + k * N, y, y + N, y + 2 * N,
              y + 3 * N);
}

static int cpu_linear(const tdm_kernel_args *a)
{
    const tdm_linear_params *p = a->params;
    const int64_t K = a->in_row_elems[0], N = a->out_row_elems[0], rows = a->end - a->begin;
    const float *x = a->in[0], *W = a->in[1], *b = a->n_in > 2 ? a->in[2] : NULL;
    float *y = a->out[0];
    for (int64_t n0 = 0; n0 < N; n0 += CPU_NB) {
        const int64_t nn = min64(N - n0, CPU_NB);
        for (int64_t r0 = 0; r0 < rows; r0 += CPU_RB) {
            const int64_t rr = min64(rows - r0, CPU_RB);
            for (int64_t r = r0; r < r0 + rr; r++)
                for (int64_t n = 0; n < nn; n++)
                    y[r * N + n0 + n] = b ? b[n0 + n] : 0.0f;
            if (rr == CPU_RB) {
                linear_block(x + r0 * K, W + n0, y + r0 * N + n0, K, N, nn);
                continue;
            }
            for (int64_t r = r0; r < r0 + rr; r++) {
                float *restrict yr = y + r * N + n0;
                for (int64_t k = 0; k < K; k++) {
                    const float xk = x[r * K + k];
                    const float *restrict Wk = W + k * N + n0;
                    for (int64_t n = 0; n < nn; n++)
                        yr[n] += xk * Wk[n];
                }
            }
        }
    }
    if (p->relu)
        for (int64_t i = 0; i < rows * N; i++)
            y[i] = y[i] < 0.0f ? 0.0f : y[i];
    return 0;
}

/* ---- linear_grad_x ------------------------------------------------------------------------ */

static int infer_grad_x(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc;
    if ((rc = want("linear_grad_x", "dy", in[0], TDM_F32, 2, -1, -1, msg, len)) ||
        (rc = want("linear_grad_x", "W", in[1], TDM_F32, 2, -1, tdm_tensor_dim(in[0], 1), msg,
                   len)))
        return rc;
    int64_t M = tdm_tensor_dim(in[0], 0), K = tdm_tensor_dim(in[1], 0);
    if (n_in > 2 && (rc = want("linear_grad_x", "h", in[2], TDM_F32, 2, M, K, msg, len)))
        return rc;
    desc2(&out[0], TDM_F32, 2, M, K);
    return 0;
}

/* One dot product per element (four partial sums, vectorised): W is walked in blocks of rows
 * that stay in L2 while every row of the batch uses them. */
static int cpu_grad_x(const tdm_kernel_args *a)
{
    const int64_t N = a->in_row_elems[0], K = a->out_row_elems[0], rows = a->end - a->begin;
    const float *dy = a->in[0], *W = a->in[1], *h = a->n_in > 2 ? a->in[2] : NULL;
    float *dx = a->out[0];
    const int64_t kb = N > 0 ? (16384 + N - 1) / N : K; /* rows of W in about 64 KiB */
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = min64(K, k0 + kb);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = k0; k < k1; k++) {
                float v = tdm_k_dot_strided_f32(dy + r * N, W + k * N, N, 1);
                dx[r * K + k] = h && h[r * K + k] <= 0.0f ? 0.0f : v;
            }
    }
    return 0;
}

/* ---- linear_grad_w ------------------------------------------------------------------------ */

static int infer_grad_w(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc;
    if ((rc = want("linear_grad_w", "x", in[0], TDM_F32, 2, -1, -1, msg, len)) ||
        (rc = want("linear_grad_w", "dy", in[1], TDM_F32, 2, tdm_tensor_dim(in[0], 0), -1, msg,
                   len)))
        return rc;
    desc2(&out[0], TDM_F32, 2, tdm_tensor_dim(in[0], 1), tdm_tensor_dim(in[1], 1));
    return 0;
}

static int cpu_grad_w(const tdm_kernel_args *a)
{
    const int64_t M = tdm_tensor_dim(a->tin[0], 0), K = a->in_row_elems[0], N = a->in_row_elems[1],
                  rows = a->end - a->begin;
    const float *x = a->in[0], *dy = a->in[1];
    float *dW = a->out[0];
    for (int64_t i = 0; i < rows * N; i++)
        dW[i] = 0.0f;
    for (int64_t n0 = 0; n0 < N; n0 += CPU_NB) {
        const int64_t nn = min64(N - n0, CPU_NB);
        for (int64_t r0 = 0; r0 < rows; r0 += CPU_RB) {
            const int64_t rr = min64(rows - r0, CPU_RB), k = a->begin + r0;
            if (rr == CPU_RB) {
                float *d = dW + r0 * N + n0;
                for (int64_t m = 0; m < M; m++) {
                    const float *xm = x + m * K + k;
                    axpy4(nn, xm[0], xm[1], xm[2], xm[3], dy + m * N + n0, d, d + N, d + 2 * N,
                          d + 3 * N);
                }
                continue;
            }
            for (int64_t i = 0; i < rr; i++) {
                float *restrict row = dW + (r0 + i) * N + n0;
                for (int64_t m = 0; m < M; m++) {
                    const float xk = x[m * K + k + i];
                    const float *restrict g = dy + m * N + n0;
                    for (int64_t n = 0; n < nn; n++)
                        row[n] += xk * g[n];
                }
            }
        }
    }
    return 0;
}

/* ---- colsum -------------------------------------------------------------------------------- */

static int infer_colsum(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc = want("colsum", "x", in[0], TDM_F32, 2, -1, -1, msg, len);
    if (rc)
        return rc;
    desc2(&out[0], TDM_F32, 1, tdm_tensor_dim(in[0], 1), 0);
    return 0;
}

static int cpu_colsum(const tdm_kernel_args *a)
{
    const int64_t M = tdm_tensor_dim(a->tin[0], 0), N = a->in_row_elems[0];
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t r = 0; r < a->end - a->begin; r++)
        y[r] = 0.0f;
    for (int64_t m = 0; m < M; m++)
        for (int64_t r = 0; r < a->end - a->begin; r++)
            y[r] += x[m * N + a->begin + r];
    return 0;
}

/* ---- softmax_xent -------------------------------------------------------------------------- */

static int infer_xent(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc;
    if ((rc = want("softmax_xent", "z", in[0], TDM_F32, 2, -1, -1, msg, len)) ||
        (rc = want("softmax_xent", "label", in[1], TDM_I32, 1, tdm_tensor_dim(in[0], 0), -1, msg,
                   len)))
        return rc;
    int64_t B = tdm_tensor_dim(in[0], 0), C = tdm_tensor_dim(in[0], 1);
    if (C < 1)
        return tdm__msg(msg, len, TDM_ESHAPE, "softmax_xent: z has no classes");
    desc2(&out[0], TDM_F32, 2, B, C);
    desc2(&out[1], TDM_F32, 1, B, 0);
    desc2(&out[2], TDM_I32, 1, B, 0);
    return 0;
}

static int cpu_xent(const tdm_kernel_args *a)
{
    const tdm_softmax_xent_params *p = a->params;
    const int64_t C = a->in_row_elems[0];
    const float *z = a->in[0];
    const int32_t *label = a->in[1];
    float *dz = a->out[0], *loss = a->out[1];
    int32_t *pred = a->out[2];
    for (int64_t r = 0; r < a->end - a->begin; r++) {
        int32_t pr;
        loss[r] = tdm_k_softmax_xent_row(z + r * C, label[r], dz + r * C, C, p->grad_scale, &pr);
        pred[r] = pr;
    }
    return 0;
}

/* ---- optimisers ---------------------------------------------------------------------------- */

static int same_f32(const char *k, const tdm_tensor *const *in, int n, char *msg, size_t len)
{
    for (int i = 0; i < n; i++) {
        if (tdm_tensor_dtype(in[i]) != TDM_F32)
            return tdm__msg(msg, len, TDM_EDTYPE, "%s: input %d must be f32", k, i);
        if (tdm_tensor_numel(in[i]) != tdm_tensor_numel(in[0]))
            return tdm__msg(msg, len, TDM_ESHAPE, "%s: input %d has %lld elements, input 0 %lld", k,
                        i, (long long)tdm_tensor_numel(in[i]), (long long)tdm_tensor_numel(in[0]));
    }
    return 0;
}

static void like(tdm_tensor_desc *d, const tdm_tensor *t)
{
    memset(d, 0, sizeof *d);
    d->dtype = tdm_tensor_dtype(t);
    d->ndim = tdm_tensor_ndim(t);
    memcpy(d->shape, tdm_tensor_shape(t), (size_t)d->ndim * sizeof d->shape[0]);
}

static int infer_sgd(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                     tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc = same_f32("sgd_momentum", in, 3, msg, len);
    if (rc)
        return rc;
    like(&out[0], in[1]);
    like(&out[1], in[2]);
    return 0;
}

static int cpu_sgd(const tdm_kernel_args *a)
{
    const tdm_sgd_params *p = a->params;
    const int64_t n = (a->end - a->begin) * a->in_row_elems[0];
    const float *g = a->in[0], *w = a->in[1], *v = a->in[2];
    float *wo = a->out[0], *vo = a->out[1];
    for (int64_t i = 0; i < n; i++)
        tdm_k_sgd(g[i], w[i], v[i], p->lr, p->momentum, p->weight_decay, &wo[i], &vo[i]);
    return 0;
}

static int infer_adam(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_tensor_desc *out, int n_out, char *msg, size_t len)
{
    int rc = same_f32("adam", in, 4, msg, len);
    if (rc)
        return rc;
    const tdm_adam_params *p = params;
    if (p->step < 1 || !(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1) ||
        !(p->eps > 0))
        return tdm__msg(msg, len, TDM_EINVAL, "adam: step >= 1, beta1 and beta2 in [0, 1) and eps > 0 "
                    "are required");
    like(&out[0], in[1]);
    like(&out[1], in[2]);
    like(&out[2], in[3]);
    return 0;
}

static int cpu_adam(const tdm_kernel_args *a)
{
    const tdm_adam_params *p = a->params;
    const float c1 = (float)(1.0 / (1.0 - pow(p->beta1, p->step)));
    const float c2 = (float)(1.0 / (1.0 - pow(p->beta2, p->step)));
    const int64_t n = (a->end - a->begin) * a->in_row_elems[0];
    const float *g = a->in[0], *w = a->in[1], *m = a->in[2], *v = a->in[3];
    float *wo = a->out[0], *mo = a->out[1], *vo = a->out[2];
    for (int64_t i = 0; i < n; i++)
        tdm_k_adam(g[i], w[i], m[i], v[i], p->lr, p->beta1, p->beta2, p->eps, p->weight_decay, c1,
                   c2, &wo[i], &mo[i], &vo[i]);
    return 0;
}

/* ---- registration ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int n_in_min, n_in_max, n_out;
    uint32_t whole;
    size_t params_size;
    tdm_kernel_infer_fn infer;
    tdm_kernel_cpu_fn cpu;
} train_kernel;

static const train_kernel kernels[] = {
    {"linear", 2, 3, 1, 0x6u, sizeof(tdm_linear_params), infer_linear, cpu_linear},
    {"linear_grad_x", 2, 3, 1, 0x2u, 0, infer_grad_x, cpu_grad_x},
    {"linear_grad_w", 2, 2, 1, 0x3u, 0, infer_grad_w, cpu_grad_w},
    {"colsum", 1, 1, 1, 0x1u, 0, infer_colsum, cpu_colsum},
    {"softmax_xent", 2, 2, 3, 0, sizeof(tdm_softmax_xent_params), infer_xent, cpu_xent},
    {"sgd_momentum", 3, 3, 2, 0, sizeof(tdm_sgd_params), infer_sgd, cpu_sgd},
    {"adam", 4, 4, 3, 0, sizeof(tdm_adam_params), infer_adam, cpu_adam},
};

int tdm__register_train_kernels(tdm_runtime *rt)
{
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        const train_kernel *k = &kernels[i];
        tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
        def.name = k->name;
        def.n_in_min = k->n_in_min;
        def.n_in_max = k->n_in_max;
        def.n_out = k->n_out;
        def.whole_inputs = k->whole;
        def.params_size = k->params_size;
        def.infer = k->infer;
        def.cpu = k->cpu;
        def.source = tdm__builtin_kernel_source;
        def.dev = tdm__train_dev_fn(k->name);
        int rc = tdm_kernel_register(rt, &def);
        if (rc < 0)
            return rc;
        tdm__kernel_mark_builtin(rt, k->name);
    }
    return 0;
}
