/* SPDX-License-Identifier: MIT */
/* tandem — the built-in kernel pi_leibniz on the CPU: the kernel's four running sums
 * (builtin_kernels.h) are the four lanes of one AVX2 register, or two SSE2 registers of two
 * lanes (simd_isa.h picks), so a core runs four (two) of the kernel's divisions at a time. Each
 * lane does exactly the operations of its sum in tdm_k_pi_leibniz, in its order: every item is
 * bit-identical to the scalar code's (and to a device's, which runs that code), whatever the
 * batch. Not API. */
#ifndef TANDEM_PI_CPU_H
#define TANDEM_PI_CPU_H

#include <stdint.h>

/* y[i] = tdm_k_pi_leibniz(t_i) for i in [0, n), t_i = terms_in[i] where terms_in is not NULL,
 * else `terms` (t_i <= 0 gives 0). */
void tdm__pi_leibniz_cpu(const int64_t *terms_in, int64_t terms, double *y, int64_t n);

/* The instruction set that loop runs in here: "avx2", "sse2" ("vector128" off x86-64: the
 * compiler's generic vectors) or "scalar". */
const char *tdm__pi_cpu_isa(void);

#endif
