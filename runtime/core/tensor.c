/* SPDX-License-Identifier: MIT */
/* Tensors: validation, creation, views, sharing and accessors, over runtime/core/storage.c. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "core/core.h"

/* The flags a caller may ask for; TDM_MEM_WRAPPED is reported, never requested. */
#define REQUESTABLE_MEM (TDM_MEM_SHARED | TDM_MEM_PINNED | TDM_MEM_STRICT)

/* ---- dtypes -------------------------------------------------------------------------------- */

size_t tdm_dtype_size(tdm_dtype dtype)
{
    switch (dtype) {
    case TDM_U8:
    case TDM_BOOL:
    case TDM_I8:
        return 1;
    case TDM_I32:
    case TDM_F32:
    case TDM_U32:
        return 4;
    case TDM_I64:
    case TDM_F64:
    case TDM_U64:
        return 8;
    case TDM_F16:
    case TDM_BF16:
    case TDM_I16:
    case TDM_U16:
        return 2;
    default:
        return 0;
    }
}

const char *tdm_dtype_name(tdm_dtype dtype)
{
    switch (dtype) {
    case TDM_U8:
        return "u8";
    case TDM_I32:
        return "i32";
    case TDM_I64:
        return "i64";
    case TDM_F32:
        return "f32";
    case TDM_F64:
        return "f64";
    case TDM_F16:
        return "f16";
    case TDM_BF16:
        return "bf16";
    case TDM_BOOL:
        return "bool";
    case TDM_I8:
        return "i8";
    case TDM_I16:
        return "i16";
    case TDM_U16:
        return "u16";
    case TDM_U32:
        return "u32";
    case TDM_U64:
        return "u64";
    default:
        return "invalid";
    }
}

/* ---- shape arithmetic ---------------------------------------------------------------------- */

int tdm__shape_numel(int ndim, const int64_t *shape, int64_t *n)
{
    if (!n || ndim < 0 || ndim > TDM_MAX_DIMS || (ndim > 0 && !shape))
        return TDM_EINVAL;
    /* The product runs over the dims with 0 counted as 1: that is the outermost row-major
     * stride times its dim, which must fit even for an empty tensor. */
    int64_t prod = 1;
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return TDM_EINVAL;
        if (shape[i] == 0)
            empty = true;
        else if (tdm__mul_ovf(prod, shape[i], &prod))
            return TDM_EOVERFLOW;
    }
    *n = empty ? 0 : prod;
    return 0;
}

/* Row-major strides in elements; a 0 dim counts as 1 so strides stay distinct (as torch
 * does). Cannot overflow once tdm__shape_numel() accepted the shape. */
static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

/* Checks dtype, ndim and shape; gives the element count and the contiguous byte size. */
static int check_shape(tdm_runtime *rt, const char *who, tdm_dtype dtype, int ndim,
                       const int64_t *shape, int64_t *numel, size_t *bytes)
{
    size_t es = tdm_dtype_size(dtype);
    if (es == 0)
        return tdm__err(rt, TDM_EINVAL, "%s: invalid dtype %d", who, (int)dtype);
    if (ndim < 0 || ndim > TDM_MAX_DIMS)
        return tdm__err(rt, TDM_EINVAL, "%s: ndim %d out of range [0, %d]", who, ndim,
                        TDM_MAX_DIMS);
    if (ndim > 0 && !shape)
        return tdm__err(rt, TDM_EINVAL, "%s: shape is NULL with ndim %d", who, ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return tdm__err(rt, TDM_EINVAL, "%s: dim %d is negative (%lld)", who, i,
                            (long long)shape[i]);
    if (tdm__shape_numel(ndim, shape, numel) != 0)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: the element count of the %d-dim shape overflows",
                        who, ndim);
    int64_t b;
    if (tdm__mul_ovf(*numel, (int64_t)es, &b) || b > PTRDIFF_MAX)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: %lld elements of %s overflow the byte size", who,
                        (long long)*numel, tdm_dtype_name(dtype));
    *bytes = (size_t)b;
    return 0;
}

/* Bytes from element 0 to the end of the last element for non-negative strides; 0 if empty. */
static int strided_span(int ndim, const int64_t *shape, const int64_t *strides, size_t es,
                        int64_t numel, size_t *bytes)
{
    *bytes = 0;
    if (numel == 0)
        return 0;
    int64_t last = 0, step;
    for (int i = 0; i < ndim; i++)
        if (tdm__mul_ovf(shape[i] - 1, strides[i], &step) || tdm__add_ovf(last, step, &last))
            return TDM_EOVERFLOW;
    int64_t b;
    if (tdm__add_ovf(last, 1, &last) || tdm__mul_ovf(last, (int64_t)es, &b) || b > PTRDIFF_MAX)
        return TDM_EOVERFLOW;
    *bytes = (size_t)b;
    return 0;
}

/* ---- tensor objects ------------------------------------------------------------------------ */

/* Takes over the caller's storage reference on success; counts the tensor in live_tensors. */
tdm_tensor *tdm__tensor_new(tdm__storage *s, tdm_dtype dtype, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t offset)
{
    tdm_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->storage = s;
    t->dtype = dtype;
    t->ndim = ndim;
    t->offset = offset;
    if (ndim > 0) {
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
        memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
    }
    atomic_fetch_add_explicit(&s->rt->live_tensors, 1, memory_order_relaxed);
    return t;
}

static int create(tdm_runtime *rt, const char *who, tdm_dtype dtype, int ndim, const int64_t *shape,
                  unsigned mem, bool zero, tdm_tensor **out)
{
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    tdm__err_clear(rt);
    if (mem & ~(unsigned)REQUESTABLE_MEM)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: unknown mem flags 0x%x (allowed: SHARED, PINNED, STRICT)", who,
                        mem & ~(unsigned)REQUESTABLE_MEM);
    int64_t numel;
    size_t bytes = 0;
    int rc = check_shape(rt, who, dtype, ndim, shape, &numel, &bytes);
    if (rc != 0)
        return rc;
    tdm__storage *s;
    rc = tdm__storage_create(rt, bytes, mem, who, &s);
    if (rc != 0)
        return rc;
    /* Fresh mappings come zero-filled from the kernel: only malloc'd memory needs clearing,
     * which also spares touching (and committing) every page of a large shared tensor. */
    if (zero && !s->mmapped && bytes > 0)
        memset(s->base, 0, bytes);
    int64_t strides[TDM_MAX_DIMS];
    contiguous_strides(ndim, shape, strides);
    tdm_tensor *t = tdm__tensor_new(s, dtype, ndim, shape, strides, 0);
    if (!t) {
        tdm__storage_release(s);
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate the tensor object", who);
    }
    *out = t;
    return 0;
}

int tdm_tensor_empty(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape, unsigned mem,
                     tdm_tensor **out)
{
    return create(rt, "tdm_tensor_empty", dtype, ndim, shape, mem, false, out);
}

int tdm_tensor_zeros(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape, unsigned mem,
                     tdm_tensor **out)
{
    return create(rt, "tdm_tensor_zeros", dtype, ndim, shape, mem, true, out);
}

/* Validates wrap's strides and data pointer; gives the strides to use and the bytes spanned. */
static int check_wrap_layout(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape,
                             const int64_t *strides, const void *data, int64_t numel, int64_t *st,
                             size_t *span)
{
    static const char who[] = "tdm_tensor_wrap";
    size_t es = tdm_dtype_size(dtype);
    if (strides) {
        for (int i = 0; i < ndim; i++)
            if (strides[i] < 0)
                return tdm__err(rt, TDM_EINVAL, "%s: stride %d is negative (%lld)", who, i,
                                (long long)strides[i]);
        if (ndim > 0)
            memcpy(st, strides, (size_t)ndim * sizeof *st);
    } else {
        contiguous_strides(ndim, shape, st);
    }
    if (strided_span(ndim, shape, st, es, numel, span) != 0)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: the bytes spanned by shape and strides overflow",
                        who);
    if (!data && numel > 0)
        return tdm__err(rt, TDM_EINVAL, "%s: data is NULL for %lld elements", who,
                        (long long)numel);
    if ((uintptr_t)data % es != 0)
        return tdm__err(rt, TDM_EINVAL, "%s: data %p is not aligned to %zu bytes (dtype %s)", who,
                        data, es, tdm_dtype_name(dtype));
    return 0;
}

int tdm_tensor_wrap(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape,
                    const int64_t *strides, void *data, tdm_tensor **out)
{
    static const char who[] = "tdm_tensor_wrap";
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", who);
    tdm__err_clear(rt);
    int64_t numel = 0, st[TDM_MAX_DIMS];
    size_t bytes, span = 0;
    int rc = check_shape(rt, who, dtype, ndim, shape, &numel, &bytes);
    if (rc != 0)
        return rc;
    rc = check_wrap_layout(rt, dtype, ndim, shape, strides, data, numel, st, &span);
    if (rc != 0)
        return rc;
    tdm__storage *s;
    rc = tdm__storage_wrap(rt, data, span, who, &s);
    if (rc != 0)
        return rc;
    tdm_tensor *t = tdm__tensor_new(s, dtype, ndim, shape, st, 0);
    if (!t) {
        tdm__storage_release(s);
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate the tensor object", who);
    }
    *out = t;
    return 0;
}

int tdm_tensor_view_rows(tdm_tensor *t, int64_t begin, int64_t end, tdm_tensor **out)
{
    static const char who[] = "tdm_tensor_view_rows";
    tdm_runtime *rt = t ? t->storage->rt : NULL;
    if (!out)
        return tdm__err(rt, TDM_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!t)
        return tdm__err(NULL, TDM_EINVAL, "%s: tensor is NULL", who);
    tdm__err_clear(rt);
    if (t->ndim == 0)
        return tdm__err(rt, TDM_EINVAL, "%s: a 0-dim tensor has no rows", who);
    if (begin < 0 || begin > end || end > t->shape[0])
        return tdm__err(rt, TDM_EINVAL, "%s: rows [%lld, %lld) not within [0, %lld]", who,
                        (long long)begin, (long long)end, (long long)t->shape[0]);
    int64_t shape[TDM_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = end - begin;
    /* An empty view keeps the base's offset: advancing by `begin` rows could point past the
     * storage, and no element of it is ever read. */
    int64_t offset = begin < end ? t->offset + begin * t->strides[0] : t->offset;
    tdm__storage_retain(t->storage);
    tdm_tensor *v = tdm__tensor_new(t->storage, t->dtype, t->ndim, shape, t->strides, offset);
    if (!v) {
        tdm__storage_release(t->storage);
        return tdm__err(rt, TDM_ENOMEM, "%s: cannot allocate the view", who);
    }
    *out = v;
    return 0;
}

tdm_tensor *tdm_tensor_retain(tdm_tensor *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void tdm_tensor_release(tdm_tensor *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    tdm_runtime *rt = t->storage->rt;
    tdm__storage_release(t->storage);
    free(t);
    /* Last, so tdm_runtime_close() cannot see zero while shared bytes are still accounted. */
    atomic_fetch_sub_explicit(&rt->live_tensors, 1, memory_order_release);
}

int tdm_tensor_share(tdm_tensor *t)
{
    if (!t)
        return tdm__err(NULL, TDM_EINVAL, "tdm_tensor_share: tensor is NULL");
    tdm__err_clear(t->storage->rt);
    return tdm__storage_make_shared(t->storage, "tdm_tensor_share");
}

/* ---- accessors ----------------------------------------------------------------------------- */

tdm_dtype tdm_tensor_dtype(const tdm_tensor *t)
{
    return t ? t->dtype : TDM_DTYPE_COUNT;
}

int tdm_tensor_ndim(const tdm_tensor *t)
{
    return t ? t->ndim : 0;
}

int64_t tdm_tensor_dim(const tdm_tensor *t, int i)
{
    return t && i >= 0 && i < t->ndim ? t->shape[i] : 0;
}

const int64_t *tdm_tensor_shape(const tdm_tensor *t)
{
    return t ? t->shape : NULL;
}

const int64_t *tdm_tensor_strides(const tdm_tensor *t)
{
    return t ? t->strides : NULL;
}

int64_t tdm_tensor_numel(const tdm_tensor *t)
{
    if (!t)
        return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i]; /* checked when the tensor was made */
    return n;
}

size_t tdm_tensor_nbytes(const tdm_tensor *t)
{
    if (!t)
        return 0;
    size_t span;
    /* Cannot fail: the same span was checked when the tensor (or its base) was made. */
    if (strided_span(t->ndim, t->shape, t->strides, tdm_dtype_size(t->dtype), tdm_tensor_numel(t),
                     &span) != 0)
        return 0;
    return span;
}

void *tdm_tensor_data(const tdm_tensor *t)
{
    if (!t || !t->storage->base)
        return NULL;
    /* Newest bytes on a device (a map with keep_on_device): fetch them first. The caller may
     * write through the pointer, so the device copy is no longer trusted afterwards. */
    if (t->storage->mirror)
        (void)tdm__storage_sync_host(t->storage, true);
    return tdm__tensor_ptr(t);
}

int tdm_tensor_to_host(tdm_tensor *t)
{
    if (!t)
        return tdm__err(NULL, TDM_EINVAL, "tdm_tensor_to_host: tensor is NULL");
    return t->storage->mirror ? tdm__storage_sync_host(t->storage, false) : 0;
}

int tdm_tensor_on_device(const tdm_tensor *t)
{
    return t && t->storage->mirror != NULL;
}

unsigned tdm_tensor_mem(const tdm_tensor *t)
{
    return t ? t->storage->mem : 0;
}

int tdm_tensor_is_contiguous(const tdm_tensor *t)
{
    if (!t)
        return 0;
    if (tdm_tensor_numel(t) == 0)
        return 1;
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        /* A dim of size 1 is never stepped over, so its stride does not matter. */
        if (t->shape[i] != 1 && t->strides[i] != expected)
            return 0;
        expected *= t->shape[i];
    }
    return 1;
}

tdm_runtime *tdm_tensor_runtime(const tdm_tensor *t)
{
    return t ? t->storage->rt : NULL;
}
