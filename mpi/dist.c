/* SPDX-License-Identifier: MIT */
/* The distributed runtime's public face: opening and closing, the merged trace, the
 * accessors, learned rates and the split of rows. The tensor collectives are in dist_tensors.c,
 * distributed maps in dist_call.c, the run itself in dist_run.c, the transport in dist_comm.c. */
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
