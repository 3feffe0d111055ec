/* SPDX-License-Identifier: MIT */
/* CUDA backend, NVRTC part: libnvrtc loaded with dlopen on first use (never linked: a program
 * linked to it does not start where it is absent), user kernels and the dialect compiled to a
 * CUBIN or PTX for a device's architecture. See cuda_internal.h. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h> /* CUDART_VERSION */
#include <nvrtc.h>            /* types only: the functions are resolved with dlsym */

#include "cuda_dev.h"

/* ---- NVRTC, loaded on first use ------------------------------------------------------------- */

typedef nvrtcResult (*nvrtc_version_fn)(int *, int *);
typedef nvrtcResult (*nvrtc_num_archs_fn)(int *);
typedef nvrtcResult (*nvrtc_archs_fn)(int *);
typedef nvrtcResult (*nvrtc_create_fn)(nvrtcProgram *, const char *, const char *, int,
                                       const char *const *, const char *const *);
typedef nvrtcResult (*nvrtc_destroy_fn)(nvrtcProgram *);
typedef nvrtcResult (*nvrtc_compile_fn)(nvrtcProgram, int, const char *const *);
typedef nvrtcResult (*nvrtc_size_fn)(nvrtcProgram, size_t *);
typedef nvrtcResult (*nvrtc_get_fn)(nvrtcProgram, char *);
typedef const char *(*nvrtc_errstr_fn)(nvrtcResult);

static struct {
    pthread_once_t once;
    bool ok;
    char why[256];
    char lib[128]; /* the library loaded */
    int major, minor;
    int archs[64];
    int n_archs;
    nvrtc_version_fn version;
    nvrtc_num_archs_fn num_archs;
    nvrtc_archs_fn get_archs;
    nvrtc_create_fn create;
    nvrtc_destroy_fn destroy;
    nvrtc_compile_fn compile;
    nvrtc_size_fn log_size, ptx_size, cubin_size;
    nvrtc_get_fn get_log, get_ptx, get_cubin;
    nvrtc_errstr_fn errstr;
} g_nvrtc = {.once = PTHREAD_ONCE_INIT};

/* The sonames to try, best first: the one of the toolkit the library was built with
 * (CUDART_VERSION), then the other majors NVRTC is known to be used from (every NVRTC from
 * 11.2 on has each function used here), newest first, then the development link. */
int tdm__cuda_nvrtc_candidates(int built_major, const char **out, int max)
{
    static const struct {
        int major;
        const char *soname;
    } known[] = {{13, "libnvrtc.so.13"}, {12, "libnvrtc.so.12"}, {11, "libnvrtc.so.11.2"}};
    int n = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0] && n < max; i++)
        if (known[i].major == built_major)
            out[n++] = known[i].soname;
    for (size_t i = 0; i < sizeof known / sizeof known[0] && n < max; i++)
        if (known[i].major != built_major)
            out[n++] = known[i].soname;
    if (n < max)
        out[n++] = "libnvrtc.so";
    return n;
}

static void nvrtc_load(void)
{
    /* TDM_NVRTC_LIBRARY names one library to load instead (a path or a soname). The handle is
     * kept for the life of the process: NVRTC does not support being unloaded. */
    const char *names[8];
    const char *forced = getenv("TDM_NVRTC_LIBRARY");
    int n_names = forced && *forced ? (names[0] = forced, 1)
                                    : tdm__cuda_nvrtc_candidates(CUDART_VERSION / 1000, names, 8);
    void *h = NULL;
    size_t off = 0;
    for (int i = 0; i < n_names && !h; i++) {
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
            snprintf(g_nvrtc.lib, sizeof g_nvrtc.lib, "%s", names[i]);
        } else if (off < sizeof g_nvrtc.why) {
            int w = snprintf(g_nvrtc.why + off, sizeof g_nvrtc.why - off, "%s%s not found",
                             i ? ", " : "no NVRTC: ", names[i]);
            off += w > 0 ? (size_t)w : 0;
        }
    }
    if (!h)
        return;
    struct {
        const char *name;
        void **slot;
    } syms[] = {
        {"nvrtcVersion", (void **)&g_nvrtc.version},
        {"nvrtcGetNumSupportedArchs", (void **)&g_nvrtc.num_archs},
        {"nvrtcGetSupportedArchs", (void **)&g_nvrtc.get_archs},
        {"nvrtcCreateProgram", (void **)&g_nvrtc.create},
        {"nvrtcDestroyProgram", (void **)&g_nvrtc.destroy},
        {"nvrtcCompileProgram", (void **)&g_nvrtc.compile},
        {"nvrtcGetProgramLogSize", (void **)&g_nvrtc.log_size},
        {"nvrtcGetProgramLog", (void **)&g_nvrtc.get_log},
        {"nvrtcGetPTXSize", (void **)&g_nvrtc.ptx_size},
        {"nvrtcGetPTX", (void **)&g_nvrtc.get_ptx},
        {"nvrtcGetCUBINSize", (void **)&g_nvrtc.cubin_size},
        {"nvrtcGetCUBIN", (void **)&g_nvrtc.get_cubin},
        {"nvrtcGetErrorString", (void **)&g_nvrtc.errstr},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(h, syms[i].name);
        if (!p) {
            snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "%s has no %s", g_nvrtc.lib, syms[i].name);
            return;
        }
        *syms[i].slot = p;
    }
    if (g_nvrtc.version(&g_nvrtc.major, &g_nvrtc.minor) != NVRTC_SUCCESS) {
        snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "nvrtcVersion failed");
        return;
    }
    int n = 0;
    if (g_nvrtc.num_archs(&n) == NVRTC_SUCCESS && n > 0 && n <= 64 &&
        g_nvrtc.get_archs(g_nvrtc.archs) == NVRTC_SUCCESS)
        g_nvrtc.n_archs = n;
    snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "NVRTC %d.%d (%s)", g_nvrtc.major, g_nvrtc.minor,
             g_nvrtc.lib);
    g_nvrtc.ok = true;
}

int tdm__cuda_nvrtc_available(char *why, size_t len)
{
    pthread_once(&g_nvrtc.once, nvrtc_load);
    tdm__cuda_set_detail(why, len, "%s", g_nvrtc.why);
    return g_nvrtc.ok ? 1 : 0;
}

int tdm__cuda_nvrtc_version(int *major, int *minor)
{
    pthread_once(&g_nvrtc.once, nvrtc_load);
    if (!g_nvrtc.ok)
        return TDM_ENOTFOUND;
    *major = g_nvrtc.major;
    *minor = g_nvrtc.minor;
    return 0;
}

/* The arch to build for on a device of compute capability `arch`: itself (as a CUBIN) when
 * NVRTC knows it, else the newest NVRTC knows below it (as PTX, which the driver JIT-compiles
 * for the device). 0 when NVRTC knows nothing at or below it. */
int tdm__cuda_nvrtc_pick_arch(int arch, int *cubin)
{
    int best = 0;
    for (int i = 0; i < g_nvrtc.n_archs; i++) {
        if (g_nvrtc.archs[i] == arch) {
            *cubin = 1;
            return arch;
        }
        if (g_nvrtc.archs[i] < arch && g_nvrtc.archs[i] > best)
            best = g_nvrtc.archs[i];
    }
    if (g_nvrtc.n_archs == 0) { /* list unavailable: try the device's own */
        *cubin = 1;
        return arch;
    }
    *cubin = 0;
    return best;
}

int tdm__cuda_nvrtc_compile(const char *source, const char *name, int arch, int cubin, char **code,
                            size_t *code_len, char *detail, size_t len)
{
    *code = NULL;
    *code_len = 0;
    if (!source || arch <= 0) {
        tdm__cuda_set_detail(detail, len, "nvrtc: no source or no arch");
        return TDM_EINVAL;
    }
    pthread_once(&g_nvrtc.once, nvrtc_load);
    if (!g_nvrtc.ok) {
        tdm__cuda_set_detail(detail, len, "NVRTC is not available: %s", g_nvrtc.why);
        return TDM_ENOTFOUND;
    }
    if (!name || !*name)
        name = "tdm_kernel.cu";
    char arch_opt[48];
    snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=%s_%d", cubin ? "sm" : "compute", arch);
    /* -default-device is not needed: every function of the dialect is __device__ or
     * __global__. The dialect needs no include path (tdm_dialect.h's NVRTC branch). */
    const char *opts[] = {arch_opt, "--std=c++17"};
    nvrtcProgram prog = NULL;
    nvrtcResult r = g_nvrtc.create(&prog, source, name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        tdm__cuda_set_detail(detail, len, "nvrtcCreateProgram: %s", g_nvrtc.errstr(r));
        return r == NVRTC_ERROR_OUT_OF_MEMORY ? TDM_ENOMEM : TDM_ESYS;
    }
    r = g_nvrtc.compile(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    if (r != NVRTC_SUCCESS) {
        size_t n = 0;
        char *log = NULL;
        if (g_nvrtc.log_size(prog, &n) == NVRTC_SUCCESS && n > 0 && (log = malloc(n + 1))) {
            if (g_nvrtc.get_log(prog, log) != NVRTC_SUCCESS)
                log[0] = 0;
            log[n] = 0;
        }
        tdm__cuda_set_detail(detail, len, "NVRTC %d.%d could not compile %s for %s (%s):\n%s",
                             g_nvrtc.major, g_nvrtc.minor, name, arch_opt + 19, g_nvrtc.errstr(r),
                             log ? log : "(no log)");
        free(log);
        g_nvrtc.destroy(&prog);
        return r == NVRTC_ERROR_OUT_OF_MEMORY ? TDM_ENOMEM : TDM_EKERNEL;
    }
    size_t n = 0;
    r = cubin ? g_nvrtc.cubin_size(prog, &n) : g_nvrtc.ptx_size(prog, &n);
    char *out = NULL;
    if (r == NVRTC_SUCCESS && n > 0) {
        out = malloc(n + 1);
        if (!out) {
            g_nvrtc.destroy(&prog);
            tdm__cuda_set_detail(detail, len, "nvrtc: out of memory (%zu bytes of code)", n);
            return TDM_ENOMEM;
        }
        r = cubin ? g_nvrtc.get_cubin(prog, out) : g_nvrtc.get_ptx(prog, out);
        out[n] = 0;
    }
    g_nvrtc.destroy(&prog);
    if (r != NVRTC_SUCCESS || n == 0) {
        free(out);
        tdm__cuda_set_detail(detail, len, "nvrtc: getting the %s of %s: %s",
                             cubin ? "CUBIN" : "PTX", name,
                             r != NVRTC_SUCCESS ? g_nvrtc.errstr(r) : "empty");
        return TDM_EKERNEL;
    }
    *code = out;
    *code_len = n;
    return 0;
}
