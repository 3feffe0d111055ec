/* SPDX-License-Identifier: MIT */
/* The public headers from C++: every *_INIT macro, C linkage, and a map run from a C++ program
 * linked to the shared library as a user's would be. Built when CMake finds a C++ compiler
 * (cmake/tandem_cxx_tests.cmake); the headers are also compiled one by one as C++11, 17 and 20
 * with -pedantic there. */
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <csetjmp>
#include <cstring>
#include <vector>

extern "C" {
#include <cmocka.h>
}

#include <tandem.h>

/* Every *_INIT macro gives the same value as its C spelling's documented fields. */
static void test_init_macros(void **state)
{
    (void)state;
    tdm_config cfg = TDM_CONFIG_INIT;
    tdm_config cfg_c;
    assert_int_equal(tdm_config_init(&cfg_c), 0);
    assert_int_equal(cfg.size, sizeof(tdm_config));
    assert_int_equal(cfg.version, TDM_CONFIG_VERSION);
    assert_int_equal(cfg.use_env, cfg_c.use_env);
    assert_int_equal(cfg.threads, cfg_c.threads);

    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    assert_int_equal(mo.size, sizeof(tdm_map_opts));
    assert_int_equal(mo.policy, TDM_POLICY_AUTO);
    assert_int_equal(mo.progress, TDM_PROGRESS_AUTO);

    tdm_report rep = TDM_REPORT_INIT;
    assert_int_equal(rep.size, sizeof(tdm_report));
    assert_int_equal(rep.items, 0);
    assert_int_equal(rep.n_workers, 0);

    tdm_dist_report drep = TDM_DIST_REPORT_INIT;
    assert_int_equal(drep.size, sizeof(tdm_dist_report));
    tdm_dist_config dcfg = TDM_DIST_CONFIG_INIT;
    assert_int_equal(dcfg.size, sizeof(tdm_dist_config));
    tdm_dist_opts dopts = TDM_DIST_OPTS_INIT;
    assert_int_equal(dopts.size, sizeof(tdm_dist_opts));

    tdm_sim_config sc = TDM_SIM_CONFIG_INIT;
    assert_int_equal(sc.size, sizeof(tdm_sim_config));
    assert_int_equal(sc.version, TDM_SIM_CONFIG_VERSION);
    assert_int_equal(sc.items, 1000000);
    assert_int_equal(sc.seed, 1);
    assert_int_equal(sc.n_backends, 0);
    tdm_sim_cluster_config cc = TDM_SIM_CLUSTER_CONFIG_INIT;
    assert_int_equal(cc.size, sizeof(tdm_sim_cluster_config));
    assert_int_equal(cc.slow_node, -1);
    assert_true(cc.net_bandwidth == 12.5e9);

    tdm_kernel_def kd = TDM_KERNEL_DEF_INIT;
    assert_int_equal(kd.size, sizeof(tdm_kernel_def));
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    assert_int_equal(so.size, sizeof(tdm_save_opts));
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    assert_int_equal(lo.size, sizeof(tdm_load_opts));
    tdm_cache_opts co = TDM_CACHE_OPTS_INIT;
    assert_int_equal(co.size, sizeof(tdm_cache_opts));
    tdm_pipeline_opts po = TDM_PIPELINE_OPTS_INIT;
    assert_int_equal(po.size, sizeof(tdm_pipeline_opts));

    /* The device argument keeps its 16-byte alignment in C++ (alignas, not _Alignas). */
    assert_int_equal(alignof(tdm_dev_arg) % 16, 0);
}

/* A map over tensors, with the report, from C++. */
static void test_map_runs(void **state)
{
    (void)state;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    tdm_runtime *rt = nullptr;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    const int64_t n = 100000;
    tdm_tensor *x = nullptr, *y = nullptr;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    double *xd = static_cast<double *>(tdm_tensor_data(x));
    for (int64_t i = 0; i < n; i++)
        xd[i] = static_cast<double>(i % 1000) * 1e-3;
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_CPU;
    tdm_report rep = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, nullptr, 0, &mo, &rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.items, n);
    const double *yd = static_cast<const double *>(tdm_tensor_data(y));
    for (int64_t i = 0; i < n; i += 997)
        assert_true(std::fabs(yd[i] - std::exp(xd[i]) * std::sinh(xd[i])) <= 1e-12);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

/* A C++ lambda (no captures) is a tdm_range_fn; errors come back as status codes. */
static void test_parallel_for_lambda(void **state)
{
    (void)state;
    tdm_runtime *rt = nullptr;
    assert_int_equal(tdm_runtime_open(&rt, nullptr), 0);
    std::vector<int> hits(1000, 0);
    int *p = hits.data();
    tdm_range_fn fn = [](const void *params, int64_t b, int64_t e, tdm_task *) -> int {
        int *h = *static_cast<int *const *>(params);
        for (int64_t i = b; i < e; i++)
            h[i]++;
        return 0;
    };
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_CPU;
    assert_int_equal(tdm_parallel_for(rt, 1000, fn, &p, sizeof p, &mo, nullptr), 0);
    for (int v : hits)
        assert_int_equal(v, 1);
    assert_int_equal(tdm_parallel_for(rt, 10, nullptr, nullptr, 0, &mo, nullptr), TDM_EINVAL);
    assert_string_equal(tdm_status_name(TDM_EINVAL), "TDM_EINVAL");
    assert_int_equal(tdm_runtime_close(rt), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_macros),
        cmocka_unit_test(test_map_runs),
        cmocka_unit_test(test_parallel_for_lambda),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
