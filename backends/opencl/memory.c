/* SPDX-License-Identifier: MIT */
/* OpenCL backend, device memory: buffers accounted against the device's limits and the cap, and
 * page-locked host ranges registered with the device. See the comment at the top of device.c. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl_internal.h"

/* The registered range holding [p, p+n), or -1. */
static int pinned_range(const tdm__dev *d, const void *p, size_t n)
{
    const char *c = p;
    for (int i = 0; i < d->n_pinned; i++)
        if (c >= d->pinned[i].p && n <= d->pinned[i].n &&
            c - d->pinned[i].p <= (ptrdiff_t)(d->pinned[i].n - n))
            return i;
    return -1;
}

/* ---- memory --------------------------------------------------------------------------------- */

int tdm__ocl_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len)
{
    if (!d || !out)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: alloc: NULL device or out");
    *out = NULL;
    int rc = tdm__devhealth_enter(&d->health, TDM__FAULT_ALLOC, detail, len);
    if (rc != 0)
        return rc;
    char want[32], lim[32], used[32];
    tdm__ocl_fmt_bytes(want, sizeof want, bytes);
    tdm__ocl_fmt_bytes(used, sizeof used, d->used);
    if (bytes > d->max_alloc) {
        tdm__ocl_fmt_bytes(lim, sizeof lim, d->max_alloc);
        return tdm__ocl_fail(
            detail, len, TDM_ENOMEM,
            "opencl device %d (%s): a buffer of %s is over the device's largest single "
            "allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE %s)",
            d->index, d->name, want, lim);
    }
    if (d->cap && (bytes > d->cap || d->used > d->cap - bytes)) {
        tdm__ocl_fmt_bytes(lim, sizeof lim, d->cap);
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl device %d (%s): %s more would exceed the device memory cap "
                             "TDM_DEVICE_MEM_CAP=%s (%s in use)",
                             d->index, d->name, want, lim, used);
    }
    if (bytes > d->global_mem || d->used > d->global_mem - bytes) {
        tdm__ocl_fmt_bytes(lim, sizeof lim, d->global_mem);
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl device %d (%s): %s more would exceed the device's memory "
                             "(CL_DEVICE_GLOBAL_MEM_SIZE %s, %s in use)",
                             d->index, d->name, want, lim, used);
    }
    tdm__dbuf *b = calloc(1, sizeof *b);
    if (!b)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl: out of host memory for a buffer handle");
    if (bytes) {
        cl_int e;
        b->mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
        if (!b->mem) {
            free(b);
            rc =
                tdm__ocl_cl_fail(d, detail, len, e, "clCreateBuffer of %s (%s in use)", want, used);
            return tdm__ocl_lost_if_driver(d, rc, detail, len);
        }
    }
    b->bytes = bytes;
    b->next = &d->live;
    b->prev = d->live.prev;
    d->live.prev->next = b;
    d->live.prev = b;
    d->used += bytes;
    *out = b;
    return 0;
}

void tdm__ocl_free(tdm__dev *d, tdm__dbuf *b)
{
    if (!d || !b)
        return;
    b->next->prev = b->prev;
    b->prev->next = b->next;
    d->used -= b->bytes;
    if (b->mem)
        clReleaseMemObject(b->mem);
    free(b);
}

/* ---- registered host memory ------------------------------------------------------------------
 *
 * Pinned tensors (TDM_MEM_PINNED), and shared + pinned ones that worker processes fill, are
 * registered here once per device. What OpenCL 1.2 allows with such a range decides the design:
 *
 * - A CL_MEM_USE_HOST_PTR buffer over the range may be cached by the implementation in device
 *   memory (clCreateBuffer); host_ptr holds the latest bits only once a clEnqueueMapBuffer of
 *   the region has completed, and host writes reach the buffer only at the unmap. A region
 *   mapped for writing must be unmapped before any command that reads or writes the memory
 *   object (or a sub-buffer of it) begins. So copying batches with clEnqueueCopyBuffer from/to
 *   the USE_HOST_PTR buffer while the host, and forked workers, read and write the memory
 *   directly is undefined: PoCL copes, a discrete-GPU driver may copy stale device-side data.
 * - Making that copy legal needs the whole buffer unmapped around each copy (a map covers the
 *   object, not only the copied range). That cannot be done here: up to OCL_QUEUES queues copy
 *   different ranges of one registered range at once, and host threads and worker processes
 *   write other ranges meanwhile, outside any map, and a caching driver's re-map would copy
 *   the whole device-side copy back over their writes (besides moving the whole range per
 *   batch).
 * - clEnqueueWriteBuffer / clEnqueueReadBuffer with a host pointer are defined for any host
 *   memory, per range, whatever other queues and the host do with other ranges. That is the
 *   path used for every copy, pageable or registered: one transfer either way, so no extra
 *   copy against the CopyBuffer path, and a download is in host memory (for the host and for
 *   the processes sharing it) once its queue's finish() returns.
 *
 * The registration itself is the USE_HOST_PTR buffer, never the operand of a command, mapped
 * for the host from registration to unregistration (clEnqueueMapBuffer returns host_ptr for
 * such a buffer), so every host access in between is to mapped memory. It tells the driver the
 * range is page-locked: drivers that pin USE_HOST_PTR memory at creation can then DMA
 * Write/ReadBuffer commands straight from/to it (AMD documents this as "pre-pinned" buffers);
 * others stage them as they stage pageable memory, correct either way. The trade-off: on a
 * driver that stages, a registered range copies no faster than pageable memory (the CopyBuffer
 * path avoided staging only where the driver does not cache, PoCL or an integrated GPU, and
 * was wrong where it does), and a discrete driver may reserve device memory for the never-used
 * buffer. The map is CL_MAP_WRITE_INVALIDATE_REGION: the implementation need not bring a
 * device-side copy back into host_ptr (the pointer it returns), so it has no cause to write
 * over what host threads or workers store into the range while it is being registered; the
 * unmap, at unregistration, goes host to device only.
 * A range must start at CL_DEVICE_MEM_BASE_ADDR_ALIGN (a driver may shadow a misaligned
 * host_ptr with a copy) and must not partly overlap a registered one (commands on buffers over
 * overlapping host regions are undefined): the runtime's ranges are whole pages of distinct
 * storages, and a refusal only leaves the pageable path. */
int tdm__ocl_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len)
{
    if (!d)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: register: NULL device");
    if (!p || n == 0)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl: register: empty range");
    int rc = tdm__devhealth_enter(&d->health, TDM__FAULT_NONE, detail, len);
    if (rc != 0)
        return rc;
    if (pinned_range(d, p, n) >= 0)
        return 0;
    const char *c = p;
    for (int i = 0; i < d->n_pinned; i++)
        if (c < d->pinned[i].p + d->pinned[i].n && d->pinned[i].p < c + n)
            return tdm__ocl_fail(
                detail, len, TDM_EINVAL,
                "opencl device %d: register: %zu bytes at %p overlap the registered %zu "
                "at %p",
                d->index, n, p, d->pinned[i].n, (void *)d->pinned[i].p);
    cl_uint align_bits = 0;
    if (clGetDeviceInfo(d->dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                        NULL) == CL_SUCCESS &&
        align_bits >= 16 && (uintptr_t)p % (align_bits / 8) != 0)
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: register: %p is not aligned to %u bytes "
                             "(CL_DEVICE_MEM_BASE_ADDR_ALIGN)",
                             d->index, p, align_bits / 8);
    if (d->n_pinned == (int)(sizeof d->pinned / sizeof d->pinned[0]))
        return tdm__ocl_fail(detail, len, TDM_ENOMEM,
                             "opencl: register: too many registered ranges");
    cl_int e;
    cl_mem m = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, n, p, &e);
    if (!m)
        return tdm__ocl_cl_fail(d, detail, len, e, "clCreateBuffer(USE_HOST_PTR) over %zu bytes",
                                n);
    void *mapped = clEnqueueMapBuffer(d->q[0].q, m, CL_TRUE, CL_MAP_WRITE_INVALIDATE_REGION, 0, n,
                                      0, NULL, NULL, &e);
    if (!mapped) {
        clReleaseMemObject(m);
        return tdm__ocl_cl_fail(d, detail, len, e, "clEnqueueMapBuffer of the registered %zu bytes",
                                n);
    }
    /* The spec says it is host_ptr; a driver that differs gets no registration. Released
     * without the unmap: unmapping an invalidated copy elsewhere could write it over p. */
    if (mapped != p) {
        clReleaseMemObject(m);
        return tdm__ocl_fail(
            detail, len, TDM_ESYS,
            "opencl device %d (%s): register: the map of a USE_HOST_PTR buffer over %p "
            "returned %p",
            d->index, d->name, p, mapped);
    }
    d->pinned[d->n_pinned].p = p;
    d->pinned[d->n_pinned].n = n;
    d->pinned[d->n_pinned].mem = m;
    d->pinned[d->n_pinned].mapped = mapped;
    d->n_pinned++;
    return 0;
}

void tdm__ocl_host_unregister(tdm__dev *d, void *p)
{
    if (!d)
        return;
    for (int i = 0; i < d->n_pinned; i++) {
        if (d->pinned[i].p == p) {
            /* Queued copies may still read or write the range: wait for every queue first. */
            for (int q = 0; q < OCL_QUEUES; q++)
                clFinish(d->q[q].q);
            tdm__ocl_release_pinned(d, i);
            d->pinned[i] = d->pinned[--d->n_pinned];
            return;
        }
    }
}
