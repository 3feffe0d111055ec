/* SPDX-License-Identifier: MIT */
/* tandem - the built-in kernels, in the single-source dialect (kernels/tdm_dialect.h).
 *
 * This file is read by three compilers: as C by kernels/builtin.c (the CPU backends), as
 * OpenCL C from the embedded string tdm__builtin_kernel_source, and as CUDA by
 * kernels/builtin_kernels.cu. It may include nothing but the dialect header (the embedding
 * strips that include and puts the dialect text in front).
 *
 * Two layers:
 *   - tdm_k_* device functions compute one item (an element, a row, an image row). The CPU
 *     implementations call them in their loops; they are small and inline so that the loops
 *     compile to what one would write by hand.
 *   - TDM_KERNEL entry points, compiled only for OpenCL and CUDA. Every entry takes its
 *     tensors as TDM_GLOBAL pointers to element 0 of the buffers it was given, and processes
 *     the items [begin, end) of its kind with a grid-stride loop, so a backend may pass the
 *     whole tensor with begin/end = the batch, or a batch-sized buffer with begin = 0, and may
 *     launch any global size (one work item per item is the natural choice).
 *
 * Entry points. The name is "tdm_" + the kernel's registered name, + "_f32"/"_f64" for the
 * kernels that take both; scalars are passed in the dtype of the tensors (a backend converts
 * the double fields of the host parameter blocks for f32).
 *   tdm_exp_sinh_{f32,f64}(x, y, begin, end)                item = element
 *   tdm_axpy_{f32,f64}(x, y, z, a, begin, end)              item = element; z may be y
 *   tdm_scale_shift_{f32,f64}(x, y, scale, shift, begin, end) item = element
 *   tdm_{sum,mean,sumsq}_{f32,f64}(x, y, row_elems, begin, end) item = row of row_elems
 *   tdm_normalize_u8(x, flags, y, p, H, W, C, begin, end)   item = one image row: n * H + h;
 *                         flags may be NULL (then p.flip applies); p is the host's
 *                         tdm_normalize_params block by value (same layout, checked in
 *                         builtin.c and by the OpenCL test)
 *   tdm_pi_leibniz(terms_in, y, terms, begin, end)          item = output element; terms_in
 *                         (i64, one per item) may be NULL, then every item uses `terms`
 * Everything that uses double (all f64 entries, the reductions, pi_leibniz) is compiled only
 * where TDM_HAVE_FP64 is 1: the reductions accumulate in double even for f32 inputs, as the
 * contract in kernel.h says, so an OpenCL device without cl_khr_fp64 offers only the f32
 * elementwise kernels and normalize_u8. PoCL, CUDA and every CPU have fp64.
 */
#ifndef TDM_BUILTIN_KERNELS_H
#define TDM_BUILTIN_KERNELS_H

#include "tdm_dialect.h"

/* ---- exp_sinh: y = exp(x) * sinh(x) --------------------------------------------------------
 * Kept as the literal product (not expm1(2x)/2, which is cheaper) because this kernel is the
 * workload of the reference benchmarks and must do the same work as the loops it is compared
 * with. */

TDM_DEVICE_FN float tdm_k_exp_sinh_f32(float x)
{
    return TDM_EXPF(x) * TDM_SINHF(x);
}

#if TDM_HAVE_FP64
TDM_DEVICE_FN double tdm_k_exp_sinh_f64(double x)
{
    return TDM_EXP(x) * TDM_SINH(x);
}
#endif

/* ---- axpy: z = a * x + y;  scale_shift: y = x * scale + shift ------------------------------- */

TDM_DEVICE_FN float tdm_k_axpy_f32(float a, float x, float y)
{
    return a * x + y;
}

TDM_DEVICE_FN float tdm_k_scale_shift_f32(float x, float scale, float shift)
{
    return x * scale + shift;
}

#if TDM_HAVE_FP64
TDM_DEVICE_FN double tdm_k_axpy_f64(double a, double x, double y)
{
    return a * x + y;
}

TDM_DEVICE_FN double tdm_k_scale_shift_f64(double x, double scale, double shift)
{
    return x * scale + shift;
}
#endif

/* ---- per-row reductions: sum, mean, sumsq, accumulated in double ----------------------------
 * Four partial sums: they break the add-latency chain (about 4x faster than one accumulator,
 * and C11 forbids the compiler from doing it for us) and each adds a quarter of the terms, so
 * the rounding error is smaller, not larger. A row of n elements starts at x. */

#if TDM_HAVE_FP64
#define TDM__ROW_REDUCE(name, T, TERM)                                                             \
    TDM_DEVICE_FN double name(TDM_GLOBAL const T *x, tdm_idx n)                                    \
    {                                                                                              \
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;                                             \
        tdm_idx i = 0;                                                                             \
        for (; i + 4 <= n; i += 4) {                                                               \
            double v0 = (double)x[i], v1 = (double)x[i + 1];                                       \
            double v2 = (double)x[i + 2], v3 = (double)x[i + 3];                                   \
            s0 += TERM(v0);                                                                        \
            s1 += TERM(v1);                                                                        \
            s2 += TERM(v2);                                                                        \
            s3 += TERM(v3);                                                                        \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            double v = (double)x[i];                                                               \
            s0 += TERM(v);                                                                         \
        }                                                                                          \
        return (s0 + s1) + (s2 + s3);                                                              \
    }

#define TDM__TERM_SUM(v) (v)
#define TDM__TERM_SQ(v) ((v) * (v))

TDM__ROW_REDUCE(tdm_k_row_sum_f32, float, TDM__TERM_SUM)
TDM__ROW_REDUCE(tdm_k_row_sum_f64, double, TDM__TERM_SUM)
TDM__ROW_REDUCE(tdm_k_row_sumsq_f32, float, TDM__TERM_SQ)
TDM__ROW_REDUCE(tdm_k_row_sumsq_f64, double, TDM__TERM_SQ)

/* The mean of an empty row is 0/0 = NaN, as in NumPy. */
TDM_DEVICE_FN double tdm_k_row_mean_f32(TDM_GLOBAL const float *x, tdm_idx n)
{
    return tdm_k_row_sum_f32(x, n) / (double)n;
}

TDM_DEVICE_FN double tdm_k_row_mean_f64(TDM_GLOBAL const double *x, tdm_idx n)
{
    return tdm_k_row_sum_f64(x, n) / (double)n;
}
#endif

/* ---- normalize_u8: u8 [N, H, W, C] (HWC) -> f32 [N, C, H, W], y = (x / 255 - mean) / std ------
 * Same layout as the host's tdm_normalize_params (kernel.h), so a device backend can pass the
 * map's parameter block to the entry point by value. */
typedef struct tdm_k_normalize_params {
    float mean[4];
    float std[4];
    tdm_i32 flip;
    tdm_i32 reserved;
} tdm_k_normalize_params;

/* (x / 255 - mean) / std is computed as x * scale + bias: two divides per element become one
 * multiply-add (within a few ulp of the literal formula). */
TDM_DEVICE_FN void tdm_k_normalize_coeffs(const tdm_k_normalize_params *p, int C, float *scale,
                                          float *bias)
{
    for (int c = 0; c < C; c++) {
        scale[c] = 1.0f / (255.0f * p->std[c]);
        bias[c] = -p->mean[c] / p->std[c];
    }
}

/* One image row with a fixed channel count. Called with a literal C below, so that the
 * compiler knows the stride of the interleaved source and can unroll / vectorise. */
TDM_DEVICE_FN void tdm_k__normalize_row_c(TDM_GLOBAL const tdm_u8 *src, TDM_GLOBAL float *dst,
                                          tdm_idx plane, tdm_idx W, const int C, const float *scale,
                                          const float *bias, int flip)
{
    for (int c = 0; c < C; c++) {
        const float a = scale[c], b = bias[c];
        TDM_GLOBAL float *d = dst + (tdm_idx)c * plane;
        if (flip) {
            for (tdm_idx w = 0; w < W; w++)
                d[w] = (float)src[(W - 1 - w) * C + c] * a + b;
        } else {
            for (tdm_idx w = 0; w < W; w++)
                d[w] = (float)src[w * C + c] * a + b;
        }
    }
}

/* Row h of one image: src = its first pixel (W * C bytes, channels interleaved), dst = the
 * image's output at row h of channel 0; channel c's row is plane (= H * W) floats further.
 * flip mirrors the row (w -> W - 1 - w). C is 1..4 (checked by the caller). */
TDM_DEVICE_FN void tdm_k_normalize_u8_row(TDM_GLOBAL const tdm_u8 *src, TDM_GLOBAL float *dst,
                                          tdm_idx plane, tdm_idx W, int C, const float *scale,
                                          const float *bias, int flip)
{
    switch (C) {
    case 1:
        tdm_k__normalize_row_c(src, dst, plane, W, 1, scale, bias, flip);
        break;
    case 2:
        tdm_k__normalize_row_c(src, dst, plane, W, 2, scale, bias, flip);
        break;
    case 3:
        tdm_k__normalize_row_c(src, dst, plane, W, 3, scale, bias, flip);
        break;
    default:
        tdm_k__normalize_row_c(src, dst, plane, W, 4, scale, bias, flip);
        break;
    }
}

/* ---- pi_leibniz: 4 * sum_{k < terms} (-1)^k / (2k + 1) ---------------------------------------
 * Terms are taken in pairs, 1/(2k+1) - 1/(2k+3), the pairs dealt in turn to four running sums
 * (pair p to sum p mod 4) while four whole pairs are left, the sums then added as
 * (s0 + s1) + (s2 + s3), and the pairs left over (and a last odd term) added to that. Every term
 * is computed as the series defines it; the order of the additions is this one on every
 * backend: on the CPU the four sums are the four lanes of a vector register (kernels/pi_cpu.c,
 * bit-identical to this code), so a core runs four divisions at a time; a device runs this
 * code as it stands, its four sums independent chains. terms <= 0 gives 0. */
#if TDM_HAVE_FP64
/* The pairs left after the four sums' steps (from term k on, s their total), and a last odd
 * term: the tail of tdm_k_pi_leibniz, which the CPU's vector code (pi_cpu.c) runs too. */
TDM_DEVICE_FN double tdm_k__pi_tail(tdm_i64 k, double s, tdm_i64 terms)
{
    for (; k + 1 < terms; k += 2)
        s += 1.0 / (double)(2 * k + 1) - 1.0 / (double)(2 * k + 3);
    if (k < terms)
        s += 1.0 / (double)(2 * k + 1);
    return 4.0 * s;
}

TDM_DEVICE_FN double tdm_k_pi_leibniz(tdm_i64 terms)
{
    tdm_i64 k = 0;
#if TDM_DIALECT_OPENCL
    /* (OpenCL C's double4: the four sums in one vector, as on the CPU; a driver on the host's
     * cores, PoCL, then runs four divisions at a time too) */
    double4 v = (double4)(0.0, 0.0, 0.0, 0.0), d = (double4)(1.0, 5.0, 9.0, 13.0);
    for (; k + 7 < terms; k += 8) {
        v += 1.0 / d - 1.0 / (d + 2.0);
        d += 16.0;
    }
    double s = (v.s0 + v.s1) + (v.s2 + v.s3);
#else
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (; k + 7 < terms; k += 8) {
        s0 += 1.0 / (double)(2 * k + 1) - 1.0 / (double)(2 * k + 3);
        s1 += 1.0 / (double)(2 * k + 5) - 1.0 / (double)(2 * k + 7);
        s2 += 1.0 / (double)(2 * k + 9) - 1.0 / (double)(2 * k + 11);
        s3 += 1.0 / (double)(2 * k + 13) - 1.0 / (double)(2 * k + 15);
    }
    double s = (s0 + s1) + (s2 + s3);
#endif
    return tdm_k__pi_tail(k, s, terms);
}
#endif

/* ---- entry points (OpenCL and CUDA only) -------------------------------------------------- */
#if TDM_DIALECT_DEVICE

TDM_KERNEL tdm_exp_sinh_f32(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, tdm_idx begin,
                            tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        y[i] = tdm_k_exp_sinh_f32(x[i]);
    }
}

TDM_KERNEL tdm_axpy_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *y, TDM_GLOBAL float *z,
                        float a, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        z[i] = tdm_k_axpy_f32(a, x[i], y[i]);
    }
}

TDM_KERNEL tdm_scale_shift_f32(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, float scale,
                               float shift, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        y[i] = tdm_k_scale_shift_f32(x[i], scale, shift);
    }
}

TDM_KERNEL tdm_normalize_u8(TDM_GLOBAL const tdm_u8 *x, TDM_GLOBAL const tdm_u8 *flags,
                            TDM_GLOBAL float *y, tdm_k_normalize_params p, tdm_idx H, tdm_idx W,
                            tdm_i32 C, tdm_idx begin, tdm_idx end)
{
    float scale[4], bias[4];
    tdm_k_normalize_coeffs(&p, C, scale, bias);
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        tdm_idx n = i / H, h = i - n * H;
        int flip = flags ? flags[n] != 0 : p.flip != 0;
        tdm_k_normalize_u8_row(x + (n * H + h) * W * C, y + n * C * H * W + h * W, H * W, W, C,
                               scale, bias, flip);
    }
}

#if TDM_HAVE_FP64
TDM_KERNEL tdm_exp_sinh_f64(TDM_GLOBAL const double *x, TDM_GLOBAL double *y, tdm_idx begin,
                            tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        y[i] = tdm_k_exp_sinh_f64(x[i]);
    }
}

TDM_KERNEL tdm_axpy_f64(TDM_GLOBAL const double *x, TDM_GLOBAL const double *y,
                        TDM_GLOBAL double *z, double a, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        z[i] = tdm_k_axpy_f64(a, x[i], y[i]);
    }
}

TDM_KERNEL tdm_scale_shift_f64(TDM_GLOBAL const double *x, TDM_GLOBAL double *y, double scale,
                               double shift, tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        y[i] = tdm_k_scale_shift_f64(x[i], scale, shift);
    }
}

#define TDM__ROW_ENTRY(name, T, FN)                                                                \
    TDM_KERNEL name(TDM_GLOBAL const T *x, TDM_GLOBAL T *y, tdm_idx row_elems, tdm_idx begin,      \
                    tdm_idx end)                                                                   \
    {                                                                                              \
        for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {               \
            y[i] = (T)FN(x + i * row_elems, row_elems);                                            \
        }                                                                                          \
    }

TDM__ROW_ENTRY(tdm_sum_f32, float, tdm_k_row_sum_f32)
TDM__ROW_ENTRY(tdm_sum_f64, double, tdm_k_row_sum_f64)
TDM__ROW_ENTRY(tdm_mean_f32, float, tdm_k_row_mean_f32)
TDM__ROW_ENTRY(tdm_mean_f64, double, tdm_k_row_mean_f64)
TDM__ROW_ENTRY(tdm_sumsq_f32, float, tdm_k_row_sumsq_f32)
TDM__ROW_ENTRY(tdm_sumsq_f64, double, tdm_k_row_sumsq_f64)

TDM_KERNEL tdm_pi_leibniz(TDM_GLOBAL const tdm_i64 *terms_in, TDM_GLOBAL double *y, tdm_i64 terms,
                          tdm_idx begin, tdm_idx end)
{
    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {
        y[i] = tdm_k_pi_leibniz(terms_in ? terms_in[i] : terms);
    }
}
#endif /* TDM_HAVE_FP64 */

#endif /* TDM_DIALECT_DEVICE */

#endif /* TDM_BUILTIN_KERNELS_H */
