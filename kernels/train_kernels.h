/* SPDX-License-Identifier: MIT */
/* tandem - training kernels in the single-source dialect: a dense layer forward and backward,
 * softmax cross-entropy, SGD with momentum and Adam. Read as C by kernels/train.c (the CPU
 * backends call the bodies below), built at run time by OpenCL and NVRTC, and compiled by nvcc
 * (kernels/builtin_kernels.cu). All f32.
 *
 * Device entry points (argument order; `row0` is the global index of the batch's first output
 * row, for kernels that index inputs given whole by the output row):
 *   tdm_linear_f32(x, W, b, y, K, N, relu, begin, end)         item = y element (m * N + n);
 *                                                               b may be NULL
 *   tdm_linear_grad_x_f32(dy, W, h, dx, K, N, begin, end)      item = dx element (m * K + k);
 *                                                               h may be NULL (no ReLU mask)
 *   tdm_linear_grad_w_f32(x, dy, dW, M, K, N, row0, begin, end) item = dW element (k * N + n)
 *     These three are tiled matrix products: 2-D launches (dimension 0 = the output's columns,
 *     1 = the batch's rows) in work-groups of TDM_K_TILE x TDM_K_TILE (see below). begin and
 *     end are whole output rows (multiples of the row length).
 *   tdm_colsum_f32(x, y, M, N, row0, begin, end)               item = y element (column)
 *   tdm_softmax_xent_f32(z, label, dz, loss, pred, C, scale, begin, end) item = one row
 *   tdm_sgd_momentum_f32(g, w, v, w_out, v_out, lr, mom, wd, begin, end) item = element
 *   tdm_adam_f32(g, w, m, v, w_out, m_out, v_out, lr, b1, b2, eps, wd, c1, c2, begin, end)
 *                                                               item = element; c1, c2 the bias
 *                                                               corrections 1/(1-b^t)
 */
#ifndef TDM_TRAIN_KERNELS_H
#define TDM_TRAIN_KERNELS_H

#include "tdm_dialect.h"

/* sum_k x[k] * w[k * stride], four partial sums */
TDM_DEVICE_FN float tdm_k_dot_strided_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *w,
                                          tdm_idx n, tdm_idx stride)
{
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    tdm_idx k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += x[k] * w[k * stride];
        a1 += x[k + 1] * w[(k + 1) * stride];
        a2 += x[k + 2] * w[(k + 2) * stride];
        a3 += x[k + 3] * w[(k + 3) * stride];
    }
    for (; k < n; k++)
        a0 += x[k] * w[k * stride];
    return (a0 + a1) + (a2 + a3);
}

/* ---- tiled matrix products ------------------------------------------------------------------
 * On devices, a work-group of TDM_K_TILE x TDM_K_TILE work items computes one TDM_K_TILE x
 * TDM_K_TILE block of the output, walking the reduction dimension a tile at a time: each work
 * item loads one element of each operand's tile into work-group memory (TDM_SHARED), the group
 * waits (TDM_BARRIER), each work item accumulates its output element from the two tiles, and
 * the group waits again before the tiles are overwritten. Each operand element is then read
 * from global memory TDM_K_TILE times less often than with one work item per output element
 * reading its whole dot product, and the loads are coalesced (consecutive work items of
 * dimension 0 read consecutive addresses).
 * The launch is rounded up to whole tiles: work items outside the output load zeros (which add
 * exactly nothing) and store nothing, but reach every barrier. The tile loops depend on the
 * group index only (uniform across a group, as barriers require), so a backend may launch fewer
 * groups than tiles. Each sum runs in order, term 0, 1, ... (as linear's and linear_grad_w's
 * CPU loops do; linear_grad_x's CPU dot product keeps four partial sums).
 * OpenCL refuses a launch in other groups (reqd_work_group_size); CUDA cannot, so an entry
 * launched in other blocks returns at once, the whole group before any barrier: it writes
 * nothing rather than outside its tiles. */
#define TDM_K_TILE 16

/* acc + sum_j a[j * sa] * b[j * sb] for j < TDM_K_TILE, added in order: one output element's
 * share of a tile product, from work-group memory. */
TDM_DEVICE_FN float tdm_k_tile_fma(float acc, TDM_LOCAL const float *a, int sa,
                                   TDM_LOCAL const float *b, int sb)
{
    for (int j = 0; j < TDM_K_TILE; j++)
        acc += a[j * sa] * b[j * sb];
    return acc;
}

/* One row of softmax cross-entropy: dz = (softmax(z) - onehot(label)) * scale; returns the
 * loss -log softmax(z)[label] and writes the argmax into *pred. */
TDM_DEVICE_FN float tdm_k_softmax_xent_row(TDM_GLOBAL const float *z, tdm_i32 label,
                                           TDM_GLOBAL float *dz, tdm_idx C, float scale,
                                           tdm_i32 *pred)
{
    float mx = z[0];
    tdm_i32 arg = 0;
    for (tdm_idx c = 1; c < C; c++) {
        if (z[c] > mx) {
            mx = z[c];
            arg = (tdm_i32)c;
        }
    }
    float sum = 0.0f;
    for (tdm_idx c = 0; c < C; c++)
        sum += TDM_EXPF(z[c] - mx);
    float inv = 1.0f / sum;
    for (tdm_idx c = 0; c < C; c++)
        dz[c] = (TDM_EXPF(z[c] - mx) * inv - (c == label ? 1.0f : 0.0f)) * scale;
    *pred = arg;
    tdm_i32 l = label >= 0 && label < C ? label : 0;
    return TDM_LOGF(sum) + mx - z[l];
}

/* SGD with momentum (PyTorch's form): v = mom * v + (g + wd * w); w -= lr * v */
TDM_DEVICE_FN void tdm_k_sgd(float g, float w, float v, float lr, float mom, float wd, float *w_out,
                             float *v_out)
{
    float d = g + wd * w;
    float nv = mom * v + d;
    *v_out = nv;
    *w_out = w - lr * nv;
}

/* Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr * (m c1) / (sqrt(v c2) + eps),
 * with g += wd * w first (L2, as torch.optim.Adam's weight_decay). */
TDM_DEVICE_FN void tdm_k_adam(float g, float w, float m, float v, float lr, float b1, float b2,
                              float eps, float wd, float c1, float c2, float *w_out, float *m_out,
                              float *v_out)
{
    float d = g + wd * w;
    float nm = b1 * m + (1.0f - b1) * d;
    float nv = b2 * v + (1.0f - b2) * d * d;
    *m_out = nm;
    *v_out = nv;
    *w_out = w - lr * (nm * c1) / (TDM_SQRTF(nv * c2) + eps);
}

#if TDM_DIALECT_DEVICE

/* y = x W (+ b), ReLU'd when relu: x [rows, K] (the batch's, from row begin / N), W [K, N] */
TDM_KERNEL_GROUP(TDM_K_TILE, TDM_K_TILE)
tdm_linear_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *W, TDM_GLOBAL const float *b,
               TDM_GLOBAL float *y, tdm_idx K, tdm_idx N, tdm_i32 relu, tdm_idx begin, tdm_idx end)
{
    TDM_SHARED float xs[TDM_K_TILE][TDM_K_TILE]; /* xs[m][k] */
    TDM_SHARED float ws[TDM_K_TILE][TDM_K_TILE]; /* ws[k][n] */
    if (TDM_LOCAL_SIZE(0) != TDM_K_TILE || TDM_LOCAL_SIZE(1) != TDM_K_TILE)
        return; /* launched without its groups (see above) */
    const tdm_i32 tx = TDM_LOCAL_ID(0), ty = TDM_LOCAL_ID(1);
    const tdm_idx m0 = begin / N, rows = (end - begin) / N;
    for (tdm_idx r0 = TDM_GROUP_ID(1) * TDM_K_TILE; r0 < rows; r0 += TDM_NUM_GROUPS(1) * TDM_K_TILE)
        for (tdm_idx n0 = TDM_GROUP_ID(0) * TDM_K_TILE; n0 < N;
             n0 += TDM_NUM_GROUPS(0) * TDM_K_TILE) {
            const tdm_idx r = r0 + ty, n = n0 + tx;
            const int inside = r < rows && n < N;
            float acc = inside && b ? b[n] : 0.0f; /* the bias first, as the CPU adds it */
            for (tdm_idx k0 = 0; k0 < K; k0 += TDM_K_TILE) {
                xs[ty][tx] = r < rows && k0 + tx < K ? x[(m0 + r) * K + k0 + tx] : 0.0f;
                ws[ty][tx] = k0 + ty < K && n < N ? W[(k0 + ty) * N + n] : 0.0f;
                TDM_BARRIER();
                acc = tdm_k_tile_fma(acc, &xs[ty][0], 1, &ws[0][tx], TDM_K_TILE);
                TDM_BARRIER();
            }
            if (inside)
                y[(m0 + r) * N + n] = relu && acc < 0.0f ? 0.0f : acc;
        }
}

/* dx = dy W^T, zeroed where h <= 0: dy [rows, N] (from row begin / K), W [K, N] */
TDM_KERNEL_GROUP(TDM_K_TILE, TDM_K_TILE)
tdm_linear_grad_x_f32(TDM_GLOBAL const float *dy, TDM_GLOBAL const float *W,
                      TDM_GLOBAL const float *h, TDM_GLOBAL float *dx, tdm_idx K, tdm_idx N,
                      tdm_idx begin, tdm_idx end)
{
    TDM_SHARED float ds[TDM_K_TILE][TDM_K_TILE];     /* ds[m][n] */
    TDM_SHARED float wt[TDM_K_TILE][TDM_K_TILE + 1]; /* wt[n][k]: W's tile transposed as it is
                                                        stored (the loads stay coalesced); the
                                                        pad spreads that column-wise store over
                                                        the memory banks */
    if (TDM_LOCAL_SIZE(0) != TDM_K_TILE || TDM_LOCAL_SIZE(1) != TDM_K_TILE)
        return; /* launched without its groups (see above) */
    const tdm_i32 tx = TDM_LOCAL_ID(0), ty = TDM_LOCAL_ID(1);
    const tdm_idx m0 = begin / K, rows = (end - begin) / K;
    for (tdm_idx r0 = TDM_GROUP_ID(1) * TDM_K_TILE; r0 < rows; r0 += TDM_NUM_GROUPS(1) * TDM_K_TILE)
        for (tdm_idx c0 = TDM_GROUP_ID(0) * TDM_K_TILE; c0 < K;
             c0 += TDM_NUM_GROUPS(0) * TDM_K_TILE) {
            const tdm_idx r = r0 + ty, k = c0 + tx;
            float acc = 0.0f;
            for (tdm_idx n0 = 0; n0 < N; n0 += TDM_K_TILE) {
                ds[ty][tx] = r < rows && n0 + tx < N ? dy[(m0 + r) * N + n0 + tx] : 0.0f;
                wt[tx][ty] = c0 + ty < K && n0 + tx < N ? W[(c0 + ty) * N + n0 + tx] : 0.0f;
                TDM_BARRIER();
                acc = tdm_k_tile_fma(acc, &ds[ty][0], 1, &wt[0][tx], TDM_K_TILE + 1);
                TDM_BARRIER();
            }
            if (r < rows && k < K) {
                const tdm_idx i = (m0 + r) * K + k;
                dx[i] = h && h[i] <= 0.0f ? 0.0f : acc;
            }
        }
}

/* dW = x^T dy for dW's rows row0 ... (the batch's): x [M, K] and dy [M, N] whole */
TDM_KERNEL_GROUP(TDM_K_TILE, TDM_K_TILE)
tdm_linear_grad_w_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *dy, TDM_GLOBAL float *dW,
                      tdm_idx M, tdm_idx K, tdm_idx N, tdm_idx row0, tdm_idx begin, tdm_idx end)
{
    TDM_SHARED float xt[TDM_K_TILE][TDM_K_TILE]; /* xt[m][k]: rows of x as they lie */
    TDM_SHARED float ds[TDM_K_TILE][TDM_K_TILE]; /* ds[m][n] */
    if (TDM_LOCAL_SIZE(0) != TDM_K_TILE || TDM_LOCAL_SIZE(1) != TDM_K_TILE)
        return; /* launched without its groups (see above) */
    const tdm_i32 tx = TDM_LOCAL_ID(0), ty = TDM_LOCAL_ID(1);
    const tdm_idx rows = (end - begin) / N;
    for (tdm_idx r0 = TDM_GROUP_ID(1) * TDM_K_TILE; r0 < rows; r0 += TDM_NUM_GROUPS(1) * TDM_K_TILE)
        for (tdm_idx n0 = TDM_GROUP_ID(0) * TDM_K_TILE; n0 < N;
             n0 += TDM_NUM_GROUPS(0) * TDM_K_TILE) {
            const tdm_idx r = r0 + ty, n = n0 + tx;
            float acc = 0.0f;
            for (tdm_idx mb = 0; mb < M; mb += TDM_K_TILE) {
                xt[ty][tx] =
                    mb + ty < M && r0 + tx < rows ? x[(mb + ty) * K + row0 + r0 + tx] : 0.0f;
                ds[ty][tx] = mb + ty < M && n < N ? dy[(mb + ty) * N + n] : 0.0f;
                TDM_BARRIER();
                acc = tdm_k_tile_fma(acc, &xt[0][ty], TDM_K_TILE, &ds[0][tx], TDM_K_TILE);
                TDM_BARRIER();
            }
            if (r < rows && n < N)
                dW[begin + r * N + n] = acc;
        }
}

TDM_KERNEL tdm_colsum_f32(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, tdm_idx M, tdm_idx N,
                          tdm_idx row0, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_idx n = row0 + (i - begin);
        float a = 0.0f;
        for (tdm_idx m = 0; m < M; m++)
            a += x[m * N + n];
        y[i] = a;
    }
}

TDM_KERNEL tdm_softmax_xent_f32(TDM_GLOBAL const float *z, TDM_GLOBAL const tdm_i32 *label,
                                TDM_GLOBAL float *dz, TDM_GLOBAL float *loss,
                                TDM_GLOBAL tdm_i32 *pred, tdm_idx C, float scale, tdm_idx begin,
                                tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_i32 p;
        loss[i] = tdm_k_softmax_xent_row(z + i * C, label[i], dz + i * C, C, scale, &p);
        pred[i] = p;
    }
}

TDM_KERNEL tdm_sgd_momentum_f32(TDM_GLOBAL const float *g, TDM_GLOBAL const float *w,
                                TDM_GLOBAL const float *v, TDM_GLOBAL float *w_out,
                                TDM_GLOBAL float *v_out, float lr, float mom, float wd,
                                tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        float nw, nv;
        tdm_k_sgd(g[i], w[i], v[i], lr, mom, wd, &nw, &nv);
        w_out[i] = nw;
        v_out[i] = nv;
    }
}

TDM_KERNEL tdm_adam_f32(TDM_GLOBAL const float *g, TDM_GLOBAL const float *w,
                        TDM_GLOBAL const float *m, TDM_GLOBAL const float *v,
                        TDM_GLOBAL float *w_out, TDM_GLOBAL float *m_out, TDM_GLOBAL float *v_out,
                        float lr, float b1, float b2, float eps, float wd, float c1, float c2,
                        tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        float nw, nm, nv;
        tdm_k_adam(g[i], w[i], m[i], v[i], lr, b1, b2, eps, wd, c1, c2, &nw, &nm, &nv);
        w_out[i] = nw;
        m_out[i] = nm;
        v_out[i] = nv;
    }
}

#endif /* TDM_DIALECT_DEVICE */

#endif /* TDM_TRAIN_KERNELS_H */
