/* SPDX-License-Identifier: MIT */
/* Tensor files: layout helpers (Fortran order, strided copies, byte swaps) and the tensors a
 * load creates. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"
#include "core/core.h"

/* ---- layouts ------------------------------------------------------------------------------- */

void tdm__io_fortran_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = 0; i < ndim; i++) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

/* Dims of size 1 can have any stride: compare only the others. */
static bool strides_match(const tdm_tensor *t, const int64_t *want)
{
    const int64_t *sh = tdm_tensor_shape(t), *st = tdm_tensor_strides(t);
    for (int i = 0; i < tdm_tensor_ndim(t); i++)
        if (sh[i] > 1 && st[i] != want[i])
            return false;
    return true;
}

bool tdm__io_is_fortran(const tdm_tensor *t)
{
    if (tdm_tensor_is_contiguous(t) || tdm_tensor_numel(t) == 0)
        return false;
    int64_t f[TDM_MAX_DIMS];
    tdm__io_fortran_strides(tdm_tensor_ndim(t), tdm_tensor_shape(t), f);
    return strides_match(t, f);
}

void tdm__io_copy_strided(void *dst, const int64_t *dst_strides, const void *src,
                          const int64_t *src_strides, int ndim, const int64_t *shape, size_t es)
{
    if (ndim == 0) {
        memcpy(dst, src, es);
        return;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0)
            return;
    /* An odometer over every index but the last; the last dim is a strided element loop. */
    int64_t idx[TDM_MAX_DIMS] = {0};
    int last = ndim - 1;
    char *d = dst;
    const char *s = src;
    for (;;) {
        int64_t doff = 0, soff = 0;
        for (int i = 0; i < last; i++) {
            doff += idx[i] * dst_strides[i];
            soff += idx[i] * src_strides[i];
        }
        char *dp = d + doff * (int64_t)es;
        const char *sp = s + soff * (int64_t)es;
        int64_t ds = dst_strides[last] * (int64_t)es, ss = src_strides[last] * (int64_t)es;
        if (ds == (int64_t)es && ss == (int64_t)es) {
            memcpy(dp, sp, (size_t)shape[last] * es);
        } else {
            for (int64_t j = 0; j < shape[last]; j++)
                memcpy(dp + j * ds, sp + j * ss, es);
        }
        int i = last - 1;
        while (i >= 0 && ++idx[i] == shape[i])
            idx[i--] = 0;
        if (i < 0)
            return;
    }
}

void tdm__io_byteswap(void *p, size_t n, size_t es)
{
    unsigned char *b = p;
    /* the element sizes .npy has, one word at a time (memcpy: p need not be aligned) */
    if (es == 2 || es == 4 || es == 8) {
        for (size_t i = 0; i < n; i++, b += es) {
            if (es == 2) {
                uint16_t v;
                memcpy(&v, b, 2);
                v = __builtin_bswap16(v);
                memcpy(b, &v, 2);
            } else if (es == 4) {
                uint32_t v;
                memcpy(&v, b, 4);
                v = __builtin_bswap32(v);
                memcpy(b, &v, 4);
            } else {
                uint64_t v;
                memcpy(&v, b, 8);
                v = __builtin_bswap64(v);
                memcpy(b, &v, 8);
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++, b += es)
        for (size_t j = 0; j < es / 2; j++) {
            unsigned char c = b[j];
            b[j] = b[es - 1 - j];
            b[es - 1 - j] = c;
        }
}

int tdm__io_new_tensor(tdm_runtime *rt, const char *who, tdm_dtype dtype, int ndim,
                       const int64_t *shape, bool fortran, unsigned mem, tdm_tensor **out)
{
    int rc = tdm_tensor_empty(rt, dtype, ndim, shape, mem, out);
    if (rc != 0)
        return tdm__io_reerr(rt, rc, who);
    /* fresh host memory of 4 MiB or more is on transparent huge pages already (storage.c) */
    if (fortran)
        tdm__io_fortran_strides(ndim, shape, (*out)->strides);
    return 0;
}

int tdm__io_to_c_order(tdm_runtime *rt, const char *who, tdm_tensor **t, unsigned mem)
{
    tdm_tensor *src = *t, *dst;
    int rc = tdm_tensor_empty(rt, src->dtype, src->ndim, src->shape, mem, &dst);
    if (rc != 0)
        return tdm__io_reerr(rt, rc, who);
    tdm__io_copy_strided(tdm_tensor_data(dst), dst->strides, tdm_tensor_data(src), src->strides,
                         src->ndim, src->shape, tdm_dtype_size(src->dtype));
    tdm_tensor_release(src);
    *t = dst;
    return 0;
}
