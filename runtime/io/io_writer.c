/* SPDX-License-Identifier: MIT */
/* Streaming writers: a tensor file written block of rows by block of rows (.npy written
 * through, compressed files a group of chunks at a time), and tdm_job_save(), which drains a
 * streaming map into writers so results larger than memory go to disk with flat memory. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io_internal.h"

struct tdm_writer {
    tdm_runtime *rt;
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
    bool fixed_rows;    /* shape[0] was given */
    int64_t row_bytes;  /* bytes per row */
    tdm__tdz_writer *z; /* compressed; else .npy through `out` */
    tdm__io_out out;
    size_t hlen;
    int npy_version;
    bool sync;
    int64_t rows_end; /* highest row end written */
    int64_t rows_sum; /* rows written in all */
    int failed;       /* the error that broke the writer, or 0 */
};

int tdm_writer_open(tdm_runtime *rt, const char *path, tdm_dtype dtype, int ndim,
                    const int64_t *shape, const tdm_save_opts *opts, tdm_writer **out)
{
    static const char who[] = "tdm_writer_open";
    if (out)
        *out = NULL;
    int rc = tdm__io_begin(rt, who, out != NULL, path);
    if (rc != 0)
        return rc;
    if (!shape)
        return tdm__err(rt, TDM_EINVAL, "%s: shape is NULL", who);
    tdm_save_opts o;
    rc = tdm__io_save_opts(rt, who, opts, &o);
    if (rc != 0)
        return rc;
    size_t es = tdm_dtype_size(dtype);
    if (es == 0)
        return tdm__err(rt, TDM_EINVAL, "%s: invalid dtype %d", who, (int)dtype);
    if (ndim < 1 || ndim > TDM_MAX_DIMS)
        return tdm__err(rt, TDM_EINVAL, "%s: ndim %d out of range [1, %d]", who, ndim,
                        TDM_MAX_DIMS);
    if (shape[0] < -1)
        return tdm__err(rt, TDM_EINVAL, "%s: shape[0] %lld: a row count, or -1 for unknown", who,
                        (long long)shape[0]);
    int64_t probe[TDM_MAX_DIMS], numel, rb;
    memcpy(probe, shape, (size_t)ndim * sizeof *shape);
    probe[0] = 1;
    rc = tdm__shape_numel(ndim, probe, &numel);
    if (rc == TDM_EINVAL)
        return tdm__err(rt, rc, "%s: a negative dim", who);
    if (rc != 0 || tdm__mul_ovf(numel, (int64_t)es, &rb))
        return tdm__err(rt, TDM_EOVERFLOW, "%s: the row size overflows", who);
    if (shape[0] >= 0) {
        int64_t total;
        if (tdm__mul_ovf(shape[0], rb, &total))
            return tdm__err(rt, TDM_EOVERFLOW, "%s: the file size overflows", who);
    }
    tdm_writer *w = calloc(1, sizeof *w);
    if (!w)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    w->rt = rt;
    w->dtype = dtype;
    w->ndim = ndim;
    memcpy(w->shape, shape, (size_t)ndim * sizeof *shape);
    w->fixed_rows = shape[0] >= 0;
    w->row_bytes = rb;
    w->sync = o.fsync != 0;
    w->npy_version = o.npy_version;
    w->out.fd = -1;
    if (o.codec != TDM_CODEC_NONE) {
        rc = tdm__tdz_writer_open(rt, who, path, dtype, ndim, w->shape, &o, &w->z);
    } else {
        /* Room for the largest row count, so the final header has the same length. */
        int64_t big[TDM_MAX_DIMS];
        memcpy(big, shape, (size_t)ndim * sizeof *shape);
        if (!w->fixed_rows)
            big[0] = INT64_MAX;
        unsigned char hdr[4096];
        rc = tdm__npy_format(dtype, ndim, big, false, o.npy_version, 0, hdr, sizeof hdr, &w->hlen);
        if (rc == 0 && !w->fixed_rows) {
            big[0] = 0;
            rc = tdm__npy_format(dtype, ndim, big, false, o.npy_version, w->hlen, hdr, sizeof hdr,
                                 &w->hlen);
        }
        if (rc != 0)
            rc = tdm__err(rt, rc, "%s: cannot format the header", who);
        if (rc == 0)
            rc = tdm__io_out_open(rt, who, path, &w->out);
        if (rc == 0)
            rc = tdm__io_pwrite(rt, who, path, w->out.fd, hdr, w->hlen, 0);
    }
    if (rc != 0) {
        tdm_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

static int tdz_sink(void *ctx, const void *p, size_t n)
{
    return tdm__tdz_writer_write(ctx, p, n);
}

static int check_rows(tdm_writer *w, const char *who, const tdm_tensor *rows, int64_t at)
{
    tdm_runtime *rt = w->rt;
    if (w->failed)
        return tdm__err(rt, TDM_ECANCELED, "%s: an earlier write failed (%s): close or abort", who,
                        tdm_status_name(w->failed));
    if (!rows)
        return tdm__err(rt, TDM_EINVAL, "%s: rows is NULL", who);
    if (rows->dtype != w->dtype)
        return tdm__err(rt, TDM_EDTYPE, "%s: rows are %s, the file is %s", who,
                        tdm_dtype_name(rows->dtype), tdm_dtype_name(w->dtype));
    bool same = rows->ndim == w->ndim;
    for (int i = 1; same && i < w->ndim; i++)
        same = rows->shape[i] == w->shape[i];
    if (!same)
        return tdm__err(rt, TDM_ESHAPE, "%s: the rows' dims after the first differ from the file's",
                        who);
    if (w->fixed_rows && rows->shape[0] > w->shape[0] - at)
        return tdm__err(rt, TDM_ESHAPE, "%s: rows [%lld, %lld) go past the file's %lld rows", who,
                        (long long)at, (long long)(at + rows->shape[0]), (long long)w->shape[0]);
    if (tdm_tensor_numel(rows) > 0 && !tdm_tensor_data(rows))
        return tdm__err(rt, TDM_EINVAL, "%s: rows have no data", who);
    return 0;
}

/* The .npy path emits in C order, so a Fortran-contiguous block must be gathered: emit's raw
 * column-major bytes would be wrong here. */
static int emit_c_order(tdm_writer *w, const char *who, const tdm_tensor *rows, tdm__io_sink sink,
                        void *ctx)
{
    if (!tdm__io_is_fortran(rows))
        return tdm__io_emit_elements(w->rt, who, rows, sink, ctx);
    tdm_tensor *c;
    int rc = tdm_tensor_empty(w->rt, rows->dtype, rows->ndim, rows->shape, TDM_MEM_HOST, &c);
    if (rc != 0)
        return tdm__io_reerr(w->rt, rc, who);
    tdm__io_copy_strided(tdm_tensor_data(c), c->strides, tdm_tensor_data(rows), rows->strides,
                         rows->ndim, rows->shape, tdm_dtype_size(rows->dtype));
    rc = tdm__io_emit_elements(w->rt, who, c, sink, ctx);
    tdm_tensor_release(c);
    return rc;
}

static int write_rows(tdm_writer *w, const char *who, int64_t at, const tdm_tensor *rows)
{
    int rc;
    if (w->z) {
        rc = emit_c_order(w, who, rows, tdz_sink, w->z);
    } else {
        tdm__io_fdsink s = {w->rt, who, w->out.path, w->out.fd,
                            (uint64_t)w->hlen + (uint64_t)at * (uint64_t)w->row_bytes};
        rc = emit_c_order(w, who, rows, tdm__io_fdsink_write, &s);
    }
    if (rc != 0) {
        w->failed = rc;
        return rc;
    }
    int64_t end = at + rows->shape[0];
    if (end > w->rows_end)
        w->rows_end = end;
    w->rows_sum += rows->shape[0];
    return 0;
}

int tdm_writer_append(tdm_writer *w, const tdm_tensor *rows)
{
    static const char who[] = "tdm_writer_append";
    if (!w)
        return tdm__err(NULL, TDM_EINVAL, "%s: writer is NULL", who);
    tdm__err_clear(w->rt);
    int rc = check_rows(w, who, rows, w->rows_end);
    if (rc != 0)
        return rc;
    return write_rows(w, who, w->rows_end, rows);
}

int tdm_writer_write_at(tdm_writer *w, int64_t row, const tdm_tensor *rows)
{
    static const char who[] = "tdm_writer_write_at";
    if (!w)
        return tdm__err(NULL, TDM_EINVAL, "%s: writer is NULL", who);
    tdm__err_clear(w->rt);
    if (w->z)
        return tdm__err(w->rt, TDM_EINVAL, "%s: a compressed writer only appends (rows in order)",
                        who);
    if (row < 0)
        return tdm__err(w->rt, TDM_EINVAL, "%s: row %lld is negative", who, (long long)row);
    int rc = check_rows(w, who, rows, row);
    if (rc != 0)
        return rc;
    return write_rows(w, who, row, rows);
}

int64_t tdm_writer_rows(const tdm_writer *w)
{
    return w ? w->rows_end : 0;
}

int tdm_writer_close(tdm_writer *w)
{
    static const char who[] = "tdm_writer_close";
    if (!w)
        return tdm__err(NULL, TDM_EINVAL, "%s: writer is NULL", who);
    tdm_runtime *rt = w->rt;
    tdm__err_clear(rt);
    int rc = 0;
    if (w->failed)
        rc = tdm__err(rt, w->failed, "%s: an earlier write failed: the file was not created", who);
    else if (w->fixed_rows && w->rows_end != w->shape[0])
        rc = tdm__err(rt, TDM_ESHAPE, "%s: %lld rows written of the %lld declared", who,
                      (long long)w->rows_end, (long long)w->shape[0]);
    else if (w->rows_sum != w->rows_end)
        rc = tdm__err(rt, TDM_ESHAPE,
                      "%s: rows written (%lld) do not cover [0, %lld) once: gaps or overlaps", who,
                      (long long)w->rows_sum, (long long)w->rows_end);
    if (rc != 0) {
        tdm_writer_abort(w);
        return rc;
    }
    if (w->z) {
        rc = tdm__tdz_writer_close(w->z, w->rows_end);
        w->z = NULL;
    } else {
        w->shape[0] = w->rows_end;
        unsigned char hdr[4096];
        size_t len;
        rc = tdm__npy_format(w->dtype, w->ndim, w->shape, false, w->npy_version, w->hlen, hdr,
                             sizeof hdr, &len);
        if (rc != 0 || len != w->hlen)
            rc = tdm__err(rt, TDM_EOVERFLOW, "%s: the final header does not fit", who);
        if (rc == 0)
            rc = tdm__io_pwrite(rt, who, w->out.path, w->out.fd, hdr, len, 0);
        /* Sized exactly, also when the last rows were empty. */
        if (rc == 0 && ftruncate(w->out.fd, (off_t)(w->hlen + (uint64_t)w->rows_end *
                                                                  (uint64_t)w->row_bytes)) != 0)
            rc = tdm__err(rt, TDM_EIO, "%s: cannot size '%s'", who, w->out.path);
        if (rc == 0)
            rc = tdm__io_out_commit(rt, who, &w->out, w->sync);
    }
    tdm_writer_abort(w);
    return rc;
}

void tdm_writer_abort(tdm_writer *w)
{
    if (!w)
        return;
    tdm__tdz_writer_abort(w->z);
    if (w->out.fd >= 0 || w->out.tmp)
        tdm__io_out_abort(&w->out);
    free(w);
}

int tdm_job_save(tdm_job *job, tdm_writer *const *writers, int n_writers, tdm_report *report)
{
    static const char who[] = "tdm_job_save";
    tdm_runtime *rt = writers && n_writers > 0 && writers[0] ? writers[0]->rt : NULL;
    if (!job || !writers || n_writers < 1)
        return tdm__err(rt, TDM_EINVAL, "%s: NULL job or writers, or n_writers %d < 1", who,
                        n_writers);
    for (int k = 0; k < n_writers; k++)
        if (!writers[k])
            return tdm__err(rt, TDM_EINVAL, "%s: writer %d is NULL", who, k);
    tdm__err_clear(rt);
    int err = 0;
    char msg[TDM__ERRMSG_LEN] = "";
    tdm_batch_result r;
    for (;;) {
        int rc = tdm_job_next(job, &r);
        if (rc == TDM_EDONE)
            break;
        if (rc != 0) {
            err = err ? err : rc;
            break;
        }
        if (err || r.status != 0)
            continue;
        if (!r.out || r.n_out != n_writers) {
            err = tdm__err(rt, TDM_EINVAL,
                           "%s: the job %s: start it with tdm_map_async(..., outputs NULL, "
                           "n_out = %d, ...)",
                           who, r.out ? "has another output count" : "writes its own outputs",
                           n_writers);
        }
        for (int k = 0; k < n_writers && !err; k++) {
            tdm_writer *w = writers[k];
            if (w->z && r.begin != w->rows_end)
                err = tdm__err(rt, TDM_EINVAL,
                               "%s: batch rows [%lld, %lld) arrive out of order for compressed "
                               "writer %d: use TDM_ORDER_SUBMISSION",
                               who, (long long)r.begin, (long long)r.end, k);
            else
                err = w->z ? tdm_writer_append(w, r.out[k])
                           : tdm_writer_write_at(w, r.begin, r.out[k]);
        }
        if (err) {
            snprintf(msg, sizeof msg, "%s", tdm_errmsg(rt));
            tdm_job_cancel(job);
        }
    }
    int st = tdm_job_wait(job, report);
    if (err) {
        char copy[TDM__ERRMSG_LEN];
        snprintf(copy, sizeof copy, "%s", msg);
        return tdm__err(rt, err, "%s", copy);
    }
    return st;
}
