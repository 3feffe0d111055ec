/* SPDX-License-Identifier: MIT */
/* CUDA backend, kernels: the built-in entry points compiled by nvcc, programs built at run time
 * with NVRTC and cached per device, argument checks, 1-D and 2-D launches. See the comment at
 * the top of device.c. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"

extern const char tdm__builtin_kernel_source[]; /* generated from kernels/ by CMakeLists.txt */

void tdm__cuda_program_free(program *p)
{
    while (p->kernels) {
        ukernel *k = p->kernels;
        p->kernels = k->next;
        free(k->name);
        free(k);
    }
    if (p->lib)
        cudaLibraryUnload(p->lib);
    free(p->key);
    free(p->log);
    free(p);
}

/* ---- kernels --------------------------------------------------------------------------------- */

/* Learns the parameter list of k once (cudaFuncGetParamInfo, CUDA >= 12.4). */
static void kinfo_learn(kinfo *k)
{
    if (k->n_params != -1)
        return;
    int n = 0;
    for (; n <= TDM__CUDA_MAX_ARGS; n++) {
        size_t off = 0, size = 0;
        cudaError_t e = cudaFuncGetParamInfo(k->fn, (size_t)n, &off, &size);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            /* cudaErrorInvalidValue: index n is past the last parameter (n == 0: the entry has
             * none), so launches are checked against n. Any other error (no image for the
             * device, a dead context) is not a parameter list: the launch itself reports it.
             * The static runtime this is built with needs a driver that has this call, so
             * "cannot tell" is not a case. */
            if (e != cudaErrorInvalidValue) {
                k->n_params = -1; /* asked again at the next launch */
                return;
            }
            break;
        }
        if (n < TDM__CUDA_MAX_ARGS)
            k->psize[n] = (uint16_t)(size > 0xffff ? 0xffff : size);
    }
    k->n_params = n;
}

static int check_args(const kinfo *k, const char *entry, const tdm__karg *args, int n_args,
                      char *detail, size_t len)
{
    if (k->n_params < 0)
        return 0;
    if (k->n_params != n_args) {
        tdm__cuda_set_detail(detail, len, "cuda launch: %s takes %d arguments, %d given", entry,
                             k->n_params, n_args);
        return TDM_EINVAL;
    }
    for (int i = 0; i < n_args; i++) {
        size_t want = k->psize[i];
        size_t got = args[i].kind == TDM__KARG_VALUE ? args[i].size : sizeof(void *);
        if (want != got) {
            tdm__cuda_set_detail(detail, len,
                                 "cuda launch: argument %d of %s is %zu bytes, %zu given", i, entry,
                                 want, got);
            return TDM_EINVAL;
        }
    }
    return 0;
}

/* The program cached under key, built now if absent (caller holds d->mu). */
static program *program_get(tdm__dev *d, const char *key, const char *source, int *rc, char *detail,
                            size_t len)
{
    for (program *p = d->programs; p; p = p->next) {
        if (strcmp(p->key, key) == 0) {
            if (p->rc < 0) {
                tdm__cuda_set_detail(detail, len, "%s", p->log ? p->log : "program did not build");
                *rc = p->rc;
                return NULL;
            }
            return p;
        }
    }
    if (!source) {
        tdm__cuda_set_detail(detail, len, "cuda launch: no source for program %s", key);
        *rc = TDM_EINVAL;
        return NULL;
    }
    program *p = calloc(1, sizeof *p);
    if (!p || !(p->key = strdup(key))) {
        free(p);
        tdm__cuda_set_detail(detail, len, "cuda launch: out of memory");
        *rc = TDM_ENOMEM;
        return NULL;
    }
    int cubin = 0, arch = 0;
    char why[160];
    if (!tdm__cuda_nvrtc_available(why, sizeof why)) {
        p->rc = TDM_EKERNEL;
        tdm__cuda_set_detail(detail, len, "program %s cannot be built: %s", key, why);
    } else if ((arch = tdm__cuda_nvrtc_pick_arch(d->arch, &cubin)) == 0) {
        p->rc = TDM_EKERNEL;
        int ma = 0, mi = 0;
        tdm__cuda_nvrtc_version(&ma, &mi);
        tdm__cuda_set_detail(detail, len, "program %s: NVRTC %d.%d cannot compile for sm_%d", key,
                             ma, mi, d->arch);
    } else {
        char *code = NULL;
        size_t code_len = 0;
        p->rc = tdm__cuda_nvrtc_compile(source, key, arch, cubin, &code, &code_len, detail, len);
        if (p->rc == 0) {
            cudaError_t e = cudaLibraryLoadData(&p->lib, code, NULL, NULL, 0, NULL, NULL, 0);
            if (e != cudaSuccess) {
                p->lib = NULL;
                char what[128];
                snprintf(what, sizeof what, "cudaLibraryLoadData(%s, %s for sm_%d)", key,
                         cubin ? "CUBIN" : "PTX", arch);
                p->rc = tdm__cuda_fail(e, what, detail, len);
                if (p->rc == TDM_ESYS)
                    p->rc = TDM_EKERNEL;
            }
        }
        free(code);
    }
    if (p->rc < 0 && p->rc != TDM_ENOMEM) {
        p->log = detail ? strdup(detail) : NULL; /* a failed build is not retried for this key */
        *rc = p->rc;
        p->next = d->programs;
        d->programs = p;
        return NULL;
    }
    if (p->rc < 0) {
        *rc = p->rc;
        tdm__cuda_program_free(p);
        return NULL;
    }
    p->next = d->programs;
    d->programs = p;
    return p;
}

static kinfo *user_kernel(tdm__dev *d, const char *key, const char *source, const char *entry,
                          int *rc, char *detail, size_t len)
{
    program *p = program_get(d, key, source, rc, detail, len);
    if (!p)
        return NULL;
    for (ukernel *k = p->kernels; k; k = k->next) {
        if (strcmp(k->name, entry) == 0)
            return &k->ki;
    }
    cudaKernel_t kern = NULL;
    cudaError_t e = cudaLibraryGetKernel(&kern, p->lib, entry);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        tdm__cuda_set_detail(detail, len, "cuda launch: program %s has no entry point %s (%s)", key,
                             entry, cudaGetErrorName(e));
        *rc = TDM_ENOTFOUND;
        return NULL;
    }
    ukernel *k = calloc(1, sizeof *k);
    if (!k || !(k->name = strdup(entry))) {
        free(k);
        tdm__cuda_set_detail(detail, len, "cuda launch: out of memory");
        *rc = TDM_ENOMEM;
        return NULL;
    }
    k->ki.fn = (const void *)kern; /* cudaLaunchKernel takes a cudaKernel_t cast so */
    k->ki.n_params = -1;
    k->next = p->kernels;
    p->kernels = k;
    return &k->ki;
}

/* The kernel `entry` (a built-in or, under another key, of `source` built with NVRTC) with its
 * arguments checked and laid out for cudaLaunchKernel in params[] (pointing into ptrs[] and
 * args[]): what both launches do first. */
static int cuda_bind(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, kinfo **out, void **ptrs, void **params,
                     char *detail, size_t len)
{
    int rc = tdm__cuda_check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if ((rc = tdm__cuda_set_device(d, detail, len)) < 0)
        return rc;
    if ((rc = tdm__devhealth_enter(&d->health, TDM__FAULT_LAUNCH, detail, len)) < 0)
        return rc;
    kinfo *k = NULL;
    pthread_mutex_lock(&d->mu);
    if (strcmp(key, "builtin") == 0) {
        int i = tdm__cuda_builtin_find(entry);
        if (i < 0) {
            tdm__cuda_set_detail(detail, len, "cuda launch: no built-in entry point %s", entry);
            rc = TDM_ENOTFOUND;
        } else if (d->builtin_path == TDM__CUDA_BUILTIN_NVRTC) {
            /* No image of the library's loads on this device: the same source through NVRTC,
             * built once per device. */
            k = user_kernel(d, "builtin (NVRTC)", tdm__builtin_kernel_source, entry, &rc, detail,
                            len);
        } else {
            k = &d->builtin[i];
        }
    } else {
        k = user_kernel(d, key, source, entry, &rc, detail, len);
    }
    if (k)
        kinfo_learn(k);
    pthread_mutex_unlock(&d->mu);
    if (!k)
        return rc;
    if ((rc = check_args(k, entry, args, n_args, detail, len)) < 0)
        return rc;
    for (int i = 0; i < n_args; i++) {
        switch (args[i].kind) {
        case TDM__KARG_BUF:
            if (!args[i].buf) {
                tdm__cuda_set_detail(detail, len, "cuda launch: argument %d of %s: no buffer", i,
                                     entry);
                return TDM_EINVAL;
            }
            ptrs[i] = args[i].buf->ptr;
            params[i] = &ptrs[i];
            break;
        case TDM__KARG_NULL:
            ptrs[i] = NULL;
            params[i] = &ptrs[i];
            break;
        case TDM__KARG_VALUE:
            if (args[i].size == 0 || args[i].size > sizeof args[i].value) {
                tdm__cuda_set_detail(detail, len, "cuda launch: argument %d of %s: %u-byte value",
                                     i, entry, args[i].size);
                return TDM_EINVAL;
            }
            params[i] = (void *)args[i].value; /* cudaLaunchKernel copies it; never written */
            break;
        default:
            tdm__cuda_set_detail(detail, len, "cuda launch: argument %d of %s: unknown kind", i,
                                 entry);
            return TDM_EINVAL;
        }
    }
    *out = k;
    return 0;
}

static int cuda_enqueue(tdm__dev *d, int q, const kinfo *k, const char *entry,
                        const tdm__karg *args, int n_args, void **params, dim3 grid, dim3 block,
                        char *detail, size_t len)
{
    cudaError_t e = cudaLaunchKernel(k->fn, grid, block, params, 0, d->q[q].stream);
    if (e != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaLaunchKernel(%.64s)", entry);
        return tdm__cuda_dev_fail(d, e, what, detail, len);
    }
    for (int i = 0; i < n_args; i++) {
        if (args[i].kind == TDM__KARG_BUF)
            args[i].buf->used_queues |= 1u << q;
    }
    return 0;
}

/* A built-in found to have no image for the device only at its launch (TDM_EKERNEL: no kernel
 * image, a PTX the driver cannot JIT): the built-ins of d go to NVRTC from now on, and the
 * launch is tried again, once. */
static bool builtins_to_nvrtc(tdm__dev *d, const char *key, int rc)
{
    char why[160];
    if (rc != TDM_EKERNEL || strcmp(key, "builtin") != 0 ||
        d->builtin_path == TDM__CUDA_BUILTIN_NVRTC || !tdm__cuda_nvrtc_available(why, sizeof why))
        return false;
    pthread_mutex_lock(&d->mu);
    d->builtin_path = TDM__CUDA_BUILTIN_NVRTC;
    pthread_mutex_unlock(&d->mu);
    return true;
}

static int launch_1d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    if (!key || !entry || n_args < 0 || n_args > TDM__CUDA_MAX_ARGS || (n_args && !args) ||
        global < 0) {
        tdm__cuda_set_detail(detail, len,
                             "cuda launch: bad arguments (key, entry, %d args, global %lld)",
                             n_args, (long long)global);
        return TDM_EINVAL;
    }
    kinfo *k = NULL;
    void *ptrs[TDM__CUDA_MAX_ARGS];
    void *params[TDM__CUDA_MAX_ARGS];
    int rc = cuda_bind(d, q, key, source, entry, args, n_args, &k, ptrs, params, detail, len);
    if (rc < 0)
        return rc;
    if (global == 0)
        return 0;
    /* Grid-stride entries: enough blocks to cover the items, at most 32 per SM (a full device
     * several times over; each thread then loops). */
    int64_t blocks = (global + TDM__CUDA_BLOCK - 1) / TDM__CUDA_BLOCK;
    int64_t max_blocks = (int64_t)d->sms * TDM__CUDA_BLOCKS_PER_SM;
    if (blocks > max_blocks)
        blocks = max_blocks;
    dim3 grid = {(unsigned)blocks, 1, 1};
    dim3 block = {TDM__CUDA_BLOCK, 1, 1};
    return cuda_enqueue(d, q, k, entry, args, n_args, params, grid, block, detail, len);
}

/* A 2-D launch: blocks of exactly r->local (blockDim), as many as cover r->size (gridDim),
 * at most TDM__CUDA_GRID_CAP per dimension (gridDim.y's limit; the tiled entries loop over
 * their tiles by block index). A block larger than the entry allows (__launch_bounds__, its
 * registers: cudaFuncGetAttributes) is TDM_EINVAL with the reason. */
static int launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                     size_t len)
{
    if (!key || !entry || n_args < 0 || n_args > TDM__CUDA_MAX_ARGS || (n_args && !args) || !r ||
        r->size[0] < 0 || r->size[1] < 0 || r->local[0] < 1 || r->local[1] < 1 ||
        (uint64_t)r->local[0] * r->local[1] > 1024) {
        tdm__cuda_set_detail(detail, len,
                             "cuda launch_2d: bad arguments (key, entry, %d args, range)", n_args);
        return TDM_EINVAL;
    }
    kinfo *k = NULL;
    void *ptrs[TDM__CUDA_MAX_ARGS];
    void *params[TDM__CUDA_MAX_ARGS];
    int rc = cuda_bind(d, q, key, source, entry, args, n_args, &k, ptrs, params, detail, len);
    if (rc < 0)
        return rc;
    struct cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, k->fn) != cudaSuccess) {
        (void)cudaGetLastError(); /* cannot tell: the launch itself will say */
    } else if ((uint64_t)r->local[0] * r->local[1] > (uint64_t)fa.maxThreadsPerBlock) {
        tdm__cuda_set_detail(detail, len,
                             "cuda launch_2d: %s runs at most %d threads per block, %ux%u asked",
                             entry, fa.maxThreadsPerBlock, r->local[0], r->local[1]);
        return TDM_EINVAL;
    }
    if (r->size[0] == 0 || r->size[1] == 0)
        return 0;
    unsigned g[2];
    for (int i = 0; i < 2; i++) {
        uint64_t blocks = ((uint64_t)r->size[i] + r->local[i] - 1) / r->local[i];
        g[i] = (unsigned)(blocks > TDM__CUDA_GRID_CAP ? TDM__CUDA_GRID_CAP : blocks);
    }
    dim3 grid = {g[0], g[1], 1};
    dim3 block = {r->local[0], r->local[1], 1};
    return cuda_enqueue(d, q, k, entry, args, n_args, params, grid, block, detail, len);
}

int tdm__cuda_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    int rc = launch_1d(d, q, key, source, entry, args, n_args, global, detail, len);
    if (builtins_to_nvrtc(d, key, rc))
        rc = launch_1d(d, q, key, source, entry, args, n_args, global, detail, len);
    return rc;
}

int tdm__cuda_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                        const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                        size_t len)
{
    int rc = launch_2d(d, q, key, source, entry, args, n_args, r, detail, len);
    if (builtins_to_nvrtc(d, key, rc))
        rc = launch_2d(d, q, key, source, entry, args, n_args, r, detail, len);
    return rc;
}
