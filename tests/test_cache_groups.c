/* SPDX-License-Identifier: MIT */
/* The result cache group by group (tdm_cache_map_groups): each group of rows its own entry,
 * hits loaded into place, misses run concurrently and stored as they finish; the report. */
#include <stdatomic.h>

#include "cache_test_util.h"

static void zero(tdm_tensor *t)
{
    memset(tdm_tensor_data(t), 0, tdm_tensor_nbytes(t));
}

static void test_miss_then_hit_and_share_entries_with_cache_map(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 1000;
    tdm_tensor *x = input(rt, n, 1.0), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    const int64_t bounds[5] = {0, 100, 450, 451, 1000};
    tdm_map_opts mo = quiet();
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, bounds, 4, &mo, &rep), 0);
    expect_exp_sinh(x, y);
    assert_int_equal(rep.groups, 4);
    assert_int_equal(rep.misses, 4);
    assert_int_equal(rep.hits, 0);
    assert_int_equal(rep.stores, 4);
    assert_int_equal(rep.bytes_computed, n * 8);
    assert_true(rep.compute_s > 0);
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, NULL, &entries), 0);
    assert_int_equal(entries, 4);
    /* Again into zeros: every group is a hit, loaded into its rows. */
    zero(y);
    rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, bounds, 4, &mo, &rep), 0);
    expect_exp_sinh(x, y);
    assert_int_equal(rep.hits, 4);
    assert_int_equal(rep.misses, 0);
    assert_int_equal(rep.bytes_loaded, n * 8);
    assert_true(rep.saved_s > 0); /* what the entries recorded when they were computed */
    /* One group's input changed: that group alone is computed. */
    ((double *)tdm_tensor_data(x))[300] = 0.5;
    zero(y);
    rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, bounds, 4, &mo, &rep), 0);
    expect_exp_sinh(x, y);
    assert_int_equal(rep.hits, 3);
    assert_int_equal(rep.misses, 1);
    /* A group's entry is the one tdm_cache_map keys for those rows alone. */
    tdm_tensor *xv, *yv = NULL;
    assert_int_equal(tdm_tensor_view_rows(x, 451, 1000, &xv), 0);
    int hit = 0;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xv, 1, &yv, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    expect_exp_sinh(xv, yv);
    tdm_tensor_release(xv);
    tdm_tensor_release(yv);
    /* Equal groups when no bounds are given: 1000 rows in 3 groups (334, 334, 332). */
    zero(y);
    rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 3, &mo, &rep),
                     0);
    expect_exp_sinh(x, y);
    assert_int_equal(rep.misses, 3);
    zero(y);
    rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 3, &mo, &rep),
                     0);
    expect_exp_sinh(x, y);
    assert_int_equal(rep.hits, 3);
    tdm_cache_stats st;
    assert_int_equal(tdm_cache_stats_get(c, &st), 0);
    assert_int_equal(st.hits, 4 + 3 + 1 + 3);
    assert_int_equal(st.misses, 4 + 1 + 3);
    end_cache_test(rt, c, x, y);
}

/* ---- misses run concurrently ----------------------------------------------------------------
 * "rendezvous": each row waits (up to 20 s) until another row is inside the kernel at the same
 * time. Groups of one row run one after the other would never meet: every wait would run out. */

static atomic_int g_inside, g_met, g_alone;

static int cpu_rendezvous(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        atomic_fetch_add(&g_inside, 1);
        bool met = false;
        for (int t = 0; t < 20000 && !met; t++) {
            met = atomic_load(&g_inside) >= 2 || atomic_load(&g_met) > 0;
            if (!met) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
        }
        atomic_fetch_add(met ? &g_met : &g_alone, 1);
        y[i] = x[i] + 1;
        atomic_fetch_sub(&g_inside, 1);
    }
    return 0;
}

static void test_misses_run_concurrently(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    reg_cpu_kernel(rt, "rendezvous", cpu_rendezvous, NULL);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 4; /* 4 "columns" of one costly item each, as joblib users cache them */
    tdm_tensor *x = input(rt, n, 1.0), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts mo = quiet();
    mo.policy = TDM_POLICY_THREADS;
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(
        tdm_cache_map_groups(c, "rendezvous", &x, 1, &y, 1, NULL, 0, NULL, 4, &mo, &rep), 0);
    assert_int_equal(rep.misses, 4);
    assert_int_equal(atomic_load(&g_alone), 0);
    assert_int_equal(atomic_load(&g_met), 4);
    for (int i = 0; i < 4; i++)
        assert_true(((double *)tdm_tensor_data(y))[i] == ((double *)tdm_tensor_data(x))[i] + 1);
    end_cache_test(rt, c, x, y);
}

/* ---- errors ------------------------------------------------------------------------------ */

static int cpu_fail_row_7(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        if (x[i] > 0.0065 && x[i] < 0.0075) /* row 7 of the input (rows count per group) */
            return TDM_EKERNEL;
        y[i] = x[i];
    }
    return 0;
}

static void test_argument_errors_and_a_failing_group(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 10;
    tdm_tensor *x = input(rt, n, 1.0), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts mo = quiet();
    tdm_tensor *nulls[1] = {NULL};
    assert_int_equal(
        tdm_cache_map_groups(NULL, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(tdm_cache_map_groups(c, NULL, &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, NULL),
                     TDM_EINVAL);
    assert_int_equal(tdm_cache_map_groups(c, "nope", &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, NULL),
                     TDM_ENOTFOUND);
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, nulls, 1, NULL, 0, NULL, 2, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, NULL, 1, NULL, 0, NULL, 2, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, -1, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 11, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 0, &mo, NULL),
                     TDM_EINVAL);
    static const int64_t bad[][4] = {{1, 5, 10}, {0, 5, 9}, {0, 6, 5, 10}, {0, 5, 5, 10}};
    static const int64_t nb[] = {2, 2, 3, 3};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(
            tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, bad[i], nb[i], &mo, NULL),
            TDM_EINVAL);
        assert_non_null(strstr(tdm_errmsg(rt), "tdm_cache_map_groups"));
    }
    tdm_cache_groups_report small = TDM_CACHE_GROUPS_REPORT_INIT;
    small.size = 8;
    assert_int_equal(
        tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, &small),
        TDM_EINVAL);
    /* A group that fails: its error, with the others stored (the failing one is not). */
    reg_cpu_kernel(rt, "fail_row_7", cpu_fail_row_7, NULL);
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(
        tdm_cache_map_groups(c, "fail_row_7", &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, &rep),
        TDM_EKERNEL);
    assert_non_null(strstr(tdm_errmsg(rt), "fail_row_7"));
    assert_int_equal(rep.misses, 2);
    assert_int_equal(rep.stores, 1);
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, NULL, &entries), 0);
    assert_int_equal(entries, 1);
    end_cache_test(rt, c, x, y);
}

/* In a child limited to small files: the groups are computed and returned, none stored. */
static int groups_store_failure_child(tdm_runtime *rt, tdm_cache *c)
{
    int64_t n = 100000;
    tdm_tensor *x, *y;
    tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &x);
    tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y);
    memset(tdm_tensor_data(y), 0xff, (size_t)n * 8);
    child_limit_file_size(10000);
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    int code = 0;
    if (tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 2, NULL, &rep) != 0)
        code = 12;
    if (!code && (rep.store_failures != 2 || rep.stores != 0 || rep.misses != 2))
        code = 13;
    if (!code &&
        (((double *)tdm_tensor_data(y))[5] != 0.0 || ((double *)tdm_tensor_data(y))[n - 1] != 0.0))
        code = 14;
    tdm_cache_stats st;
    tdm_cache_stats_get(c, &st);
    int64_t entries = -1;
    tdm_cache_usage(c, NULL, &entries);
    if (!code && (entries != 0 || st.store_failures != 2))
        code = 15;
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    return code;
}

static void test_store_failure_still_returns_the_results(void **state)
{
    (void)state;
    mk_tmpdir();
    run_cache_children(1, 1, groups_store_failure_child);
    rm_tmpdir();
}

/* ---- the streaming form ------------------------------------------------------------------ */

static void test_async_streams_cached_and_computed_groups(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 400;
    tdm_tensor *x = input(rt, n, 1.0), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts mo = quiet();
    /* Groups 1 and 3 (of 4 equal ones) are cached already, by tdm_cache_map on their rows. */
    for (int g = 1; g < 4; g += 2) {
        tdm_tensor *xv, *yv = NULL;
        assert_int_equal(tdm_tensor_view_rows(x, g * 100, g * 100 + 100, &xv), 0);
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &xv, 1, &yv, 1, NULL, 0, &mo, NULL, NULL), 0);
        tdm_tensor_release(xv);
        tdm_tensor_release(yv);
    }
    tdm_cache_job *j = NULL;
    assert_int_equal(
        tdm_cache_map_groups_async(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 4, &mo, &j), 0);
    assert_non_null(j);
    tdm_cache_group_result r;
    int seen[4] = {0}, hits = 0;
    while (tdm_cache_job_next(j, &r) == 0) {
        assert_int_equal(r.status, 0);
        assert_true(r.group >= 0 && r.group < 4);
        assert_int_equal(r.begin, r.group * 100);
        assert_int_equal(r.end, r.group * 100 + 100);
        assert_int_equal(r.hit, r.group % 2);
        seen[r.group]++;
        hits += r.hit;
        tdm_tensor *xv, *yv; /* its rows are final when it is handed out */
        assert_int_equal(tdm_tensor_view_rows(x, r.begin, r.end, &xv), 0);
        assert_int_equal(tdm_tensor_view_rows(y, r.begin, r.end, &yv), 0);
        expect_exp_sinh(xv, yv);
        tdm_tensor_release(xv);
        tdm_tensor_release(yv);
    }
    for (int g = 0; g < 4; g++)
        assert_int_equal(seen[g], 1);
    assert_int_equal(hits, 2);
    assert_int_equal(tdm_cache_job_next(j, &r), TDM_EDONE);
    tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(tdm_cache_job_finish(j, &rep), 0);
    assert_int_equal(rep.hits, 2);
    assert_int_equal(rep.misses, 2);
    assert_int_equal(rep.stores, 2);
    /* Finished without being iterated: it runs to the end all the same. */
    zero(y);
    assert_int_equal(
        tdm_cache_map_groups_async(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 4, &mo, &j), 0);
    rep = (tdm_cache_groups_report)TDM_CACHE_GROUPS_REPORT_INIT;
    assert_int_equal(tdm_cache_job_finish(j, &rep), 0);
    assert_int_equal(rep.hits, 4);
    expect_exp_sinh(x, y);
    end_cache_test(rt, c, x, y);
}

static atomic_int g_gate;

static int cpu_gated(const tdm_kernel_args *a)
{
    while (!atomic_load(&g_gate)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    memcpy(a->out[0], a->in[0], (size_t)(a->end - a->begin) * 8);
    return 0;
}

/* Cancelled while its first maps are held back: no group is started after that, the running
 * ones finish and are stored, the others are never handed out. */
static void test_async_cancel_and_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    reg_cpu_kernel(rt, "gated", cpu_gated, NULL);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 40;
    tdm_tensor *x = input(rt, n, 1.0), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts mo = quiet();
    tdm_cache_job *j = (tdm_cache_job *)(uintptr_t)1;
    assert_int_equal(
        tdm_cache_map_groups_async(c, "gated", &x, 1, &y, 1, NULL, 0, NULL, 41, &mo, &j),
        TDM_EINVAL);
    assert_null(j);
    assert_int_equal(
        tdm_cache_map_groups_async(c, "gated", &x, 1, &y, 1, NULL, 0, NULL, 4, &mo, NULL),
        TDM_EINVAL);
    assert_int_equal(tdm_cache_job_next(NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_job_cancel(NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_job_finish(NULL, NULL), TDM_EINVAL);
    atomic_store(&g_gate, 0);
    assert_int_equal(
        tdm_cache_map_groups_async(c, "gated", &x, 1, &y, 1, NULL, 0, NULL, 40, &mo, &j), 0);
    assert_int_equal(tdm_cache_job_cancel(j), 0);
    atomic_store(&g_gate, 1);
    tdm_cache_group_result r;
    int64_t settled = 0;
    while (tdm_cache_job_next(j, &r) == 0) {
        assert_int_equal(r.status, 0);
        assert_int_equal(r.hit, 0);
        settled++;
    }
    tdm_cache_groups_report small = TDM_CACHE_GROUPS_REPORT_INIT;
    small.size = 8;
    assert_int_equal(tdm_cache_job_finish(j, &small), TDM_EINVAL); /* (freed all the same) */
    /* At most the maps in flight when it was cancelled (2 x 2 threads) ran. */
    assert_true(settled <= 4);
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, NULL, &entries), 0);
    assert_int_equal(entries, settled);
    /* A failing group: handed out with its status; the job's error, with the message the job's
     * own thread recorded, on this thread. */
    reg_cpu_kernel(rt, "fail_row_7", cpu_fail_row_7, NULL);
    assert_int_equal(
        tdm_cache_map_groups_async(c, "fail_row_7", &x, 1, &y, 1, NULL, 0, NULL, 2, &mo, &j), 0);
    int failed = 0;
    while (tdm_cache_job_next(j, &r) == 0)
        failed += r.status == TDM_EKERNEL && r.begin == 0 && r.end == 20; /* row 7 is in 0..20 */
    assert_int_equal(failed, 1);
    assert_int_equal(tdm_cache_job_finish(j, NULL), TDM_EKERNEL);
    assert_non_null(strstr(tdm_errmsg(rt), "fail_row_7"));
    end_cache_test(rt, c, x, y);
}

/* ---- processes --------------------------------------------------------------------------- */

/* The misses run on worker processes too (shared tensors, policy PROCS): the same entries. */
static void test_run_on_worker_processes(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open_procs(1, 2);
    tdm_cache *c = open_cache(rt, NULL);
    const int64_t n = 6000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &y), 0);
    for (int64_t i = 0; i < n; i++) /* (distinct groups: equal ones would share an entry) */
        ((double *)tdm_tensor_data(x))[i] = (double)i * 1e-4;
    tdm_map_opts mo = quiet();
    mo.policy = TDM_POLICY_PROCS;
    for (int round = 0; round < 2; round++) {
        zero(y);
        tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
        assert_int_equal(
            tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 6, &mo, &rep), 0);
        expect_exp_sinh(x, y);
        assert_int_equal(rep.hits, round ? 6 : 0);
        assert_int_equal(rep.misses, round ? 0 : 6);
    }
    end_cache_test(rt, c, x, y);
}

/* Two processes run the same groups at once, three times each: every result right, nothing
 * corrupt, one whole entry per group, no temporary left. */
static int racer(tdm_runtime *rt, tdm_cache *c)
{
    const int64_t n = 8000;
    tdm_tensor *x, *y;
    tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &x);
    tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y);
    for (int64_t i = 0; i < n; i++)
        ((double *)tdm_tensor_data(x))[i] = (double)i * 1e-4;
    int code = 0;
    tdm_map_opts mo = quiet();
    for (int round = 0; round < 3 && !code; round++) {
        memset(tdm_tensor_data(y), 0, (size_t)n * 8);
        tdm_cache_groups_report rep = TDM_CACHE_GROUPS_REPORT_INIT;
        if (tdm_cache_map_groups(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, 8, &mo, &rep) != 0)
            code = 12;
        else if (rep.corrupt != 0 || rep.store_failures != 0 || rep.hits + rep.misses != 8)
            code = 13;
        for (int64_t i = 0; i < n && !code; i++) {
            double v = ((double *)tdm_tensor_data(x))[i], e = exp(v) * sinh(v);
            if (fabs(((double *)tdm_tensor_data(y))[i] - e) > 1e-12 * (1 + fabs(e)))
                code = 14;
        }
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    return code;
}

static void test_two_processes_run_the_same_groups(void **state)
{
    (void)state;
    mk_tmpdir();
    run_cache_children(2, 2, racer);
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache *c = open_cache(rt, NULL);
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, NULL, &entries), 0);
    assert_int_equal(entries, 8);
    DIR *d = opendir(P("cache"));
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        assert_true(strncmp(e->d_name, ".tmp-", 5) != 0);
    closedir(d);
    tdm_cache_close(c);
    tdm_test_close(rt);
    rm_tmpdir();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_then_hit_and_share_entries_with_cache_map),
        cmocka_unit_test(test_misses_run_concurrently),
        cmocka_unit_test(test_argument_errors_and_a_failing_group),
        cmocka_unit_test(test_store_failure_still_returns_the_results),
        cmocka_unit_test(test_async_streams_cached_and_computed_groups),
        cmocka_unit_test(test_async_cancel_and_errors),
        cmocka_unit_test(test_run_on_worker_processes),
        cmocka_unit_test(test_two_processes_run_the_same_groups),
    };
    return TDM_TEST_MAIN("cache_groups", tests);
}
