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
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"

/* ---- errors ---------------------------------------------------------------------------------- */

void tdm__cuda_set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (!detail || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

int tdm__cuda_map_error(cudaError_t e)
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
int tdm__cuda_fail(cudaError_t e, const char *what, char *detail, size_t len)
{
    tdm__cuda_set_detail(detail, len, "%s: %s (%s)", what, cudaGetErrorName(e),
                         cudaGetErrorString(e));
    (void)cudaGetLastError();
    return tdm__cuda_map_error(e);
}

int tdm__cuda_device_count(char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        tdm__cuda_set_detail(why, len, "cudaGetDeviceCount: %s (%s)", cudaGetErrorName(e),
                             cudaGetErrorString(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) {
        tdm__cuda_set_detail(why, len, "cudaGetDeviceCount: 0 devices");
        return 0;
    }
    tdm__cuda_set_detail(why, len, "%d device(s)", n);
    return n;
}

int tdm__cuda_set_device(const tdm__dev *d, char *detail, size_t len)
{
    cudaError_t e = cudaSetDevice(d->index);
    if (e != cudaSuccess) {
        char what[48];
        snprintf(what, sizeof what, "cudaSetDevice(%d)", d->index);
        return tdm__cuda_fail(e, what, detail, len);
    }
    return 0;
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
        tdm__cuda_set_detail(detail, len, "no CUDA device: %s", why);
        return TDM_ENODEV;
    }
    if (index < 0 || index >= count) {
        tdm__cuda_set_detail(detail, len, "CUDA device %d does not exist (%d found)", index, count);
        return TDM_ENOTFOUND;
    }
    uint64_t cap = rt ? rt->cfg.device_mem_cap : 0;
    const char *env = !rt || rt->cfg.use_env ? getenv("TDM_DEVICE_MEM_CAP") : NULL;
    if (env && *env && parse_cap(env, &cap) != 0) {
        tdm__cuda_set_detail(detail, len, "TDM_DEVICE_MEM_CAP=%s is not a byte count", env);
        return TDM_EINVAL;
    }
    tdm__dev *d = calloc(1, sizeof *d);
    if (!d) {
        tdm__cuda_set_detail(detail, len, "cuda open: out of memory");
        return TDM_ENOMEM;
    }
    d->rt = rt;
    d->index = index;
    d->st.cap_bytes = cap;
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        tdm__cuda_set_detail(detail, len, "cuda open: pthread_mutex_init failed");
        return TDM_ESYS;
    }
    tdm__cuda_builtins_init(d);
    int rc = 0;
    cudaError_t e = cudaSetDevice(index);
    if (e == cudaSuccess)
        e = cudaFree(NULL); /* creates the primary context now, not in the first batch */
    if (e != cudaSuccess) {
        rc = tdm__cuda_fail(e, "cuda open: initialising the device", detail, len);
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
            rc = tdm__cuda_fail(e, "cudaStreamCreateWithFlags", detail, len);
            goto fail;
        }
    }
    *out = d;
    return 0;
fail:
    cuda_close(d);
    return rc;
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
    tdm__cuda_pool_trim(d);
    while (d->programs) {
        program *p = d->programs;
        d->programs = p->next;
        tdm__cuda_program_free(p);
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

static int cuda_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    int rc = tdm__cuda_check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if ((rc = tdm__cuda_set_device(d, detail, len)) < 0)
        return rc;
    cudaError_t e = cudaStreamSynchronize(d->q[q].stream);
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cuda device %d, queue %d", d->index, q);
        return tdm__cuda_fail(e, what, detail, len);
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
    return tdm__cuda_map_error(e);
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
    .alloc = tdm__cuda_alloc,
    .free = tdm__cuda_free,
    .write = tdm__cuda_write,
    .read = tdm__cuda_read,
    .launch = tdm__cuda_launch,
    .launch_2d = tdm__cuda_launch_2d,
    .finish = cuda_finish,
};
