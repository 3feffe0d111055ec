/* SPDX-License-Identifier: MIT */
/* tandem — which vector instruction set the built-in kernels' CPU loops use here (simd_math.c,
 * pi_cpu.c): the widest the CPU runs, picked once at the first call. TDM_SIMD=scalar|sse2|avx2
 * in the environment caps it (the tests run each set this way). Not API. */
#ifndef TANDEM_SIMD_ISA_H
#define TANDEM_SIMD_ISA_H

enum {
    TDM__SIMD_SCALAR = 0, /* no vector loops (not GCC / Clang, or TDM_SIMD=scalar) */
    TDM__SIMD_SSE2 = 1,   /* off x86-64: the compiler's generic 128-bit vectors */
    TDM__SIMD_AVX2 = 2,
    TDM__SIMD_AVX512 = 3
};

/* The level above (thread-safe; the first call reads the CPU and TDM_SIMD). */
int tdm__simd_level(void);

/* Its name: "scalar", "sse2", "avx2" or "avx512f" ("vector128" off x86-64; a static string). */
const char *tdm__simd_level_name(int level);

#endif
