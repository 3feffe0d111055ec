/* SPDX-License-Identifier: MIT */
/* The tensor collectives of the distributed runtime: broadcast, scatter, gather. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "dist_internal.h"

/* ---- tensor collectives ----------------------------------------------------------------- */

typedef struct {
    int32_t dtype, ndim;
    int64_t shape[TDM_MAX_DIMS];
} thead;

static void head_of(const tdm_tensor *t, thead *h)
{
    memset(h, 0, sizeof *h);
    h->dtype = (int32_t)tdm_tensor_dtype(t);
    h->ndim = tdm_tensor_ndim(t);
    memcpy(h->shape, tdm_tensor_shape(t), sizeof h->shape);
}

int tdm_dist_bcast(tdm_dist *d, tdm_tensor **t, int root, unsigned mem)
{
    if (!d)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_bcast: dist is NULL");
    tdm_runtime *rt = d->rt;
    int rc = 0;
    if (!t || root < 0 || root >= d->size)
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_bcast: %s", t ? "bad root" : "t is NULL");
    else if (d->rank == root && (!*t || !tdm_tensor_is_contiguous(*t)))
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_bcast: root's tensor is %s",
                      *t ? "not contiguous" : "NULL");
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_bcast")) != 0)
        return rc;
    thead h;
    if (d->rank == root)
        head_of(*t, &h);
    if ((rc = tdm__dcomm_bcast(d, &h, sizeof h, root)) != 0)
        return rc;
    bool made = false;
    if (d->rank != root) {
        if (*t) {
            thead m;
            head_of(*t, &m);
            if (m.dtype != h.dtype)
                rc = tdm__err(rt, TDM_EDTYPE, "tdm_dist_bcast: dtype %s, root's is %s",
                              tdm_dtype_name((tdm_dtype)m.dtype),
                              tdm_dtype_name((tdm_dtype)h.dtype));
            else if (m.ndim != h.ndim || memcmp(m.shape, h.shape, sizeof m.shape) != 0)
                rc = tdm__err(rt, TDM_ESHAPE, "tdm_dist_bcast: shape differs from root's");
            else if (!tdm_tensor_is_contiguous(*t))
                rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_bcast: tensor is not contiguous");
        } else {
            rc = tdm_tensor_empty(rt, (tdm_dtype)h.dtype, h.ndim, h.shape, mem, t);
            made = rc == 0;
        }
    }
    /* the root only reads: a newer device copy is fetched and stays valid */
    if (rc == 0 && d->rank == root)
        rc = tdm_tensor_to_host(*t);
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_bcast")) == 0) {
        void *p = d->rank == root ? tdm__tensor_host(*t) : tdm_tensor_data(*t);
        rc = tdm__dcomm_bcast(d, p, tdm_tensor_nbytes(*t), root);
    }
    if (rc != 0 && made) {
        tdm_tensor_release(*t);
        *t = NULL;
    }
    return rc;
}

int tdm_dist_scatter(tdm_dist *d, tdm_tensor *global, const int64_t *rows, const char *what,
                     int root, unsigned mem, tdm_tensor **local)
{
    if (!d)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_scatter: dist is NULL");
    tdm_runtime *rt = d->rt;
    if (local)
        *local = NULL;
    int rc = 0;
    int64_t *cnt = calloc((size_t)d->size, sizeof *cnt);
    if (!cnt)
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_dist_scatter: out of memory");
    else if (!local || root < 0 || root >= d->size)
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_scatter: %s", local ? "bad root" : "local is NULL");
    else if (d->rank == root &&
             (!global || tdm_tensor_ndim(global) < 1 || !tdm_tensor_is_contiguous(global)))
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_scatter: root's tensor is %s",
                      !global                       ? "NULL"
                      : tdm_tensor_ndim(global) < 1 ? "0-dim"
                                                    : "not contiguous");
    thead h = {0};
    if (rc == 0 && d->rank == root) {
        head_of(global, &h);
        if (rows) {
            int64_t sum = 0;
            for (int r = 0; r < d->size; r++) {
                if (rows[r] < 0 || __builtin_add_overflow(sum, rows[r], &sum))
                    sum = -1;
                cnt[r] = rows[r];
            }
            if (sum != h.shape[0])
                rc = tdm__err(rt, TDM_EINVAL,
                              "tdm_dist_scatter: rows per rank sum to %lld, the tensor has %lld",
                              (long long)sum, (long long)h.shape[0]);
        } else {
            tdm_dist_split(d, h.shape[0], what, cnt);
        }
    }
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_scatter")) != 0)
        goto out;
    if ((rc = tdm__dcomm_bcast(d, &h, sizeof h, root)) != 0 ||
        (rc = tdm__dcomm_bcast(d, cnt, (size_t)d->size * sizeof *cnt, root)) != 0)
        goto out;
    thead mine = h;
    mine.shape[0] = cnt[d->rank];
    rc = tdm_tensor_empty(rt, (tdm_dtype)h.dtype, h.ndim, mine.shape, mem, local);
    if (rc == 0 && d->rank == root)
        rc = tdm_tensor_to_host(global); /* read only: the device copy stays valid */
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_scatter")) != 0)
        goto out;
    size_t rb = tdm__row_bytes((tdm_dtype)h.dtype, h.ndim, h.shape);
    if (d->rank == root) {
        const char *src = tdm__tensor_host(global);
        int64_t off = 0;
        for (int r = 0; r < d->size && rc == 0; r++) {
            size_t n = (size_t)cnt[r] * rb;
            if (r == root)
                memcpy(tdm_tensor_data(*local), src + (size_t)off * rb, n);
            else if (n)
                rc = tdm__dcomm_send(d, src + (size_t)off * rb, n, r, 2);
            off += cnt[r];
        }
    } else if (cnt[d->rank]) {
        rc = tdm__dcomm_recv(d, tdm_tensor_data(*local), (size_t)cnt[d->rank] * rb, root, 2);
    }
    rc = tdm__dist_agree(d, rc, "tdm_dist_scatter");
out:
    if (rc != 0 && local && *local) {
        tdm_tensor_release(*local);
        *local = NULL;
    }
    free(cnt);
    return rc;
}

int tdm_dist_gather(tdm_dist *d, tdm_tensor *local, int root, unsigned mem, tdm_tensor **global)
{
    if (!d)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_gather: dist is NULL");
    tdm_runtime *rt = d->rt;
    if (global)
        *global = NULL;
    int rc = 0;
    bool all = root == -1;
    int to = all ? 0 : root;
    thead *hs = calloc((size_t)d->size, sizeof *hs);
    thead h = {0};
    if (!hs)
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_dist_gather: out of memory");
    else if (!global || !local || root < -1 || root >= d->size)
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_gather: %s",
                      !global  ? "global is NULL"
                      : !local ? "local is NULL"
                               : "bad root");
    else if (tdm_tensor_ndim(local) < 1 || !tdm_tensor_is_contiguous(local))
        rc = tdm__err(rt, TDM_EINVAL, "tdm_dist_gather: tensor is %s",
                      tdm_tensor_ndim(local) < 1 ? "0-dim" : "not contiguous");
    else
        head_of(local, &h);
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_gather")) != 0)
        goto out;
    if ((rc = tdm__dcomm_allgather(d, &h, sizeof h, hs)) != 0)
        goto out;
    int64_t total = 0;
    for (int r = 0; r < d->size; r++) {
        if (hs[r].dtype != hs[0].dtype) {
            rc = tdm__err(rt, TDM_EDTYPE,
                          "tdm_dist_gather: rank %d's dtype %s differs from "
                          "rank 0's %s",
                          r, tdm_dtype_name((tdm_dtype)hs[r].dtype),
                          tdm_dtype_name((tdm_dtype)hs[0].dtype));
            goto out;
        }
        if (hs[r].ndim != hs[0].ndim ||
            memcmp(hs[r].shape + 1, hs[0].shape + 1, sizeof h.shape - sizeof h.shape[0]) != 0) {
            rc = tdm__err(rt, TDM_ESHAPE,
                          "tdm_dist_gather: rank %d's rows differ in shape from "
                          "rank 0's",
                          r);
            goto out;
        }
        total += hs[r].shape[0];
    }
    if (d->rank == to || all) {
        thead g = hs[0];
        g.shape[0] = total;
        rc = tdm_tensor_empty(rt, (tdm_dtype)g.dtype, g.ndim, g.shape, mem, global);
    }
    if (rc == 0)
        rc = tdm_tensor_to_host(local); /* read only: the device copy stays valid */
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_gather")) != 0)
        goto out;
    size_t rb = tdm__row_bytes((tdm_dtype)hs[0].dtype, hs[0].ndim, hs[0].shape);
    if (d->rank == to) {
        char *dst = tdm_tensor_data(*global);
        int64_t off = 0;
        for (int r = 0; r < d->size && rc == 0; r++) {
            size_t n = (size_t)hs[r].shape[0] * rb;
            if (r == to)
                memcpy(dst + (size_t)off * rb, tdm__tensor_host(local), n);
            else if (n)
                rc = tdm__dcomm_recv(d, dst + (size_t)off * rb, n, r, 3);
            off += hs[r].shape[0];
        }
    } else if (hs[d->rank].shape[0]) {
        rc = tdm__dcomm_send(d, tdm__tensor_host(local), (size_t)hs[d->rank].shape[0] * rb, to, 3);
    }
    if ((rc = tdm__dist_agree(d, rc, "tdm_dist_gather")) == 0 && all)
        rc = tdm__dcomm_bcast(d, tdm_tensor_data(*global), (size_t)total * rb, 0);
out:
    if (rc != 0 && global && *global) {
        tdm_tensor_release(*global);
        *global = NULL;
    }
    free(hs);
    return rc;
}
