/* SPDX-License-Identifier: MIT */
/* CUDA backend, the built-in kernels: the entry points nvcc compiled into the library
 * (kernels/builtin_kernels.cu), and which of their images a device runs — SASS for its
 * architecture, PTX the driver JIT-compiles, or, when the library has no image the device can
 * load, the built-in source compiled with NVRTC (launch.c does that). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"

/* ---- the built-in entry points (kernels/builtin_kernels.cu, compiled by nvcc) ----------------
 * Their host stubs, declared with the signatures nvcc gave them (extern "C", so unmangled;
 * tdm_idx / tdm_i64 are long long in the CUDA dialect). Only their addresses are used: they are
 * the handles cudaLaunchKernel takes for kernels compiled into the program. */
#include "builtin_kernels.h" /* tdm_k_normalize_params (its helpers are unused static inlines) */

void tdm_exp_sinh_f32(const float *, float *, long long, long long);
void tdm_exp_sinh_f64(const double *, double *, long long, long long);
void tdm_axpy_f32(const float *, const float *, float *, float, long long, long long);
void tdm_axpy_f64(const double *, const double *, double *, double, long long, long long);
void tdm_scale_shift_f32(const float *, float *, float, float, long long, long long);
void tdm_scale_shift_f64(const double *, double *, double, double, long long, long long);
void tdm_normalize_u8(const unsigned char *, const unsigned char *, float *, tdm_k_normalize_params,
                      long long, long long, int, long long, long long);
void tdm_sum_f32(const float *, float *, long long, long long, long long);
void tdm_sum_f64(const double *, double *, long long, long long, long long);
void tdm_mean_f32(const float *, float *, long long, long long, long long);
void tdm_mean_f64(const double *, double *, long long, long long, long long);
void tdm_sumsq_f32(const float *, float *, long long, long long, long long);
void tdm_sumsq_f64(const double *, double *, long long, long long, long long);
void tdm_pi_leibniz(const long long *, double *, long long, long long, long long);
/* kernels/train_kernels.h (tdm_linear_f32 and the two gradients are tiled: 2-D launches) */
void tdm_linear_f32(const float *, const float *, const float *, float *, long long, long long, int,
                    long long, long long);
void tdm_linear_grad_x_f32(const float *, const float *, const float *, float *, long long,
                           long long, long long, long long);
void tdm_linear_grad_w_f32(const float *, const float *, float *, long long, long long, long long,
                           long long, long long, long long);
void tdm_colsum_f32(const float *, float *, long long, long long, long long, long long, long long);
void tdm_softmax_xent_f32(const float *, const int *, float *, float *, int *, long long, float,
                          long long, long long);
void tdm_sgd_momentum_f32(const float *, const float *, const float *, float *, float *, float,
                          float, float, long long, long long);
void tdm_adam_f32(const float *, const float *, const float *, const float *, float *, float *,
                  float *, float, float, float, float, float, float, float, long long, long long);

typedef struct builtin_entry {
    const char *name;
    const void *stub;
} builtin_entry;

/* clang-format off */
#define BUILTIN(f) {#f, (const void *)f}
static const builtin_entry g_builtins[] = {
    BUILTIN(tdm_exp_sinh_f32), BUILTIN(tdm_exp_sinh_f64),    BUILTIN(tdm_axpy_f32),
    BUILTIN(tdm_axpy_f64),     BUILTIN(tdm_scale_shift_f32), BUILTIN(tdm_scale_shift_f64),
    BUILTIN(tdm_normalize_u8), BUILTIN(tdm_sum_f32),         BUILTIN(tdm_sum_f64),
    BUILTIN(tdm_mean_f32),     BUILTIN(tdm_mean_f64),        BUILTIN(tdm_sumsq_f32),
    BUILTIN(tdm_sumsq_f64),    BUILTIN(tdm_pi_leibniz),
    BUILTIN(tdm_linear_f32),   BUILTIN(tdm_linear_grad_x_f32), BUILTIN(tdm_linear_grad_w_f32),
    BUILTIN(tdm_colsum_f32),   BUILTIN(tdm_softmax_xent_f32),  BUILTIN(tdm_sgd_momentum_f32),
    BUILTIN(tdm_adam_f32),
};
#undef BUILTIN
/* clang-format on */
#define N_BUILTINS ((int)(sizeof g_builtins / sizeof g_builtins[0]))
_Static_assert(sizeof g_builtins / sizeof g_builtins[0] == TDM__CUDA_N_BUILTINS,
               "TDM__CUDA_N_BUILTINS (cuda_dev.h) is the size of g_builtins");

void tdm__cuda_builtins_init(tdm__dev *d)
{
    for (int i = 0; i < N_BUILTINS; i++) {
        d->builtin[i].fn = g_builtins[i].stub;
        d->builtin[i].n_params = -1;
    }
}

int tdm__cuda_builtin_find(const char *entry)
{
    for (int i = 0; i < N_BUILTINS; i++)
        if (strcmp(g_builtins[i].name, entry) == 0)
            return i;
    return -1;
}

/* ---- which image of the built-ins a device runs ----------------------------------------------
 * TDM_CUDA_ARCHS is CMAKE_CUDA_ARCHITECTURES with commas ("80-real,86-real,90-real,90-virtual"
 * or "90"; a bare number is both). The loader takes a SASS image of the device's major version
 * and a minor version at most the device's (binary compatibility), else JIT-compiles the newest
 * PTX image at most the device's architecture; with neither, cudaErrorNoKernelImageForDevice,
 * and the backend builds the built-in source with NVRTC instead. */
#ifndef TDM_CUDA_ARCHS
#define TDM_CUDA_ARCHS ""
#endif

const char *tdm__cuda_archs_built(void)
{
    return TDM_CUDA_ARCHS;
}

int tdm__cuda_builtin_image(const char *archs, int arch, int *image)
{
    int sass = 0, ptx = 0;
    for (const char *p = archs; *p;) {
        char *end = NULL;
        long a = strtol(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        bool real = true, virt = true;
        if (!strncmp(end, "-real", 5)) {
            virt = false;
            end += 5;
        } else if (!strncmp(end, "-virtual", 8)) {
            real = false;
            end += 8;
        }
        if (real && a / 10 == arch / 10 && a <= arch && a > sass)
            sass = (int)a;
        if (virt && a <= arch && a > ptx)
            ptx = (int)a;
        p = end;
    }
    *image = sass ? sass : ptx;
    return sass ? TDM__CUDA_BUILTIN_SASS : ptx ? TDM__CUDA_BUILTIN_PTX : TDM__CUDA_BUILTIN_NVRTC;
}

const char *tdm__cuda_builtin_path_name(int path)
{
    switch (path) {
    case TDM__CUDA_BUILTIN_SASS:
        return "SASS";
    case TDM__CUDA_BUILTIN_PTX:
        return "PTX JIT";
    case TDM__CUDA_BUILTIN_NVRTC:
        return "NVRTC";
    default:
        return "none";
    }
}

int tdm__cuda_builtins_check(tdm__dev *d, char *note, size_t len)
{
    int image = 0;
    int path = tdm__cuda_builtin_image(TDM_CUDA_ARCHS, d->arch, &image);
    /* Loads the module for this device now (lazy loading would otherwise do it at the first
     * launch): the truth, where the prediction above may be wrong (a driver too old for the
     * PTX, say). */
    struct cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, g_builtins[0].stub);
    if (e != cudaSuccess) {
        int rc = tdm__cuda_map_error(e);
        (void)cudaGetLastError();
        if (rc != TDM_EKERNEL)
            return tdm__cuda_fail(e, "cudaFuncGetAttributes (built-in kernels)", note, len);
        char why[160];
        path = tdm__cuda_nvrtc_available(why, sizeof why) ? TDM__CUDA_BUILTIN_NVRTC
                                                          : TDM__CUDA_BUILTIN_NONE;
        tdm__cuda_set_detail(note, len, "no built-in image loads on sm_%d (%s): %s%s", d->arch,
                             cudaGetErrorName(e),
                             path == TDM__CUDA_BUILTIN_NVRTC ? "built with NVRTC, " : "", why);
    } else if (path == TDM__CUDA_BUILTIN_NVRTC) {
        path = TDM__CUDA_BUILTIN_PTX; /* it loaded all the same */
        tdm__cuda_set_detail(note, len, "built-ins: an image loaded on sm_%d (PTX %d)", d->arch,
                             fa.ptxVersion);
    } else {
        tdm__cuda_set_detail(note, len, "built-ins: %s %s_%d", tdm__cuda_builtin_path_name(path),
                             path == TDM__CUDA_BUILTIN_SASS ? "sm" : "compute", image);
    }
    d->builtin_path = path;
    return 0;
}
