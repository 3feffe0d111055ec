/* SPDX-License-Identifier: MIT */
/* The worker-process backend's entry in the backend table: one device, the process pool. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int procs_probe(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t len)
{
    *devs = NULL;
    *n = 0;
    if (rt->cfg.procs <= 0) {
        snprintf(note, len, "no worker processes (config.procs / TDM_NUM_PROCS is 0)");
        return 0;
    }
    tdm_device_info *d = calloc(1, sizeof *d);
    if (!d)
        return tdm__err(rt, TDM_ENOMEM, "procs probe: out of memory");
    tdm_system_info si;
    tdm_system_info_get(&si);
    d->kind = TDM_BACKEND_CPU_PROCS;
    d->backend = "procs";
    snprintf(d->name, sizeof d->name, "CPU worker processes");
    snprintf(d->vendor, sizeof d->vendor, "host");
    d->compute_units = rt->cfg.procs;
    d->memory_bytes = si.memory_bytes;
    *devs = d;
    *n = 1;
    snprintf(note, len, "%d forked worker process(es), tensors shared through one memfd arena",
             rt->cfg.procs);
    return 0;
}

const tdm__backend_ops tdm__cpu_procs_ops = {
    .name = "procs",
    .kind = TDM_BACKEND_CPU_PROCS,
    .runs_kernels = 1,
    .probe = procs_probe,
};
