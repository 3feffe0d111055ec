/* SPDX-License-Identifier: MIT */
/* Batched map and parallel_for: coverage, batching, errors, streaming, progress, reports,
 * concurrency. The built-in kernels' numerics are in test_kernels.c. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"
#include "internal.h" /* (rt->n_rings: the ring slots the runtime keeps) */

/* Each item increments its own counter: every item must be visited exactly once. */
typedef struct {
    atomic_int *hits;
    int64_t fail_from; /* items >= fail_from make their batch fail (-1: never) */
    int sleep_us;      /* per batch */
} visit_params;

static int visit(const void *p, int64_t begin, int64_t end, tdm_task *task)
{
    const visit_params *vp = p;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&vp->hits[i], 1);
    if (vp->sleep_us) {
        struct timespec ts = {0, vp->sleep_us * 1000L};
        nanosleep(&ts, NULL);
    }
    if (vp->fail_from >= 0 && end > vp->fail_from)
        return TDM_EKERNEL;
    return 0;
}

static atomic_int *new_hits(int64_t n)
{
    atomic_int *h = calloc((size_t)(n ? n : 1), sizeof *h);
    assert_non_null(h);
    return h;
}

static tdm_map_opts quiet_opts(int64_t batch)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = batch;
    return o;
}

static void test_parallel_for_visits_each_item_once(void **state)
{
    const int threads[] = {1, 2, 3};
    const int64_t sizes[] = {0, 1, 7, 1000, 100003};
    const int64_t batches[] = {0, 1, 3, 64, 1000000};
    for (size_t t = 0; t < 3; t++) {
        tdm_runtime *rt = tdm_test_open(threads[t]);
        for (size_t s = 0; s < 5; s++) {
            for (size_t b = 0; b < 5; b++) {
                int64_t n = sizes[s];
                if (batches[b] == 1 && n > 1000)
                    continue;
                visit_params vp = {new_hits(n), -1, 0};
                tdm_map_opts o = quiet_opts(batches[b]);
                tdm_report r = TDM_REPORT_INIT;
                assert_int_equal(tdm_parallel_for(rt, n, visit, &vp, sizeof vp, &o, &r), 0);
                for (int64_t i = 0; i < n; i++)
                    assert_int_equal(atomic_load(&vp.hits[i]), 1);
                assert_int_equal(r.items, n);
                assert_int_equal(r.items_total, n);
                assert_int_equal(r.status, 0);
                int64_t items = 0, nb = 0;
                for (int w = 0; w < r.n_workers; w++) {
                    items += r.workers[w].items;
                    nb += r.workers[w].batches;
                }
                assert_int_equal(items, n);
                assert_int_equal(nb, r.batches);
                if (batches[b] && n)
                    assert_int_equal(r.batches, (n + batches[b] - 1) / batches[b]);
                free(vp.hits);
            }
        }
        tdm_test_close(rt);
    }
}

static void test_auto_batching_grows_for_cheap_items(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 2000000;
    visit_params vp = {new_hits(n), -1, 0};
    tdm_map_opts o = quiet_opts(0);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, visit, &vp, sizeof vp, &o, &r), 0);
    /* Cheap items (well under a microsecond, even under sanitizers): far fewer batches than
     * items. The exact sizes depend on the machine's speed, so only the order is checked. */
    assert_true(r.batches < n / 10);
    assert_true(r.batch_size >= 100);
    assert_true(r.batch_size_min >= 1);
    free(vp.hits);
    tdm_test_close(rt);
}

static int sleepy_item(const void *p, int64_t begin, int64_t end, tdm_task *task)
{
    struct timespec ts = {0, 2000000L * (long)(end - begin)}; /* 2 ms per item */
    nanosleep(&ts, NULL);
    return 0;
}

static void test_auto_batching_small_for_costly_items(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = quiet_opts(0);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, 40, sleepy_item, NULL, 0, &o, &r), 0);
    /* 2 ms items exceed the batch target: one item per batch, shared by both workers. */
    assert_int_equal(r.batch_size, 1);
    assert_int_equal(r.batches, 40);
    assert_true(r.workers[0].items > 0 && r.workers[1].items > 0);
    tdm_test_close(rt);
}

/* Fails only the batch that holds item `fail_at`: with a fixed batch size exactly one batch
 * fails, whatever the timing. */
static int fail_one(const void *p, int64_t begin, int64_t end, tdm_task *task)
{
    const int64_t *fail_at = p;
    return begin <= *fail_at && *fail_at < end ? TDM_EKERNEL : 0;
}

static void test_error_stop_names_batch(void **state)
{
    /* One thread: batches run in item order, so the first failure is batch 50 (items
     * 500..510), the stop leaves everything after it undone, and the message is exact. */
    tdm_runtime *rt = tdm_test_open(1);
    int64_t n = 1000;
    visit_params vp = {new_hits(n), 500, 0};
    tdm_map_opts o = quiet_opts(10);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, visit, &vp, sizeof vp, &o, &r), TDM_EKERNEL);
    assert_int_equal(r.status, TDM_EKERNEL);
    assert_int_equal(r.first_error, TDM_EKERNEL);
    assert_int_equal(r.first_error_batch, 50);
    assert_int_equal(r.first_error_begin, 500);
    assert_int_equal(r.first_error_end, 510);
    assert_int_equal(r.failed_batches, 1);
    /* completed items: the 50 batches before the failing one (a failed batch's items do not
     * count, though its function visited them); the stop left everything after it undone */
    assert_int_equal(r.items, 500);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(atomic_load(&vp.hits[i]), i < 510);
    const char *want = "parallel_for: batch 50 (items 500..510) failed on worker 0: TDM_EKERNEL (";
    if (strncmp(tdm_errmsg(rt), want, strlen(want)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"", tdm_errmsg(rt), want);
    free(vp.hits);
    tdm_test_close(rt);

    /* Two threads, one failing batch (items 500..510): its range is fixed; its index is the
     * one the report gives (indices follow the order batches are claimed in). */
    rt = tdm_test_open(2);
    int64_t fail_at = 505;
    r = (tdm_report)TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, fail_one, &fail_at, sizeof fail_at, &o, &r),
                     TDM_EKERNEL);
    assert_int_equal(r.failed_batches, 1);
    assert_int_equal(r.first_error_begin, 500);
    assert_int_equal(r.first_error_end, 510);
    assert_true(r.first_error_batch >= 0 && r.first_error_batch < 100);
    const char *msg = tdm_errmsg(rt);
    long long batch = -1, b = -1, e = -1;
    int worker = -1, used = 0;
    const char *fmt = "parallel_for: batch %lld (items %lld..%lld) failed on worker %d: %n";
    assert_int_equal(sscanf(msg, fmt, &batch, &b, &e, &worker, &used), 4);
    assert_int_equal(batch, r.first_error_batch);
    assert_int_equal(b, 500);
    assert_int_equal(e, 510);
    assert_true(worker == 0 || worker == 1);
    assert_int_equal(strncmp(msg + used, "TDM_EKERNEL (", 13), 0);
    tdm_test_close(rt);
}

static void test_error_continue_runs_all(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 1000;
    visit_params vp = {new_hits(n), 500, 0};
    tdm_map_opts o = quiet_opts(10);
    o.on_error = TDM_ON_ERROR_CONTINUE;
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, visit, &vp, sizeof vp, &o, &r), TDM_EKERNEL);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(atomic_load(&vp.hits[i]), 1);
    assert_int_equal(r.failed_batches, 50);
    assert_int_equal(r.items, n - 500); /* the 50 failed batches' items are not completed */
    free(vp.hits);
    tdm_test_close(rt);
}

static int positive_rc(const void *p, int64_t b, int64_t e, tdm_task *t)
{
    return 7;
}

static void test_positive_return_is_an_error(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    tdm_map_opts o = quiet_opts(0);
    assert_int_equal(tdm_parallel_for(rt, 3, positive_rc, NULL, 0, &o, NULL), TDM_EKERNEL);
    tdm_test_close(rt);
}

static void test_parallel_for_bad_args(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    visit_params vp = {new_hits(1), -1, 0};
    tdm_map_opts o = quiet_opts(0);
    assert_int_equal(tdm_parallel_for(NULL, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_parallel_for(rt, 1, NULL, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_parallel_for(rt, -1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_parallel_for(rt, 1, visit, NULL, 8, &o, NULL), TDM_EINVAL);
    tdm_report small = {.size = 8};
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, &small), TDM_EINVAL);
    assert_int_equal(atomic_load(&vp.hits[0]), 0); /* nothing ran */
    free(vp.hits);
    tdm_test_close(rt);
}

static void test_opts_validation(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    visit_params vp = {new_hits(1), -1, 0};
    tdm_map_opts o;
    o = quiet_opts(0);
    o.size = 4;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(-5);
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.policy = (tdm_policy)99;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.on_error = (tdm_on_error)7;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.progress = TDM_PROGRESS_CALLBACK; /* without a callback */
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.progress = (tdm_progress_mode)17;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.progress_interval_s = -1;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.order = (tdm_order)5;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    o = quiet_opts(0);
    o.max_in_flight = -1;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_EINVAL);
    assert_int_equal(atomic_load(&vp.hits[0]), 0);
    assert_int_equal(tdm_map_opts_init(NULL), TDM_EINVAL);
    free(vp.hits);
    tdm_test_close(rt);
}

static void test_policy_without_backend_is_enodev(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    visit_params vp = {new_hits(1), -1, 0};
    tdm_map_opts o = quiet_opts(0);
    o.policy = TDM_POLICY_GPU;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_ENODEV);
    o.policy = TDM_POLICY_PROCS;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), TDM_ENODEV);
    o.policy = TDM_POLICY_THREADS;
    assert_int_equal(tdm_parallel_for(rt, 1, visit, &vp, sizeof vp, &o, NULL), 0);
    free(vp.hits);
    tdm_test_close(rt);
}

/* Parameters are copied: the caller may change its struct right after an async start. */
typedef struct {
    int64_t *out;
    int64_t value;
} store_params;

static int store(const void *p, int64_t begin, int64_t end, tdm_task *t)
{
    const store_params *sp = p;
    for (int64_t i = begin; i < end; i++)
        sp->out[i] = sp->value;
    return 0;
}

static void test_params_copied_by_value(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t out[1000];
    store_params sp = {out, 42};
    tdm_map_opts o = quiet_opts(0);
    tdm_job *job;
    assert_int_equal(tdm_parallel_for_async(rt, 1000, store, &sp, sizeof sp, &o, &job), 0);
    sp.value = -1; /* must not be seen by the job */
    assert_int_equal(tdm_job_wait(job, NULL), 0);
    tdm_job_free(job);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(out[i], 42);
    tdm_test_close(rt);
}

/* ---- streaming ---------------------------------------------------------------------------- */

typedef struct {
    atomic_int *in_flight; /* batches started and not yet consumed */
    atomic_int *max_seen;
    atomic_int *others_done; /* batches not starting at 0 that have returned */
    bool slow_first;         /* the batch starting at 0 returns only after another one (or 10 s) */
} stream_params;

static int stream_body(const void *p, int64_t begin, int64_t end, tdm_task *t)
{
    const stream_params *sp = p;
    int now = atomic_fetch_add(sp->in_flight, 1) + 1;
    int prev = atomic_load(sp->max_seen);
    while (now > prev && !atomic_compare_exchange_weak(sp->max_seen, &prev, now)) {
    }
    if (begin == 0 && sp->slow_first) {
        struct timespec ts = {0, 1000000L};
        for (int ms = 0; ms < 10000 && atomic_load(sp->others_done) == 0; ms++)
            nanosleep(&ts, NULL);
    } else if (begin != 0) {
        atomic_fetch_add(sp->others_done, 1);
    }
    return 0;
}

static void run_stream(tdm_order order, bool slow_first)
{
    tdm_runtime *rt = tdm_test_open(2);
    atomic_int in_flight = 0, max_seen = 0, others_done = 0;
    stream_params sp = {&in_flight, &max_seen, &others_done, slow_first};
    tdm_map_opts o = quiet_opts(5);
    o.order = order;
    o.max_in_flight = 3;
    tdm_job *job;
    const int64_t n = 200;
    assert_int_equal(tdm_parallel_for_async(rt, n, stream_body, &sp, sizeof sp, &o, &job), 0);
    tdm_batch_result r;
    int64_t expect = 0, seen = 0, got = 0;
    char *covered = calloc(n, 1);
    bool out_of_order = false;
    while (tdm_job_next(job, &r) == 0) {
        assert_int_equal(r.status, 0);
        assert_true(r.slot >= 0 && r.slot < 3);
        assert_null(r.out);
        if (order == TDM_ORDER_SUBMISSION)
            assert_int_equal(r.begin, expect);
        else if (r.begin != expect)
            out_of_order = true;
        expect = r.end;
        for (int64_t i = r.begin; i < r.end; i++) {
            assert_int_equal(covered[i], 0);
            covered[i] = 1;
        }
        seen += r.end - r.begin;
        got++;
        atomic_fetch_sub(&in_flight, 1); /* this batch is consumed */
    }
    assert_int_equal(seen, n);
    assert_int_equal(got, 40);
    /* Bounded: never more than max_in_flight batches started and not consumed. */
    assert_true(atomic_load(&max_seen) <= 3);
    if (order == TDM_ORDER_COMPLETION && slow_first)
        assert_true(out_of_order);
    assert_int_equal(tdm_job_next(job, &r), TDM_EDONE);
    assert_int_equal(tdm_job_wait(job, NULL), 0);
    tdm_job_free(job);
    free(covered);
    tdm_test_close(rt);
}

static void test_stream_submission_order_bounded(void **state)
{
    run_stream(TDM_ORDER_SUBMISSION, true);
}

static void test_stream_completion_order_bounded(void **state)
{
    run_stream(TDM_ORDER_COMPLETION, true);
}

static int nothing(const void *p, int64_t begin, int64_t end, tdm_task *t)
{
    (void)p, (void)begin, (void)end, (void)t;
    return 0;
}

/* Auto batching in a streaming job: a worker leaves the job whenever every result slot is
 * taken and comes back as the consumer frees one; back, it goes on at the batch size it had
 * reached, not at one item. Here a slow consumer (1 ms a result, the first 30) keeps both
 * slots taken: in the first half of the items, each worker's first batch is its only one of a
 * single item (when each comeback started at one item again: 332,503 of 1,165,412 batches). */
static void test_stream_worker_back_in_a_job_keeps_its_batch_size(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = quiet_opts(0);
    o.max_in_flight = 2;
    tdm_job *job;
    const int64_t n = 100000000;
    assert_int_equal(tdm_parallel_for_async(rt, n, nothing, NULL, 0, &o, &job), 0);
    tdm_batch_result r;
    int results = 0, ones = 0;
    int64_t seen = 0;
    while (tdm_job_next(job, &r) == 0) {
        assert_int_equal(r.status, 0);
        ones += r.end - r.begin == 1 && r.end <= n / 2; /* (the job's tail splits down to 1) */
        seen += r.end - r.begin;
        if (++results <= 30) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(seen, n);
    assert_true(results > 30);
    if (ones > tdm_runtime_threads(rt))
        fail_msg("%d batches of one item in %d", ones, results);
    assert_int_equal(tdm_job_wait(job, NULL), 0);
    tdm_job_free(job);
    tdm_test_close(rt);
}

/* A host f64 tensor of n rows holding 0, 1, 2, ... */
static tdm_tensor *iota(tdm_runtime *rt, int64_t n)
{
    tdm_tensor *x;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)i;
    return x;
}

static void test_stream_map_ring_outputs(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    const int64_t n = 10007;
    tdm_tensor *x = iota(rt, n);
    tdm_scale_shift_params p = {2.0, 1.0};
    tdm_map_opts o = quiet_opts(100);
    o.max_in_flight = 4;
    tdm_job *job;
    assert_int_equal(tdm_map_async(rt, "scale_shift", &x, 1, NULL, 1, &p, sizeof p, &o, &job), 0);
    tdm_batch_result r;
    int64_t expect = 0;
    while (tdm_job_next(job, &r) == 0) {
        assert_int_equal(r.begin, expect);
        assert_int_equal(r.n_out, 1);
        assert_non_null(r.out);
        assert_int_equal(tdm_tensor_dim(r.out[0], 0), r.end - r.begin);
        const double *y = tdm_tensor_data(r.out[0]);
        for (int64_t i = r.begin; i < r.end; i++)
            assert_true(y[i - r.begin] == 2.0 * (double)i + 1.0);
        expect = r.end;
    }
    assert_int_equal(expect, n);
    tdm_job_free(job);
    tdm_tensor_release(x);
    tdm_test_close(rt);
}

/* Streams scale_shift over x into ring slots (batches of 100, 4 slots), checks every value,
 * and records each batch's slot memory in seen[] (up to 64). A view of the last batch is
 * retained in *kept when kept is not NULL. */
static int ring_map(tdm_runtime *rt, tdm_tensor *x, const void **seen, tdm_tensor **kept)
{
    tdm_scale_shift_params p = {2.0, 1.0};
    tdm_map_opts o = quiet_opts(100);
    o.max_in_flight = 4;
    tdm_job *job;
    assert_int_equal(tdm_map_async(rt, "scale_shift", &x, 1, NULL, 1, &p, sizeof p, &o, &job), 0);
    tdm_batch_result r;
    int n_seen = 0;
    const double *xd = tdm_tensor_data(x);
    while (tdm_job_next(job, &r) == 0) {
        const double *y = tdm_tensor_data(r.out[0]);
        for (int64_t i = r.begin; i < r.end; i++)
            assert_true(y[i - r.begin] == 2.0 * xd[i] + 1.0);
        bool known = false;
        for (int k = 0; k < n_seen; k++)
            known |= seen[k] == y;
        if (!known && n_seen < 64)
            seen[n_seen++] = y;
        if (kept && r.end == tdm_tensor_dim(x, 0)) /* (earlier slots are written again) */
            *kept = tdm_tensor_retain(r.out[0]);
    }
    tdm_job_free(job);
    return n_seen;
}

/* The ring slots of a finished streaming map are kept by the runtime and the next streaming map
 * of the same shapes writes into them (no fresh memory, no page faults: bench_stream) -- but
 * never into a slot whose view the consumer still holds: that view keeps its values. The
 * runtime closes with slots kept (they are no caller's tensors). */
static void test_stream_ring_slots_kept_for_the_next_map(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    const int64_t n = 10000;
    tdm_tensor *x = iota(rt, n);
    double *xd = tdm_tensor_data(x);
    const void *first[64], *second[64], *third[64];
    int n1 = ring_map(rt, x, first, NULL);
    assert_true(n1 >= 1 && n1 <= 4);
    assert_int_equal(rt->n_rings, 4); /* (all its slots kept: 4 of 800 bytes) */
    int n2 = ring_map(rt, x, second, NULL);
    for (int k = 0; k < n2; k++) { /* every slot of the second map was one of the first's */
        bool reused = false;
        for (int j = 0; j < n1; j++)
            reused |= second[k] == first[j];
        assert_true(reused);
    }
    /* a retained view: its slot is not handed to the next map */
    tdm_tensor *kept = NULL;
    ring_map(rt, x, first, &kept);
    assert_non_null(kept);
    const double *kv = tdm_tensor_data(kept);
    int64_t k0 = n - tdm_tensor_dim(kept, 0);
    for (int64_t i = 0; i < n; i++)
        xd[i] = -1.0; /* (the next map writes -1 everywhere) */
    int n3 = ring_map(rt, x, third, NULL);
    for (int k = 0; k < n3; k++)
        assert_true(third[k] != kv);
    for (int64_t i = 0; i < tdm_tensor_dim(kept, 0); i++)
        assert_true(kv[i] == 2.0 * (double)(k0 + i) + 1.0);
    tdm_tensor_release(kept);
    tdm_tensor_release(x);
    tdm_test_close(rt);
}

/* A streamed map into ring slots with a batch_size past its rows, or max_in_flight past its
 * items, runs as tdm_map would: slots of the rows there are (batch_size 2^33 over 10 rows asked
 * for 64 GiB slots: TDM_ENOMEM), and no more slots than items (65536 over one row: 65536). */
static void test_stream_ring_sized_by_the_rows(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 10;
    tdm_tensor *x = iota(rt, n);
    tdm_scale_shift_params p = {2.0, 1.0};
    for (int c = 0; c < 2; c++) {
        tdm_map_opts o = quiet_opts(c == 0 ? (int64_t)1 << 33 : 0);
        o.max_in_flight = 65536;
        tdm_job *job;
        assert_int_equal(tdm_map_async(rt, "scale_shift", &x, 1, NULL, 1, &p, sizeof p, &o, &job),
                         0);
        tdm_batch_result r;
        int64_t seen = 0;
        while (tdm_job_next(job, &r) == 0) {
            assert_true(r.slot >= 0 && r.slot < n);
            assert_true(tdm_tensor_dim(r.out[0], 0) == r.end - r.begin);
            const double *y = tdm_tensor_data(r.out[0]);
            for (int64_t i = r.begin; i < r.end; i++)
                assert_true(y[i - r.begin] == 2.0 * (double)i + 1.0);
            seen += r.end - r.begin;
        }
        assert_int_equal(tdm_job_wait(job, NULL), 0);
        tdm_job_free(job);
        assert_int_equal(seen, n);
    }
    tdm_tensor_release(x);
    tdm_test_close(rt);
}

static void test_stream_error_reported_in_result(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 100;
    visit_params vp = {new_hits(n), 50, 0};
    tdm_map_opts o = quiet_opts(10);
    o.on_error = TDM_ON_ERROR_CONTINUE;
    tdm_job *job;
    assert_int_equal(tdm_parallel_for_async(rt, n, visit, &vp, sizeof vp, &o, &job), 0);
    tdm_batch_result r;
    int failed = 0, total = 0;
    while (tdm_job_next(job, &r) == 0) {
        total++;
        if (r.status != 0) {
            assert_int_equal(r.status, TDM_EKERNEL);
            assert_true(r.end > 50);
            failed++;
        }
    }
    assert_int_equal(total, 10);
    assert_int_equal(failed, 5);
    tdm_report rep = TDM_REPORT_INIT;
    assert_int_equal(tdm_job_wait(job, &rep), TDM_EKERNEL);
    assert_int_equal(rep.failed_batches, 5);
    assert_int_equal(tdm_job_wait(job, NULL), TDM_EINVAL); /* only once */
    tdm_job_free(job);
    free(vp.hits);
    tdm_test_close(rt);
}

static void test_stream_wait_without_consuming(void **state)
{
    /* Results nobody reads must not block the job forever. */
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 1000;
    visit_params vp = {new_hits(n), -1, 0};
    tdm_map_opts o = quiet_opts(1);
    o.max_in_flight = 2;
    tdm_job *job;
    assert_int_equal(tdm_parallel_for_async(rt, n, visit, &vp, sizeof vp, &o, &job), 0);
    tdm_report rep = TDM_REPORT_INIT;
    assert_int_equal(tdm_job_wait(job, &rep), 0);
    assert_int_equal(rep.items, n);
    tdm_batch_result r;
    assert_int_equal(tdm_job_next(job, &r), TDM_EDONE);
    tdm_job_free(job);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(atomic_load(&vp.hits[i]), 1);
    free(vp.hits);
    tdm_test_close(rt);
}

static void test_cancel_stops_new_batches(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 100000;
    visit_params vp = {new_hits(n), -1, 1000};
    tdm_map_opts o = quiet_opts(1);
    tdm_job *job;
    assert_int_equal(tdm_parallel_for_async(rt, n, visit, &vp, sizeof vp, &o, &job), 0);
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    assert_int_equal(tdm_job_cancel(job), 0);
    tdm_report rep = TDM_REPORT_INIT;
    assert_int_equal(tdm_job_wait(job, &rep), TDM_ECANCELED);
    assert_true(rep.items < n);
    assert_non_null(strstr(tdm_errmsg(rt), "cancelled"));
    tdm_job_free(job);
    free(vp.hits);
    assert_int_equal(tdm_job_cancel(NULL), TDM_EINVAL);
    tdm_test_close(rt);
}

/* tdm_job_wait_for: 0 while the job runs (each batch sleeps 5 ms: 40 batches on 2 threads
 * take about 100 ms, so a test thread held off its core for a while still sees it run), 1 once it
 * has finished and from then on, also after tdm_job_wait(); errors for a NULL job and a bad
 * timeout. */
static void test_job_wait_for_times_out_then_finishes(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 40;
    visit_params vp = {new_hits(n), -1, 5000};
    tdm_map_opts o = quiet_opts(1);
    tdm_job *job;
    assert_int_equal(tdm_parallel_for_async(rt, n, visit, &vp, sizeof vp, &o, &job), 0);
    assert_int_equal(tdm_job_wait_for(job, 0.0), 0);
    assert_int_equal(tdm_job_wait_for(job, 0.001), 0);
    int rounds = 0, r;
    while ((r = tdm_job_wait_for(job, 0.002)) == 0)
        rounds++;
    assert_int_equal(r, 1);
    assert_true(rounds >= 1 && rounds < 10000);
    for (int64_t i = 0; i < n; i++) /* finished: every item ran */
        assert_int_equal(atomic_load(&vp.hits[i]), 1);
    assert_int_equal(tdm_job_wait_for(job, 0.0), 1);
    tdm_report rep = TDM_REPORT_INIT;
    assert_int_equal(tdm_job_wait(job, &rep), 0);
    assert_int_equal(rep.items, n);
    assert_int_equal(tdm_job_wait_for(job, 1e300), 1); /* (a huge timeout, job done) */
    assert_int_equal(tdm_job_wait_for(job, -1.0), TDM_EINVAL);
    assert_int_equal(tdm_job_wait_for(job, NAN), TDM_EINVAL);
    assert_int_equal(tdm_job_wait_for(NULL, 1.0), TDM_EINVAL);
    tdm_job_free(job);
    free(vp.hits);
    tdm_test_close(rt);
}

static void test_job_null_args(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    tdm_batch_result r;
    assert_int_equal(tdm_job_next(NULL, &r), TDM_EINVAL);
    assert_int_equal(tdm_job_wait(NULL, NULL), TDM_EINVAL);
    tdm_job_free(NULL);
    assert_int_equal(tdm_parallel_for_async(rt, 1, visit, NULL, 0, NULL, NULL), TDM_EINVAL);
    tdm_job *job = (tdm_job *)0x1;
    assert_int_equal(tdm_parallel_for_async(rt, 1, NULL, NULL, 0, NULL, &job), TDM_EINVAL);
    assert_null(job);
    assert_int_equal(tdm_map_async(rt, "exp_sinh", NULL, 0, NULL, 0, NULL, 0, NULL, NULL),
                     TDM_EINVAL);
    tdm_test_close(rt);
}

/* ---- tdm_task_* accessors ------------------------------------------------------------------ */

/* What a body saw through the accessors, per batch (batch k holds items [k*bs, (k+1)*bs)). */
typedef struct {
    int64_t bs;
    int *worker;
    int *slot;
    int64_t *batch;
    atomic_int *slot_busy; /* streaming: [max_in_flight], 1 while a batch holds the slot */
    int max_in_flight;
    atomic_int *bad; /* streaming: bodies that got a slot out of range or still held */
} task_rec;

static int record_task(const void *p, int64_t begin, int64_t end, tdm_task *task)
{
    const task_rec *tr = p;
    int64_t k = begin / tr->bs;
    tr->worker[k] = tdm_task_worker(task);
    tr->slot[k] = tdm_task_slot(task);
    tr->batch[k] = tdm_task_batch(task);
    if (tr->slot_busy) {
        int s = tr->slot[k];
        if (s < 0 || s >= tr->max_in_flight || atomic_exchange(&tr->slot_busy[s], 1) != 0)
            atomic_fetch_add(tr->bad, 1);
    }
    return 0;
}

static task_rec new_task_rec(int64_t bs, int64_t nb)
{
    task_rec tr = {.bs = bs};
    tr.worker = malloc((size_t)nb * sizeof *tr.worker);
    tr.slot = malloc((size_t)nb * sizeof *tr.slot);
    tr.batch = malloc((size_t)nb * sizeof *tr.batch);
    assert_non_null(tr.worker);
    assert_non_null(tr.slot);
    assert_non_null(tr.batch);
    for (int64_t k = 0; k < nb; k++) {
        tr.worker[k] = tr.slot[k] = -2; /* -2: the body never ran for this batch */
        tr.batch[k] = -2;
    }
    return tr;
}

static void free_task_rec(task_rec *tr)
{
    free(tr->worker);
    free(tr->slot);
    free(tr->batch);
}

static void test_task_accessors_in_parallel_for(void **state)
{
    tdm_runtime *rt = tdm_test_open(3);
    const int threads = tdm_runtime_threads(rt);
    assert_int_equal(threads, 3);
    const int64_t n = 1000, bs = 10, nb = n / bs;
    task_rec tr = new_task_rec(bs, nb);
    tdm_map_opts o = quiet_opts(bs);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, record_task, &tr, sizeof tr, &o, &r), 0);
    assert_int_equal(r.batches, nb);
    char *seen = calloc((size_t)nb, 1);
    int64_t per_worker[3] = {0, 0, 0};
    for (int64_t k = 0; k < nb; k++) {
        /* A thread of the pool; no slot outside a streaming job; each batch its own index. */
        assert_in_range(tr.worker[k], 0, threads - 1);
        assert_int_equal(tr.slot[k], -1);
        assert_in_range(tr.batch[k], 0, nb - 1);
        assert_int_equal(seen[tr.batch[k]], 0);
        seen[tr.batch[k]] = 1;
        per_worker[tr.worker[k]]++;
    }
    /* The worker numbers are the report's rows: each ran the batches the report gives it. */
    for (int w = 0; w < threads; w++) {
        assert_int_equal(r.workers[w].kind, TDM_BACKEND_CPU_THREADS);
        assert_int_equal(r.workers[w].index, w);
        assert_int_equal(r.workers[w].batches, per_worker[w]);
    }
    free(seen);
    free_task_rec(&tr);
    tdm_test_close(rt);
}

static void test_task_accessors_in_stream(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    const int64_t n = 200, bs = 5, nb = n / bs;
    enum { MAX_IN_FLIGHT = 3 };
    task_rec tr = new_task_rec(bs, nb);
    atomic_int busy[MAX_IN_FLIGHT] = {0, 0, 0}, bad = 0;
    tr.slot_busy = busy;
    tr.max_in_flight = MAX_IN_FLIGHT;
    tr.bad = &bad;
    tdm_map_opts o = quiet_opts(bs);
    o.order = TDM_ORDER_COMPLETION;
    o.max_in_flight = MAX_IN_FLIGHT;
    tdm_job *job = NULL;
    assert_int_equal(tdm_parallel_for_async(rt, n, record_task, &tr, sizeof tr, &o, &job), 0);
    char *seen = calloc((size_t)nb, 1);
    tdm_batch_result r;
    int64_t got = 0;
    while (tdm_job_next(job, &r) == 0) {
        assert_int_equal(r.status, 0);
        assert_int_equal(r.end - r.begin, bs);
        int64_t k = r.begin / bs;
        /* The body saw what the consumer is told: same worker, slot and batch index. */
        assert_int_equal(tr.worker[k], r.worker);
        assert_int_equal(tr.slot[k], r.slot);
        assert_int_equal(tr.batch[k], r.batch);
        assert_in_range(r.worker, 0, 1);
        assert_in_range(r.slot, 0, MAX_IN_FLIGHT - 1);
        assert_in_range(r.batch, 0, nb - 1);
        assert_int_equal(seen[r.batch], 0);
        seen[r.batch] = 1;
        /* Consumed: the next tdm_job_next() frees the slot for another batch. */
        atomic_store(&busy[r.slot], 0);
        got++;
    }
    assert_int_equal(got, nb);
    assert_int_equal(atomic_load(&bad), 0); /* no slot held by two unconsumed batches */
    assert_int_equal(tdm_job_wait(job, NULL), 0);
    tdm_job_free(job);
    free(seen);
    free_task_rec(&tr);
    tdm_test_close(rt);
}

static void test_task_accessors_null(void **state)
{
    assert_int_equal(tdm_task_worker(NULL), -1);
    assert_int_equal(tdm_task_slot(NULL), -1);
    assert_int_equal(tdm_task_batch(NULL), -1);
    assert_int_equal(tdm_task_cancelled(NULL), 0);
    tdm_task_progress(NULL, 5); /* a no-op */
}

/* ---- map validation (argument checks of the core; kernel-specific ones in test_kernels) --- */

static void test_map_validation(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 8, n2 = 9;
    tdm_tensor *x, *y, *y9, *scalar;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n2, TDM_MEM_HOST, &y9), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 0, NULL, TDM_MEM_HOST, &scalar), 0);
    tdm_map_opts o = quiet_opts(0);
    assert_int_equal(tdm_map(NULL, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, NULL, &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "no_such", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_ENOTFOUND);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 2, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 0, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, -1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "exp_sinh", NULL, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, NULL, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    tdm_tensor *nul = NULL;
    assert_int_equal(tdm_map(rt, "exp_sinh", &nul, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    double junk = 1;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, &junk, sizeof junk, &o, NULL),
                     TDM_EINVAL);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y9, 1, NULL, 0, &o, NULL), TDM_ESHAPE);
    assert_int_equal(tdm_map(rt, "exp_sinh", &scalar, 1, &y, 1, NULL, 0, &o, NULL), TDM_ESHAPE);
    /* a strided (non-contiguous) wrapped tensor */
    double buf[16];
    int64_t strides[1] = {2};
    tdm_tensor *strided;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 1, &n, strides, buf, &strided), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &strided, 1, &y, 1, NULL, 0, &o, NULL), TDM_ELAYOUT);
    /* a tensor of another runtime */
    tdm_runtime *other = tdm_test_open(1);
    tdm_tensor *foreign;
    assert_int_equal(tdm_tensor_empty(other, TDM_F64, 1, &n, TDM_MEM_HOST, &foreign), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &foreign, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    tdm_tensor_release(foreign);
    tdm_test_close(other);
    /* nothing was written to y by any failed call */
    const double *yd = tdm_tensor_data(y);
    for (int i = 0; i < n; i++)
        assert_true(yd[i] == 0.0);
    tdm_tensor_release(strided);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(y9);
    tdm_tensor_release(scalar);
    tdm_test_close(rt);
}

/* ---- progress ----------------------------------------------------------------------------- */

typedef struct {
    int calls, finals;
    int64_t last_done, total;
    int n_workers;
    int monotonic;
    pthread_t caller; /* the thread that ran the map */
    int on_caller;    /* calls made on it */
} prog_seen;

static void on_progress(const tdm_progress *p, void *user)
{
    prog_seen *s = user;
    if (p->done < s->last_done)
        s->monotonic = 0;
    s->on_caller += pthread_equal(pthread_self(), s->caller) != 0;
    s->calls++;
    s->finals += p->final;
    s->last_done = p->done;
    s->total = p->total;
    s->n_workers = p->n_workers;
    int64_t sum = 0;
    for (int w = 0; w < p->n_workers; w++)
        sum += p->per_worker[w];
    if (sum != p->done)
        s->monotonic = 0;
}

static int slow_items(const void *p, int64_t begin, int64_t end, tdm_task *t)
{
    for (int64_t i = begin; i < end; i++) {
        struct timespec ts = {0, 200000}; /* 0.2 ms */
        nanosleep(&ts, NULL);
        tdm_task_progress(t, 1);
    }
    return 0;
}

static void test_progress_callback(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    prog_seen s = {.monotonic = 1};
    tdm_map_opts o = quiet_opts(0);
    o.progress = TDM_PROGRESS_CALLBACK;
    o.progress_fn = on_progress;
    o.progress_user = &s;
    o.progress_interval_s = 0.01;
    s.caller = pthread_self();
    assert_int_equal(tdm_parallel_for(rt, 1000, slow_items, NULL, 0, &o, NULL), 0);
    assert_true(s.calls >= 3);
    assert_int_equal(s.finals, 1);
    assert_int_equal(s.last_done, 1000);
    assert_int_equal(s.total, 1000);
    assert_int_equal(s.n_workers, 2);
    assert_true(s.monotonic);
    /* (a blocking map: every call on the caller's own thread, as it waits; progress.h) */
    assert_int_equal(s.on_caller, s.calls);
    /* An asynchronous run's calls come from a thread of the runtime, the caller free meanwhile:
     * the same counts once waited for. */
    s = (prog_seen){.monotonic = 1, .caller = pthread_self()};
    tdm_job *job = NULL;
    assert_int_equal(tdm_parallel_for_async(rt, 1000, slow_items, NULL, 0, &o, &job), 0);
    assert_int_equal(tdm_job_wait(job, NULL), 0);
    tdm_job_free(job);
    assert_true(s.calls >= 3);
    assert_int_equal(s.finals, 1);
    assert_int_equal(s.last_done, 1000);
    assert_true(s.monotonic);
    assert_int_equal(s.on_caller, 0);
    tdm_test_close(rt);
}

static void test_progress_single_thread(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    prog_seen s = {.monotonic = 1};
    tdm_map_opts o = quiet_opts(0);
    o.progress = TDM_PROGRESS_CALLBACK;
    o.progress_fn = on_progress;
    o.progress_user = &s;
    o.progress_interval_s = 0.01;
    assert_int_equal(tdm_parallel_for(rt, 300, slow_items, NULL, 0, &o, NULL), 0);
    assert_true(s.calls >= 2);
    assert_int_equal(s.last_done, 300);
    assert_int_equal(s.finals, 1);
    tdm_test_close(rt);
}

static void test_progress_format(void **state)
{
    tdm_progress p = {450, 1000, 2.0, 225.0, 2.44, 0, NULL, 0};
    char buf[512];
    int n = tdm_progress_format(&p, "pi", 80, buf, sizeof buf);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "pi:  45%|"));
    assert_non_null(strstr(buf, "| 450/1000 [00:02<00:02, 225.00it/s]"));
    p.done = 1000;
    p.rate = 2.5e6;
    tdm_progress_format(&p, NULL, 60, buf, sizeof buf);
    assert_non_null(strstr(buf, "100%|"));
    assert_non_null(strstr(buf, "2.50Mit/s"));
    p.rate = 0.5;
    tdm_progress_format(&p, NULL, 60, buf, sizeof buf);
    assert_non_null(strstr(buf, "2.00s/it"));
    /* truncation keeps a NUL and reports the needed length */
    char tiny[8];
    int need = tdm_progress_format(&p, "x", 40, tiny, sizeof tiny);
    assert_true(need > 8);
    assert_int_equal(strlen(tiny), 7);
    assert_int_equal(tdm_progress_format(NULL, "x", 40, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_progress_format(&p, "x", 10, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_progress_format(&p, "x", 40, NULL, 5), TDM_EINVAL);
}

/* The bar goes to stderr: capture it through a pipe and look at what was drawn. */
static void test_progress_bar_drawn(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = quiet_opts(0);
    o.progress = TDM_PROGRESS_PER_WORKER;
    o.desc = "bar-test";
    o.progress_interval_s = 0.01;
    assert_int_equal(tdm_parallel_for(rt, 200, slow_items, NULL, 0, &o, NULL), 0);
    tdm_test_close(rt);
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    static char out[1 << 20];
    size_t len = 0;
    ssize_t k;
    while ((k = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = '\0';
    close(fds[0]);
    assert_non_null(strstr(out, "bar-test: 100%|"));
    assert_non_null(strstr(out, "200/200"));
    assert_non_null(strstr(out, "worker 1"));
    assert_true(out[len - 1] == '\n');
}

/* ---- reports ------------------------------------------------------------------------------ */

static void test_report_format(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 5000;
    visit_params vp = {new_hits(n), -1, 0};
    tdm_map_opts o = quiet_opts(100);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, n, visit, &vp, sizeof vp, &o, &r), 0);
    assert_string_equal(r.what, "parallel_for");
    assert_int_equal(r.n_workers, 2);
    assert_true(r.wall_s > 0);
    char buf[4096];
    int len = tdm_report_format(&r, buf, sizeof buf);
    assert_true(len > 0 && (size_t)len < sizeof buf);
    assert_non_null(strstr(buf, "5000/5000 items in 50 batches"));
    assert_non_null(strstr(buf, "cpu"));
    char small[16];
    assert_int_equal(tdm_report_format(&r, small, sizeof small), len);
    assert_int_equal(strlen(small), 15);
    assert_int_equal(tdm_report_format(NULL, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_report_format(&r, NULL, 4), TDM_EINVAL);
    assert_int_equal(tdm_report_print(NULL, stdout), TDM_EINVAL);
    assert_int_equal(tdm_report_print(&r, NULL), TDM_EINVAL);
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tdm_report_print(&r, f), 0);
    assert_true(ftell(f) == len);
    fclose(f);
    free(vp.hits);
    tdm_test_close(rt);
}

/* ---- several threads calling one runtime --------------------------------------------------- */

typedef struct {
    tdm_runtime *rt;
    int rc;
} caller_arg;

static void *caller(void *p)
{
    caller_arg *a = p;
    for (int round = 0; round < 20 && a->rc == 0; round++) {
        int64_t n = 3000 + round;
        visit_params vp = {calloc((size_t)n, sizeof(atomic_int)), -1, 0};
        tdm_map_opts o = quiet_opts(round % 3 == 0 ? 0 : round);
        a->rc = tdm_parallel_for(a->rt, n, visit, &vp, sizeof vp, &o, NULL);
        for (int64_t i = 0; i < n && a->rc == 0; i++)
            if (atomic_load(&vp.hits[i]) != 1)
                a->rc = -100;
        free(vp.hits);
    }
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    pthread_t th[4];
    caller_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (caller_arg){rt, 0};
        assert_int_equal(pthread_create(&th[i], NULL, caller, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].rc, 0);
    }
    tdm_test_close(rt);
}

/* ---- balance: uneven batches must not leave a worker idle ---------------------------------- */

static int uneven(const void *p, int64_t begin, int64_t end, tdm_task *t)
{
    for (int64_t i = begin; i < end; i++) {
        /* the first 10 items cost 10 ms each, the rest 0.1 ms */
        struct timespec ts = {0, i < 10 ? 10000000L : 100000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_uneven_items_balance(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts o = quiet_opts(0);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_parallel_for(rt, 1000, uneven, NULL, 0, &o, &r), 0);
    /* Both workers did a real share of the items (dynamic claiming, not a static split). */
    assert_true(r.workers[0].items > 100 && r.workers[1].items > 100);
    tdm_test_close(rt);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_for_visits_each_item_once),
        cmocka_unit_test(test_auto_batching_grows_for_cheap_items),
        cmocka_unit_test(test_auto_batching_small_for_costly_items),
        cmocka_unit_test(test_error_stop_names_batch),
        cmocka_unit_test(test_error_continue_runs_all),
        cmocka_unit_test(test_positive_return_is_an_error),
        cmocka_unit_test(test_parallel_for_bad_args),
        cmocka_unit_test(test_opts_validation),
        cmocka_unit_test(test_policy_without_backend_is_enodev),
        cmocka_unit_test(test_params_copied_by_value),
        cmocka_unit_test(test_stream_submission_order_bounded),
        cmocka_unit_test(test_stream_completion_order_bounded),
        cmocka_unit_test(test_stream_worker_back_in_a_job_keeps_its_batch_size),
        cmocka_unit_test(test_stream_map_ring_outputs),
        cmocka_unit_test(test_stream_ring_slots_kept_for_the_next_map),
        cmocka_unit_test(test_stream_ring_sized_by_the_rows),
        cmocka_unit_test(test_stream_error_reported_in_result),
        cmocka_unit_test(test_stream_wait_without_consuming),
        cmocka_unit_test(test_cancel_stops_new_batches),
        cmocka_unit_test(test_job_wait_for_times_out_then_finishes),
        cmocka_unit_test(test_job_null_args),
        cmocka_unit_test(test_task_accessors_in_parallel_for),
        cmocka_unit_test(test_task_accessors_in_stream),
        cmocka_unit_test(test_task_accessors_null),
        cmocka_unit_test(test_map_validation),
        cmocka_unit_test(test_progress_callback),
        cmocka_unit_test(test_progress_single_thread),
        cmocka_unit_test(test_progress_format),
        cmocka_unit_test(test_progress_bar_drawn),
        cmocka_unit_test(test_report_format),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_uneven_items_balance),
    };
    return TDM_TEST_MAIN("map", tests);
}
