/* SPDX-License-Identifier: MIT */
/* CUDA backend, discovery part, through the static CUDA runtime (never -lcuda: the library
 * must load where no driver is installed). No driver, or no device, is "zero devices". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cuda_internal.h"

static int cuda_probe(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t len)
{
    *devs = NULL;
    *n = 0;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count <= 0) {
        snprintf(note, len, "no CUDA device (%s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "count is 0");
        return 0;
    }
    tdm_device_info *out = calloc((size_t)count, sizeof *out);
    if (!out)
        return tdm__err(rt, TDM_ENOMEM, "cuda probe: out of memory");
    for (int i = 0; i < count; i++) {
        tdm_device_info *di = &out[i];
        di->kind = TDM_BACKEND_CUDA;
        di->backend = "cuda";
        di->index = i;
        cudaDeviceGetAttribute(&di->compute_units, cudaDevAttrMultiProcessorCount, i);
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
            snprintf(di->name, sizeof di->name, "%.127s", prop.name);
            di->memory_bytes = prop.totalGlobalMem;
        }
        snprintf(di->vendor, sizeof di->vendor, "NVIDIA");
        di->pinned = 1; /* cudaHostRegister */
    }
    int rv = 0, dv = 0;
    cudaRuntimeGetVersion(&rv);
    cudaDriverGetVersion(&dv);
    char nvrtc[160];
    int have_nvrtc = tdm__cuda_nvrtc_available(nvrtc, sizeof nvrtc);
    /* Which image of the built-ins each device runs, from its architecture and the ones built
     * (the device's open checks it by loading them; TDM_DEBUG=runtime logs what it found). */
    char paths[96] = "";
    size_t off = 0;
    for (int i = 0; i < count && off < sizeof paths; i++) {
        int major = 0, minor = 0, image = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
        int path = tdm__cuda_builtin_image(tdm__cuda_archs_built(), major * 10 + minor, &image);
        if (path == TDM__CUDA_BUILTIN_NVRTC && !have_nvrtc)
            path = TDM__CUDA_BUILTIN_NONE;
        int w = snprintf(paths + off, sizeof paths - off, "%s%d:%s", i ? " " : "", i,
                         path == TDM__CUDA_BUILTIN_SASS    ? "sass"
                         : path == TDM__CUDA_BUILTIN_PTX   ? "ptx-jit"
                         : path == TDM__CUDA_BUILTIN_NVRTC ? "nvrtc"
                                                           : "none");
        off += w > 0 ? (size_t)w : 0;
    }
    (void)cudaGetLastError();
    *devs = out;
    *n = count;
    snprintf(note, len, "CUDA %d.%d, driver %d.%d; %s; built-ins %s", rv / 1000, (rv % 1000) / 10,
             dv / 1000, (dv % 1000) / 10, have_nvrtc ? nvrtc : "no NVRTC", paths);
    return 0;
}

const tdm__backend_ops tdm__cuda_ops = {
    .name = "cuda",
    .kind = TDM_BACKEND_CUDA,
    .runs_kernels = 1,
    .dev = &tdm__cuda_dev_ops,
    .probe = cuda_probe,
};
