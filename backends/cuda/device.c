/* CUDA backend, device part: the tdm__dev_ops table (runtime/device.h) over the static CUDA
 * runtime. Nothing here links the driver library (-lcuda): the library must load and run where
 * no driver is installed, and there every entry fails cleanly (open: no device).
 *
 * Per open device:
 *   - TDM__CUDA_QUEUES non-blocking streams (the pipeline depth the core sees);
 *   - a caching pool of device memory: requests are rounded up to a size class (4 classes per
 *     power of two, so at most 25% is wasted), freed blocks are kept on their class's free list
 *     and handed out again once the work that used them is done (an event per queue that used
 *     the block, recorded at free: a block freed while a copy or kernel on it is still in
 *     flight is never reused under it). A cap (TDM_DEVICE_MEM_CAP bytes, or
 *     tdm__cuda_set_mem_cap) bounds what the pool holds from cudaMalloc; at the cap, or when
 *     cudaMalloc reports cudaErrorMemoryAllocation, the cache is emptied once and the request
 *     retried, then it is TDM_ENOMEM;
 *   - pinned staging buffers per queue (cudaHostAlloc, TDM__CUDA_STAGE_SLOTS chunks of
 *     TDM__CUDA_STAGE_CHUNK bytes, made at the first pageable copy on that queue). write() from
 *     pageable memory copies chunk k + 1 into one slot while chunk k is DMA'd from the other;
 *     read() into pageable memory DMAs each chunk into a slot and enqueues a host function that
 *     copies it out, in stream order, so the driver thread never waits for a read. Host memory
 *     that is pinned or registered (cudaPointerGetAttributes says cudaMemoryTypeHost at both
 *     ends) is copied directly with cudaMemcpyAsync;
 *   - kernels: key "builtin" launches the ahead-of-time compiled entry points of
 *     kernels/builtin_kernels.cu (linked into the library; their host stubs are the launch
 *     handles); any other key compiles `source` once with NVRTC (dlopen'ed) to a CUBIN for the
 *     device's architecture (PTX for the newest one NVRTC knows when the device is newer), loads
 *     it with cudaLibraryLoadData and caches it on the device under the key. Arguments are
 *     checked against the entry's parameter list (cudaFuncGetParamInfo) before launching: a
 *     wrong count or size is TDM_EINVAL, not a corrupt launch. Grid-stride launches: 256
 *     threads per block, as many blocks as items need up to 32 per SM. 2-D launches (the tiled
 *     matrix products): blocks of the size the kernel asks for, enough to cover the range, at
 *     most 65535 per dimension.
 * Every entry calls cudaSetDevice first: the driver thread may switch between devices.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <nvrtc.h> /* types only: the functions are resolved with dlsym */

#include "cuda_internal.h"
#include "sched/device.h"

#define TDM__CUDA_QUEUES 3
#define TDM__CUDA_BLOCK 256
#define TDM__CUDA_BLOCKS_PER_SM 32
#define TDM__CUDA_GRID_CAP 65535u /* blocks per dimension of a 2-D launch (gridDim.y's limit) */
#define TDM__CUDA_STAGE_CHUNK ((size_t)4 << 20)
#define TDM__CUDA_STAGE_SLOTS 2
#define TDM__CUDA_MAX_ARGS 32
#define TDM__CUDA_MIN_CLASS ((size_t)512)
#define TDM__CUDA_N_CLASSES 256

/* ---- errors ---------------------------------------------------------------------------------- */

static void set_detail(char *detail, size_t len, const char *fmt, ...) TDM__PRINTF(3, 4);
static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (!detail || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

static int map_cuda_error(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return 0;
    case cudaErrorMemoryAllocation:
        return TDM_ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
        return TDM_ENODEV;
    case cudaErrorInvalidPtx:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidKernelImage:
    case cudaErrorJitCompilerNotFound:
    case cudaErrorJitCompilationDisabled:
        return TDM_EKERNEL;
    default:
        return TDM_ESYS;
    }
}

/* Maps a failed call to a TDM code with "what: cudaErrorX (description)" in detail, and clears
 * the runtime's last error so a non-sticky one does not resurface on a later call. */
static int cuda_fail(cudaError_t e, const char *what, char *detail, size_t len)
{
    set_detail(detail, len, "%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
    (void)cudaGetLastError();
    return map_cuda_error(e);
}

#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_fail(e_, what, detail, len);                                               \
    } while (0)

int tdm__cuda_device_count(char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        set_detail(why, len, "cudaGetDeviceCount: %s (%s)", cudaGetErrorName(e),
                   cudaGetErrorString(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) {
        set_detail(why, len, "cudaGetDeviceCount: 0 devices");
        return 0;
    }
    set_detail(why, len, "%d device(s)", n);
    return n;
}

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

static void nvrtc_load(void)
{
    /* The handle is kept for the life of the process: NVRTC does not support being unloaded. */
    void *h = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "dlopen(libnvrtc.so.13): %s", e ? e : "failed");
        return;
    }
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
            snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "libnvrtc.so.13 has no %s", syms[i].name);
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
    snprintf(g_nvrtc.why, sizeof g_nvrtc.why, "NVRTC %d.%d", g_nvrtc.major, g_nvrtc.minor);
    g_nvrtc.ok = true;
}

int tdm__cuda_nvrtc_available(char *why, size_t len)
{
    pthread_once(&g_nvrtc.once, nvrtc_load);
    set_detail(why, len, "%s", g_nvrtc.why);
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
static int nvrtc_pick_arch(int arch, int *cubin)
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
        set_detail(detail, len, "nvrtc: no source or no arch");
        return TDM_EINVAL;
    }
    pthread_once(&g_nvrtc.once, nvrtc_load);
    if (!g_nvrtc.ok) {
        set_detail(detail, len, "NVRTC is not available: %s", g_nvrtc.why);
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
        set_detail(detail, len, "nvrtcCreateProgram: %s", g_nvrtc.errstr(r));
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
        set_detail(detail, len, "NVRTC %d.%d could not compile %s for %s (%s):\n%s", g_nvrtc.major,
                   g_nvrtc.minor, name, arch_opt + 19, g_nvrtc.errstr(r), log ? log : "(no log)");
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
            set_detail(detail, len, "nvrtc: out of memory (%zu bytes of code)", n);
            return TDM_ENOMEM;
        }
        r = cubin ? g_nvrtc.get_cubin(prog, out) : g_nvrtc.get_ptx(prog, out);
        out[n] = 0;
    }
    g_nvrtc.destroy(&prog);
    if (r != NVRTC_SUCCESS || n == 0) {
        free(out);
        set_detail(detail, len, "nvrtc: getting the %s of %s: %s", cubin ? "CUBIN" : "PTX", name,
                   r != NVRTC_SUCCESS ? g_nvrtc.errstr(r) : "empty");
        return TDM_EKERNEL;
    }
    *code = out;
    *code_len = n;
    return 0;
}

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

/* ---- device state ---------------------------------------------------------------------------- */

/* What a kernel's parameter list looks like, learned once with cudaFuncGetParamInfo. */
typedef struct kinfo {
    const void *fn; /* host stub, or a cudaKernel_t cast to a pointer */
    int n_params;   /* -1: not asked yet; -2: the driver cannot tell (no check) */
    uint16_t psize[TDM__CUDA_MAX_ARGS];
} kinfo;

typedef struct ukernel { /* an entry of a program built at run time */
    struct ukernel *next;
    char *name;
    kinfo ki;
} ukernel;

typedef struct program { /* a program built at run time, cached under its key */
    struct program *next;
    char *key;
    cudaLibrary_t lib; /* NULL when the build failed: then rc and log say why */
    int rc;
    char *log;
    ukernel *kernels;
} program;

struct tdm__dbuf {
    struct tdm__dbuf *next; /* on a free list */
    void *ptr;
    size_t bytes; /* requested */
    size_t cls_bytes;
    int cls;
    unsigned used_queues;             /* queues that enqueued work on it since it was handed out */
    unsigned pending;                 /* freed: queues whose event below must complete first */
    cudaEvent_t ev[TDM__CUDA_QUEUES]; /* created on first need */
};

typedef struct stage_slot {
    void *host;     /* pinned, TDM__CUDA_STAGE_CHUNK bytes */
    cudaEvent_t ev; /* recorded after the slot's last use on the stream */
    bool recorded;
} stage_slot;

typedef struct queue {
    cudaStream_t stream;
    stage_slot slot[TDM__CUDA_STAGE_SLOTS];
    int next_slot;
} queue;

struct tdm__dev {
    tdm_runtime *rt;
    int index;
    int arch; /* major * 10 + minor */
    int sms;
    queue q[TDM__CUDA_QUEUES];

    pthread_mutex_t mu; /* the pool and the program cache */
    tdm__dbuf *free_list[TDM__CUDA_N_CLASSES];
    tdm__cuda_pool_stats st;

    kinfo builtin[sizeof g_builtins / sizeof g_builtins[0]];
    program *programs;
};

static int set_device(const tdm__dev *d, char *detail, size_t len)
{
    cudaError_t e = cudaSetDevice(d->index);
    if (e != cudaSuccess) {
        char what[48];
        snprintf(what, sizeof what, "cudaSetDevice(%d)", d->index);
        return cuda_fail(e, what, detail, len);
    }
    return 0;
}

/* ---- the caching pool ------------------------------------------------------------------------ */

/* Size class of a request: 512 bytes and below are one class; above, 4 classes per power of
 * two (2^k * 1.25, 1.5, 1.75, 2). Sets *cls_bytes; the class index is < TDM__CUDA_N_CLASSES. */
static int size_class(size_t bytes, size_t *cls_bytes)
{
    if (bytes <= TDM__CUDA_MIN_CLASS) {
        *cls_bytes = TDM__CUDA_MIN_CLASS;
        return 0;
    }
    int k = 63 - __builtin_clzll((unsigned long long)(bytes - 1)); /* 2^k < bytes <= 2^(k+1) */
    size_t step = (size_t)1 << (k - 2);
    size_t j = (bytes - ((size_t)1 << k) + step - 1) / step; /* 1..4 */
    *cls_bytes = ((size_t)1 << k) + j * step;
    return 1 + (k - 9) * 4 + (int)(j - 1);
}

/* 1 when the work recorded at free on block b is done (and forgets it); 0 when not yet. */
static int block_ready(tdm__dbuf *b)
{
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        if (!(b->pending & (1u << q)))
            continue;
        cudaError_t e = cudaEventQuery(b->ev[q]);
        if (e == cudaErrorNotReady)
            return 0;
        if (e != cudaSuccess)
            (void)cudaGetLastError(); /* a sticky error: the next stream call reports it */
        b->pending &= ~(1u << q);
    }
    return 1;
}

static void block_destroy(tdm__dev *d, tdm__dbuf *b)
{
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        if (b->pending & (1u << q))
            cudaEventSynchronize(b->ev[q]);
        if (b->ev[q])
            cudaEventDestroy(b->ev[q]);
    }
    cudaFree(b->ptr); /* synchronises the device: nothing can still use it */
    d->st.reserved_bytes -= b->cls_bytes;
    free(b);
}

/* Empties the cache (caller holds d->mu). */
static void pool_trim(tdm__dev *d)
{
    bool any = false;
    for (int c = 0; c < TDM__CUDA_N_CLASSES; c++) {
        tdm__dbuf *b = d->free_list[c];
        d->free_list[c] = NULL;
        while (b) {
            tdm__dbuf *next = b->next;
            d->st.cached_bytes -= b->cls_bytes;
            block_destroy(d, b);
            b = next;
            any = true;
        }
    }
    if (any)
        d->st.n_trims++;
    (void)cudaGetLastError();
}

static int cuda_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len)
{
    *out = NULL;
    if (bytes > ((size_t)1 << 62)) {
        set_detail(detail, len, "cuda alloc: %zu bytes is more than any device has", bytes);
        return TDM_ENOMEM;
    }
    int rc = set_device(d, detail, len);
    if (rc < 0)
        return rc;
    size_t cls_bytes;
    int cls = size_class(bytes, &cls_bytes);
    pthread_mutex_lock(&d->mu);
    /* 1. A cached block of the class whose last users are done. */
    for (tdm__dbuf **pp = &d->free_list[cls]; *pp; pp = &(*pp)->next) {
        tdm__dbuf *b = *pp;
        if (!block_ready(b))
            continue;
        *pp = b->next;
        b->next = NULL;
        b->bytes = bytes;
        b->used_queues = 0;
        d->st.cached_bytes -= b->cls_bytes;
        d->st.live_bytes += b->cls_bytes;
        d->st.n_reused++;
        pthread_mutex_unlock(&d->mu);
        *out = b;
        return 0;
    }
    /* 2. A new block, within the cap; at the cap or out of memory, empty the cache once. */
    tdm__dbuf *b = calloc(1, sizeof *b);
    if (!b) {
        pthread_mutex_unlock(&d->mu);
        set_detail(detail, len, "cuda alloc: out of host memory");
        return TDM_ENOMEM;
    }
    cudaError_t e = cudaSuccess;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1) {
            if (d->st.cached_bytes == 0)
                break;
            pool_trim(d);
        }
        if (d->st.cap_bytes && d->st.reserved_bytes + cls_bytes > d->st.cap_bytes) {
            e = cudaErrorMemoryAllocation;
            continue;
        }
        e = cudaMalloc(&b->ptr, cls_bytes);
        if (e == cudaSuccess)
            break;
        b->ptr = NULL;
        (void)cudaGetLastError();
        if (e != cudaErrorMemoryAllocation)
            break;
    }
    if (e != cudaSuccess) {
        free(b);
        uint64_t reserved = d->st.reserved_bytes, cap = d->st.cap_bytes;
        pthread_mutex_unlock(&d->mu);
        if (e == cudaErrorMemoryAllocation && cap && reserved + cls_bytes > cap)
            set_detail(detail, len,
                       "cuda device %d: %zu bytes (class %zu) over the memory cap: %llu of %llu "
                       "bytes held (TDM_DEVICE_MEM_CAP)",
                       d->index, bytes, cls_bytes, (unsigned long long)reserved,
                       (unsigned long long)cap);
        else
            cuda_fail(e, "cudaMalloc", detail, len);
        return map_cuda_error(e);
    }
    b->bytes = bytes;
    b->cls = cls;
    b->cls_bytes = cls_bytes;
    d->st.reserved_bytes += cls_bytes;
    d->st.live_bytes += cls_bytes;
    d->st.n_cuda_malloc++;
    pthread_mutex_unlock(&d->mu);
    *out = b;
    return 0;
}

static void cuda_free(tdm__dev *d, tdm__dbuf *b)
{
    if (!b)
        return;
    cudaSetDevice(d->index);
    pthread_mutex_lock(&d->mu);
    /* Remember where work on it may still be in flight: it is reused only once that is done. */
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        if (!(b->used_queues & (1u << q)))
            continue;
        cudaError_t e = cudaSuccess;
        if (!b->ev[q])
            e = cudaEventCreateWithFlags(&b->ev[q], cudaEventDisableTiming);
        if (e == cudaSuccess)
            e = cudaEventRecord(b->ev[q], d->q[q].stream);
        if (e == cudaSuccess) {
            b->pending |= 1u << q;
        } else {
            (void)cudaGetLastError();
            cudaStreamSynchronize(d->q[q].stream); /* no event: wait now instead */
            (void)cudaGetLastError();
        }
    }
    b->used_queues = 0;
    d->st.live_bytes -= b->cls_bytes;
    if (d->st.cap_bytes && d->st.reserved_bytes > d->st.cap_bytes) {
        block_destroy(d, b); /* the cap was lowered: give it back */
    } else {
        b->next = d->free_list[b->cls];
        d->free_list[b->cls] = b;
        d->st.cached_bytes += b->cls_bytes;
    }
    pthread_mutex_unlock(&d->mu);
}

void tdm__cuda_pool_stats_get(tdm__dev *d, tdm__cuda_pool_stats *out)
{
    pthread_mutex_lock(&d->mu);
    *out = d->st;
    pthread_mutex_unlock(&d->mu);
}

void tdm__cuda_set_mem_cap(tdm__dev *d, uint64_t cap)
{
    cudaSetDevice(d->index);
    pthread_mutex_lock(&d->mu);
    d->st.cap_bytes = cap;
    if (cap && d->st.reserved_bytes > cap)
        pool_trim(d);
    pthread_mutex_unlock(&d->mu);
}

void *tdm__cuda_dbuf_ptr(const tdm__dbuf *b)
{
    return b ? b->ptr : NULL;
}

int tdm__cuda_dev_index(const tdm__dev *d)
{
    return d->index;
}

int tdm__cuda_dev_arch(const tdm__dev *d)
{
    return d->arch;
}

/* ---- open / close ---------------------------------------------------------------------------- */

/* TDM_DEVICE_MEM_CAP: bytes, with an optional k/m/g/t suffix (powers of 1024). */
static int parse_cap(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -1;
    unsigned shift = 0;
    const char *units = "kmgt";
    const char *u = *end ? strchr(units, *end | 0x20) : NULL;
    if (u) {
        shift = 10u * (unsigned)(u - units + 1);
        end++;
        if (*end == 'i') /* "MiB" */
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end != 0 || (shift && v > (~0ull >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static void cuda_close(tdm__dev *d);

static int cuda_open(tdm_runtime *rt, int index, tdm__dev **out, char *detail, size_t len)
{
    *out = NULL;
    char why[160];
    int count = tdm__cuda_device_count(why, sizeof why);
    if (count == 0) {
        set_detail(detail, len, "no CUDA device: %s", why);
        return TDM_ENODEV;
    }
    if (index < 0 || index >= count) {
        set_detail(detail, len, "CUDA device %d does not exist (%d found)", index, count);
        return TDM_ENOTFOUND;
    }
    uint64_t cap = rt ? rt->cfg.device_mem_cap : 0;
    const char *env = !rt || rt->cfg.use_env ? getenv("TDM_DEVICE_MEM_CAP") : NULL;
    if (env && *env && parse_cap(env, &cap) != 0) {
        set_detail(detail, len, "TDM_DEVICE_MEM_CAP=%s is not a byte count", env);
        return TDM_EINVAL;
    }
    tdm__dev *d = calloc(1, sizeof *d);
    if (!d) {
        set_detail(detail, len, "cuda open: out of memory");
        return TDM_ENOMEM;
    }
    d->rt = rt;
    d->index = index;
    d->st.cap_bytes = cap;
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        set_detail(detail, len, "cuda open: pthread_mutex_init failed");
        return TDM_ESYS;
    }
    for (int i = 0; i < N_BUILTINS; i++) {
        d->builtin[i].fn = g_builtins[i].stub;
        d->builtin[i].n_params = -1;
    }
    int rc = 0;
    cudaError_t e = cudaSetDevice(index);
    if (e == cudaSuccess)
        e = cudaFree(NULL); /* creates the primary context now, not in the first batch */
    if (e != cudaSuccess) {
        rc = cuda_fail(e, "cuda open: initialising the device", detail, len);
        goto fail;
    }
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
    cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, index);
    d->arch = major * 10 + minor;
    if (d->sms <= 0)
        d->sms = 1;
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        e = cudaStreamCreateWithFlags(&d->q[q].stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            d->q[q].stream = NULL;
            rc = cuda_fail(e, "cudaStreamCreateWithFlags", detail, len);
            goto fail;
        }
    }
    *out = d;
    return 0;
fail:
    cuda_close(d);
    return rc;
}

static void program_free(program *p)
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

static void cuda_close(tdm__dev *d)
{
    if (!d)
        return;
    cudaSetDevice(d->index);
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        if (d->q[q].stream)
            cudaStreamSynchronize(d->q[q].stream);
    }
    pthread_mutex_lock(&d->mu);
    pool_trim(d);
    while (d->programs) {
        program *p = d->programs;
        d->programs = p->next;
        program_free(p);
    }
    pthread_mutex_unlock(&d->mu);
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        for (int s = 0; s < TDM__CUDA_STAGE_SLOTS; s++) {
            stage_slot *sl = &d->q[q].slot[s];
            if (sl->ev)
                cudaEventDestroy(sl->ev);
            if (sl->host)
                cudaFreeHost(sl->host);
        }
        if (d->q[q].stream)
            cudaStreamDestroy(d->q[q].stream);
    }
    (void)cudaGetLastError();
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static int cuda_n_queues(const tdm__dev *d)
{
    (void)d;
    return TDM__CUDA_QUEUES;
}

/* ---- copies ---------------------------------------------------------------------------------- */

/* True when [p, p + n) is memory the device can DMA: pinned/registered host memory (checked at
 * both ends), device or managed memory. Pageable memory is "unregistered". */
static bool host_is_pinned(const void *p, size_t n)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged)
        return true;
    if (a.type != cudaMemoryTypeHost)
        return false;
    if (n <= 1)
        return true;
    if (cudaPointerGetAttributes(&a, (const char *)p + n - 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

static int check_queue(const tdm__dev *d, int q, char *detail, size_t len)
{
    if (q < 0 || q >= TDM__CUDA_QUEUES) {
        set_detail(detail, len, "cuda: queue %d out of range (0..%d)", q, TDM__CUDA_QUEUES - 1);
        return TDM_EINVAL;
    }
    return 0;
}

/* Makes staging slot s of queue q usable by the host: allocates it the first time, else waits
 * until what the stream last did with it is done. */
static int slot_acquire(queue *qu, int s, char *detail, size_t len)
{
    stage_slot *sl = &qu->slot[s];
    if (!sl->host) {
        CUDA_TRY(cudaHostAlloc(&sl->host, TDM__CUDA_STAGE_CHUNK, cudaHostAllocPortable),
                 "cudaHostAlloc (staging buffer)");
        cudaError_t e = cudaEventCreateWithFlags(&sl->ev, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            cudaFreeHost(sl->host);
            sl->host = NULL;
            sl->ev = NULL;
            return cuda_fail(e, "cudaEventCreate (staging buffer)", detail, len);
        }
        sl->recorded = false;
        return 0;
    }
    if (sl->recorded) {
        CUDA_TRY(cudaEventSynchronize(sl->ev), "waiting for a staging buffer");
        sl->recorded = false;
    }
    return 0;
}

static int slot_release(queue *qu, int s, char *detail, size_t len)
{
    CUDA_TRY(cudaEventRecord(qu->slot[s].ev, qu->stream), "cudaEventRecord (staging buffer)");
    qu->slot[s].recorded = true;
    return 0;
}

static int cuda_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                      char *detail, size_t len)
{
    int rc = check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if (!dst || (n && !src) || dst_off > dst->bytes || n > dst->bytes - dst_off) {
        set_detail(detail, len, "cuda write: %zu bytes at offset %zu do not fit a %zu-byte buffer",
                   n, dst_off, dst ? dst->bytes : (size_t)0);
        return TDM_EINVAL;
    }
    if (n == 0)
        return 0;
    if ((rc = set_device(d, detail, len)) < 0)
        return rc;
    queue *qu = &d->q[q];
    char *dp = (char *)dst->ptr + dst_off;
    dst->used_queues |= 1u << q;
    if (host_is_pinned(src, n)) {
        CUDA_TRY(cudaMemcpyAsync(dp, src, n, cudaMemcpyDefault, qu->stream), "cudaMemcpyAsync H2D");
        return 0;
    }
    /* Pageable: through the queue's staging slots, alternately, so that the host copy of one
     * chunk overlaps the DMA of the previous one. */
    for (size_t off = 0; off < n; off += TDM__CUDA_STAGE_CHUNK) {
        size_t c = n - off < TDM__CUDA_STAGE_CHUNK ? n - off : TDM__CUDA_STAGE_CHUNK;
        int s = qu->next_slot;
        qu->next_slot = (s + 1) % TDM__CUDA_STAGE_SLOTS;
        if ((rc = slot_acquire(qu, s, detail, len)) < 0)
            return rc;
        memcpy(qu->slot[s].host, (const char *)src + off, c);
        CUDA_TRY(cudaMemcpyAsync(dp + off, qu->slot[s].host, c, cudaMemcpyHostToDevice, qu->stream),
                 "cudaMemcpyAsync H2D (staged)");
        if ((rc = slot_release(qu, s, detail, len)) < 0)
            return rc;
    }
    return 0;
}

/* A host function enqueued after a staged D2H chunk: copies it out of the staging slot. Runs on
 * a CUDA runtime thread, in stream order; makes no CUDA call. */
typedef struct copy_out {
    void *dst;
    const void *src;
    size_t n;
} copy_out;

static void CUDART_CB copy_out_fn(void *arg)
{
    copy_out *c = arg;
    memcpy(c->dst, c->src, c->n);
    free(c);
}

static int cuda_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                     char *detail, size_t len)
{
    int rc = check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if (!src || (n && !dst) || src_off > src->bytes || n > src->bytes - src_off) {
        set_detail(detail, len, "cuda read: %zu bytes at offset %zu do not fit a %zu-byte buffer",
                   n, src_off, src ? src->bytes : (size_t)0);
        return TDM_EINVAL;
    }
    if (n == 0)
        return 0;
    if ((rc = set_device(d, detail, len)) < 0)
        return rc;
    queue *qu = &d->q[q];
    const char *sp = (const char *)src->ptr + src_off;
    /* The buffer is the core's and not const to us: its use is recorded for the pool. */
    ((tdm__dbuf *)src)->used_queues |= 1u << q;
    if (host_is_pinned(dst, n)) {
        CUDA_TRY(cudaMemcpyAsync(dst, sp, n, cudaMemcpyDefault, qu->stream), "cudaMemcpyAsync D2H");
        return 0;
    }
    /* Pageable: DMA into a slot, then a host function copies it out; both in stream order, so
     * nothing here waits for the device (a slot is reused only after its copy-out ran). */
    for (size_t off = 0; off < n; off += TDM__CUDA_STAGE_CHUNK) {
        size_t c = n - off < TDM__CUDA_STAGE_CHUNK ? n - off : TDM__CUDA_STAGE_CHUNK;
        int s = qu->next_slot;
        qu->next_slot = (s + 1) % TDM__CUDA_STAGE_SLOTS;
        stage_slot *sl = &qu->slot[s];
        if (!sl->host && (rc = slot_acquire(qu, s, detail, len)) < 0)
            return rc;
        /* (a slot last used by a write is reused in stream order too: no wait needed) */
        copy_out *co = malloc(sizeof *co);
        if (!co) {
            set_detail(detail, len, "cuda read: out of memory");
            return TDM_ENOMEM;
        }
        co->dst = (char *)dst + off;
        co->src = sl->host;
        co->n = c;
        cudaError_t e = cudaMemcpyAsync(sl->host, sp + off, c, cudaMemcpyDeviceToHost, qu->stream);
        if (e == cudaSuccess)
            e = cudaLaunchHostFunc(qu->stream, copy_out_fn, co);
        if (e != cudaSuccess) {
            free(co);
            return cuda_fail(e, "cudaMemcpyAsync D2H (staged)", detail, len);
        }
        if ((rc = slot_release(qu, s, detail, len)) < 0)
            return rc;
    }
    return 0;
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
            if (n == 0) {
                /* No parameter, or a driver that cannot tell: launched unchecked either way
                 * (every built-in has parameters). */
                k->n_params = -2;
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
        set_detail(detail, len, "cuda launch: %s takes %d arguments, %d given", entry, k->n_params,
                   n_args);
        return TDM_EINVAL;
    }
    for (int i = 0; i < n_args; i++) {
        size_t want = k->psize[i];
        size_t got = args[i].kind == TDM__KARG_VALUE ? args[i].size : sizeof(void *);
        if (want != got) {
            set_detail(detail, len, "cuda launch: argument %d of %s is %zu bytes, %zu given", i,
                       entry, want, got);
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
                set_detail(detail, len, "%s", p->log ? p->log : "program did not build");
                *rc = p->rc;
                return NULL;
            }
            return p;
        }
    }
    if (!source) {
        set_detail(detail, len, "cuda launch: no source for program %s", key);
        *rc = TDM_EINVAL;
        return NULL;
    }
    program *p = calloc(1, sizeof *p);
    if (!p || !(p->key = strdup(key))) {
        free(p);
        set_detail(detail, len, "cuda launch: out of memory");
        *rc = TDM_ENOMEM;
        return NULL;
    }
    int cubin = 0, arch = 0;
    char why[160];
    if (!tdm__cuda_nvrtc_available(why, sizeof why)) {
        p->rc = TDM_EKERNEL;
        set_detail(detail, len, "program %s cannot be built: %s", key, why);
    } else if ((arch = nvrtc_pick_arch(d->arch, &cubin)) == 0) {
        p->rc = TDM_EKERNEL;
        int ma = 0, mi = 0;
        tdm__cuda_nvrtc_version(&ma, &mi);
        set_detail(detail, len, "program %s: NVRTC %d.%d cannot compile for sm_%d", key, ma, mi,
                   d->arch);
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
                p->rc = cuda_fail(e, what, detail, len);
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
        program_free(p);
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
        set_detail(detail, len, "cuda launch: program %s has no entry point %s (%s)", key, entry,
                   cudaGetErrorName(e));
        *rc = TDM_ENOTFOUND;
        return NULL;
    }
    ukernel *k = calloc(1, sizeof *k);
    if (!k || !(k->name = strdup(entry))) {
        free(k);
        set_detail(detail, len, "cuda launch: out of memory");
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
    int rc = check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if ((rc = set_device(d, detail, len)) < 0)
        return rc;
    kinfo *k = NULL;
    pthread_mutex_lock(&d->mu);
    if (strcmp(key, "builtin") == 0) {
        for (int i = 0; i < N_BUILTINS; i++) {
            if (strcmp(g_builtins[i].name, entry) == 0) {
                k = &d->builtin[i];
                break;
            }
        }
        if (!k) {
            set_detail(detail, len, "cuda launch: no built-in entry point %s", entry);
            rc = TDM_ENOTFOUND;
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
                set_detail(detail, len, "cuda launch: argument %d of %s: no buffer", i, entry);
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
                set_detail(detail, len, "cuda launch: argument %d of %s: %u-byte value", i, entry,
                           args[i].size);
                return TDM_EINVAL;
            }
            params[i] = (void *)args[i].value; /* cudaLaunchKernel copies it; never written */
            break;
        default:
            set_detail(detail, len, "cuda launch: argument %d of %s: unknown kind", i, entry);
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
        return cuda_fail(e, what, detail, len);
    }
    for (int i = 0; i < n_args; i++) {
        if (args[i].kind == TDM__KARG_BUF)
            args[i].buf->used_queues |= 1u << q;
    }
    return 0;
}

static int cuda_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                       const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    if (!key || !entry || n_args < 0 || n_args > TDM__CUDA_MAX_ARGS || (n_args && !args) ||
        global < 0) {
        set_detail(detail, len, "cuda launch: bad arguments (key, entry, %d args, global %lld)",
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
static int cuda_launch_2d(tdm__dev *d, int q, const char *key, const char *source,
                          const char *entry, const tdm__karg *args, int n_args,
                          const tdm__range2 *r, char *detail, size_t len)
{
    if (!key || !entry || n_args < 0 || n_args > TDM__CUDA_MAX_ARGS || (n_args && !args) || !r ||
        r->size[0] < 0 || r->size[1] < 0 || r->local[0] < 1 || r->local[1] < 1 ||
        (uint64_t)r->local[0] * r->local[1] > 1024) {
        set_detail(detail, len, "cuda launch_2d: bad arguments (key, entry, %d args, range)",
                   n_args);
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
        set_detail(detail, len, "cuda launch_2d: %s runs at most %d threads per block, %ux%u asked",
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

static int cuda_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    int rc = check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if ((rc = set_device(d, detail, len)) < 0)
        return rc;
    cudaError_t e = cudaStreamSynchronize(d->q[q].stream);
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cuda device %d, queue %d", d->index, q);
        return cuda_fail(e, what, detail, len);
    }
    for (int s = 0; s < TDM__CUDA_STAGE_SLOTS; s++)
        d->q[q].slot[s].recorded = false; /* the stream is idle: every slot is free */
    return 0;
}

/* ---- pinned host memory ---------------------------------------------------------------------- */

int tdm__cuda_host_register(void *p, size_t n)
{
    if (!p || n == 0)
        return TDM_EINVAL;
    cudaError_t e = cudaHostRegister(p, n, cudaHostRegisterPortable);
    if (e == cudaSuccess)
        return 0;
    (void)cudaGetLastError();
    if (e == cudaErrorHostMemoryAlreadyRegistered)
        return TDM_EEXIST;
    return map_cuda_error(e);
}

void tdm__cuda_host_unregister(void *p)
{
    if (p && cudaHostUnregister(p) != cudaSuccess)
        (void)cudaGetLastError();
}

static int cuda_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len)
{
    int rc = tdm__cuda_host_register(p, n);
    if (rc == TDM_EEXIST)
        return 0; /* registered already (portable: for every device) */
    if (rc != 0)
        snprintf(detail, len, "cudaHostRegister of %zu bytes failed", n);
    return rc;
}

static void cuda_host_unregister(tdm__dev *d, void *p)
{
    tdm__cuda_host_unregister(p);
}

const tdm__dev_ops tdm__cuda_dev_ops = {
    .host_register = cuda_host_register,
    .host_unregister = cuda_host_unregister,
    .kind = TDM_BACKEND_CUDA,
    .open = cuda_open,
    .close = cuda_close,
    .n_queues = cuda_n_queues,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .write = cuda_write,
    .read = cuda_read,
    .launch = cuda_launch,
    .launch_2d = cuda_launch_2d,
    .finish = cuda_finish,
};
