/* SPDX-License-Identifier: MIT */
/* OpenCL backend, discovery part: platforms and devices through the ICD loader (the device
 * layer is backends/opencl/device.c). Finding no platform or no device is "zero devices",
 * never an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CL/cl.h>

#include "ocl_internal.h"
#include "sched/device.h"

static int ocl_probe(tdm_runtime *rt, tdm_device_info **devs, int *n, char *note, size_t len)
{
    *devs = NULL;
    *n = 0;
    cl_uint n_plat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &n_plat);
    if (tdm__cl_load_error()) {
        snprintf(note, len, "no OpenCL ICD loader: %s", tdm__cl_load_error());
        return 0;
    }
    if (err != CL_SUCCESS || n_plat == 0) {
        snprintf(note, len, "no OpenCL platform (clGetPlatformIDs: %d)", (int)err);
        return 0;
    }
    cl_platform_id *plats = calloc(n_plat, sizeof *plats);
    if (!plats)
        return tdm__err(rt, TDM_ENOMEM, "opencl probe: out of memory");
    clGetPlatformIDs(n_plat, plats, NULL);
    int total = 0, cap = 0;
    tdm_device_info *out = NULL;
    for (cl_uint p = 0; p < n_plat; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || !nd)
            continue;
        cl_device_id *ids = calloc(nd, sizeof *ids);
        if (!ids)
            break;
        clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL);
        for (cl_uint d = 0; d < nd; d++) {
            if (total == cap) {
                int ncap = cap ? cap * 2 : 4;
                tdm_device_info *grown = realloc(out, (size_t)ncap * sizeof *grown);
                if (!grown)
                    break;
                out = grown;
                cap = ncap;
            }
            tdm_device_info *di = &out[total];
            memset(di, 0, sizeof *di);
            di->kind = TDM_BACKEND_OPENCL;
            di->backend = "opencl";
            di->index = total;
            cl_uint cu = 0;
            cl_ulong mem = 0;
            clGetDeviceInfo(ids[d], CL_DEVICE_NAME, sizeof di->name - 1, di->name, NULL);
            clGetDeviceInfo(ids[d], CL_DEVICE_VENDOR, sizeof di->vendor - 1, di->vendor, NULL);
            clGetDeviceInfo(ids[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
            clGetDeviceInfo(ids[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
            di->compute_units = (int)cu;
            cl_device_type type = 0;
            clGetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            di->host_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
            di->pinned = 1; /* page-locked tensors registered (USE_HOST_PTR, mapped): device.c */
            di->memory_bytes = mem;
            total++;
        }
        free(ids);
    }
    free(plats);
    *devs = out;
    *n = total;
    snprintf(note, len, "%u platform(s); kernels built at run time from the dialect source",
             n_plat);
    return 0;
}

const tdm__backend_ops tdm__opencl_ops = {
    .name = "opencl",
    .kind = TDM_BACKEND_OPENCL,
    .runs_kernels = 1,
    .dev = &tdm__opencl_dev_ops,
    .probe = ocl_probe,
};
