/* SPDX-License-Identifier: MIT */
/* Maps on device backends (OpenCL on PoCL in CI, CUDA where a GPU is): every built-in kernel
 * against the CPU, pipelined batches, out-of-memory fallback to the CPU (at allocation and at
 * completion), lost devices, user kernels in the dialect, compile errors with the build log.
 * Skipped (77) when no device is found. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tdm_test.h"

static tdm_runtime *open_rt(void)
{
    return tdm_test_open(2);
}

static tdm_map_opts gpu_opts(int64_t batch)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    /* device_cuda_* (tests/CMakeLists.txt): CUDA itself, not whichever device GPU picks */
    const char *p = getenv("TDM_TEST_GPU_POLICY");
    o.policy = p && !strcmp(p, "cuda") ? TDM_POLICY_CUDA : TDM_POLICY_GPU;
    o.batch_size = batch;
    return o;
}

static tdm_map_opts cpu_opts(void)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = TDM_POLICY_THREADS;
    return o;
}

static tdm_tensor *filled(tdm_runtime *rt, tdm_dtype dt, int ndim, const int64_t *shape,
                          unsigned seed)
{
    tdm_tensor *t;
    assert_int_equal(tdm_tensor_empty(rt, dt, ndim, shape, TDM_MEM_HOST, &t), 0);
    int64_t n = tdm_tensor_numel(t);
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        double v = (double)(rand() % 2000) * 1e-3 - 1.0;
        if (dt == TDM_F32)
            ((float *)tdm_tensor_data(t))[i] = (float)v;
        else if (dt == TDM_F64)
            ((double *)tdm_tensor_data(t))[i] = v;
        else if (dt == TDM_U8)
            ((uint8_t *)tdm_tensor_data(t))[i] = (uint8_t)(rand() & 0xff);
        else if (dt == TDM_I64)
            ((int64_t *)tdm_tensor_data(t))[i] = 1 + rand() % 1000;
    }
    return t;
}

static double value(const tdm_tensor *t, int64_t i)
{
    return tdm_tensor_dtype(t) == TDM_F32 ? ((const float *)tdm_tensor_data(t))[i]
                                          : ((const double *)tdm_tensor_data(t))[i];
}

/* Runs `kernel` on the CPU and on the device and compares (relative tolerance). */
static void compare(tdm_runtime *rt, const char *kernel, tdm_tensor **in, int n_in, int out_ndim,
                    const int64_t *out_shape, tdm_dtype out_dt, const void *params, size_t psize,
                    double tol, int64_t batch)
{
    tdm_tensor *yc, *yg;
    assert_int_equal(tdm_tensor_zeros(rt, out_dt, out_ndim, out_shape, 0, &yc), 0);
    assert_int_equal(tdm_tensor_zeros(rt, out_dt, out_ndim, out_shape, 0, &yg), 0);
    tdm_map_opts oc = cpu_opts(), og = gpu_opts(batch);
    assert_int_equal(tdm_map(rt, kernel, in, n_in, &yc, 1, params, psize, &oc, NULL), 0);
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, kernel, in, n_in, &yg, 1, params, psize, &og, &r);
    if (rc != 0)
        fail_msg("%s on the device: %s: %s", kernel, tdm_status_name(rc), tdm_errmsg(rt));
    int64_t dev_items = 0;
    for (int w = 0; w < r.n_workers; w++)
        if (r.workers[w].kind == TDM_BACKEND_OPENCL || r.workers[w].kind == TDM_BACKEND_CUDA)
            dev_items += r.workers[w].items;
        else
            assert_int_equal(r.workers[w].items, 0);
    assert_int_equal(dev_items, out_shape[0]);
    int64_t n = tdm_tensor_numel(yc);
    for (int64_t i = 0; i < n; i++) {
        double a = value(yc, i), b = value(yg, i);
        if (!(fabs(a - b) <= tol * (1.0 + fabs(a))))
            fail_msg("%s: element %lld: cpu %.17g device %.17g", kernel, (long long)i, a, b);
    }
    tdm_tensor_release(yc);
    tdm_tensor_release(yg);
}

static void test_elementwise_kernels_match_cpu(void **state)
{
    tdm_runtime *rt = open_rt();
    const tdm_dtype dts[] = {TDM_F32, TDM_F64};
    for (int d = 0; d < 2; d++) {
        int64_t n = 100003;
        tdm_tensor *x = filled(rt, dts[d], 1, &n, 1), *y = filled(rt, dts[d], 1, &n, 2);
        double tol = dts[d] == TDM_F32 ? 2e-6 : 1e-13;
        compare(rt, "exp_sinh", &x, 1, 1, &n, dts[d], NULL, 0, tol, 0);
        compare(rt, "exp_sinh", &x, 1, 1, &n, dts[d], NULL, 0, tol, 777); /* many batches */
        tdm_axpy_params ap = {0.5};
        tdm_tensor *xy[2] = {x, y};
        compare(rt, "axpy", xy, 2, 1, &n, dts[d], &ap, sizeof ap, tol, 0);
        tdm_scale_shift_params sp = {3.0, -1.0};
        compare(rt, "scale_shift", &x, 1, 1, &n, dts[d], &sp, sizeof sp, tol, 1000);
        tdm_tensor_release(x);
        tdm_tensor_release(y);
    }
    tdm_test_close(rt);
}

static void test_row_reductions_match_cpu(void **state)
{
    tdm_runtime *rt = open_rt();
    const tdm_dtype dts[] = {TDM_F32, TDM_F64};
    const char *names[] = {"sum", "mean", "sumsq"};
    for (int d = 0; d < 2; d++) {
        int64_t shape[2] = {1001, 37};
        tdm_tensor *x = filled(rt, dts[d], 2, shape, 3);
        for (int k = 0; k < 3; k++)
            compare(rt, names[k], &x, 1, 1, shape, dts[d], NULL, 0,
                    dts[d] == TDM_F32 ? 1e-6 : 1e-13, 100);
        tdm_tensor_release(x);
    }
    tdm_test_close(rt);
}

static void test_normalize_and_pi_match_cpu(void **state)
{
    tdm_runtime *rt = open_rt();
    int64_t shape[4] = {9, 16, 12, 3};
    tdm_tensor *img = filled(rt, TDM_U8, 4, shape, 4);
    int64_t n9 = 9;
    tdm_tensor *flags = filled(rt, TDM_U8, 1, &n9, 5);
    int64_t out_shape[4] = {9, 3, 16, 12};
    tdm_normalize_params np = {{0.485f, 0.456f, 0.406f, 0}, {0.229f, 0.224f, 0.225f, 1}, 1, 0};
    compare(rt, "normalize_u8", &img, 1, 4, out_shape, TDM_F32, &np, sizeof np, 1e-5, 4);
    tdm_tensor *both[2] = {img, flags};
    np.flip = 0;
    compare(rt, "normalize_u8", both, 2, 4, out_shape, TDM_F32, &np, sizeof np, 1e-5, 2);
    int64_t n = 64;
    tdm_pi_params pp = {20000};
    compare(rt, "pi_leibniz", NULL, 0, 1, &n, TDM_F64, &pp, sizeof pp, 1e-11, 8);
    tdm_tensor *terms = filled(rt, TDM_I64, 1, &n, 6);
    compare(rt, "pi_leibniz", &terms, 1, 1, &n, TDM_F64, &pp, sizeof pp, 1e-11, 0);
    tdm_tensor_release(img);
    tdm_tensor_release(flags);
    tdm_tensor_release(terms);
    tdm_test_close(rt);
}

static void test_out_of_device_memory_falls_back_to_cpu(void **state)
{
    /* A 64 KiB device memory cap: 1 MiB batches cannot get device buffers. First from the
     * environment (a runtime that reads it), then from the config. */
    setenv("TDM_DEVICE_MEM_CAP", "64K", 1);
    tdm_config ecfg = TDM_CONFIG_INIT;
    ecfg.threads = 2;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &ecfg), 0);
    int64_t n = 1 << 20;
    tdm_tensor *x = filled(rt, TDM_F64, 1, &n, 7), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(1 << 17);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.fallback_batches, 8);
    const double *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-14 * (1 + fabs(yd[i])));
    /* the same cap from the config (no environment) */
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
    unsetenv("TDM_DEVICE_MEM_CAP");
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    cfg.device_mem_cap = 65536;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    x = filled(rt, TDM_F64, 1, &n, 7);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    o.batch_size = 1 << 17;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.fallback_batches, 8);
    /* a map that forbids the CPU fallback fails with TDM_ENOMEM, and says why */
    o.no_cpu_fallback = 1;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), TDM_ENOMEM);
    assert_int_equal(r.fallback_batches, 0);
    assert_non_null(strstr(tdm_errmsg(rt), "the map forbids running it on the CPU instead"));
    o.no_cpu_fallback = 0;
    /* small batches fit under the cap and run on the device */
    o.batch_size = 1024;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.fallback_batches, 0);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* A user kernel in the dialect: y = 2x + 1 over f32, using a built-in device function too. */
static const char user_src[] =
    "TDM_KERNEL tdm_user_affine(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, tdm_idx begin,\n"
    "                           tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE())\n"
    "        y[i] = tdm_k_scale_shift_f32(x[i], 2.0f, 1.0f);\n"
    "}\n";

static int user_dev(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_user_affine");
    l->n_args = 4;
    l->args[0].kind = TDM_DEV_ARG_INPUT;
    l->args[1].kind = TDM_DEV_ARG_OUTPUT;
    l->args[2].kind = TDM_DEV_ARG_BEGIN;
    l->args[3].kind = TDM_DEV_ARG_END;
    l->items_per_row = 1;
    return 0;
}

static void test_user_kernel_in_the_dialect(void **state)
{
    tdm_runtime *rt = open_rt();
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "user_affine";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.source = user_src;
    def.dev = user_dev;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    int64_t n = 5000;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &n, 8), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(1000);
    int rc = tdm_map(rt, "user_affine", &x, 1, &y, 1, NULL, 0, &o, NULL);
    if (rc != 0)
        fail_msg("%s: %s", tdm_status_name(rc), tdm_errmsg(rt));
    const float *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabsf(yd[i] - (2.0f * xd[i] + 1.0f)) <= 1e-6f);
    /* it has no CPU version: the CPU policies cannot run it */
    tdm_map_opts oc = cpu_opts();
    assert_int_equal(tdm_map(rt, "user_affine", &x, 1, &y, 1, NULL, 0, &oc, NULL), TDM_ENODEV);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_compile_error_reports_build_log(void **state)
{
    tdm_runtime *rt = open_rt();
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "broken";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.source = "TDM_KERNEL tdm_user_affine(TDM_GLOBAL float *x) { this is not C; }\n";
    def.dev = user_dev;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    int64_t n = 10;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &n, 9), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(0);
    assert_int_equal(tdm_map(rt, "broken", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_EKERNEL);
    const char *msg = tdm_errmsg(rt);
    assert_non_null(strstr(msg, "broken")); /* the #line name: the log points at the user text */
    const float *yd = tdm_tensor_data(y);
    for (int i = 0; i < n; i++)
        assert_true(yd[i] == 0.0f);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* y = 2x + 1 on the CPU, with some work per item (about a microsecond): the map lasts long
 * enough for the device's driver to join it. */
static int slow_affine_cpu(const tdm_kernel_args *a)
{
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        volatile float v = x[i];
        for (int k = 0; k < 300; k++)
            v = v * 1.0f;
        y[i] = 2.0f * v + 1.0f;
    }
    return 0;
}

/* Under AUTO, a kernel whose device program does not build runs on the CPU: the device leaves
 * the map to the CPU workers (without share caps), or runs its batches on the host (with caps
 * that leave the CPU less than all the items); an explicit device policy still fails with
 * TDM_EKERNEL. Before, AUTO maps failed with TDM_EKERNEL once the devices were open (an
 * outside test: every map after the count opened them), most of the output unwritten. */
static void count_cannot_run(void *user, unsigned flags, const char *line)
{
    (void)flags;
    if (strstr(line, "cannot run it ("))
        atomic_fetch_add((atomic_int *)user, 1);
}

static void test_auto_runs_on_the_cpu_what_a_device_cannot_build(void **state)
{
    atomic_int cannot = 0;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    cfg.use_env = 0;
    cfg.debug = TDM_DEBUG_SCHED;
    cfg.log_fn = count_cannot_run;
    cfg.log_user = &cannot;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    int64_t n = 20000;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &n, 21), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y), 0);
    tdm_map_opts og = gpu_opts(0); /* (opens the devices) */
    tdm_scale_shift_params sp = {1, 0};
    assert_int_equal(tdm_map(rt, "scale_shift", &x, 1, &y, 1, &sp, sizeof sp, &og, NULL), 0);
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "broken_on_devices";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.cpu = slow_affine_cpu;
    def.source = "TDM_KERNEL tdm_user_affine(TDM_GLOBAL float *x) { this is not C; }\n";
    def.dev = user_dev;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    const float *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    bool on_cuda = false; /* (CUDA builds at its first batch, which no_cpu_fallback keeps) */
    for (int round = 0; round < 5; round++) { /* (3: no CPU fallback; 4: share caps) */
        bool capped = round == 4;
        if (round == 3 && on_cuda)
            continue;
        memset(tdm_tensor_data(y), 0, (size_t)n * sizeof(float));
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.no_cpu_fallback = round == 3; /* (the lane leaves: no batch needs the host) */
        if (capped) {
            o.share_cap[TDM_BACKEND_CPU_THREADS] = 0.5;
            o.share_cap[TDM_BACKEND_OPENCL] = 0.5;
            o.share_cap[TDM_BACKEND_CUDA] = 0.5;
        }
        tdm_report r = TDM_REPORT_INIT;
        int rc = tdm_map(rt, "broken_on_devices", &x, 1, &y, 1, NULL, 0, &o, &r);
        if (rc != 0)
            fail_msg("round %d: %s: %s", round, tdm_status_name(rc), tdm_errmsg(rt));
        for (int64_t i = 0; i < n; i++)
            assert_true(yd[i] == 2.0f * xd[i] + 1.0f);
        int64_t on_cpu = 0, on_dev = 0;
        for (int w = 0; w < r.n_workers; w++)
            if (r.workers[w].kind == TDM_BACKEND_OPENCL || r.workers[w].kind == TDM_BACKEND_CUDA) {
                on_dev += r.workers[w].items;
                on_cuda |= r.workers[w].kind == TDM_BACKEND_CUDA;
            } else {
                on_cpu += r.workers[w].items;
            }
        if (capped) { /* (the device's share ran on the host, its driver's batches, sized as a
                       * CPU worker's: they were of one item each, 10000 of them) */
            assert_true(r.fallback_batches > 0 && r.fallback_batches < 500);
            assert_true(on_dev > 0 && on_cpu <= n / 2 + 1);
        } else if (!on_cuda) {
            assert_int_equal(on_cpu, n);
        }
        /* (a lane that left is not offered the map again: it came back to leave thousands of
         * times a map) */
        assert_true(atomic_load(&cannot) <= 2 * (round + 1));
    }
    assert_int_equal(tdm_map(rt, "broken_on_devices", &x, 1, &y, 1, NULL, 0, &og, NULL),
                     TDM_EKERNEL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* A streamed map (tdm_map_async) on the devices: each batch holds a result slot until it is
 * consumed, as a CPU worker's does. The device's batches took none and gave one back each:
 * under ASan, a heap overflow of the slots in tdm__job_batch_done (an outside test). Waited
 * for, then consumed batch by batch; the results are checked. */
static void test_streamed_map_on_a_device_keeps_its_slots(void **state)
{
    tdm_runtime *rt = open_rt();
    int64_t n = 3000;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &n, 22), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y), 0);
    tdm_scale_shift_params sp = {2, 1};
    const float *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int consume = 0; consume < 2; consume++) {
        tdm_map_opts o = gpu_opts(100);
        o.max_in_flight = 3;
        tdm_job *job;
        assert_int_equal(tdm_map_async(rt, "scale_shift", &x, 1, &y, 1, &sp, sizeof sp, &o, &job),
                         0);
        int64_t seen = 0;
        tdm_batch_result br;
        while (consume && tdm_job_next(job, &br) == 0) {
            assert_int_equal(br.status, 0);
            seen += br.end - br.begin;
        }
        tdm_report r = TDM_REPORT_INIT;
        assert_int_equal(tdm_job_wait(job, &r), 0);
        tdm_job_free(job);
        assert_int_equal(r.items, n);
        if (consume)
            assert_int_equal(seen, n);
        for (int64_t i = 0; i < n; i++)
            assert_true(fabsf(yd[i] - (2.0f * xd[i] + 1.0f)) <= 1e-6f);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

typedef struct {
    tdm_runtime *rt;
    int64_t n;
    int maps, failed;
} capped_arg;

static void *capped_maps(void *p)
{
    capped_arg *a = p;
    tdm_tensor *y;
    if (tdm_tensor_empty(a->rt, TDM_F64, 1, &a->n, 0, &y) != 0) {
        a->failed = 1;
        return NULL;
    }
    tdm_pi_params pp = {2000};
    for (int m = 0; m < a->maps; m++) {
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.share_cap[TDM_BACKEND_CPU_THREADS] = 0.5;
        o.share_cap[TDM_BACKEND_OPENCL] = 0.5;
        o.share_cap[TDM_BACKEND_CUDA] = 0.5;
        if (tdm_map(a->rt, "pi_leibniz", NULL, 0, &y, 1, &pp, sizeof pp, &o, NULL) != 0)
            a->failed = 1;
        const double *yd = tdm_tensor_data(y);
        for (int64_t i = 0; i < a->n; i++)
            if (!(fabs(yd[i] - 3.14159265) < 1e-3))
                a->failed = 1;
    }
    tdm_tensor_release(y);
    return NULL;
}

/* Maps whose share caps leave the CPU half the items and the devices the other half, eight at
 * once on one runtime: a worker whose kind's cap is used up in a map is not offered it again.
 * It was: it came back, declined and was offered it again, without end, while the kind that
 * could take the rest went round the same way in another map (an outside test: 8 threads of
 * such maps hung, 2 of 64 done; it hung before the fallback for programs that do not build
 * too). CTest's timeout fails it if it hangs. */
static void test_many_capped_maps_at_once_all_finish(void **state)
{
    tdm_runtime *rt = open_rt();
    tdm_map_opts og = gpu_opts(0); /* (opens the devices) */
    int64_t one = 64;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &one, 23), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &one, 0, &y), 0);
    tdm_scale_shift_params sp = {1, 0};
    assert_int_equal(tdm_map(rt, "scale_shift", &x, 1, &y, 1, &sp, sizeof sp, &og, NULL), 0);
    pthread_t th[8];
    capped_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (capped_arg){rt, 1500 + 37 * i, 6, 0};
        assert_int_equal(pthread_create(&th[i], NULL, capped_maps, &a[i]), 0);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 120; /* (a hang fails here, not at CTest's timeout) */
    for (int i = 0; i < 8; i++) {
        if (pthread_timedjoin_np(th[i], NULL, &until) != 0)
            fail_msg("the maps of thread %d did not finish in 120 s", i);
        assert_int_equal(a[i].failed, 0);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* Residency: chained maps on the device move nothing between them; the host copy comes back
 * when the host reads it. Transfers are counted in the reports. */
static void test_chained_maps_stay_on_device(void **state)
{
    tdm_runtime *rt = open_rt();
    int64_t n = 200000;
    const int64_t bytes = n * (int64_t)sizeof(double);
    tdm_tensor *x = filled(rt, TDM_F64, 1, &n, 12), *y, *z, *w, *y2;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &z), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &w), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y2), 0);
    tdm_map_opts o = gpu_opts(20000);
    o.keep_on_device = 1;
    tdm_report r = TDM_REPORT_INIT;

    /* x goes up once; y stays on the device */
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.bytes_to_device, bytes);
    assert_int_equal(r.bytes_from_device, 0);
    assert_true(tdm_tensor_on_device(y));

    /* y is already there: nothing moves at all */
    tdm_scale_shift_params sp = {2.0, 1.0};
    assert_int_equal(tdm_map(rt, "scale_shift", &y, 1, &z, 1, &sp, sizeof sp, &o, &r), 0);
    assert_int_equal(r.bytes_to_device, 0);
    assert_int_equal(r.bytes_from_device, 0);

    /* reading z on the host fetches it */
    const double *xd = tdm_tensor_data(x);
    const double *zd = tdm_tensor_data(z);
    for (int64_t i = 0; i < n; i++) {
        double e = 2.0 * (exp(xd[i]) * sinh(xd[i])) + 1.0;
        assert_true(fabs(zd[i] - e) <= 1e-13 * (1 + fabs(e)));
    }
    /* ... and, since the host may have written it, z goes up again next time */
    assert_int_equal(tdm_map(rt, "exp_sinh", &z, 1, &w, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.bytes_to_device, bytes);

    /* tdm_tensor_to_host keeps the device copy current: y still moves nothing */
    assert_int_equal(tdm_tensor_to_host(y), 0);
    assert_int_equal(tdm_map(rt, "scale_shift", &y, 1, &z, 1, &sp, sizeof sp, &o, &r), 0);
    assert_int_equal(r.bytes_to_device, 0);

    /* a CPU map over a device-newer tensor sees the device's bytes */
    tdm_tensor *c;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &c), 0);
    tdm_map_opts oc = cpu_opts();
    assert_int_equal(tdm_map(rt, "scale_shift", &w, 1, &c, 1, &sp, sizeof sp, &oc, NULL), 0);
    const double *cd = tdm_tensor_data(c);
    for (int64_t i = 0; i < n; i += 997) {
        double zi = 2.0 * (exp(xd[i]) * sinh(xd[i])) + 1.0;
        double e = 2.0 * (exp(zi) * sinh(zi)) + 1.0;
        assert_true(fabs(cd[i] - e) <= 1e-12 * (1 + fabs(e)));
    }

    /* without keep_on_device, an input already on the device is not sent again; the output
     * comes back batch by batch */
    o.keep_on_device = 0;
    assert_int_equal(tdm_map(rt, "exp_sinh", &y, 1, &y2, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.bytes_to_device, 0);
    assert_int_equal(r.bytes_from_device, bytes);
    const double *y2d = tdm_tensor_data(y2), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i += 991)
        assert_true(fabs(y2d[i] - exp(yd[i]) * sinh(yd[i])) <= 1e-13 * (1 + fabs(y2d[i])));
    tdm_tensor_release(c);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(z);
    tdm_tensor_release(w);
    tdm_tensor_release(y2);
    tdm_test_close(rt);
}

/* A device that fails mid-run (simulated: TDM_DEVICE_FAIL_AFTER) is dropped; its batches run
 * on the CPU and the map still completes with correct results; later GPU maps find no device. */
static void test_lost_device_batches_rerun_on_cpu(void **state)
{
    setenv("TDM_DEVICE_FAIL_AFTER", "3", 1); /* read when the devices open: at the first map */
    tdm_runtime *rt = open_rt();
    int64_t n = 100000;
    tdm_tensor *x = filled(rt, TDM_F64, 1, &n, 13), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(5000);
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r);
    unsetenv("TDM_DEVICE_FAIL_AFTER");
    if (rc != 0)
        fail_msg("%s: %s", tdm_status_name(rc), tdm_errmsg(rt));
    assert_int_equal(r.items, n);
    if (r.fallback_batches < 17)
        fail_msg("fallback_batches %lld of %lld batches", (long long)r.fallback_batches,
                 (long long)r.batches);
    const double *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-13 * (1 + fabs(yd[i])));
    /* with its only device lost, policy GPU has nowhere to go */
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), TDM_ENODEV);
    assert_non_null(strstr(tdm_errmsg(rt), "lost"));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* Device workers (OpenCL, CUDA) of the runtime: the batch numbering below is exact only for
 * one (with several, each device's own Nth completion fails). */
static int device_count(tdm_runtime *rt)
{
    int n = tdm_runtime_device_count(rt), devs = 0;
    for (int i = 0; i < n; i++) {
        tdm_device_info di;
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        devs += di.kind == TDM_BACKEND_OPENCL || di.kind == TDM_BACKEND_CUDA;
    }
    return devs;
}

typedef struct {
    int fallback_lines;
    char line[512]; /* the last "runs on the CPU" line */
} cpu_log;

static void log_cpu_reruns(void *user, unsigned flag, const char *line)
{
    cpu_log *l = user;
    if (strstr(line, "runs on the CPU") && strstr(line, "at completion")) {
        l->fallback_lines++;
        snprintf(l->line, sizeof l->line, "%s", line);
    }
}

/* Device memory that runs out only when the queue finishes (a driver allocating lazily:
 * simulated by TDM_DEVICE_ENOMEM_AT_FINISH, the device's 3rd batch completion reporting
 * TDM_ENOMEM): that batch runs again on the CPU and the map succeeds with correct results. */
static void test_enomem_at_completion_reruns_on_cpu(void **state)
{
    setenv("TDM_DEVICE_ENOMEM_AT_FINISH", "3", 1); /* read when the devices open */
    cpu_log log = {0};
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    cfg.debug = TDM_DEBUG_SCHED;
    cfg.log_fn = log_cpu_reruns;
    cfg.log_user = &log;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    int64_t n = 100000;
    tdm_tensor *x = filled(rt, TDM_F64, 1, &n, 14), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(5000); /* 20 batches */
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r);
    unsetenv("TDM_DEVICE_ENOMEM_AT_FINISH");
    if (rc != 0)
        fail_msg("%s: %s", tdm_status_name(rc), tdm_errmsg(rt));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.items, n);
    assert_int_equal(r.batches, 20);
    assert_int_equal(r.failed_batches, 0);
    assert_int_equal(r.first_error_batch, -1);
    /* one rerun per device that completed 3 batches; every batch on a device driver */
    int64_t expect = 0, dev_items = 0;
    for (int w = 0; w < r.n_workers; w++) {
        int dev = r.workers[w].kind == TDM_BACKEND_OPENCL || r.workers[w].kind == TDM_BACKEND_CUDA;
        if (!dev) {
            assert_int_equal(r.workers[w].items, 0);
            continue;
        }
        dev_items += r.workers[w].items;
        expect += r.workers[w].batches >= 3;
    }
    assert_int_equal(dev_items, n);
    assert_true(expect >= 1);
    assert_int_equal(r.fallback_batches, expect);
    assert_int_equal(log.fallback_lines, expect);
    if (device_count(rt) == 1) /* one device: its 3rd completion is batch 2, in order */
        if (!strstr(log.line, "batch 2 (items 10000..15000) runs on the CPU"))
            fail_msg("log: %s", log.line);
    assert_non_null(strstr(log.line, "injected device out of memory"));
    const double *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-13 * (1 + fabs(yd[i])));
    /* the fault is injected once per device: the next map runs wholly on the device (whose
     * queue with the dropped buffers allocated new ones) */
    memset(tdm_tensor_data(y), 0, (size_t)n * sizeof(double));
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    assert_int_equal(r.fallback_batches, 0);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-13 * (1 + fabs(yd[i])));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* The same completion-time TDM_ENOMEM for a kernel with no CPU implementation: nothing can
 * run the batch instead, so the map fails with TDM_ENOMEM naming the batch and saying why. */
static void test_enomem_at_completion_without_cpu_version_fails(void **state)
{
    setenv("TDM_DEVICE_ENOMEM_AT_FINISH", "3", 1);
    tdm_runtime *rt = open_rt();
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "user_affine";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.source = user_src;
    def.dev = user_dev; /* no def.cpu */
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    int64_t n = 20000;
    tdm_tensor *x = filled(rt, TDM_F32, 1, &n, 15), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(1000);
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "user_affine", &x, 1, &y, 1, NULL, 0, &o, &r);
    unsetenv("TDM_DEVICE_ENOMEM_AT_FINISH");
    assert_int_equal(rc, TDM_ENOMEM);
    const char *msg = tdm_errmsg(rt);
    assert_non_null(strstr(msg, "user_affine"));
    assert_non_null(strstr(msg, "TDM_ENOMEM"));
    assert_non_null(strstr(msg, "injected device out of memory"));
    assert_non_null(strstr(msg, "no CPU implementation"));
    assert_int_equal(r.status, TDM_ENOMEM);
    assert_int_equal(r.first_error, TDM_ENOMEM);
    assert_int_equal(r.fallback_batches, 0);
    assert_true(r.failed_batches >= 1);
    char want[96];
    snprintf(want, sizeof want, "batch %lld (items %lld..%lld)", (long long)r.first_error_batch,
             (long long)r.first_error_begin, (long long)r.first_error_end);
    if (!strstr(msg, want))
        fail_msg("'%s' not in: %s", want, msg);
    if (device_count(rt) == 1) {
        assert_int_equal(r.first_error_batch, 2);
        assert_int_equal(r.first_error_begin, 2000);
        assert_int_equal(r.first_error_end, 3000);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* Page-locked tensors (pinned, and shared + pinned that worker processes fill) are registered
 * with the device once and their batches copied by the device from them. */
static void count_registrations(void *user, unsigned flag, const char *line)
{
    if (strstr(line, "registered with"))
        ++*(int *)user;
}

static void test_pinned_tensors_registered(void **state)
{
    int registered = 0;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    cfg.debug = TDM_DEBUG_SCHED;
    cfg.log_fn = count_registrations;
    cfg.log_user = &registered;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    int64_t n = 4096; /* 32 KiB: within the default page-lock limit */
    const unsigned mems[] = {TDM_MEM_PINNED, TDM_MEM_SHARED | TDM_MEM_PINNED};
    for (int m = 0; m < 2; m++) {
        tdm_tensor *x, *y;
        assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, mems[m], &x), 0);
        assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, mems[m], &y), 0);
        double *xd = tdm_tensor_data(x);
        for (int64_t i = 0; i < n; i++)
            xd[i] = 1e-3 * (double)i;
        tdm_map_opts o = gpu_opts(1000);
        tdm_report r = TDM_REPORT_INIT;
        assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
        assert_int_equal(r.bytes_to_device, n * 8);
        const double *yd = tdm_tensor_data(y);
        for (int64_t i = 0; i < n; i++)
            assert_true(fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) <= 1e-13 * (1 + fabs(yd[i])));
        if (tdm_tensor_mem(x) & TDM_MEM_PINNED) /* the system may refuse to lock pages */
            assert_int_equal(registered, 2 * (m + 1));
        /* released while registered: unregistered cleanly (ASan/TSan watch this) */
        tdm_tensor_release(x);
        tdm_tensor_release(y);
    }
    tdm_test_close(rt);
}

static void test_bandwidth_measured_and_errors(void **state)
{
    tdm_runtime *rt = open_rt();
    int n = tdm_runtime_device_count(rt), dev = -1;
    for (int i = 0; i < n && dev < 0; i++) {
        tdm_device_info di;
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        if (di.kind == TDM_BACKEND_OPENCL || di.kind == TDM_BACKEND_CUDA)
            dev = i;
    }
    assert_true(dev >= 0);
    double up = 0, down = 0;
    assert_int_equal(tdm_device_bandwidth(rt, dev, 1 << 20, &up, &down), 0);
    assert_true(up > 0 && down > 0);
    assert_int_equal(tdm_device_bandwidth(rt, 0, 0, &up, &down), TDM_ENOTFOUND); /* the CPU */
    assert_int_equal(tdm_device_bandwidth(rt, n, 0, &up, &down), TDM_ENOTFOUND);
    assert_int_equal(tdm_device_bandwidth(rt, dev, 1ull << 40, &up, &down), TDM_EINVAL);
    assert_int_equal(tdm_device_bandwidth(rt, dev, 0, NULL, &down), TDM_EINVAL);
    assert_int_equal(tdm_device_bandwidth(NULL, dev, 0, &up, &down), TDM_EINVAL);
    tdm_test_close(rt);
}

static void test_gpu_policy_errors(void **state)
{
    tdm_runtime *rt = open_rt();
    int64_t n = 10;
    tdm_tensor *x = filled(rt, TDM_I64, 1, &n, 10), *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts o = gpu_opts(0);
    /* a CPU-only user kernel */
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "cpu_only";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    extern int cpu_only_fn(const tdm_kernel_args *);
    def.cpu = cpu_only_fn;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    assert_int_equal(tdm_map(rt, "cpu_only", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_ENODEV);
    assert_non_null(strstr(tdm_errmsg(rt), "no device version"));
    /* a dtype with no device entry */
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_EDTYPE);
    /* a streaming map into ring buffers stays on the host */
    tdm_job *job = NULL;
    tdm_tensor *xf = filled(rt, TDM_F64, 1, &n, 11);
    assert_int_equal(tdm_map_async(rt, "exp_sinh", &xf, 1, NULL, 1, NULL, 0, &o, &job), TDM_ENODEV);
    assert_null(job);
    tdm_tensor_release(x);
    tdm_tensor_release(xf);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

int cpu_only_fn(const tdm_kernel_args *a)
{
    return 0;
}

int main(int argc, char **argv)
{
    /* Skip (77) when no device backend has a device that runs kernels. */
    tdm_runtime *rt;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return 1;
    int64_t n = 4;
    tdm_tensor *x, *y;
    tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &x);
    tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y);
    tdm_map_opts o = gpu_opts(0);
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL);
    char why[512];
    snprintf(why, sizeof why, "%s", tdm_errmsg(rt));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_runtime_close(rt);
    if (rc == TDM_ENODEV) {
        printf("skipped: no device runs kernels here: %s\n", why);
        return 77;
    }
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elementwise_kernels_match_cpu),
        cmocka_unit_test(test_row_reductions_match_cpu),
        cmocka_unit_test(test_normalize_and_pi_match_cpu),
        cmocka_unit_test(test_out_of_device_memory_falls_back_to_cpu),
        cmocka_unit_test(test_user_kernel_in_the_dialect),
        cmocka_unit_test(test_compile_error_reports_build_log),
        cmocka_unit_test(test_auto_runs_on_the_cpu_what_a_device_cannot_build),
        cmocka_unit_test(test_streamed_map_on_a_device_keeps_its_slots),
        cmocka_unit_test(test_many_capped_maps_at_once_all_finish),
        cmocka_unit_test(test_chained_maps_stay_on_device),
        cmocka_unit_test(test_lost_device_batches_rerun_on_cpu),
        cmocka_unit_test(test_enomem_at_completion_reruns_on_cpu),
        cmocka_unit_test(test_enomem_at_completion_without_cpu_version_fails),
        cmocka_unit_test(test_pinned_tensors_registered),
        cmocka_unit_test(test_bandwidth_measured_and_errors),
        cmocka_unit_test(test_gpu_policy_errors),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("device", tests);
}
