/* SPDX-License-Identifier: MIT */
/* tandem — the built-in kernels' loops that call libm, vectorised with glibc's libmvec where the
 * build has it (TDM_HAVE_LIBMVEC: x86-64, glibc >= 2.35): exp and sinh a vector of doubles (or
 * floats) at a time, in the widest of SSE2, AVX2 and AVX-512 the CPU has (picked at the first
 * call). libmvec's functions are within 4 ulp of the scalar libm's (exp(x)*sinh(x): at most 5
 * ulp from the scalar product, measured over [-6, 6]); an element's result depends on its value only, never on the
 * batch it falls in. Without libmvec, the same loops call the scalar libm. Not API. */
#ifndef TANDEM_SIMD_MATH_H
#define TANDEM_SIMD_MATH_H

#include <stdint.h>

/* y[i] = exp(x[i]) * sinh(x[i]) for i in [0, n). x and y may be the same array. */
void tdm__simd_exp_sinh_f64(const double *x, double *y, int64_t n);
void tdm__simd_exp_sinh_f32(const float *x, float *y, int64_t n);

/* The instruction set those loops run in here: "avx512f", "avx2", "sse2", or "scalar" (a build
 * without libmvec). */
const char *tdm__simd_math_isa(void);

#endif
