/* SPDX-License-Identifier: MIT */
/* Pipelines (see include/tandem/pipeline.h): a driver thread moves each batch from stage to
 * stage as its stage maps finish (a finish hook on the job wakes it: no polling), a ring of
 * `depth` slots per stage carries the rows, and the consumer takes batches in order.
 *
 * Row states live in shared memory, one byte per row of each slot: 0 pending in the current
 * stage, 1 done, 2 failed (with a reason beside it). A host stage's rows are run through a
 * trampoline that skips failed rows and marks the others done when the stage function
 * returns; rows still pending when the stage map ends belonged to a sub-batch whose worker
 * died or timed out, and fail with the map's error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "sched/job.h"

#define TDM__PL_REASON 256
#define TDM__PL_MAX_STAGES 16

enum { ROW_PENDING = 0, ROW_OK = 1, ROW_FAILED = 2 };
enum { SLOT_FREE, SLOT_RUNNING, SLOT_READY, SLOT_HELD };

/* The parameter block of a host stage's map: copied by the map into shared memory when the
 * stage runs in worker processes. */
typedef struct {
    tdm_stage_io io;
    tdm_stage_fn fn;
    char name[48];
} pl_block;

struct tdm_pipeline;

typedef struct {
    struct tdm_pipeline *p;
    int state;
    int64_t batch;
    int stage;
    tdm__job *job;
    atomic_int done; /* set by the job's finish hook */
} pl_slot;

struct tdm_pipeline {
    tdm_runtime *rt;
    int n_stages;
    tdm_stage st[TDM__PL_MAX_STAGES];
    char names[TDM__PL_MAX_STAGES][48];
    int64_t row_bytes[TDM__PL_MAX_STAGES];
    tdm_tensor *params_t[TDM__PL_MAX_STAGES]; /* shared copies of the stages' params */
    int64_t n_items, batch_rows, n_batches;
    int depth;
    tdm_pipeline_opts o;
    tdm_tensor **slot;      /* [n_stages * depth] */
    tdm_tensor **last_view; /* [n_stages * depth]: rows of a short last batch, or NULL */
    tdm_tensor *state_t;    /* u8 [depth * batch_rows] */
    tdm_tensor *reason_t;   /* char [depth * batch_rows * TDM__PL_REASON] */
    uint8_t *state;
    char *reason;
    pl_slot *ps;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t driver;
    bool driver_started, stop;
    int64_t next_start, next_out;
    int held;
    tdm_tensor *view; /* handed to the consumer */
    uint8_t *row_ok;  /* [batch_rows] */
    tdm_pipeline_stats stats;
};

/* ---- the stage side (pool threads or worker processes) ---------------------------------- */

void tdm_stage_fail_row(const tdm_stage_io *io, int64_t row, const char *reason)
{
    if (!io || !io->row_state || row < 0 || row >= io->rows)
        return;
    io->row_state[row] = ROW_FAILED;
    char *dst = io->row_reason + row * TDM__PL_REASON;
    snprintf(dst, TDM__PL_REASON, "%s: %s", io->stage, reason ? reason : "failed");
}

static int pl_run(const void *pv, int64_t begin, int64_t end, tdm_task *task)
{
    const pl_block *b = pv;
    const tdm_stage_io *io = &b->io;
    uint8_t *st = io->row_state;
    for (int64_t r = begin; r < end;) {
        if (st[r] == ROW_FAILED) {
            r++;
            continue;
        }
        int64_t e = r;
        while (e < end && st[e] != ROW_FAILED)
            e++;
        int rc = b->fn(io, r, e, task);
        if (rc > 0)
            rc = TDM_EKERNEL;
        for (int64_t q = r; q < e; q++) {
            if (st[q] != ROW_PENDING)
                continue;
            if (rc == 0) {
                st[q] = ROW_OK;
            } else {
                st[q] = ROW_FAILED;
                snprintf(io->row_reason + q * TDM__PL_REASON, TDM__PL_REASON,
                         "%s: rows %lld..%lld returned %s", b->name, (long long)r, (long long)e,
                         tdm_status_name(rc));
            }
        }
        r = e;
    }
    return 0; /* failures are the rows' */
}

/* ---- the driver ------------------------------------------------------------------------- */

static void on_finish(void *arg)
{
    pl_slot *s = arg;
    atomic_store(&s->done, 1);
    pthread_mutex_lock(&s->p->mu);
    pthread_cond_broadcast(&s->p->cv);
    pthread_mutex_unlock(&s->p->mu);
}

static int64_t rows_of(const struct tdm_pipeline *p, int64_t batch)
{
    int64_t left = p->n_items - batch * p->batch_rows;
    return left < p->batch_rows ? left : p->batch_rows;
}

/* Tensors of stage s's slot i holding `rows` rows (the slot itself, or a view of its head). */
static tdm_tensor *slot_rows(struct tdm_pipeline *p, int s, int i, int64_t rows)
{
    tdm_tensor *t = p->slot[s * p->depth + i];
    if (rows == p->batch_rows)
        return t;
    tdm_tensor **v = &p->last_view[s * p->depth + i];
    if (!*v || tdm_tensor_dim(*v, 0) != rows) {
        tdm_tensor_release(*v);
        *v = NULL;
        if (tdm_tensor_view_rows(t, 0, rows, v) != 0)
            return NULL;
    }
    return *v;
}

static void fail_pending(struct tdm_pipeline *p, int i, int64_t rows, int s, const char *why)
{
    uint8_t *st = p->state + (int64_t)i * p->batch_rows;
    char *rs = p->reason + (int64_t)i * p->batch_rows * TDM__PL_REASON;
    for (int64_t r = 0; r < rows; r++) {
        if (st[r] == ROW_PENDING) {
            st[r] = ROW_FAILED;
            /* A long reason is cut to the slot (the result is looked at, so GCC's
             * -Wformat-truncation knows the cut is meant). */
            int n = snprintf(rs + r * TDM__PL_REASON, TDM__PL_REASON, "%s: %s", p->names[s], why);
            if (n >= TDM__PL_REASON)
                memcpy(rs + r * TDM__PL_REASON + TDM__PL_REASON - 4, "...", 4);
        }
    }
}

/* Starts stage s of the batch in slot i; called without p->mu. On a failure to start, the
 * batch's pending rows fail and *started is false. */
static void submit(struct tdm_pipeline *p, int i, int s, bool *started)
{
    pl_slot *ps = &p->ps[i];
    int64_t k = ps->batch, rows = rows_of(p, k);
    uint8_t *st = p->state + (int64_t)i * p->batch_rows;
    for (int64_t r = 0; r < rows; r++)
        if (st[r] != ROW_FAILED)
            st[r] = ROW_PENDING;
    const tdm_stage *sg = &p->st[s];
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = sg->policy;
    o.batch_size = sg->sub_batch;
    o.on_error = TDM_ON_ERROR_CONTINUE;
    o.progress = TDM_PROGRESS_OFF;
    o.timeout_s = p->o.timeout_s;
    o.retries = p->o.retries;
    atomic_store(&ps->done, 0);
    tdm__job *job = NULL;
    int rc;
    if (sg->fn) {
        pl_block b;
        memset(&b, 0, sizeof b);
        b.fn = sg->fn;
        snprintf(b.name, sizeof b.name, "%s", p->names[s]);
        snprintf(b.io.stage, sizeof b.io.stage, "%s", p->names[s]);
        b.io.batch = k;
        b.io.item0 = k * p->batch_rows;
        b.io.rows = rows;
        b.io.in = s > 0 ? tdm_tensor_data(p->slot[(s - 1) * p->depth + i]) : NULL;
        b.io.in_row_bytes = s > 0 ? p->row_bytes[s - 1] : 0;
        b.io.out = tdm_tensor_data(p->slot[s * p->depth + i]);
        b.io.out_row_bytes = p->row_bytes[s];
        b.io.params = p->params_t[s] ? tdm_tensor_data(p->params_t[s]) : NULL;
        uint64_t z = p->o.seed + 0x9E3779B97F4A7C15ull * (uint64_t)(k + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        b.io.seed = z ^ (z >> 31);
        b.io.row_state = st;
        b.io.row_reason = p->reason + (int64_t)i * p->batch_rows * TDM__PL_REASON;
        rc = tdm__pfor_async_hook(p->rt, "tdm_pipeline", rows, pl_run, &b, sizeof b, &o, on_finish,
                                  ps, &job);
    } else {
        tdm_tensor *in = slot_rows(p, s - 1, i, rows), *out = slot_rows(p, s, i, rows);
        rc = in && out
                 ? tdm__map_async_hook(p->rt, "tdm_pipeline", sg->kernel, &in, 1, &out, 1,
                                       p->params_t[s] ? tdm_tensor_data(p->params_t[s]) : NULL,
                                       sg->params_size, &o, on_finish, ps, &job)
                 : TDM_ENOMEM;
    }
    *started = rc == 0;
    pthread_mutex_lock(&p->mu);
    ps->stage = s;
    ps->job = job;
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        char why[TDM__PL_REASON];
        snprintf(why, sizeof why, "%s", tdm_errmsg(p->rt));
        fail_pending(p, i, rows, s, why[0] ? why : tdm_status_name(rc));
    }
}

/* A stage map of slot i finished: settle its rows; then the next stage, or the batch is ready.
 * Called without p->mu. */
static void advance(struct tdm_pipeline *p, int i)
{
    pl_slot *ps = &p->ps[i];
    int s = ps->stage;
    int64_t rows = rows_of(p, ps->batch);
    if (ps->job) {
        tdm__job *job = ps->job;
        ps->job = NULL;
        int rc = tdm__job_wait(job, NULL);
        job->wait_status_valid = true;
        char why[2 * TDM__PL_REASON];
        int first = atomic_load(&job->first_error);
        if (first && job->err_detail[0]) /* e.g. the worker process and how it died */
            snprintf(why, sizeof why, "%s: %s", tdm_status_name(first), job->err_detail);
        else
            snprintf(why, sizeof why, "%s", rc ? tdm_errmsg(p->rt) : "");
        tdm__job_destroy(job);
        uint8_t *st = p->state + (int64_t)i * p->batch_rows;
        if (p->st[s].kernel) { /* a kernel map succeeds or fails as a whole */
            for (int64_t r = 0; r < rows; r++)
                if (st[r] == ROW_PENDING && rc == 0)
                    st[r] = ROW_OK;
        }
        fail_pending(p, i, rows, s, why[0] ? why : "its sub-batch did not complete");
        __atomic_fetch_add(&p->stats.stage_maps, 1, __ATOMIC_RELAXED);
    }
    for (int next = s + 1; next < p->n_stages; next++) {
        bool any = false;
        for (int64_t r = 0; r < rows && !any; r++)
            any = p->state[(int64_t)i * p->batch_rows + r] != ROW_FAILED;
        if (!any)
            break; /* every row failed: nothing left to do for this batch */
        bool started;
        submit(p, i, next, &started);
        if (started)
            return;
    }
    pthread_mutex_lock(&p->mu);
    ps->state = SLOT_READY;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *driver_main(void *arg)
{
    struct tdm_pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        bool acted = false;
        for (int i = 0; i < p->depth && !p->stop; i++) {
            pl_slot *ps = &p->ps[i];
            if (ps->state == SLOT_RUNNING && atomic_load(&ps->done)) {
                pthread_mutex_unlock(&p->mu);
                advance(p, i);
                pthread_mutex_lock(&p->mu);
                acted = true;
            }
        }
        while (!p->stop && p->next_start < p->n_batches &&
               p->ps[p->next_start % p->depth].state == SLOT_FREE) {
            int i = (int)(p->next_start % p->depth);
            pl_slot *ps = &p->ps[i];
            ps->state = SLOT_RUNNING;
            ps->batch = p->next_start++;
            memset(p->state + (int64_t)i * p->batch_rows, ROW_PENDING, (size_t)p->batch_rows);
            pthread_mutex_unlock(&p->mu);
            bool started;
            submit(p, i, 0, &started);
            if (!started)
                advance(p, i); /* its rows failed: on to the next stage or ready */
            pthread_mutex_lock(&p->mu);
            acted = true;
        }
        if (!acted)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the API ------------------------------------------------------------------------------ */

int tdm_pipeline_opts_init(tdm_pipeline_opts *o)
{
    if (!o)
        return tdm__err(NULL, TDM_EINVAL, "tdm_pipeline_opts_init: opts is NULL");
    tdm_pipeline_opts d = TDM_PIPELINE_OPTS_INIT;
    *o = d;
    return 0;
}

static int check_stage(tdm_runtime *rt, const tdm_stage *sg, int s, char *name, size_t name_len,
                       int64_t *row_bytes)
{
    if (sg->name)
        snprintf(name, name_len, "%s", sg->name);
    else if (sg->kernel)
        snprintf(name, name_len, "%s", sg->kernel);
    else
        snprintf(name, name_len, "stage %d", s);
    if (!sg->fn == !sg->kernel)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_pipeline_open: stage %d (%s) needs exactly one of fn and kernel", s,
                        name);
    if (sg->kernel && s == 0)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_pipeline_open: the first stage must be a host function (a kernel "
                        "stage maps the previous stage's rows)");
    if (sg->params_size > 0 && !sg->params)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: stage %d (%s): params is NULL", s,
                        name);
    if ((int)sg->policy < TDM_POLICY_AUTO || sg->policy > TDM_POLICY_ROUND_ROBIN)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: stage %d (%s): unknown policy %d", s,
                        name, (int)sg->policy);
    if (sg->sub_batch < 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: stage %d (%s): sub_batch < 0", s, name);
    size_t es = tdm_dtype_size(sg->dtype);
    if (es == 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: stage %d (%s): unknown dtype %d", s,
                        name, (int)sg->dtype);
    if (sg->row_ndim < 0 || sg->row_ndim > TDM_MAX_DIMS - 1)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_pipeline_open: stage %d (%s): row_ndim %d not in 0..%d", s, name,
                        sg->row_ndim, TDM_MAX_DIMS - 1);
    int64_t b = (int64_t)es;
    for (int d = 0; d < sg->row_ndim; d++) {
        if (sg->row_shape[d] < 1 || tdm__mul_ovf(b, sg->row_shape[d], &b))
            return tdm__err(rt, TDM_EINVAL,
                            "tdm_pipeline_open: stage %d (%s): row dim %d (%lld) must be >= 1 "
                            "and the row size must not overflow",
                            s, name, d, (long long)sg->row_shape[d]);
    }
    *row_bytes = b;
    if (sg->kernel) {
        const tdm__kernel *k = tdm__kernel_find(rt, sg->kernel);
        if (!k)
            return tdm__err(rt, TDM_ENOTFOUND, "tdm_pipeline_open: stage %d: no kernel named '%s'",
                            s, sg->kernel);
        if (k->def.n_in_min > 1 || k->def.n_in_max < 1 || k->def.n_out != 1)
            return tdm__err(rt, TDM_EINVAL,
                            "tdm_pipeline_open: stage %d: kernel '%s' does not take one input "
                            "and give one output",
                            s, sg->kernel);
        if (k->def.params_size != sg->params_size)
            return tdm__err(rt, TDM_EINVAL,
                            "tdm_pipeline_open: stage %d: kernel '%s' takes %zu bytes of params, "
                            "%zu given",
                            s, sg->kernel, k->def.params_size, sg->params_size);
    }
    return 0;
}

static void destroy(struct tdm_pipeline *p)
{
    for (int i = 0; p->slot && i < p->n_stages * p->depth; i++) {
        tdm_tensor_release(p->slot[i]);
        tdm_tensor_release(p->last_view[i]);
    }
    for (int s = 0; s < TDM__PL_MAX_STAGES; s++)
        tdm_tensor_release(p->params_t[s]);
    tdm_tensor_release(p->view);
    tdm_tensor_release(p->state_t);
    tdm_tensor_release(p->reason_t);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->slot);
    free(p->last_view);
    free(p->ps);
    free(p->row_ok);
    free(p);
}

int tdm_pipeline_open(tdm_runtime *rt, const tdm_stage *stages, int n_stages, int64_t n_items,
                      const tdm_pipeline_opts *opts, tdm_pipeline **out)
{
    if (!rt || !stages || !out)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: NULL argument");
    *out = NULL;
    if (n_stages < 1 || n_stages > TDM__PL_MAX_STAGES)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: %d stages (1..%d)", n_stages,
                        TDM__PL_MAX_STAGES);
    if (n_items < 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_pipeline_open: n_items %lld is negative",
                        (long long)n_items);
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    if (opts) {
        if (opts->size < sizeof o || opts->version != TDM_PIPELINE_OPTS_VERSION)
            return tdm__err(rt, TDM_EINVAL,
                            "tdm_pipeline_open: opts size %u / version %u not supported (start "
                            "from TDM_PIPELINE_OPTS_INIT)",
                            opts->size, opts->version);
        o = *opts;
    }
    if (o.batch_rows < 0 || o.depth < 0 || o.depth > 1024 || !(o.timeout_s >= 0) || o.retries < 0 ||
        o.retries > 1000)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_pipeline_open: batch_rows >= 0, depth 0..1024, timeout_s >= 0 and "
                        "retries 0..1000 are required");
    struct tdm_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return tdm__err(rt, TDM_ENOMEM, "tdm_pipeline_open: out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->rt = rt;
    p->n_stages = n_stages;
    p->o = o;
    p->batch_rows = o.batch_rows ? o.batch_rows : 64;
    p->depth = o.depth ? o.depth : 4;
    p->n_items = n_items;
    p->n_batches = (n_items + p->batch_rows - 1) / p->batch_rows;
    p->held = -1;
    int rc = 0;
    for (int s = 0; s < n_stages && rc == 0; s++) {
        p->st[s] = stages[s];
        rc = check_stage(rt, &stages[s], s, p->names[s], sizeof p->names[s], &p->row_bytes[s]);
        if (rc == 0 && stages[s].params_size > 0) {
            rc = tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){(int64_t)stages[s].params_size},
                                  TDM_MEM_SHARED, &p->params_t[s]);
            if (rc == 0)
                memcpy(tdm_tensor_data(p->params_t[s]), stages[s].params, stages[s].params_size);
        }
        p->st[s].params = NULL; /* the shared copy stands for it */
    }
    size_t n_slots = (size_t)n_stages * (size_t)p->depth;
    if (rc == 0) {
        p->slot = calloc(n_slots, sizeof *p->slot);
        p->last_view = calloc(n_slots, sizeof *p->last_view);
        p->ps = calloc((size_t)p->depth, sizeof *p->ps);
        p->row_ok = malloc((size_t)p->batch_rows);
        if (!p->slot || !p->last_view || !p->ps || !p->row_ok)
            rc = tdm__err(rt, TDM_ENOMEM, "tdm_pipeline_open: out of memory");
    }
    /* Devices a kernel stage may use are opened here, in the caller's thread: not later in
     * the pipeline's own thread (a driver such as PoCL may tie per-thread state, e.g. LLVM's
     * signal stack, to the thread that loads it, and that thread ends at close). */
    bool any_dev = false;
    for (int s = 0; s < n_stages && rc == 0; s++) {
        const tdm__kernel *k = stages[s].kernel ? tdm__kernel_find(rt, stages[s].kernel) : NULL;
        tdm_policy pol = stages[s].policy;
        if (k && k->def.dev && k->def.source && pol != TDM_POLICY_CPU &&
            pol != TDM_POLICY_THREADS && pol != TDM_POLICY_PROCS)
            any_dev = true;
    }
    if (rc == 0 && any_dev && tdm__devices_ensure(rt) < 0)
        any_dev = false; /* no device: the CPU backends run the kernel stages */
    /* Slots in shared memory (worker processes write them), page-locked when a device with
     * memory of its own is open (its copies are then DMA; a device computing on the host's
     * cores reads them in place); locking is best effort. */
    bool dma = false;
    for (int i = 0; any_dev && rt->devices && i < tdm__devices_count(rt); i++)
        dma |= !rt->devices->slots[i].info.host_cpu && !atomic_load(&rt->devices->slots[i].lost);
    unsigned mem = TDM_MEM_SHARED | (dma ? TDM_MEM_PINNED : 0u);
    for (int s = 0; s < n_stages && rc == 0; s++) {
        int64_t shape[TDM_MAX_DIMS];
        shape[0] = p->batch_rows;
        for (int d = 0; d < stages[s].row_ndim; d++)
            shape[d + 1] = stages[s].row_shape[d];
        for (int i = 0; i < p->depth && rc == 0; i++) {
            rc = tdm_tensor_empty(rt, stages[s].dtype, stages[s].row_ndim + 1, shape, mem,
                                  &p->slot[s * p->depth + i]);
            if (rc == 0)
                p->stats.slot_bytes += p->batch_rows * p->row_bytes[s];
        }
    }
    if (rc == 0)
        rc = tdm_tensor_zeros(rt, TDM_U8, 1, (int64_t[]){p->depth * p->batch_rows}, TDM_MEM_SHARED,
                              &p->state_t);
    if (rc == 0)
        rc = tdm_tensor_zeros(rt, TDM_U8, 1, (int64_t[]){p->depth * p->batch_rows * TDM__PL_REASON},
                              TDM_MEM_SHARED, &p->reason_t);
    if (rc == 0) {
        p->state = tdm_tensor_data(p->state_t);
        p->reason = tdm_tensor_data(p->reason_t);
        for (int i = 0; i < p->depth; i++) {
            p->ps[i].p = p;
            atomic_init(&p->ps[i].done, 0);
        }
        int e = pthread_create(&p->driver, NULL, driver_main, p);
        if (e != 0)
            rc = tdm__err(rt, TDM_ESYS, "tdm_pipeline_open: cannot start its thread: %s",
                          strerror(e));
        p->driver_started = e == 0;
    }
    if (rc != 0) {
        char msg[TDM__ERRMSG_LEN];
        snprintf(msg, sizeof msg, "%s", tdm_errmsg(rt));
        destroy(p);
        return tdm__err(rt, rc, "%s", msg);
    }
    *out = p;
    return 0;
}

static void release_held_locked(struct tdm_pipeline *p)
{
    if (p->held >= 0) {
        p->ps[p->held].state = SLOT_FREE;
        p->held = -1;
        pthread_cond_broadcast(&p->cv);
    }
}

int tdm_pipeline_next(tdm_pipeline *p, tdm_pipeline_batch *b)
{
    if (!p || !b)
        return tdm__err(p ? p->rt : NULL, TDM_EINVAL, "tdm_pipeline_next: NULL argument");
    tdm_tensor_release(p->view);
    p->view = NULL;
    pthread_mutex_lock(&p->mu);
    release_held_locked(p);
    if (p->next_out >= p->n_batches) {
        pthread_mutex_unlock(&p->mu);
        return TDM_EDONE;
    }
    int i = (int)(p->next_out % p->depth);
    while (!(p->ps[i].state == SLOT_READY && p->ps[i].batch == p->next_out))
        pthread_cond_wait(&p->cv, &p->mu);
    p->ps[i].state = SLOT_HELD;
    p->held = i;
    int64_t k = p->next_out++;
    pthread_mutex_unlock(&p->mu);

    int64_t rows = rows_of(p, k);
    const uint8_t *st = p->state + (int64_t)i * p->batch_rows;
    int64_t failed = 0;
    for (int64_t r = 0; r < rows; r++) {
        p->row_ok[r] = st[r] == ROW_OK;
        failed += st[r] != ROW_OK;
    }
    memset(b, 0, sizeof *b);
    b->batch = k;
    b->item0 = k * p->batch_rows;
    b->rows = rows;
    b->failed_rows = failed;
    b->row_ok = p->row_ok;
    int rc = tdm_tensor_view_rows(p->slot[(p->n_stages - 1) * p->depth + i], 0, rows, &p->view);
    b->out = p->view;
    __atomic_fetch_add(&p->stats.batches_done, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->stats.rows_done, rows, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->stats.rows_failed, failed, __ATOMIC_RELAXED);
    return rc;
}

const char *tdm_pipeline_row_reason(const tdm_pipeline *p, int64_t row)
{
    if (!p || p->held < 0 || row < 0 || row >= p->batch_rows)
        return "";
    int64_t at = (int64_t)p->held * p->batch_rows + row;
    return p->state[at] == ROW_FAILED ? p->reason + at * TDM__PL_REASON : "";
}

int tdm_pipeline_stats_get(const tdm_pipeline *p, tdm_pipeline_stats *s)
{
    if (!p || !s)
        return tdm__err(p ? p->rt : NULL, TDM_EINVAL, "tdm_pipeline_stats_get: NULL argument");
    s->batches_done = __atomic_load_n(&p->stats.batches_done, __ATOMIC_RELAXED);
    s->rows_done = __atomic_load_n(&p->stats.rows_done, __ATOMIC_RELAXED);
    s->rows_failed = __atomic_load_n(&p->stats.rows_failed, __ATOMIC_RELAXED);
    s->stage_maps = __atomic_load_n(&p->stats.stage_maps, __ATOMIC_RELAXED);
    s->slot_bytes = p->stats.slot_bytes;
    return 0;
}

int tdm_pipeline_close(tdm_pipeline *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->driver_started)
        pthread_join(p->driver, NULL);
    for (int i = 0; i < p->depth; i++) {
        tdm__job *job = p->ps[i].job;
        if (!job)
            continue;
        tdm_job_cancel((tdm_job *)job);
        (void)tdm__job_wait(job, NULL);
        job->wait_status_valid = true;
        tdm__job_destroy(job);
        p->ps[i].job = NULL;
    }
    destroy(p);
    return 0;
}
