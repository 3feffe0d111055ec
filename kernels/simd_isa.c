/* SPDX-License-Identifier: MIT */
/* The vector instruction set of the built-in kernels' CPU loops (see simd_isa.h). */
#include "simd_isa.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* level + 1 once picked; 0 before the first call. */
static atomic_int picked;

int tdm__simd_level(void)
{
    int k = atomic_load_explicit(&picked, memory_order_relaxed);
    if (k)
        return k - 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    k = __builtin_cpu_supports("avx512f") ? TDM__SIMD_AVX512
        : __builtin_cpu_supports("avx2")  ? TDM__SIMD_AVX2
                                          : TDM__SIMD_SSE2;
#elif defined(__GNUC__) || defined(__clang__)
    k = TDM__SIMD_SSE2; /* 128-bit generic vectors: the compiler's lowering for this target */
#else
    k = TDM__SIMD_SCALAR;
#endif
    const char *cap = getenv("TDM_SIMD"); /* (tests run each instruction set this way) */
    if (cap && !strcmp(cap, "scalar"))
        k = TDM__SIMD_SCALAR;
    else if (cap && !strcmp(cap, "sse2") && k > TDM__SIMD_SSE2)
        k = TDM__SIMD_SSE2;
    else if (cap && !strcmp(cap, "avx2") && k > TDM__SIMD_AVX2)
        k = TDM__SIMD_AVX2;
    atomic_store_explicit(&picked, k + 1, memory_order_relaxed);
    return k;
}

const char *tdm__simd_level_name(int level)
{
#if defined(__x86_64__)
    static const char *const names[4] = {"scalar", "sse2", "avx2", "avx512f"};
#else
    static const char *const names[4] = {"scalar", "vector128", "vector128", "vector128"};
#endif
    return level >= 0 && level < 4 ? names[level] : "scalar";
}
