/* SPDX-License-Identifier: MIT */
/* CUDA backend, device part: the tdm__dev_ops table (runtime/sched/device.h) over the static CUDA
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
 *   - kernels (launch.c, builtins.c): key "builtin" launches the ahead-of-time compiled entry
 *     points of kernels/builtin_kernels.cu (linked into the library; their host stubs are the
 *     launch handles; SASS for sm_80/86/89/90 + PTX by default), or, on a device none of their
 *     images loads on (found at open, or at a launch), the same built-in source compiled once
 *     with NVRTC; any other key compiles `source` once with NVRTC (dlopen'ed) to a CUBIN for the
 *     device's architecture (PTX for the newest one NVRTC knows when the device is newer), loads
 *     it with cudaLibraryLoadData and caches it on the device under the key. Arguments are
 *     checked against the entry's parameter list (cudaFuncGetParamInfo) before launching: a
 *     wrong count or size is TDM_EINVAL, not a corrupt launch. Grid-stride launches: 256
 *     threads per block, as many blocks as items need up to 32 per SM. 2-D launches (the tiled
 *     matrix products): blocks of the size the kernel asks for, enough to cover the range, at
 *     most 65535 per dimension.
 *   - health (runtime/sched/device_health.c): a sticky error (a kernel fault kills the
 *     context: cudaErrorIllegalAddress and the 700-719 family, ECC, a device gone) or any
 *     other driver failure in an entry marks the device lost once; every later entry returns
 *     TDM_EDEVLOST, finish() still synchronises its stream first. The staged copy-out records
 *     are kept on their queue until finish()/close(), since a dead context never runs their
 *     host functions.
 * Every entry calls cudaSetDevice first (the driver thread may switch between devices), and
 * the table's wrappers (below) put the calling thread's current device back afterwards: the
 * entries may run on the application's threads.
 * Files: device.c (this: open/close, errors, finish, host registration, the table), copy.c,
 * pool.c, launch.c, builtins.c, nvrtc.c; cuda_dev.h holds what they share.
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

bool tdm__cuda_error_is_sticky(cudaError_t e)
{
    switch (e) {
    /* The context is dead: every later call of the process on it fails the same way. */
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorContextIsDestroyed:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorUnknown:
    /* The device is gone or unusable. */
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoDevice:
    case cudaErrorDeviceUninitialized:
    case cudaErrorCudartUnloading:
        return true;
    default:
        return false;
    }
}

int tdm__cuda_map_error(cudaError_t e)
{
    if (tdm__cuda_error_is_sticky(e))
        return TDM_EDEVLOST;
    switch (e) {
    case cudaSuccess:
        return 0;
    case cudaErrorMemoryAllocation:
        return TDM_ENOMEM;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorLaunchOutOfResources:
    case cudaErrorInvalidDevicePointer:
        return TDM_EINVAL; /* the call's own fault, not the device's */
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
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

int tdm__cuda_dev_fail(tdm__dev *d, cudaError_t e, const char *what, char *detail, size_t len)
{
    int rc = tdm__cuda_fail(e, what, detail, len);
    if (rc == TDM_EDEVLOST || rc == TDM_ESYS || rc == TDM_ENODEV)
        return tdm__devhealth_lose(&d->health, detail, len);
    return rc;
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

int tdm__cuda_set_device(tdm__dev *d, char *detail, size_t len)
{
    cudaError_t e = cudaSetDevice(d->index);
    if (e != cudaSuccess) {
        char what[48];
        snprintf(what, sizeof what, "cudaSetDevice(%d)", d->index);
        return tdm__cuda_dev_fail(d, e, what, detail, len); /* the device is gone */
    }
    return 0;
}

/* ---- open / close ---------------------------------------------------------------------------- */

static void cuda_close(tdm__dev *d);
static void free_copy_outs(queue *qu);

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
    uint64_t cap = 0;
    int rc = tdm__device_mem_cap(rt, "cuda", &cap, detail, len);
    if (rc != 0)
        return rc;
    tdm__dev *d = calloc(1, sizeof *d);
    if (!d) {
        tdm__cuda_set_detail(detail, len, "cuda open: out of memory");
        return TDM_ENOMEM;
    }
    d->rt = rt;
    d->index = index;
    d->st.cap_bytes = cap;
    char hname[64];
    snprintf(hname, sizeof hname, "cuda device %d", index);
    if ((rc = tdm__devhealth_init(&d->health, hname, detail, len)) != 0) {
        free(d);
        return rc;
    }
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        tdm__cuda_set_detail(detail, len, "cuda open: pthread_mutex_init failed");
        return TDM_ESYS;
    }
    tdm__cuda_builtins_init(d);
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
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
        d->total_mem = total_b;
    (void)cudaGetLastError();
    for (int q = 0; q < TDM__CUDA_QUEUES; q++) {
        e = cudaStreamCreateWithFlags(&d->q[q].stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            d->q[q].stream = NULL;
            rc = tdm__cuda_fail(e, "cudaStreamCreateWithFlags", detail, len);
            goto fail;
        }
    }
    char note[256];
    if ((rc = tdm__cuda_builtins_check(d, note, sizeof note)) < 0) {
        tdm__cuda_set_detail(detail, len, "cuda open: %s", note);
        goto fail;
    }
    tdm__log(rt, TDM_DEBUG_RUNTIME, "cuda device %d (sm_%d, %d SMs): %s", index, d->arch, d->sms,
             note);
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
        free_copy_outs(&d->q[q]); /* after the synchronisation above */
    }
    (void)cudaGetLastError();
    pthread_mutex_destroy(&d->mu);
    free(d);
}

int tdm__cuda_dev_builtin_path(const tdm__dev *d)
{
    return d->builtin_path;
}

static int cuda_n_queues(const tdm__dev *d)
{
    (void)d;
    return TDM__CUDA_QUEUES;
}

/* Frees the copy-out records of queue q: their host functions ran (the stream is idle), or never
 * will (the context is dead). */
static void free_copy_outs(queue *qu)
{
    while (qu->outs) {
        copy_out *c = qu->outs;
        qu->outs = c->next;
        free(c);
    }
}

static int cuda_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    int rc = tdm__cuda_check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if ((rc = tdm__cuda_set_device(d, detail, len)) < 0)
        return rc;
    /* Waited for even when the device is lost: nothing may land in host memory afterwards. A
     * dead context returns at once, and its host functions never run. */
    cudaError_t e = cudaStreamSynchronize(d->q[q].stream);
    if (e == cudaSuccess) {
        free_copy_outs(&d->q[q]);
        for (int s = 0; s < TDM__CUDA_STAGE_SLOTS; s++)
            d->q[q].slot[s].recorded = false; /* the stream is idle: every slot is free */
    }
    if ((rc = tdm__devhealth_enter(&d->health, TDM__FAULT_FINISH, detail, len)) < 0) {
        (void)cudaGetLastError();
        return rc;
    }
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cuda device %d, queue %d", d->index, q);
        return tdm__cuda_dev_fail(d, e, what, detail, len);
    }
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
    if (e == cudaErrorNoDevice)
        return TDM_ENODEV;
    return tdm__cuda_map_error(e);
}

void tdm__cuda_host_unregister(void *p)
{
    if (p && cudaHostUnregister(p) != cudaSuccess)
        (void)cudaGetLastError();
}

/* TDM_EEXIST when the range (or part of it) is registered already, by someone else: it is
 * DMA-able, and not ours to unregister (device.h). */
static int cuda_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len)
{
    int rc = tdm__devhealth_enter(&d->health, TDM__FAULT_NONE, detail, len);
    if (rc != 0)
        return rc;
    rc = tdm__cuda_host_register(p, n);
    if (rc == TDM_EEXIST)
        tdm__cuda_set_detail(detail, len, "%zu bytes at %p: registered already, by someone else", n,
                             p);
    else if (rc != 0)
        tdm__cuda_set_detail(detail, len, "cudaHostRegister of %zu bytes failed", n);
    return rc;
}

/* Copies on this device's streams may still read or write the range: they finish first (a
 * page-locked range unregistered under a DMA is undefined behaviour). */
static void cuda_host_unregister(tdm__dev *d, void *p)
{
    if (!p)
        return;
    cudaSetDevice(d->index);
    for (int q = 0; q < TDM__CUDA_QUEUES; q++)
        if (d->q[q].stream)
            cudaStreamSynchronize(d->q[q].stream);
    (void)cudaGetLastError();
    tdm__cuda_host_unregister(p);
}

/* ---- the table: every entry leaves the calling thread's current device as it found it ----------
 * The entries make their device current (cudaSetDevice), and may run on the application's own
 * threads (tdm_tensor_to_host, the devices' opening in the first map, tdm_runtime_close): a
 * program that uses CUDA itself keeps its current device across tandem's calls. */
static int current_device(void)
{
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return cur;
}

static void restore_device(int prev)
{
    int cur = current_device();
    if (prev >= 0 && cur != prev && cudaSetDevice(prev) != cudaSuccess)
        (void)cudaGetLastError();
}

#define KEEP_DEVICE(call)                                                                          \
    int prev_ = current_device();                                                                  \
    int rc_ = (call);                                                                              \
    restore_device(prev_);                                                                         \
    return rc_

static int op_open(tdm_runtime *rt, int index, tdm__dev **out, char *detail, size_t len)
{
    KEEP_DEVICE(cuda_open(rt, index, out, detail, len));
}

static void op_close(tdm__dev *d)
{
    int prev = current_device();
    cuda_close(d);
    restore_device(prev);
}

static int op_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len)
{
    KEEP_DEVICE(tdm__cuda_alloc(d, bytes, out, detail, len));
}

static void op_free(tdm__dev *d, tdm__dbuf *b)
{
    int prev = current_device();
    tdm__cuda_free(d, b);
    restore_device(prev);
}

static int op_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                    char *detail, size_t len)
{
    KEEP_DEVICE(tdm__cuda_write(d, q, dst, dst_off, src, n, detail, len));
}

static int op_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                   char *detail, size_t len)
{
    KEEP_DEVICE(tdm__cuda_read(d, q, dst, src, src_off, n, detail, len));
}

static int op_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    KEEP_DEVICE(tdm__cuda_launch(d, q, key, source, entry, args, n_args, global, detail, len));
}

static int op_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                        const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                        size_t len)
{
    KEEP_DEVICE(tdm__cuda_launch_2d(d, q, key, source, entry, args, n_args, r, detail, len));
}

static int op_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    KEEP_DEVICE(cuda_finish(d, q, detail, len));
}

static int op_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len)
{
    KEEP_DEVICE(cuda_host_register(d, p, n, detail, len));
}

static void op_host_unregister(tdm__dev *d, void *p)
{
    int prev = current_device();
    cuda_host_unregister(d, p);
    restore_device(prev);
}

static void op_idle(tdm__dev *d)
{
    int prev = current_device();
    tdm__cuda_pool_idle(d);
    restore_device(prev);
}

const tdm__dev_ops tdm__cuda_dev_ops = {
    .host_register = op_host_register,
    .host_unregister = op_host_unregister,
    .kind = TDM_BACKEND_CUDA,
    .open = op_open,
    .close = op_close,
    .n_queues = cuda_n_queues,
    .alloc = op_alloc,
    .free = op_free,
    .write = op_write,
    .read = op_read,
    .launch = op_launch,
    .launch_2d = op_launch_2d,
    .finish = op_finish,
    .idle = op_idle,
};
