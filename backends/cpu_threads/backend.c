/* SPDX-License-Identifier: MIT */
/* The CPU thread backend's entry in the backend table: one device, the pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int cpu_probe(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t len)
{
    tdm_device_info *d = calloc(1, sizeof *d);
    if (!d)
        return tdm__err(rt, TDM_ENOMEM, "cpu probe: out of memory");
    tdm_system_info si;
    tdm_system_info_get(&si);
    d->kind = TDM_BACKEND_CPU_THREADS;
    d->backend = "cpu";
    d->index = 0;
    snprintf(d->name, sizeof d->name, "CPU threads");
    snprintf(d->vendor, sizeof d->vendor, "host");
    d->compute_units = rt->threads;
    d->memory_bytes = si.memory_bytes;
    *devs = d;
    *n = 1;
    snprintf(note, len, "%d worker thread(s) on %d usable core(s)", rt->threads, si.usable_cores);
    return 0;
}

const tdm__backend_ops tdm__cpu_threads_ops = {
    .name = "cpu",
    .kind = TDM_BACKEND_CPU_THREADS,
    .runs_kernels = 1,
    .probe = cpu_probe,
};
