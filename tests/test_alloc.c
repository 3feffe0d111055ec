/* SPDX-License-Identifier: MIT */
/* Allocation-failure injection (SQLite's malloc-fault tests, in small): the test is linked with
 * -Wl,--wrap for the allocator, so every allocation the library makes can be made to fail.
 * For each entry point, the k-th allocation fails for k = 0, 1, 2, ... until the call succeeds:
 * every failure must come back as a clean error (TDM_ENOMEM), leave the out-pointer NULL and
 * leak nothing (ASan's leak checker runs these in CI). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tdm_test.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
char *__real_strdup(const char *s);

static atomic_int fail_at = -1; /* index of the allocation to fail, -1 = none */
static atomic_int seen;         /* allocations since arming */

static int should_fail(void)
{
    int at = atomic_load(&fail_at);
    return at >= 0 && atomic_fetch_add(&seen, 1) == at;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m)
{
    return should_fail() ? NULL : __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n)
{
    return should_fail() ? NULL : __real_aligned_alloc(a, n);
}
char *__wrap_strdup(const char *s)
{
    return should_fail() ? NULL : __real_strdup(s);
}

static void arm(int k)
{
    atomic_store(&seen, 0);
    atomic_store(&fail_at, k);
}

static void disarm(void)
{
    atomic_store(&fail_at, -1);
}

static tdm_config quiet_config(void)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    return cfg;
}

static void test_runtime_open_fails_cleanly(void **state)
{
    tdm_config cfg = quiet_config();
    int failures = 0;
    for (int k = 0;; k++) {
        tdm_runtime *rt = (tdm_runtime *)0x1;
        arm(k);
        int rc = tdm_runtime_open(&rt, &cfg);
        disarm();
        if (rc == 0) {
            assert_int_equal(tdm_runtime_close(rt), 0);
            break;
        }
        assert_int_equal(rc, TDM_ENOMEM);
        assert_null(rt);
        assert_true(strlen(tdm_errmsg(NULL)) > 0);
        failures++;
    }
    assert_true(failures >= 10); /* runtime, kernels, pool: many allocations were exercised */
}

static void test_tensor_create_fails_cleanly(void **state)
{
    tdm_config cfg = quiet_config();
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    const unsigned mems[] = {TDM_MEM_HOST, TDM_MEM_SHARED, TDM_MEM_PINNED};
    for (size_t m = 0; m < 3; m++) {
        int failures = 0;
        for (int k = 0;; k++) {
            int64_t shape[2] = {10, 3};
            tdm_tensor *t = (tdm_tensor *)0x1, *v = NULL;
            arm(k);
            int rc = tdm_tensor_empty(rt, TDM_F32, 2, shape, mems[m], &t);
            if (rc == 0)
                rc = tdm_tensor_view_rows(t, 2, 5, &v);
            disarm();
            if (rc == 0) {
                tdm_tensor_release(v);
                tdm_tensor_release(t);
                break;
            }
            assert_int_equal(rc, TDM_ENOMEM);
            if (t != (tdm_tensor *)0x1 && t != NULL)
                tdm_tensor_release(t); /* the view failed, the tensor is ours */
            failures++;
        }
        assert_true(failures >= 2);
    }
    assert_int_equal(tdm_runtime_close(rt), 0); /* nothing leaked a live tensor */
}

static void test_map_fails_cleanly(void **state)
{
    tdm_config cfg = quiet_config();
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    int64_t n = 1000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = 1e-3 * (double)i;
    tdm_scale_shift_params p = {2.0, 1.0};
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    /* One map first: it loads the stored scheduling model, which a map consults best-effort
     * (an allocation failing there only leaves the model for later), so the loop below fails
     * the map's own allocations. */
    assert_int_equal(tdm_map(rt, "scale_shift", &x, 1, &y, 1, &p, sizeof p, &o, NULL), 0);
    int failures = 0;
    for (int k = 0;; k++) {
        arm(k);
        int rc = tdm_map(rt, "scale_shift", &x, 1, &y, 1, &p, sizeof p, &o, NULL);
        disarm();
        if (rc == 0)
            break;
        assert_int_equal(rc, TDM_ENOMEM);
        failures++;
    }
    assert_true(failures >= 2);
    const double *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(yd[i] == 2.0 * xd[i] + 1.0);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_streaming_ring_fails_cleanly(void **state)
{
    tdm_config cfg = quiet_config();
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    int64_t n = 500;
    tdm_tensor *x;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = 50;
    o.max_in_flight = 3;
    int failures = 0;
    for (int k = 0;; k++) {
        tdm_job *job = (tdm_job *)0x1;
        arm(k);
        int rc = tdm_map_async(rt, "exp_sinh", &x, 1, NULL, 1, NULL, 0, &o, &job);
        disarm();
        if (rc == 0) {
            tdm_batch_result r;
            int64_t rows = 0;
            while (tdm_job_next(job, &r) == 0)
                rows += r.end - r.begin;
            assert_int_equal(rows, n);
            assert_int_equal(tdm_job_wait(job, NULL), 0);
            tdm_job_free(job);
            break;
        }
        assert_int_equal(rc, TDM_ENOMEM);
        assert_null(job);
        failures++;
    }
    assert_true(failures >= 5); /* job, slots, ring tensors */
    tdm_tensor_release(x);
    assert_int_equal(tdm_runtime_close(rt), 0); /* no ring tensor and no job left behind */
}

static int noop(const void *p, int64_t b, int64_t e, tdm_task *t)
{
    return 0;
}

static void progress_cb(const tdm_progress *p, void *user)
{
    (void)p;
    (void)user;
}

static void test_parallel_for_and_register_fail_cleanly(void **state)
{
    tdm_config cfg = quiet_config();
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_CALLBACK;
    o.progress_fn = progress_cb;
    int64_t params[4] = {1, 2, 3, 4};
    int failures = 0;
    for (int k = 0;; k++) {
        arm(k);
        int rc = tdm_parallel_for(rt, 100, noop, params, sizeof params, &o, NULL);
        disarm();
        if (rc == 0)
            break;
        assert_int_equal(rc, TDM_ENOMEM);
        failures++;
    }
    assert_true(failures >= 3); /* job, params copy, progress state */

    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "user_kernel";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.source = "/* device text */";
    failures = 0;
    for (int k = 0;; k++) {
        arm(k);
        int rc = tdm_kernel_register(rt, &def);
        disarm();
        if (rc == 0)
            break;
        assert_int_equal(rc, TDM_ENOMEM);
        assert_false(tdm_kernel_exists(rt, "user_kernel"));
        failures++;
    }
    assert_true(failures >= 2);
    assert_true(tdm_kernel_exists(rt, "user_kernel"));
    assert_int_equal(tdm_runtime_close(rt), 0);
}

/* A simulated cluster allocates its ranks and its event queue (and each node group's own
 * simulation): every failure is TDM_ENOMEM, and the run that succeeds is the usual one. */
static void test_simulate_cluster_fails_cleanly(void **state)
{
    tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
    assert_int_equal(tdm_sim_cluster_add(&c, "300:cpu*2:tpi=1us", NULL, 0), 0);
    c.items = 10000000;
    c.partitioned = 1;
    c.in_bytes_per_item = 8;
    c.slow_node = 5;
    c.slow_factor = 2;
    tdm_sim_cluster_result r, ref;
    assert_int_equal(tdm_simulate_cluster(&c, &ref, NULL, 0), 0);
    int failures = 0;
    for (int k = 0;; k++) {
        arm(k);
        int rc = tdm_simulate_cluster(&c, &r, NULL, 0);
        disarm();
        if (rc == 0)
            break;
        assert_int_equal(rc, TDM_ENOMEM);
        failures++;
    }
    assert_true(failures >= 3); /* the node's simulation, the ranks, the event queue */
    assert_true(r.makespan_s == ref.makespan_s);
    assert_int_equal(r.grants, ref.grants);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_open_fails_cleanly),
        cmocka_unit_test(test_tensor_create_fails_cleanly),
        cmocka_unit_test(test_map_fails_cleanly),
        cmocka_unit_test(test_streaming_ring_fails_cleanly),
        cmocka_unit_test(test_parallel_for_and_register_fail_cleanly),
        cmocka_unit_test(test_simulate_cluster_fails_cleanly),
    };
    return TDM_TEST_MAIN("alloc", tests);
}
