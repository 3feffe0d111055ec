/* SPDX-License-Identifier: MIT */
/* Vectorised libm loops for the built-in kernels (see simd_math.h).
 *
 * How: glibc's libmvec exports vector variants of exp, sinh, expf and sinhf under the x86-64
 * vector ABI's names: _ZGVbN2v_exp takes and returns two doubles in an SSE register, _ZGVdN4v_exp
 * four in an AVX2 register, _ZGVeN8v_exp eight in an AVX-512 one (the f32 ones twice as many).
 * They are called here by name on GCC / Clang vector types, from one loop per instruction set;
 * the widest one the CPU runs is picked at the first call.
 *
 * Every element goes through the same vector call, whatever the batch: a batch's last few
 * elements are padded into one more full vector (a compiler-vectorised loop would compute them
 * with a scalar or narrower epilogue, whose last bits differ: an element's result would then
 * depend on where the scheduler cut the batches, and a distributed map would not match a local
 * one byte for byte).
 *
 * Measured on the project's x86-64 machine, 20M doubles of exp(x)*sinh(x), one core: scalar libm
 * 57-77 Melem/s, SSE2 188-192, AVX2 345-357, AVX-512 476; results at most 5 ulp from the
 * scalar ones over [-6, 6] on each of the three. */
#include "simd_math.h"
#include "simd_isa.h"

#include <math.h>
#include <string.h>

#if TDM_HAVE_LIBMVEC

typedef double v2d __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

/* libmvec (glibc >= 2.22 for exp, 2.35 for sinh) */
v2d _ZGVbN2v_exp(v2d);
v2d _ZGVbN2v_sinh(v2d);
v4f _ZGVbN4v_expf(v4f);
v4f _ZGVbN4v_sinhf(v4f);
__attribute__((target("avx2"))) v4d _ZGVdN4v_exp(v4d);
__attribute__((target("avx2"))) v4d _ZGVdN4v_sinh(v4d);
__attribute__((target("avx2"))) v8f _ZGVdN8v_expf(v8f);
__attribute__((target("avx2"))) v8f _ZGVdN8v_sinhf(v8f);
__attribute__((target("avx512f"))) v8d _ZGVeN8v_exp(v8d);
__attribute__((target("avx512f"))) v8d _ZGVeN8v_sinh(v8d);
__attribute__((target("avx512f"))) v16f _ZGVeN16v_expf(v16f);
__attribute__((target("avx512f"))) v16f _ZGVeN16v_sinhf(v16f);

/* One loop per instruction set and type: W elements a call, the tail padded with zeros
 * (exp(0) * sinh(0) = 0: no exception raised for them). */
#define TDM__ES_LOOP(name, target_attr, T, V, W, EXP, SINH)                                        \
    target_attr static void name(const T *x, T *y, int64_t n)                                     \
    {                                                                                              \
        int64_t i = 0;                                                                             \
        V v;                                                                                       \
        for (; i + W <= n; i += W) {                                                               \
            memcpy(&v, x + i, sizeof v);                                                           \
            v = EXP(v) * SINH(v);                                                                  \
            memcpy(y + i, &v, sizeof v);                                                           \
        }                                                                                          \
        if (i < n) {                                                                               \
            T t[W];                                                                                \
            memset(t, 0, sizeof t);                                                                \
            memcpy(t, x + i, (size_t)(n - i) * sizeof(T));                                         \
            memcpy(&v, t, sizeof v);                                                               \
            v = EXP(v) * SINH(v);                                                                  \
            memcpy(y + i, &v, (size_t)(n - i) * sizeof(T));                                        \
        }                                                                                          \
    }

TDM__ES_LOOP(es64_sse2, , double, v2d, 2, _ZGVbN2v_exp, _ZGVbN2v_sinh)
TDM__ES_LOOP(es64_avx2, __attribute__((target("avx2"))), double, v4d, 4, _ZGVdN4v_exp,
             _ZGVdN4v_sinh)
TDM__ES_LOOP(es64_avx512, __attribute__((target("avx512f"))), double, v8d, 8, _ZGVeN8v_exp,
             _ZGVeN8v_sinh)
TDM__ES_LOOP(es32_sse2, , float, v4f, 4, _ZGVbN4v_expf, _ZGVbN4v_sinhf)
TDM__ES_LOOP(es32_avx2, __attribute__((target("avx2"))), float, v8f, 8, _ZGVdN8v_expf,
             _ZGVdN8v_sinhf)
TDM__ES_LOOP(es32_avx512, __attribute__((target("avx512f"))), float, v16f, 16, _ZGVeN16v_expf,
             _ZGVeN16v_sinhf)

/* 1 SSE2 (also under TDM_SIMD=scalar: libmvec's narrowest is SSE2, which every x86-64 CPU
 * has), 2 AVX2, 3 AVX-512 (simd_isa.h). */
static int pick(void)
{
    int k = tdm__simd_level();
    return k < TDM__SIMD_SSE2 ? TDM__SIMD_SSE2 : k;
}

void tdm__simd_exp_sinh_f64(const double *x, double *y, int64_t n)
{
    switch (pick()) {
    case 3:
        es64_avx512(x, y, n);
        break;
    case 2:
        es64_avx2(x, y, n);
        break;
    default:
        es64_sse2(x, y, n);
    }
}

void tdm__simd_exp_sinh_f32(const float *x, float *y, int64_t n)
{
    switch (pick()) {
    case 3:
        es32_avx512(x, y, n);
        break;
    case 2:
        es32_avx2(x, y, n);
        break;
    default:
        es32_sse2(x, y, n);
    }
}

const char *tdm__simd_math_isa(void)
{
    return tdm__simd_level_name(pick());
}

#else /* no libmvec: the scalar libm */

void tdm__simd_exp_sinh_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = exp(x[i]) * sinh(x[i]);
}

void tdm__simd_exp_sinh_f32(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = expf(x[i]) * sinhf(x[i]);
}

const char *tdm__simd_math_isa(void)
{
    return "scalar";
}

#endif
