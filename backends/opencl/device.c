/* SPDX-License-Identifier: MIT */
/* OpenCL backend, execution part: the device layer of runtime/sched/device.h on the ICD loader.
 *
 * One tdm__dev per opened device: one context, OCL_QUEUES in-order command queues (the depth of
 * the pipeline: batch k+1 copies in while batch k computes and batch k-1 copies out; launches
 * of one entry run at once only when they have the same sizes, see enqueue_kernel in program.c
 * for the PoCL abort this avoids), a cache of
 * built programs keyed by the caller's key, and per program the kernels created so far. Every
 * enqueued command gets an event, kept until finish() of its queue, which then reports the
 * first command that failed, by name ("kernel tdm_exp_sinh_f64: CL_OUT_OF_RESOURCES (-5)").
 *
 * Device memory is accounted per device against, in this order, CL_DEVICE_MAX_MEM_ALLOC_SIZE
 * (one buffer), the cap from the environment variable TDM_DEVICE_MEM_CAP ("64M", "2G", "1048576";
 * K/M/G/T are powers of 1024; 0 or unset: no cap) and CL_DEVICE_GLOBAL_MEM_SIZE (all buffers);
 * all three are TDM_ENOMEM, like a driver's own allocation failure, so the core can run the
 * batch elsewhere.
 *
 * Programs are built with "-cl-std=CL1.2" only. The dialect (kernels/tdm_dialect.h) decides
 * TDM_HAVE_FP64 by itself from the cl_khr_fp64 macro, which an OpenCL C compiler defines exactly
 * when the device has the extension; a -DTDM_HAVE_FP64 on the command line would add nothing on
 * such a device and would clash with the dialect's own "#define TDM_HAVE_FP64 0" on a device
 * without it. A build failure is cached with its log (building again gives the same log), so a
 * map over a bad user kernel fails every batch quickly instead of recompiling per batch.
 *
 * A driver failure at an allocation, a copy, a launch or a queue's completion (TDM_ESYS: not
 * the call's fault, not memory) marks the device lost once (runtime/sched/device_health.c):
 * every later entry returns TDM_EDEVLOST; finish() still waits for its queue first.
 *
 * Files: device.c (this: open/close, queues, copies, finish, messages), memory.c (buffers and
 * registered host memory), program.c (programs, kernels, launches), errors.c (status names);
 * ocl_internal.h holds what they share.
 *
 * Thread-safety: as device.h says, one driver thread uses a device at a time (cl_kernel objects
 * are not safe for concurrent clSetKernelArg); different devices are independent. Nothing here
 * prints or aborts: every message goes into `detail`.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "ocl_internal.h"

/* ---- messages ------------------------------------------------------------------------------- */

static void vmsg(char *detail, size_t len, const char *fmt, va_list ap)
{
    if (detail && len)
        vsnprintf(detail, len, fmt, ap);
}

int TDM__PRINTF(4, 5) tdm__ocl_fail(char *detail, size_t len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(detail, len, fmt, ap);
    va_end(ap);
    return code;
}

/* The tandem code for a driver error: the allocation failures are TDM_ENOMEM, the rest ESYS. */
int tdm__ocl_cl_code(cl_int e)
{
    switch (e) {
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_RESOURCES:
    case CL_OUT_OF_HOST_MEMORY:
        return TDM_ENOMEM;
    default:
        return TDM_ESYS;
    }
}

/* "opencl device 0 (name): <what>: CL_NAME (-n)" and the tandem code for it. */
int TDM__PRINTF(5, 6)
    tdm__ocl_cl_fail(const tdm__dev *d, char *detail, size_t len, cl_int e, const char *fmt, ...)
{
    if (detail && len) {
        int n = snprintf(detail, len, "opencl device %d (%s): ", d->index, d->name);
        if (n >= 0 && (size_t)n < len) {
            va_list ap;
            va_start(ap, fmt);
            int m = vsnprintf(detail + n, len - (size_t)n, fmt, ap);
            va_end(ap);
            if (m >= 0 && (size_t)(n + m) < len)
                snprintf(detail + n + m, len - (size_t)(n + m), ": %s (%d)", tdm__cl_errname(e),
                         (int)e);
        }
    }
    return tdm__ocl_cl_code(e);
}

int tdm__ocl_lost_if_driver(tdm__dev *d, int rc, char *detail, size_t len)
{
    return rc == TDM_ESYS ? tdm__devhealth_lose(&d->health, detail, len) : rc;
}

void tdm__ocl_fmt_bytes(char *out, size_t len, uint64_t b)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%llu B", (unsigned long long)b);
    else
        snprintf(out, len, "%.1f %s", v, unit[u]);
}

/* ---- open / close --------------------------------------------------------------------------- */

/* The index-th device in probe.c's order (all platforms, CL_DEVICE_TYPE_ALL). */
static int find_device(int index, cl_device_id *out, cl_platform_id *plat_out, char *detail,
                       size_t len)
{
    cl_uint n_plat = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &n_plat);
    if (e != CL_SUCCESS || n_plat == 0)
        return tdm__ocl_fail(detail, len, TDM_ENOTFOUND,
                             "opencl: no device %d: no OpenCL platform (clGetPlatformIDs: %s, %d)",
                             index, tdm__cl_errname(e), (int)e);
    cl_platform_id *plats = calloc(n_plat, sizeof *plats);
    if (!plats)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl: out of host memory listing platforms");
    e = clGetPlatformIDs(n_plat, plats, NULL);
    if (e != CL_SUCCESS) {
        free(plats);
        return tdm__ocl_fail(detail, len, TDM_ESYS, "opencl: clGetPlatformIDs: %s (%d)",
                             tdm__cl_errname(e), (int)e);
    }
    int seen = 0, rc = TDM_ENOTFOUND;
    for (cl_uint p = 0; p < n_plat && rc == TDM_ENOTFOUND; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || !nd)
            continue;
        if (index < seen + (int)nd) {
            cl_device_id *ids = calloc(nd, sizeof *ids);
            if (!ids) {
                rc = tdm__ocl_fail(detail, len, TDM_ENOMEM,
                                   "opencl: out of host memory listing devices");
                break;
            }
            e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL);
            if (e == CL_SUCCESS) {
                *out = ids[index - seen];
                *plat_out = plats[p];
                rc = 0;
            } else {
                rc = tdm__ocl_fail(detail, len, TDM_ESYS, "opencl: clGetDeviceIDs: %s (%d)",
                                   tdm__cl_errname(e), (int)e);
            }
            free(ids);
        }
        seen += (int)nd;
    }
    free(plats);
    if (rc == TDM_ENOTFOUND)
        tdm__ocl_fail(detail, len, rc, "opencl: no device %d (%d device(s) on %u platform(s))",
                      index, seen, n_plat);
    return rc;
}

static int has_extension(cl_device_id dev, const char *ext)
{
    size_t n = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS || n == 0)
        return 0;
    char *s = malloc(n + 1);
    if (!s)
        return 0;
    int found = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, s, NULL) == CL_SUCCESS) {
        s[n] = '\0';
        size_t el = strlen(ext);
        for (const char *p = s; (p = strstr(p, ext)) != NULL; p += el)
            if ((p == s || p[-1] == ' ') && (p[el] == ' ' || p[el] == '\0')) {
                found = 1;
                break;
            }
    }
    free(s);
    return found;
}

static void release_ops(ocl_queue *q)
{
    for (int i = 0; i < q->n; i++)
        clReleaseEvent(q->ops[i].ev);
    q->n = 0;
}

/* Unmaps and releases registered range i (its queues already finished). */
void tdm__ocl_release_pinned(tdm__dev *d, int i)
{
    if (d->pinned[i].mapped &&
        clEnqueueUnmapMemObject(d->q[0].q, d->pinned[i].mem, d->pinned[i].mapped, 0, NULL, NULL) ==
            CL_SUCCESS)
        clFinish(d->q[0].q);
    clReleaseMemObject(d->pinned[i].mem);
}

/* The slots of the open devices (tdm__dev.slot): bit i set while slot i is taken. */
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t slots_taken;

static int take_slot(void)
{
    pthread_mutex_lock(&slot_mu);
    int slot = -1;
    for (int i = 0; i < 64 && slot < 0; i++)
        if (!(slots_taken >> i & 1u)) {
            slots_taken |= (uint64_t)1 << i;
            slot = i;
        }
    pthread_mutex_unlock(&slot_mu);
    return slot; /* (-1 with 64 devices open: built like slot 0, and may share its kernels) */
}

static void give_slot(int slot)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&slot_mu);
    slots_taken &= ~((uint64_t)1 << slot);
    pthread_mutex_unlock(&slot_mu);
}

static void ocl_close(tdm__dev *d)
{
    if (!d)
        return;
    for (int i = 0; i < OCL_QUEUES; i++) {
        if (d->q[i].q)
            clFinish(d->q[i].q);
        release_ops(&d->q[i]);
        free(d->q[i].ops);
    }
    for (int i = 0; i < d->n_pinned; i++)
        tdm__ocl_release_pinned(d, i);
    d->n_pinned = 0;
    /* Buffers the core did not free: released here, their handles become invalid. */
    while (d->live.next != &d->live) {
        tdm__dbuf *b = d->live.next;
        b->next->prev = b->prev;
        b->prev->next = b->next;
        if (b->mem)
            clReleaseMemObject(b->mem);
        free(b);
    }
    tdm__ocl_programs_free(d);
    for (int i = 0; i < OCL_QUEUES; i++)
        if (d->q[i].q)
            clReleaseCommandQueue(d->q[i].q);
    if (d->ctx)
        clReleaseContext(d->ctx);
    give_slot(d->slot);
    free(d);
}

static int ocl_open(tdm_runtime *rt, int index, tdm__dev **out, char *detail, size_t len)
{
    if (!out)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: open: out is NULL");
    *out = NULL;
    if (index < 0)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: open: device index %d is negative",
                             index);

    /* The cap first: a malformed value is the user's mistake, reported before any driver work. */
    uint64_t cap = 0;
    int rc = tdm__device_mem_cap(rt, "opencl", &cap, detail, len);
    if (rc != 0)
        return rc;

    cl_device_id dev = NULL;
    cl_platform_id plat = NULL;
    rc = find_device(index, &dev, &plat, detail, len);
    if (rc != 0)
        return rc;

    tdm__dev *d = calloc(1, sizeof *d);
    if (!d)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl: out of host memory opening device %d", index);
    d->rt = rt;
    d->index = index;
    d->slot = take_slot();
    d->dev = dev;
    d->cap = cap;
    d->live.next = d->live.prev = &d->live;
    if (clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof d->name - 1, d->name, NULL) != CL_SUCCESS)
        snprintf(d->name, sizeof d->name, "?");
    char hname[64];
    snprintf(hname, sizeof hname, "opencl device %d", index);
    if ((rc = tdm__devhealth_init(&d->health, hname, detail, len)) != 0) {
        give_slot(d->slot);
        free(d);
        return rc;
    }
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->global_mem, &d->global_mem, NULL);
    cl_uint dims = 0;
    size_t items[16] = {0};
    if (clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS, sizeof dims, &dims, NULL) ==
            CL_SUCCESS &&
        dims >= 2 && dims <= 16 &&
        clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_ITEM_SIZES, dims * sizeof items[0], items, NULL) ==
            CL_SUCCESS)
        memcpy(d->max_items, items, sizeof d->max_items);
    d->fp64 = has_extension(dev, "cl_khr_fp64");

    cl_int e;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
    d->ctx = clCreateContext(props, 1, &dev, NULL, NULL, &e);
    if (!d->ctx) {
        rc = tdm__ocl_cl_fail(d, detail, len, e, "clCreateContext");
        ocl_close(d);
        return rc;
    }
    for (int i = 0; i < OCL_QUEUES; i++) {
        d->q[i].q = clCreateCommandQueue(d->ctx, dev, 0, &e);
        if (!d->q[i].q) {
            rc = tdm__ocl_cl_fail(d, detail, len, e, "clCreateCommandQueue %d", i);
            ocl_close(d);
            return rc;
        }
    }
    char mem[32], amax[32], capb[32];
    tdm__ocl_fmt_bytes(mem, sizeof mem, d->global_mem);
    tdm__ocl_fmt_bytes(amax, sizeof amax, d->max_alloc);
    tdm__ocl_fmt_bytes(capb, sizeof capb, d->cap);
    tdm__log(
        rt, TDM_DEBUG_RUNTIME,
        "opencl device %d (%s): open, %d queues, fp64 %s, memory %s, largest buffer %s, cap %s",
        index, d->name, OCL_QUEUES, d->fp64 ? "yes" : "no", mem, amax, d->cap ? capb : "none");
    *out = d;
    return 0;
}

static int ocl_n_queues(const tdm__dev *d)
{
    (void)d;
    return OCL_QUEUES;
}

/* ---- queues and commands -------------------------------------------------------------------- */

int tdm__ocl_check_queue(const tdm__dev *d, int q, const char *who, char *detail, size_t len)
{
    if (!d)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: %s: NULL device", who);
    if (q < 0 || q >= OCL_QUEUES)
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: %s: queue %d is not in [0, %d)", d->index, who, q,
                             OCL_QUEUES);
    return 0;
}

/* Room for one more event on queue q, so that recording it after a successful enqueue cannot
 * fail. */
int tdm__ocl_reserve_op(tdm__dev *d, int q, char *detail, size_t len)
{
    ocl_queue *oq = &d->q[q];
    if (oq->n < oq->cap)
        return 0;
    int ncap = oq->cap ? oq->cap * 2 : 16;
    ocl_op *grown = realloc(oq->ops, (size_t)ncap * sizeof *grown);
    if (!grown)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl: out of host memory recording a command");
    oq->ops = grown;
    oq->cap = ncap;
    return 0;
}

void TDM__PRINTF(4, 5) tdm__ocl_record_op(tdm__dev *d, int q, cl_event ev, const char *fmt, ...)
{
    ocl_op *op = &d->q[q].ops[d->q[q].n++];
    op->ev = ev;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->what, sizeof op->what, fmt, ap);
    va_end(ap);
}

static int check_range(const tdm__dev *d, const tdm__dbuf *b, size_t off, size_t n,
                       const void *host, const char *who, char *detail, size_t len)
{
    if (!b)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl device %d: %s: NULL buffer", d->index,
                             who);
    if (off > b->bytes || n > b->bytes - off)
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: %s: bytes [%zu, %zu + %zu) are outside a buffer of %zu", d->index,
            who, off, off, n, b->bytes);
    if (n && !host)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl device %d: %s: NULL host pointer",
                             d->index, who);
    return 0;
}

static int ocl_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                     char *detail, size_t len)
{
    int rc = tdm__ocl_check_queue(d, q, "write", detail, len);
    if (!rc)
        rc = check_range(d, dst, dst_off, n, src, "write", detail, len);
    if (!rc)
        rc = tdm__devhealth_enter(&d->health, TDM__FAULT_WRITE, detail, len);
    if (rc || n == 0)
        return rc;
    if ((rc = tdm__ocl_reserve_op(d, q, detail, len)) != 0)
        return rc;
    /* From pageable or registered host memory alike: see "registered host memory" below. */
    cl_event ev = NULL;
    cl_int e = clEnqueueWriteBuffer(d->q[q].q, dst->mem, CL_FALSE, dst_off, n, src, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return tdm__ocl_lost_if_driver(
            d,
            tdm__ocl_cl_fail(d, detail, len, e, "clEnqueueWriteBuffer of %zu bytes on queue %d", n,
                             q),
            detail, len);
    tdm__ocl_record_op(d, q, ev, "write of %zu bytes", n);
    return 0;
}

static int ocl_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                    char *detail, size_t len)
{
    int rc = tdm__ocl_check_queue(d, q, "read", detail, len);
    if (!rc)
        rc = check_range(d, src, src_off, n, dst, "read", detail, len);
    if (!rc)
        rc = tdm__devhealth_enter(&d->health, TDM__FAULT_READ, detail, len);
    if (rc || n == 0)
        return rc;
    if ((rc = tdm__ocl_reserve_op(d, q, detail, len)) != 0)
        return rc;
    cl_event ev = NULL;
    cl_int e = clEnqueueReadBuffer(d->q[q].q, src->mem, CL_FALSE, src_off, n, dst, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return tdm__ocl_lost_if_driver(
            d,
            tdm__ocl_cl_fail(d, detail, len, e, "clEnqueueReadBuffer of %zu bytes on queue %d", n,
                             q),
            detail, len);
    tdm__ocl_record_op(d, q, ev, "read of %zu bytes", n);
    return 0;
}

static int ocl_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    int rc = tdm__ocl_check_queue(d, q, "finish", detail, len);
    if (rc)
        return rc;
    ocl_queue *oq = &d->q[q];
    cl_int fe = clFinish(oq->q);
    /* The first command that failed names the error better than clFinish's own code. */
    for (int i = 0; i < oq->n && rc == 0; i++) {
        cl_int st = CL_COMPLETE;
        cl_int e =
            clGetEventInfo(oq->ops[i].ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st, NULL);
        if (e != CL_SUCCESS)
            rc = tdm__ocl_cl_fail(d, detail, len, e, "queue %d: status of %s", q, oq->ops[i].what);
        else if (st < 0)
            rc = tdm__ocl_cl_fail(d, detail, len, st, "queue %d: %s failed", q, oq->ops[i].what);
        else if (st != CL_COMPLETE && fe == CL_SUCCESS)
            rc = tdm__ocl_fail(detail, len, TDM_ESYS,
                               "opencl device %d (%s): queue %d: %s not complete after clFinish",
                               d->index, d->name, q, oq->ops[i].what);
    }
    if (rc == 0 && fe != CL_SUCCESS)
        rc = tdm__ocl_cl_fail(d, detail, len, fe, "clFinish on queue %d", q);
    release_ops(oq);
    /* Checked after the wait: a lost device's queue is drained all the same. */
    int h = tdm__devhealth_enter(&d->health, TDM__FAULT_FINISH, detail, len);
    return h != 0 ? h : tdm__ocl_lost_if_driver(d, rc, detail, len);
}

const tdm__dev_ops tdm__opencl_dev_ops = {
    .host_register = tdm__ocl_host_register,
    .host_unregister = tdm__ocl_host_unregister,
    .kind = TDM_BACKEND_OPENCL,
    .open = ocl_open,
    .close = ocl_close,
    .n_queues = ocl_n_queues,
    .alloc = tdm__ocl_alloc,
    .free = tdm__ocl_free,
    .write = ocl_write,
    .read = ocl_read,
    .launch = tdm__ocl_launch,
    .prepare = tdm__ocl_prepare,
    .launch_2d = tdm__ocl_launch_2d,
    .finish = ocl_finish,
};
