/* SPDX-License-Identifier: MIT */
/* The table of backends compiled into this build. Adding a backend = one line here plus its
 * folder under backends/. */
#include "internal.h"

extern const tdm__backend_ops tdm__cpu_threads_ops;
extern const tdm__backend_ops tdm__cpu_procs_ops;
#if TDM_HAVE_OPENCL
extern const tdm__backend_ops tdm__opencl_ops;
#endif
#if TDM_HAVE_CUDA
extern const tdm__backend_ops tdm__cuda_ops;
#endif

const tdm__backend_ops *const tdm__backend_table[] = {
    &tdm__cpu_threads_ops,
    &tdm__cpu_procs_ops,
#if TDM_HAVE_OPENCL
    &tdm__opencl_ops,
#endif
#if TDM_HAVE_CUDA
    &tdm__cuda_ops,
#endif
    NULL,
};

const char *tdm_backend_kind_name(tdm_backend_kind kind)
{
    static const char *const names[TDM_BACKEND_KIND_COUNT] = {"cpu", "procs", "opencl", "cuda",
                                                              "sim"};
    if ((int)kind < 0 || kind >= TDM_BACKEND_KIND_COUNT)
        return "unknown";
    return names[kind];
}

int tdm_backend_count(void)
{
    return TDM_BACKEND_KIND_COUNT;
}
