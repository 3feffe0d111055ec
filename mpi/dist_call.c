/* SPDX-License-Identifier: MIT */
/* Distributed maps and parallel_for: checking that every rank makes the same call, running it
 * (on one rank, or through dist_run.c), and the report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "dist_internal.h"

/* ---- distributed maps: checking the call on every rank ---------------------------------- */

/* What a rank's call looks like; ranks compare theirs with rank 0's. */
typedef struct {
    int32_t rc, pfor, n_in, n_out, layout, gather, no_steal, on_error, policy;
    int32_t dtype[32];
    uint64_t name_hash, params_hash;
    int64_t rows, params_size, batch_size, min_chunk;
    int64_t row_bytes[32];
    char msg[200];
} csig;

static int64_t rows_of(const tdm_tensor *t)
{
    return tdm_tensor_ndim(t) > 0 ? tdm_tensor_dim(t, 0) : 1;
}

/* Local checks of a map's arguments; fills the signature. */
static int check_local(tdm_dist *d, tdm__dcall *c, csig *s, const char *fn)
{
    tdm_runtime *rt = d->rt;
    s->pfor = c->pfor;
    s->n_in = c->n_in;
    s->n_out = c->n_out;
    s->layout = (int32_t)c->dopts.layout;
    s->gather = (int32_t)c->dopts.gather;
    s->no_steal = c->dopts.no_steal;
    s->on_error = (int32_t)c->opts.on_error;
    s->policy = (int32_t)c->opts.policy;
    s->batch_size = c->opts.batch_size;
    s->min_chunk = c->dopts.min_chunk;
    s->params_size = (int64_t)c->params_size;
    s->params_hash = c->params ? XXH3_64bits(c->params, c->params_size) : 0;
    s->name_hash = XXH3_64bits(c->what, strlen(c->what));
    if (c->dopts.layout != TDM_DIST_REPLICATED && c->dopts.layout != TDM_DIST_PARTITIONED)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown layout %d", fn, (int)c->dopts.layout);
    if (c->dopts.gather != TDM_DIST_GATHER_ROOT && c->dopts.gather != TDM_DIST_GATHER_ALL)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown gather mode %d", fn, (int)c->dopts.gather);
    if (c->dopts.min_chunk < 0 || c->dopts.progress_interval_s < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: negative min_chunk or progress interval", fn);
    if (c->params_size > 0 && !c->params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", fn,
                        c->params_size);
    if (c->pfor) {
        if (!c->fn || c->n_items < 0)
            return tdm__err(rt, TDM_EINVAL, "%s: %s", fn,
                            !c->fn ? "fn is NULL" : "negative item count");
        if (c->dopts.layout != TDM_DIST_REPLICATED)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: a parallel_for has no rows to partition "
                            "(use TDM_DIST_REPLICATED)",
                            fn);
        s->rows = c->n_items;
        return 0;
    }
    if (!c->kernel[0])
        return tdm__err(rt, TDM_EINVAL, "%s: kernel name is NULL or empty", fn);
    const tdm_kernel_def *k = tdm__kernel_def(rt, c->kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s'", fn, c->kernel);
    if (c->n_in < k->n_in_min || c->n_in > k->n_in_max || c->n_out != k->n_out || c->n_in > 16 ||
        c->n_out > 16)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: '%s' takes %d..%d inputs and %d outputs, not %d and %d", fn, c->kernel,
                        k->n_in_min, k->n_in_max, k->n_out, c->n_in, c->n_out);
    if ((c->n_in > 0 && !c->in) || (c->n_out > 0 && !c->out))
        return tdm__err(rt, TDM_EINVAL, "%s: tensor array is NULL", fn);
    if (k->params_size != c->params_size)
        return tdm__err(rt, TDM_EINVAL, "%s: '%s' takes %zu bytes of params, not %zu", fn,
                        c->kernel, k->params_size, c->params_size);
    c->whole = k->whole_inputs;
    int64_t rows = -1;
    for (int i = 0; i < c->n_in + c->n_out; i++) {
        tdm_tensor *t = i < c->n_in ? c->in[i] : c->out[i - c->n_in];
        if (!t)
            return tdm__err(rt, TDM_EINVAL, "%s: %s %d is NULL", fn,
                            i < c->n_in ? "input" : "output", i < c->n_in ? i : i - c->n_in);
        if (!tdm_tensor_is_contiguous(t))
            return tdm__err(rt, TDM_ELAYOUT, "%s: %s %d is not contiguous", fn,
                            i < c->n_in ? "input" : "output", i < c->n_in ? i : i - c->n_in);
        s->dtype[i] = (int32_t)tdm_tensor_dtype(t);
        bool whole = i < c->n_in && (c->whole >> i & 1u);
        s->row_bytes[i] = whole ? (int64_t)tdm_tensor_nbytes(t)
                                : (int64_t)tdm__row_bytes(tdm_tensor_dtype(t), tdm_tensor_ndim(t),
                                                          tdm_tensor_shape(t));
        if (whole)
            continue;
        if (tdm_tensor_ndim(t) < 1)
            return tdm__err(rt, TDM_ESHAPE, "%s: a 0-dim tensor has no rows to split", fn);
        if (rows >= 0 && rows_of(t) != rows)
            return tdm__err(rt, TDM_ESHAPE, "%s: tensors have %lld and %lld rows", fn,
                            (long long)rows, (long long)rows_of(t));
        rows = rows_of(t);
    }
    if (rows < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: no tensor gives the rows", fn);
    s->rows = rows;
    return 0;
}

/* Compares a rank's signature with rank 0's: "" when they agree. */
static void sig_diff(const csig *a, const csig *z, char *why, size_t len)
{
    why[0] = '\0';
    if (a->pfor != z->pfor || a->name_hash != z->name_hash)
        snprintf(why, len, "a different kernel or parallel_for");
    else if (a->n_in != z->n_in || a->n_out != z->n_out)
        snprintf(why, len, "%d inputs and %d outputs, rank 0 %d and %d", a->n_in, a->n_out, z->n_in,
                 z->n_out);
    else if (a->layout != z->layout || a->gather != z->gather || a->no_steal != z->no_steal ||
             a->on_error != z->on_error || a->policy != z->policy ||
             a->batch_size != z->batch_size || a->min_chunk != z->min_chunk)
        snprintf(why, len, "different options");
    else if (a->params_size != z->params_size || (!a->pfor && a->params_hash != z->params_hash))
        snprintf(why, len, "different params"); /* a parallel_for's may hold local pointers */
    else if (a->layout == TDM_DIST_REPLICATED && a->rows != z->rows)
        snprintf(why, len, "%lld items, rank 0 %lld", (long long)a->rows, (long long)z->rows);
    else
        for (int i = 0; i < a->n_in + a->n_out && !why[0]; i++)
            if (a->dtype[i] != z->dtype[i] || a->row_bytes[i] != z->row_bytes[i])
                snprintf(why, len, "%s %d differs in dtype or row shape",
                         i < a->n_in ? "input" : "output", i < a->n_in ? i : i - a->n_in);
}

static void report_init(tdm__dcall *c, int size)
{
    tdm_dist_report *r = c->rep;
    uint32_t sz = r->size;
    memset(r, 0, sizeof *r);
    r->size = sz;
    snprintf(r->what, sizeof r->what, "%s", c->what);
    r->items_total = c->n_items;
    r->n_ranks = size < TDM_DIST_MAX_REPORT_RANKS ? size : TDM_DIST_MAX_REPORT_RANKS;
}

/* The single-rank run: the local map, reported as rank 0. */
static int run_single(tdm_dist *d, tdm__dcall *c)
{
    tdm_report lr = TDM_REPORT_INIT;
    int rc = c->pfor ? tdm_parallel_for(d->rt, c->n_items, c->fn, c->params, c->params_size,
                                        &c->opts, &lr)
                     : tdm_map(d->rt, c->kernel, c->in, c->n_in, c->out, c->n_out, c->params,
                               c->params_size, &c->opts, &lr);
    if (rc != 0)
        rc = tdm__err(d->rt, rc, "%s: rank 0: %s",
                      c->pfor ? "tdm_dist_parallel_for" : "tdm_dist_map", tdm_errmsg(d->rt));
    tdm_dist_report *r = c->rep;
    r->status = rc;
    r->wall_s = r->compute_s = lr.wall_s;
    r->items = lr.items;
    r->chunks = 1;
    r->ranks[0].items = lr.items;
    r->ranks[0].chunks = 1;
    r->ranks[0].busy_s = lr.wall_s;
    r->ranks[0].rate = lr.wall_s > 0 ? (double)lr.items / lr.wall_s : 0;
    r->ranks[0].status = rc;
    return rc;
}

static int dist_call(tdm_dist *d, tdm__dcall *c, const tdm_map_opts *opts,
                     const tdm_dist_opts *dopts, tdm_dist_report *report, const char *fn)
{
    tdm_runtime *rt = d->rt;
    int rc = 0;
    tdm_map_opts_init(&c->opts);
    tdm_dist_opts dd = TDM_DIST_OPTS_INIT;
    c->dopts = dd;
    tdm_dist_report scratch = TDM_DIST_REPORT_INIT;
    if (opts && (opts->size < sizeof *opts || opts->version != TDM_MAP_OPTS_VERSION))
        rc = tdm__err(rt, TDM_EINVAL, "%s: map opts size/version unknown (TDM_MAP_OPTS_INIT)", fn);
    else if (dopts && (dopts->size < sizeof *dopts || dopts->version != TDM_DIST_OPTS_VERSION))
        rc =
            tdm__err(rt, TDM_EINVAL, "%s: dist opts size/version unknown (TDM_DIST_OPTS_INIT)", fn);
    else if (report && report->size < sizeof *report)
        rc = tdm__err(rt, TDM_EINVAL, "%s: report size %u too small (TDM_DIST_REPORT_INIT)", fn,
                      report->size);
    if (rc == 0 && opts)
        c->opts = *opts;
    if (rc == 0 && dopts)
        c->dopts = *dopts;
    c->rep = report ? report : &scratch;
    csig mine;
    memset(&mine, 0, sizeof mine);
    if (rc == 0)
        rc = check_local(d, c, &mine, fn);
    mine.rc = rc;
    if (rc != 0)
        snprintf(mine.msg, sizeof mine.msg, "%s", tdm_errmsg(rt));
    csig *all = calloc((size_t)d->size, sizeof *all);
    c->offset = calloc((size_t)d->size + 1, sizeof *c->offset);
    if (!all || !c->offset) {
        free(all);
        free(c->offset);
        c->offset = NULL;
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", fn);
    }
    int crc = tdm__dcomm_allgather(d, &mine, sizeof mine, all);
    if (crc != 0) {
        rc = crc;
        goto out;
    }
    /* every rank reaches the same verdict from the same table */
    for (int r = 0; r < d->size; r++) {
        if (all[r].rc != 0) {
            if (rc == 0)
                rc = tdm__err(rt, all[r].rc, "%s: rank %d: %s", fn, r, all[r].msg);
            goto out;
        }
    }
    for (int r = 1; r < d->size; r++) {
        char why[160];
        sig_diff(&all[r], &all[0], why, sizeof why);
        if (why[0]) {
            rc = tdm__err(rt, TDM_EINVAL, "%s: rank %d's call differs from rank 0's: %s", fn, r,
                          why);
            goto out;
        }
    }
    if (c->dopts.layout == TDM_DIST_PARTITIONED) {
        for (int r = 0; r < d->size; r++)
            c->offset[r + 1] = c->offset[r] + all[r].rows;
        c->n_items = c->offset[d->size];
    } else {
        c->n_items = all[0].rows;
    }
    report_init(c, d->size);
    if (c->n_items == 0)
        goto out;
    if (!d->mpi || d->size == 1)
        rc = run_single(d, c);
#if TDM_HAVE_MPI
    else
        rc = tdm__dist_run(d, c);
#endif
    {
        double *rate = calloc((size_t)d->size, sizeof *rate);
        for (int r = 0; rate && r < c->rep->n_ranks; r++)
            rate[r] = c->rep->ranks[r].rate;
        if (rate && c->rep->status == 0)
            (void)tdm__dist_rates_set(d, c->what, rate);
        free(rate);
    }
out:
    free(all);
    free(c->offset);
    c->offset = NULL;
    if (c->rep)
        c->rep->status = rc;
    if (rc == 0)
        tdm__err_clear(rt);
    return rc;
}

int tdm_dist_map(tdm_dist *d, const char *kernel, tdm_tensor *const *inputs, int n_in,
                 tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
                 const tdm_map_opts *opts, const tdm_dist_opts *dopts, tdm_dist_report *report)
{
    if (!d)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_map: dist is NULL");
    tdm__dcall c = {.pfor = false,
                    .what = kernel ? kernel : "",
                    .kernel = kernel ? kernel : "",
                    .in = inputs,
                    .n_in = n_in,
                    .out = outputs,
                    .n_out = n_out,
                    .params = params,
                    .params_size = params_size};
    return dist_call(d, &c, opts, dopts, report, "tdm_dist_map");
}

int tdm_dist_parallel_for(tdm_dist *d, int64_t n_items, tdm_range_fn fn, const void *params,
                          size_t params_size, const tdm_map_opts *opts, const tdm_dist_opts *dopts,
                          tdm_dist_report *report)
{
    if (!d)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_parallel_for: dist is NULL");
    tdm__dcall c = {.pfor = true,
                    .what = opts && opts->size >= sizeof *opts && opts->desc ? opts->desc
                                                                             : "parallel_for",
                    .fn = fn,
                    .params = params,
                    .params_size = params_size,
                    .n_items = n_items};
    return dist_call(d, &c, opts, dopts, report, "tdm_dist_parallel_for");
}

/* ---- the report ------------------------------------------------------------------------- */

int tdm_dist_report_format(const tdm_dist_report *r, char *buf, size_t buf_len)
{
    if (!r || (!buf && buf_len > 0) || r->size < sizeof *r)
        return tdm__err(NULL, TDM_EINVAL, "tdm_dist_report_format: bad arguments");
    size_t len = 0;
    len = tdm__appendf(
        buf, buf_len, len,
        "%s over %d rank%s: %lld/%lld items in %.3f s (compute %.3f s, gather %.3f s), "
        "%lld chunks, %lld steals, %.1f MB moved, status %s\n",
        r->what, r->n_ranks, r->n_ranks == 1 ? "" : "s", (long long)r->items,
        (long long)r->items_total, r->wall_s, r->compute_s, r->gather_s, (long long)r->chunks,
        (long long)r->steals, (double)r->bytes_moved / 1e6, tdm_status_name(r->status));
    len = tdm__appendf(buf, buf_len, len,
                       "  rank       items   share  chunks   stolen     busy s        items/s\n");
    for (int i = 0; i < r->n_ranks && i < TDM_DIST_MAX_REPORT_RANKS; i++) {
        const tdm_dist_rank_report *k = &r->ranks[i];
        len = tdm__appendf(
            buf, buf_len, len, "  %4d %11lld  %5.1f%%  %6lld %8lld %10.3f %14.1f%s%s\n", i,
            (long long)k->items, r->items > 0 ? 100.0 * (double)k->items / (double)r->items : 0.0,
            (long long)k->chunks, (long long)k->stolen_items, k->busy_s, k->rate,
            k->status ? "  " : "", k->status ? tdm_status_name(k->status) : "");
    }
    if (buf_len > 0 && len >= buf_len)
        buf[buf_len - 1] = '\0';
    return (int)len;
}
