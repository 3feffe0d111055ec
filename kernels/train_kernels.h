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

TDM_KERNEL tdm_linear_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *W,
                          TDM_GLOBAL const float *b, TDM_GLOBAL float *y, tdm_idx K, tdm_idx N,
                          tdm_i32 relu, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_idx m = i / N, n = i - m * N;
        float a = tdm_k_dot_strided_f32(x + m * K, W + n, K, N) + (b ? b[n] : 0.0f);
        y[i] = relu && a < 0.0f ? 0.0f : a;
    }
}

TDM_KERNEL tdm_linear_grad_x_f32(TDM_GLOBAL const float *dy, TDM_GLOBAL const float *W,
                                 TDM_GLOBAL const float *h, TDM_GLOBAL float *dx, tdm_idx K,
                                 tdm_idx N, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_idx m = i / K, k = i - m * K;
        float a = tdm_k_dot_strided_f32(dy + m * N, W + k * N, N, 1);
        dx[i] = h && h[i] <= 0.0f ? 0.0f : a;
    }
}

TDM_KERNEL tdm_linear_grad_w_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *dy,
                                 TDM_GLOBAL float *dW, tdm_idx M, tdm_idx K, tdm_idx N,
                                 tdm_idx row0, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_idx j = i - begin, k = row0 + j / N, n = j - (j / N) * N;
        float a = 0.0f;
        for (tdm_idx m = 0; m < M; m++)
            a += x[m * K + k] * dy[m * N + n];
        dW[i] = a;
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
