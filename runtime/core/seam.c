/* SPDX-License-Identifier: MIT */
/* tandem — the seam functions that exist only for libtandem-mpi (runtime/seam.h): small
 * accessors over internal structures, so the MPI layer needs none of their definitions. */
#include "core/core.h"
#include "internal.h"
#include "sched/job.h"

void *tdm__tensor_host(const tdm_tensor *t)
{
    return tdm__tensor_ptr(t);
}

const tdm_kernel_def *tdm__kernel_def(const tdm_runtime *rt, const char *name)
{
    const tdm__kernel *k = tdm__kernel_find(rt, name);
    return k ? &k->def : NULL;
}

int tdm__runtime_procs(const tdm_runtime *rt)
{
    return tdm__procs_count(rt->procs);
}

bool tdm__job_finished(const tdm__job *job)
{
    return atomic_load_explicit(&job->done_flag, memory_order_acquire) != 0;
}
