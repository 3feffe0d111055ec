/* The distributed runtime's public face: opening and closing, the tensor collectives
 * (broadcast, scatter, gather), checking that every rank makes the same call, learned rates,
 * and the report. The run itself is in dist_run.c, the transport in dist_comm.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "dist_internal.h"

int tdm_dist_available(void)
{
    return TDM_HAVE_MPI ? 1 : 0;
}

int tdm_dist_open(tdm_dist **out, tdm_runtime *rt, const tdm_dist_config *cfg)
{
    if (out)
        *out = NULL;
    if (!out || !rt)
        return tdm__err(rt, TDM_EINVAL, "tdm_dist_open: %s is NULL", out ? "runtime" : "out");
    if (cfg && (cfg->size < sizeof *cfg || cfg->version != TDM_DIST_CONFIG_VERSION))
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_dist_open: config size %u / version %u unknown (use "
                        "TDM_DIST_CONFIG_INIT)",
                        cfg->size, cfg->version);
    tdm_dist *d = calloc(1, sizeof *d);
    if (!d)
        return tdm__err(rt, TDM_ENOMEM, "tdm_dist_open: out of memory");
    d->rt = rt;
    int rc = tdm__dcomm_open(d, cfg);
    if (rc == 0)
        rc = tdm__dcomm_barrier(d);
    if (rc != 0) {
        tdm__dcomm_close(d);
        free(d);
        return rc;
    }
    d->t_sync = tdm__now_ns();
    tdm__log(rt, TDM_DEBUG_RUNTIME, "dist: rank %d of %d (%s)", d->rank, d->size,
             d->mpi ? "MPI" : "single rank");
    tdm__err_clear(rt);
    *out = d;
    return 0;
}

/* ---- the merged trace ------------------------------------------------------------------- */

typedef struct {
    char **frag;
    size_t *len;
    int n;
} merged;

static void merged_body(void *arg, FILE *f)
{
    merged *m = arg;
    bool first = true;
    for (int r = 0; r < m->n; r++)
        if (m->len[r] > 0) {
            fprintf(f, "%s", first ? "" : ",");
            fwrite(m->frag[r], 1, m->len[r], f);
            first = false;
        }
}

/* Rank 0 writes one trace file with a process (lane group) per rank, times on a common clock
 * (each rank's origin is the barrier at open). Collective. */
static int merge_trace(tdm_dist *d)
{
    tdm_runtime *rt = d->rt;
    int rc = 0;
    char *mine = NULL;
    size_t mine_len = 0;
    if (tdm__trace_path(rt)) {
        FILE *f = open_memstream(&mine, &mine_len);
        if (f) {
            char host[64] = "", pname[128];
            gethostname(host, sizeof host - 1);
            snprintf(pname, sizeof pname, "rank %d (%s, pid %d)", d->rank, host, (int)getpid());
            bool first = true;
            tdm__trace_write_events(rt, f, d->rank + 1, pname,
                                    (int64_t)(tdm__trace_t0(rt) - d->t_sync), &first);
            fclose(f);
        }
    }
    uint64_t my = mine ? (uint64_t)mine_len : 0;
    uint64_t *lens = calloc((size_t)d->size, sizeof *lens);
    char **frag = calloc((size_t)d->size, sizeof *frag);
    size_t *flen = calloc((size_t)d->size, sizeof *flen);
    if (!lens || !frag || !flen) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_dist_close: out of memory (trace)");
        goto out;
    }
    rc = tdm__dcomm_allgather(d, &my, sizeof my, lens);
    if (rc != 0 || lens[0] == 0 || !tdm__trace_path(rt))
        goto out_free;
    if (d->rank == 0) {
        frag[0] = mine;
        flen[0] = (size_t)my;
        for (int r = 1; r < d->size && rc == 0; r++) {
            if (!lens[r])
                continue;
            frag[r] = malloc((size_t)lens[r]);
            if (!frag[r]) {
                rc = tdm__err(rt, TDM_ENOMEM, "tdm_dist_close: out of memory (trace)");
                break;
            }
            flen[r] = (size_t)lens[r];
            rc = tdm__dcomm_recv(d, frag[r], flen[r], r, 1);
        }
        if (rc == 0) {
            merged m = {frag, flen, d->size};
            rc = tdm__trace_write_file(rt, tdm__trace_path(rt), merged_body, &m);
        }
        for (int r = 1; r < d->size; r++)
            free(frag[r]);
    } else if (my) {
        rc = tdm__dcomm_send(d, mine, (size_t)my, 0, 1);
    }
out_free:
    /* The merged file replaces the per-rank ones the runtimes would write at close. */
    tdm__trace_free(rt);
out:
    free(mine);
    free(lens);
    free(frag);
    free(flen);
    return rc;
}

int tdm_dist_close(tdm_dist *d)
{
    if (!d)
        return 0;
    int rc = 0;
    if (d->mpi && d->size > 1)
        rc = merge_trace(d);
    int rc2 = tdm__dcomm_close(d);
    for (int i = 0; i < d->n_rates; i++)
        free(d->rates[i].rate);
    free(d->rates);
    free(d);
    return rc ? rc : rc2;
}

int tdm_dist_rank(const tdm_dist *d)
{
    return d ? d->rank : 0;
}

int tdm_dist_size(const tdm_dist *d)
{
    return d ? d->size : 0;
}

int tdm_dist_is_mpi(const tdm_dist *d)
{
    return d && d->mpi ? 1 : 0;
}

tdm_runtime *tdm_dist_runtime(const tdm_dist *d)
{
    return d ? d->rt : NULL;
}

/* ---- learned rates ---------------------------------------------------------------------- */

const double *tdm__dist_rates(const tdm_dist *d, const char *what)
{
    if (!what)
        return NULL;
    for (int i = 0; i < d->n_rates; i++)
        if (strncmp(d->rates[i].what, what, sizeof d->rates[i].what - 1) == 0)
            return d->rates[i].rate;
    return NULL;
}

int tdm__dist_rates_set(tdm_dist *d, const char *what, const double *rate)
{
    double *r = (double *)tdm__dist_rates(d, what);
    if (!r) {
        tdm__drate *g = realloc(d->rates, (size_t)(d->n_rates + 1) * sizeof *g);
        if (!g)
            return TDM_ENOMEM;
        d->rates = g;
        r = calloc((size_t)d->size, sizeof *r);
        if (!r)
            return TDM_ENOMEM;
        snprintf(g[d->n_rates].what, sizeof g[d->n_rates].what, "%s", what);
        g[d->n_rates++].rate = r;
    }
    for (int i = 0; i < d->size; i++)
        if (rate[i] > 0)
            r[i] = rate[i];
    return 0;
}

int tdm_dist_split(const tdm_dist *d, int64_t n_rows, const char *what, int64_t *rows)
{
    if (!d || !rows || n_rows < 0)
        return tdm__err(d ? d->rt : NULL, TDM_EINVAL, "tdm_dist_split: %s",
                        n_rows < 0 ? "negative row count" : "NULL argument");
    const double *rate = tdm__dist_rates(d, what);
    double known = 0, sum = 0;
    int n_known = 0;
    for (int r = 0; rate && r < d->size; r++)
        if (rate[r] > 0) {
            known += rate[r];
            n_known++;
        }
    double fill = n_known ? known / n_known : 1.0; /* an unmeasured rank: the mean */
    for (int r = 0; r < d->size; r++)
        sum += rate && rate[r] > 0 ? rate[r] : fill;
    /* largest remainder, so the parts sum to n_rows exactly */
    int64_t given = 0;
    for (int r = 0; r < d->size; r++) {
        double w = (rate && rate[r] > 0 ? rate[r] : fill) / sum;
        rows[r] = (int64_t)floor((double)n_rows * w);
        given += rows[r];
    }
    for (int r = 0; given < n_rows; r = (r + 1) % d->size, given++)
        rows[r]++;
    return 0;
}

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
    if (c->n_in < k->n_in_min || c->n_in > k->n_in_max || c->n_out != k->n_out ||
        c->n_in > 16 || c->n_out > 16)
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
