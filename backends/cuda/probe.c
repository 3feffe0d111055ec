/* CUDA backend, discovery part, through the static CUDA runtime (never -lcuda: the library
 * must load where no driver is installed). No driver, or no device, is "zero devices". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "sched/device.h"

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
    int rv = 0;
    cudaRuntimeGetVersion(&rv);
    *devs = out;
    *n = count;
    snprintf(note, len, "CUDA runtime %d.%d; built-in kernels for sm_90 + PTX, NVRTC for others",
             rv / 1000, (rv % 1000) / 10);
    return 0;
}

const tdm__backend_ops tdm__cuda_ops = {
    .name = "cuda",
    .kind = TDM_BACKEND_CUDA,
    .runs_kernels = 1,
    .dev = &tdm__cuda_dev_ops,
    .probe = cuda_probe,
};
