/* SPDX-License-Identifier: MIT */
/* CUDA backend, device memory: the caching pool (size classes, blocks reused once the work
 * recorded on them is done, a cap). See the comment at the top of device.c. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_dev.h"

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

void tdm__cuda_pool_trim(tdm__dev *d)
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

int tdm__cuda_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len)
{
    *out = NULL;
    if (bytes > ((size_t)1 << 62)) {
        tdm__cuda_set_detail(detail, len, "cuda alloc: %zu bytes is more than any device has",
                             bytes);
        return TDM_ENOMEM;
    }
    int rc = tdm__devhealth_enter(&d->health, TDM__FAULT_ALLOC, detail, len);
    if (rc < 0)
        return rc;
    rc = tdm__cuda_set_device(d, detail, len);
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
        tdm__cuda_set_detail(detail, len, "cuda alloc: out of host memory");
        return TDM_ENOMEM;
    }
    cudaError_t e = cudaSuccess;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1) {
            if (d->st.cached_bytes == 0)
                break;
            tdm__cuda_pool_trim(d);
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
        if (e == cudaErrorMemoryAllocation && cap && reserved + cls_bytes > cap) {
            tdm__cuda_set_detail(
                detail, len,
                "cuda device %d: %zu bytes (class %zu) over the memory cap: %llu of %llu "
                "bytes held (TDM_DEVICE_MEM_CAP)",
                d->index, bytes, cls_bytes, (unsigned long long)reserved, (unsigned long long)cap);
            return TDM_ENOMEM;
        }
        return tdm__cuda_dev_fail(d, e, "cudaMalloc", detail, len);
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

void tdm__cuda_free(tdm__dev *d, tdm__dbuf *b)
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

/* When the device has nothing in flight (a job left it): a cache larger than an eighth of the
 * device's memory is given back, so that memory one large map needed does not stay held for
 * good. Done here, not in the pipeline, because cudaFree synchronises the whole device. */
void tdm__cuda_pool_idle(tdm__dev *d)
{
    if (tdm__devhealth_lost(&d->health))
        return;
    cudaSetDevice(d->index);
    pthread_mutex_lock(&d->mu);
    if (d->st.cached_bytes > d->total_mem / 8)
        tdm__cuda_pool_trim(d);
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
        tdm__cuda_pool_trim(d);
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
