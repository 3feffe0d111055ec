/* SPDX-License-Identifier: MIT */
/* pi_leibniz on the CPU, the kernel's four running sums in vector lanes (see pi_cpu.h).
 *
 * tdm_k_pi_leibniz adds pair p (1/(2k+1) - 1/(2k+3), k = 2p) to sum p mod 4 while four whole
 * pairs are left. Here lane j of the vector {s0, s1, s2, s3} is sum j: one step divides the
 * vector {2k+1, 2k+5, 2k+9, 2k+13} and {2k+3, 2k+7, 2k+11, 2k+15} into 1 and adds the
 * difference, the same IEEE operations lane by lane (a division and a subtraction are correctly
 * rounded in each lane; no multiply, so nothing to contract). The sums are then added and the
 * tail run exactly as the scalar code does. The denominators are kept as doubles and stepped
 * by 16 (the scalar code converts 2k + 1 from an integer): both are the exact integer below
 * 2^53, so the lanes stay bit-identical for any count of terms under 2^52 (about 10^15: a
 * core would need days for one item). */
#include "pi_cpu.h"

#include "builtin_kernels.h"
#include "simd_isa.h"

#if defined(__GNUC__) || defined(__clang__)
#define TDM__PI_VECTORS 1
typedef double tdm__v2d __attribute__((vector_size(16)));
#if defined(__x86_64__)
typedef double tdm__v4d __attribute__((vector_size(32)));
#endif
#else
#define TDM__PI_VECTORS 0
#endif

#if TDM__PI_VECTORS

/* Two lanes twice: a = {s0, s1}, b = {s2, s3}. */
static double pi_v2(int64_t terms)
{
    const tdm__v2d one = {1.0, 1.0}, two = {2.0, 2.0}, step = {16.0, 16.0};
    tdm__v2d a = {0.0, 0.0}, b = {0.0, 0.0};
    tdm__v2d da = {1.0, 5.0}, db = {9.0, 13.0}; /* 2k + 1, 2k + 5 | 2k + 9, 2k + 13 */
    int64_t k = 0;
    for (; k + 7 < terms; k += 8) {
        a += one / da - one / (da + two);
        b += one / db - one / (db + two);
        da += step;
        db += step;
    }
    return tdm_k__pi_tail(k, (a[0] + a[1]) + (b[0] + b[1]), terms);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static double pi_avx2(int64_t terms)
{
    const tdm__v4d one = {1.0, 1.0, 1.0, 1.0}, two = {2.0, 2.0, 2.0, 2.0};
    const tdm__v4d step = {16.0, 16.0, 16.0, 16.0};
    tdm__v4d s = {0.0, 0.0, 0.0, 0.0};
    tdm__v4d d = {1.0, 5.0, 9.0, 13.0}; /* 2k + 1, 2k + 5, 2k + 9, 2k + 13 */
    int64_t k = 0;
    for (; k + 7 < terms; k += 8) {
        s += one / d - one / (d + two);
        d += step;
    }
    return tdm_k__pi_tail(k, (s[0] + s[1]) + (s[2] + s[3]), terms);
}
#endif

#endif /* TDM__PI_VECTORS */

/* 2: AVX2, 1: two lanes, 0: the scalar code. */
static int pi_level(void)
{
#if TDM__PI_VECTORS
    int k = tdm__simd_level();
#if defined(__x86_64__)
    if (k >= TDM__SIMD_AVX2)
        return 2;
#endif
    return k >= TDM__SIMD_SSE2 ? 1 : 0;
#else
    return 0;
#endif
}

/* The scalar code, for the table below. */
static double pi_scalar(int64_t terms)
{
    return tdm_k_pi_leibniz(terms);
}

/* One item's code at each level of pi_level(). */
static double (*const pi_one[3])(int64_t) = {
    pi_scalar,
#if TDM__PI_VECTORS
    pi_v2,
#if defined(__x86_64__)
    pi_avx2,
#else
    pi_v2, /* (never picked: pi_level() is at most 1 here) */
#endif
#else
    pi_scalar, pi_scalar, /* (never picked: pi_level() is 0 here) */
#endif
};

void tdm__pi_leibniz_cpu(const int64_t *terms_in, int64_t terms, double *y, int64_t n)
{
    double (*one)(int64_t) = pi_one[pi_level()];
    for (int64_t i = 0; i < n; i++)
        y[i] = one(terms_in ? terms_in[i] : terms);
}

const char *tdm__pi_cpu_isa(void)
{
    return tdm__simd_level_name(pi_level()); /* (pi's levels are simd_isa.h's first three) */
}
