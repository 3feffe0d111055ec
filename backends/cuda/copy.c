/* SPDX-License-Identifier: MIT */
/* CUDA backend, copies between host and device memory on a queue's stream: direct DMA from and
 * to pinned or registered memory, pageable memory staged through the queue's pinned slots. See
 * the comment at the top of device.c. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"

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

int tdm__cuda_check_queue(const tdm__dev *d, int q, char *detail, size_t len)
{
    if (q < 0 || q >= TDM__CUDA_QUEUES) {
        tdm__cuda_set_detail(detail, len, "cuda: queue %d out of range (0..%d)", q,
                             TDM__CUDA_QUEUES - 1);
        return TDM_EINVAL;
    }
    return 0;
}

/* Makes staging slot s of queue q usable by the host: allocates it the first time, else waits
 * until what the stream last did with it is done. */
static int slot_acquire(tdm__dev *d, queue *qu, int s, char *detail, size_t len)
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
            return tdm__cuda_dev_fail(d, e, "cudaEventCreate (staging buffer)", detail, len);
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

static int slot_release(tdm__dev *d, queue *qu, int s, char *detail, size_t len)
{
    CUDA_TRY(cudaEventRecord(qu->slot[s].ev, qu->stream), "cudaEventRecord (staging buffer)");
    qu->slot[s].recorded = true;
    return 0;
}

/* What both copies check first: the queue, the range, the device's health. 1 when there is
 * something to copy (the device is then current), 0 when n is 0, or the error. */
static int copy_begin(tdm__dev *d, int q, const tdm__dbuf *b, size_t off, const void *host,
                      size_t n, tdm__fault_point p, char *detail, size_t len)
{
    int rc = tdm__cuda_check_queue(d, q, detail, len);
    if (rc < 0)
        return rc;
    if (!b || (n && !host) || off > b->bytes || n > b->bytes - off) {
        tdm__cuda_set_detail(
            detail, len, "cuda %s: %zu bytes at offset %zu do not fit a %zu-byte buffer",
            p == TDM__FAULT_WRITE ? "write" : "read", n, off, b ? b->bytes : (size_t)0);
        return TDM_EINVAL;
    }
    if ((rc = tdm__devhealth_enter(&d->health, p, detail, len)) < 0)
        return rc;
    if (n == 0)
        return 0;
    if ((rc = tdm__cuda_set_device(d, detail, len)) < 0)
        return rc;
    return 1;
}

int tdm__cuda_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                    char *detail, size_t len)
{
    int rc = copy_begin(d, q, dst, dst_off, src, n, TDM__FAULT_WRITE, detail, len);
    if (rc != 1)
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
        if ((rc = slot_acquire(d, qu, s, detail, len)) < 0)
            return rc;
        memcpy(qu->slot[s].host, (const char *)src + off, c);
        CUDA_TRY(cudaMemcpyAsync(dp + off, qu->slot[s].host, c, cudaMemcpyHostToDevice, qu->stream),
                 "cudaMemcpyAsync H2D (staged)");
        if ((rc = slot_release(d, qu, s, detail, len)) < 0)
            return rc;
    }
    return 0;
}

/* A host function enqueued after a staged D2H chunk: copies it out of the staging slot. Runs on
 * a CUDA runtime thread, in stream order; makes no CUDA call. */
static void CUDART_CB copy_out_fn(void *arg)
{
    copy_out *c = arg;
    memcpy(c->dst, c->src, c->n); /* (freed at the queue's finish or close) */
}

int tdm__cuda_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                   char *detail, size_t len)
{
    int rc = copy_begin(d, q, src, src_off, dst, n, TDM__FAULT_READ, detail, len);
    if (rc != 1)
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
        if (!sl->host && (rc = slot_acquire(d, qu, s, detail, len)) < 0)
            return rc;
        /* (a slot last used by a write is reused in stream order too: no wait needed) */
        copy_out *co = malloc(sizeof *co);
        if (!co) {
            tdm__cuda_set_detail(detail, len, "cuda read: out of memory");
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
            return tdm__cuda_dev_fail(d, e, "cudaMemcpyAsync D2H (staged)", detail, len);
        }
        co->next = qu->outs;
        qu->outs = co;
        if ((rc = slot_release(d, qu, s, detail, len)) < 0)
            return rc;
    }
    return 0;
}
