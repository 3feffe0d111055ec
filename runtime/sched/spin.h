/* SPDX-License-Identifier: MIT */
/* tandem — bounded spinning before blocking. Not API. */
#ifndef TANDEM_SPIN_H
#define TANDEM_SPIN_H

#include <sched.h>

#include "internal.h"

/* How long a thread that runs out of work (or waits for a job) spins before it sleeps. Short
 * enough that an idle runtime costs nothing measurable, long enough to bridge the gap between
 * two maps issued back to back. */
#define TDM__SPIN_NS 50000u

static inline void tdm__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spins while *v == old, at most max_ns; yields the CPU now and then so a spinning worker never
 * keeps a runnable thread (the caller, say) off a core. */
static inline void tdm__spin_while_equal(atomic_uint *v, unsigned old, uint64_t max_ns)
{
    uint64_t end = tdm__now_ns() + max_ns;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(v, memory_order_relaxed) != old)
            return;
        tdm__cpu_relax();
        if ((i & 63) == 0) {
            if (tdm__now_ns() >= end)
                return;
            sched_yield();
        }
    }
}

/* Spins until *flag != 0, at most max_ns. */
static inline void tdm__spin_until_set(atomic_int *flag, uint64_t max_ns)
{
    uint64_t end = tdm__now_ns() + max_ns;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(flag, memory_order_acquire))
            return;
        tdm__cpu_relax();
        if ((i & 63) == 0) {
            if (tdm__now_ns() >= end)
                return;
            sched_yield();
        }
    }
}

#endif
