/* SPDX-License-Identifier: MIT */
/* device_fault: a device lost at any point of a map — at an allocation, a copy in, a copy out, a
 * launch, a queue's completion, a context that dies in a kernel and is found by whatever call
 * comes next (sticky), or a device gone at any call — is marked lost once, its batches run on
 * the CPU and the map completes with correct results; under no_cpu_fallback it fails with
 * TDM_EDEVLOST. The faults are injected inside the backend (TDM_DEVICE_FAULT=<point>:<n>, read at
 * the device's open), so the backend's own loss handling runs for real.
 *
 * Each test exists for OpenCL (PoCL in CI) and CUDA: test_<point>_opencl / test_<point>_cuda. A
 * test whose backend has no device here exits 77 (skipped). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sched_test_util.h"

typedef struct {
    int lost_lines;  /* "device ... lost" lines */
    int rerun_lines; /* "runs on the CPU: ... is lost" lines */
    char lost[512];  /* the first "lost" line */
} fault_log;

static void on_log(void *user, unsigned flag, const char *line)
{
    fault_log *l = user;
    (void)flag;
    if (strstr(line, "runs on the CPU:") && strstr(line, "is lost")) {
        l->rerun_lines++;
    } else if (strstr(line, " lost (") && strstr(line, "its batches run on the CPU")) {
        if (l->lost_lines++ == 0)
            snprintf(l->lost, sizeof l->lost, "%s", line);
    }
}

/* (The default model directory and backends, as a plain runtime's.) */
static tdm_runtime *open_logged(fault_log *log)
{
    return sched_open(NULL, NULL, 2, 0, on_log, log);
}

static tdm_map_opts opts_for(tdm_backend_kind kind)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = kind == TDM_BACKEND_CUDA ? TDM_POLICY_CUDA : TDM_POLICY_OPENCL;
    o.batch_size = 5000; /* 20 batches: the pipeline is full when the fault comes */
    return o;
}

/* exp_sinh over 100,000 doubles on the backend with TDM_DEVICE_FAULT=fault: the map completes,
 * every value right, at least one batch rerun on the CPU, the loss said once with the injected
 * cause; then the device takes no more maps. */
static void fault_map_completes(tdm_backend_kind kind, const char *fault)
{
    setenv("TDM_DEVICE_FAULT", fault, 1); /* read at the device's open: the first map */
    fault_log log = {0};
    tdm_runtime *rt = open_logged(&log);
    int64_t n = 100000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)(i % 2000) * 1e-3 - 1.0;
    tdm_map_opts o = opts_for(kind);
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r);
    unsetenv("TDM_DEVICE_FAULT");
    if (rc != 0)
        fail_msg("%s: %s: %s", fault, tdm_status_name(rc), tdm_errmsg(rt));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.items, n);
    assert_int_equal(r.failed_batches, 0);
    if (r.fallback_batches < 1)
        fail_msg("%s: no batch ran on the CPU (%lld batches)", fault, (long long)r.batches);
    assert_int_equal(log.lost_lines, 1); /* marked lost once */
    assert_true(log.rerun_lines >= 1);
    if (!strstr(log.lost, "TDM_DEVICE_FAULT=") || !strstr(log.lost, fault))
        fail_msg("the loss does not name its cause: %s", log.lost);
    const double *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-13 * (1 + fabs(yd[i]))))
            fail_msg("%s: y[%lld] = %g, want %g", fault, (long long)i, yd[i],
                     exp(xd[i]) * sinh(xd[i]));
    if (devices_of(rt, kind) == 1) { /* its only device is lost: the backend has none left */
        assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_ENODEV);
        assert_non_null(strstr(tdm_errmsg(rt), "lost"));
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* Under no_cpu_fallback the map fails with TDM_EDEVLOST, saying why nothing ran on the CPU. */
static void fault_map_fails_without_fallback(tdm_backend_kind kind)
{
    setenv("TDM_DEVICE_FAULT", "launch:3", 1);
    fault_log log = {0};
    tdm_runtime *rt = open_logged(&log);
    int64_t n = 100000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = opts_for(kind);
    o.no_cpu_fallback = 1;
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r);
    unsetenv("TDM_DEVICE_FAULT");
    assert_int_equal(rc, TDM_EDEVLOST);
    assert_int_equal(r.status, TDM_EDEVLOST);
    assert_int_equal(r.fallback_batches, 0);
    assert_true(r.failed_batches >= 1);
    const char *msg = tdm_errmsg(rt);
    if (!strstr(msg, "TDM_EDEVLOST") || !strstr(msg, "lost") ||
        !strstr(msg, "forbids running it on the CPU"))
        fail_msg("message: %s", msg);
    assert_string_equal(tdm_status_name(TDM_EDEVLOST), "TDM_EDEVLOST");
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* A malformed TDM_DEVICE_FAULT keeps the device from opening: the map has no device. */
static void bad_fault_spec(tdm_backend_kind kind)
{
    setenv("TDM_DEVICE_FAULT", "launch:0", 1);
    fault_log log = {0};
    tdm_runtime *rt = open_logged(&log);
    int64_t n = 1000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = opts_for(kind);
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL);
    unsetenv("TDM_DEVICE_FAULT");
    assert_int_equal(rc, TDM_ENODEV);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

#define FAULT_TESTS(be, KIND)                                                                      \
    static void test_at_alloc_##be(void **state)                                                   \
    {                                                                                              \
        fault_map_completes(KIND, "alloc:3");                                                      \
    }                                                                                              \
    static void test_at_write_##be(void **state)                                                   \
    {                                                                                              \
        fault_map_completes(KIND, "write:3");                                                      \
    }                                                                                              \
    static void test_at_read_##be(void **state)                                                    \
    {                                                                                              \
        fault_map_completes(KIND, "read:3");                                                       \
    }                                                                                              \
    static void test_at_launch_##be(void **state)                                                  \
    {                                                                                              \
        fault_map_completes(KIND, "launch:3");                                                     \
    }                                                                                              \
    static void test_at_finish_##be(void **state)                                                  \
    {                                                                                              \
        fault_map_completes(KIND, "finish:3");                                                     \
    }                                                                                              \
    static void test_sticky_context_##be(void **state)                                             \
    {                                                                                              \
        fault_map_completes(KIND, "sticky:3");                                                     \
    }                                                                                              \
    static void test_device_gone_##be(void **state)                                                \
    {                                                                                              \
        fault_map_completes(KIND, "lost:12");                                                      \
    }                                                                                              \
    static void test_no_cpu_fallback_is_edevlost_##be(void **state)                                \
    {                                                                                              \
        fault_map_fails_without_fallback(KIND);                                                    \
    }                                                                                              \
    static void test_bad_fault_spec_##be(void **state)                                             \
    {                                                                                              \
        bad_fault_spec(KIND);                                                                      \
    }

FAULT_TESTS(opencl, TDM_BACKEND_OPENCL)
FAULT_TESTS(cuda, TDM_BACKEND_CUDA)

/* Whether the backend a test is for has a device here. */
static int have_devices(tdm_backend_kind kind)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    tdm_runtime *rt = NULL;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return 0;
    int n = devices_of(rt, kind);
    tdm_runtime_close(rt);
    return n;
}

int main(int argc, char **argv)
{
    /* One CTest per test (argv[1] names it): skipped (77) when its backend has no device. */
    const char *name = argc > 1 ? argv[1] : "";
    size_t l = strlen(name);
    bool cuda = l > 5 && !strcmp(name + l - 5, "_cuda");
    bool opencl = l > 7 && !strcmp(name + l - 7, "_opencl");
    if ((cuda && !have_devices(TDM_BACKEND_CUDA)) ||
        (opencl && !have_devices(TDM_BACKEND_OPENCL))) {
        printf("skipped: no %s device here\n", cuda ? "CUDA" : "OpenCL");
        return 77;
    }
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_at_alloc_opencl),
        cmocka_unit_test(test_at_write_opencl),
        cmocka_unit_test(test_at_read_opencl),
        cmocka_unit_test(test_at_launch_opencl),
        cmocka_unit_test(test_at_finish_opencl),
        cmocka_unit_test(test_sticky_context_opencl),
        cmocka_unit_test(test_device_gone_opencl),
        cmocka_unit_test(test_no_cpu_fallback_is_edevlost_opencl),
        cmocka_unit_test(test_bad_fault_spec_opencl),
        cmocka_unit_test(test_at_alloc_cuda),
        cmocka_unit_test(test_at_write_cuda),
        cmocka_unit_test(test_at_read_cuda),
        cmocka_unit_test(test_at_launch_cuda),
        cmocka_unit_test(test_at_finish_cuda),
        cmocka_unit_test(test_sticky_context_cuda),
        cmocka_unit_test(test_device_gone_cuda),
        cmocka_unit_test(test_no_cpu_fallback_is_edevlost_cuda),
        cmocka_unit_test(test_bad_fault_spec_cuda),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("device_fault", tests);
}
