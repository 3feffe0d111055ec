/* SPDX-License-Identifier: MIT */
/* kernels: the vectorised exp_sinh loops (kernels/simd_math.c) on each instruction set the CPU
 * has: an element's result does not depend on the batch it falls in, stays within 8 ulp of the
 * scalar libm's exp(x) * sinh(x) (each vector function is within 4 ulp; measured: 5 over
 * [-6, 6]), and special values (infinities, NaN, overflow) come out as the scalar ones do.
 * And pi_leibniz's four running sums in vector lanes (kernels/pi_cpu.c): every item
 * bit-identical to the scalar kernel's, for term counts around every multiple of the 8 terms a
 * vector step takes, and whatever the batch.
 * Each instruction set runs in a child process, which picks it from TDM_SIMD at its first call
 * (the parent never calls the loops, so each child picks afresh). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "child_test_util.h"
#include "builtin_kernels.h"
#include "pi_cpu.h"
#include "simd_math.h"

#define N 1021 /* a prime: every batch size below leaves a tail */

static const char *const isas[] = {"sse2", "avx2", ""}; /* "": the widest the CPU has */

/* Distance in units in the last place between two finite doubles of the same sign. */
static int64_t ulps64(double a, double b)
{
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    return ia > ib ? ia - ib : ib - ia;
}

static int64_t ulps32(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

/* The same class and sign: both NaN, or both the same infinity, or both finite. */
static int same_class(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    return 1;
}

/* In a child, with TDM_SIMD=isa (a string; "": unset): 0 when every check holds, else the
 * number of the one that failed. */
static int child_checks(void *arg)
{
    const char *isa = arg;
    if (isa[0])
        setenv("TDM_SIMD", isa, 1);
    else
        unsetenv("TDM_SIMD");
    static double x[N], whole[N], parts[N];
    static float xf[N], wholef[N], partsf[N];
    for (int i = 0; i < N; i++) {
        x[i] = -6.0 + 12.0 * (double)((i * 7919) % N) / N;
        xf[i] = (float)x[i];
    }
    tdm__simd_exp_sinh_f64(x, whole, N);
    tdm__simd_exp_sinh_f32(xf, wholef, N);
    static const int sizes[] = {1, 2, 3, 5, 7, 13, 16, 17, 100};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        memset(parts, 0, sizeof parts);
        memset(partsf, 0, sizeof partsf);
        for (int i = 0; i < N; i += sizes[s]) {
            int n = N - i < sizes[s] ? N - i : sizes[s];
            tdm__simd_exp_sinh_f64(x + i, parts + i, n);
            tdm__simd_exp_sinh_f32(xf + i, partsf + i, n);
        }
        if (memcmp(parts, whole, sizeof whole) != 0)
            return 1; /* an element depends on where the batch was cut */
        if (memcmp(partsf, wholef, sizeof wholef) != 0)
            return 2;
    }
    for (int i = 0; i < N; i++) {
        double want = exp(x[i]) * sinh(x[i]);
        float wantf = expf(xf[i]) * sinhf(xf[i]);
        if (want == 0.0 ? whole[i] != 0.0 : ulps64(whole[i], want) > 8)
            return 3;
        if (wantf == 0.0f ? wholef[i] != 0.0f : ulps32(wholef[i], wantf) > 8)
            return 4;
    }
    static const double special[] = {INFINITY, -INFINITY, NAN, 0.0, -0.0, 710.0, -800.0,
                                     1e-300,   -1e-300,   5e-324};
    const int ns = (int)(sizeof special / sizeof special[0]);
    double ys[16];
    float xs32[16], ys32[16];
    for (int i = 0; i < ns; i++)
        xs32[i] = (float)special[i];
    tdm__simd_exp_sinh_f64(special, ys, ns);
    tdm__simd_exp_sinh_f32(xs32, ys32, ns);
    for (int i = 0; i < ns; i++) {
        if (!same_class(ys[i], exp(special[i]) * sinh(special[i])))
            return 5;
        if (!same_class(ys32[i], expf(xs32[i]) * sinhf(xs32[i])))
            return 6;
    }
    /* in place (x and y the same array), as a map over one tensor may be */
    memcpy(parts, x, sizeof x);
    tdm__simd_exp_sinh_f64(parts, parts, N);
    if (memcmp(parts, whole, sizeof whole) != 0)
        return 7;
    return 0;
}

static void test_simd_exp_sinh_batches_ulps_and_special_values(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        /* (a failure's exit code is the number of the check in child_checks) */
        print_message("TDM_SIMD=%s\n", isas[k][0] ? isas[k] : "(unset: the widest)");
        run_in_children(1, child_checks, (void *)isas[k]);
    }
}

/* pi_leibniz in a child with TDM_SIMD=isa: 0 when every item of every batch is the scalar
 * kernel's value to the bit, else the number of the check that failed. */
static int child_pi(void *arg)
{
    const char *isa = arg;
    setenv("TDM_SIMD", isa, 1);
    /* the lanes asked for: AVX2 where the CPU has it (capped to SSE2 otherwise); off x86-64,
     * the compiler's 128-bit vectors for sse2 and avx2 */
    const char *lanes = isa;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!strcmp(isa, "avx2") && !__builtin_cpu_supports("avx2"))
        lanes = "sse2";
#else
    if (strcmp(isa, "scalar") != 0)
        lanes = "vector128";
#endif
    if (strcmp(tdm__pi_cpu_isa(), lanes) != 0)
        return 1;
    enum { NP = 203 };
    static int64_t terms[NP];
    static double want[NP], got[NP];
    /* 0 to 40 terms (every tail of a vector step), negative counts, a few thousand */
    for (int i = 0; i < NP; i++) {
        terms[i] = i <= 40 ? i : i % 17 == 3 ? -5 : (int64_t)((i * 7919) % 3001);
        want[i] = tdm_k_pi_leibniz(terms[i]);
    }
    static const int sizes[] = {1, 2, 3, 4, 5, 7, 8, 64, NP};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        memset(got, 0, sizeof got);
        for (int i = 0; i < NP; i += sizes[s])
            tdm__pi_leibniz_cpu(terms + i, 0, got + i, NP - i < sizes[s] ? NP - i : sizes[s]);
        if (memcmp(got, want, sizeof want) != 0)
            return 2;
    }
    /* one count for every item (the map's parameter), odd and even, and none */
    static const int64_t counts[] = {0, 1, 2, 3, 1000, 1001, 99999};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        double w = tdm_k_pi_leibniz(counts[c]);
        tdm__pi_leibniz_cpu(NULL, counts[c], got, 9);
        for (int i = 0; i < 9; i++)
            if (memcmp(&got[i], &w, sizeof w) != 0)
                return 3;
    }
    if (fabs(want[100] - 3.14159265) > 1e-2 || want[0] != 0.0 || want[1] != 4.0)
        return 4; /* (the reference itself is pi) */
    return 0;
}

static void test_simd_pi_lanes_bit_identical_to_the_scalar_kernel(void **state)
{
    (void)state;
    static const char *const pi_isas[] = {"scalar", "sse2", "avx2"};
    for (size_t k = 0; k < sizeof pi_isas / sizeof pi_isas[0]; k++) {
        print_message("TDM_SIMD=%s\n", pi_isas[k]);
        run_in_children(1, child_pi, (void *)pi_isas[k]);
    }
}

/* The instruction set in use is named, and TDM_SIMD caps it. */
static int child_isa_capped(void *arg)
{
    (void)arg;
    setenv("TDM_SIMD", "sse2", 1);
    const char *isa = tdm__simd_math_isa();
    return strcmp(isa, "sse2") == 0 || strcmp(isa, "scalar") == 0 ? 0 : 1;
}

static void test_simd_isa_named_and_capped(void **state)
{
    (void)state;
    run_in_children(1, child_isa_capped, NULL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simd_exp_sinh_batches_ulps_and_special_values),
        cmocka_unit_test(test_simd_pi_lanes_bit_identical_to_the_scalar_kernel),
        cmocka_unit_test(test_simd_isa_named_and_capped),
    };
    return TDM_TEST_MAIN("kernels", tests);
}
