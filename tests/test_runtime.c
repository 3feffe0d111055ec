/* SPDX-License-Identifier: MIT */
/* Runtime: open/close, configuration, environment overrides, backends, devices, errors. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

static void test_open_defaults(void **state)
{
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, NULL), 0);
    assert_non_null(rt);
    assert_true(tdm_runtime_threads(rt) >= 1);
    assert_true(tdm_runtime_device_count(rt) >= 1);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_open_threads_config(void **state)
{
    tdm_runtime *rt = tdm_test_open(3);
    assert_int_equal(tdm_runtime_threads(rt), 3);
    tdm_test_close(rt);
}

static void test_open_null_out(void **state)
{
    assert_int_equal(tdm_runtime_open(NULL, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(NULL), "out is NULL"));
}

static void test_open_bad_config_size(void **state)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.size = 8;
    tdm_runtime *rt = (tdm_runtime *)0x1;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), TDM_EINVAL);
    assert_null(rt);
    cfg = (tdm_config)TDM_CONFIG_INIT;
    cfg.version = 99;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), TDM_EINVAL);
}

static void test_open_negative_threads(void **state)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = -1;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), TDM_EINVAL);
    cfg.threads = 0;
    cfg.procs = -2;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), TDM_EINVAL);
}

static void test_env_num_threads(void **state)
{
    setenv("TDM_NUM_THREADS", "5", 1);
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, NULL), 0);
    assert_int_equal(tdm_runtime_threads(rt), 5);
    assert_int_equal(tdm_runtime_close(rt), 0);
    /* use_env = 0 ignores the environment */
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_int_equal(tdm_runtime_threads(rt), 2);
    assert_int_equal(tdm_runtime_close(rt), 0);
    unsetenv("TDM_NUM_THREADS");
}

static void test_env_num_threads_malformed(void **state)
{
    const char *bad[] = {"abc", "-1", "3x", "100000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("TDM_NUM_THREADS", bad[i], 1);
        tdm_runtime *rt = (tdm_runtime *)0x1;
        assert_int_equal(tdm_runtime_open(&rt, NULL), TDM_EINVAL);
        assert_null(rt);
        assert_non_null(strstr(tdm_errmsg(NULL), "TDM_NUM_THREADS"));
    }
    unsetenv("TDM_NUM_THREADS");
}

static void test_env_backends(void **state)
{
    setenv("TDM_BACKENDS", "cpu", 1);
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, NULL), 0);
    tdm_backend_info bi;
    assert_int_equal(tdm_runtime_backend(rt, TDM_BACKEND_CPU_THREADS, &bi), 0);
    assert_true(bi.enabled);
    assert_int_equal(tdm_runtime_backend(rt, TDM_BACKEND_OPENCL, &bi), 0);
    assert_false(bi.enabled);
    assert_int_equal(bi.n_devices, 0);
    assert_int_equal(tdm_runtime_device_count(rt), 1);
    assert_int_equal(tdm_runtime_close(rt), 0);

    setenv("TDM_BACKENDS", "cpu,warp9", 1);
    assert_int_equal(tdm_runtime_open(&rt, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(NULL), "warp9"));
    setenv("TDM_BACKENDS", ",", 1);
    assert_int_equal(tdm_runtime_open(&rt, NULL), TDM_EINVAL);
    unsetenv("TDM_BACKENDS");
}

static void test_env_debug(void **state)
{
    setenv("TDM_DEBUG", "map,pool", 1);
    tdm_runtime *rt;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.log_fn = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_int_equal(tdm_runtime_debug(rt), TDM_DEBUG_MAP | TDM_DEBUG_POOL);
    assert_int_equal(tdm_runtime_close(rt), 0);
    setenv("TDM_DEBUG", "verbose", 1);
    assert_int_equal(tdm_runtime_open(&rt, NULL), TDM_EINVAL);
    unsetenv("TDM_DEBUG");
}

typedef struct {
    int lines;
    int saw_pool;
} log_state;

static void count_log(void *user, unsigned flag, const char *line)
{
    log_state *s = user;
    s->lines++;
    if (flag == TDM_DEBUG_POOL && strstr(line, "worker thread"))
        s->saw_pool = 1;
}

static void test_debug_log_callback(void **state)
{
    log_state s = {0, 0};
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    cfg.debug = TDM_DEBUG_ALL;
    cfg.log_fn = count_log;
    cfg.log_user = &s;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_true(s.lines > 0);
    assert_true(s.saw_pool);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void find_shm_warning(void *user, unsigned flag, const char *line)
{
    int *found = user;
    if (strstr(line, "shm_limit") && strstr(line, "more than"))
        *found = 1;
}

static void test_open_checks_shm_limit(void **state)
{
    int found = 0;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    tdm_system_info si;
    assert_int_equal(tdm_system_info_get(&si), 0);
    cfg.shm_limit = 2 * si.memory_available_bytes + (1ull << 30); /* more than there is */
    cfg.debug = TDM_DEBUG_RUNTIME;
    cfg.log_fn = find_shm_warning;
    cfg.log_user = &found;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_true(found);
    /* and the cap does not let a tensor past what the system has */
    int64_t huge = (int64_t)(si.memory_available_bytes + (1ull << 30));
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &huge, TDM_MEM_SHARED, &t), TDM_ENOSPC);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_config_disable_cpu(void **state)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.backends = "opencl";
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    /* Nothing enabled runs kernels: a map is TDM_ENODEV, not a crash. */
    int64_t n = 4;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL), TDM_ENODEV);
    assert_non_null(strstr(tdm_errmsg(rt), "disabled"));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_backend_table(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    assert_int_equal(tdm_backend_count(), TDM_BACKEND_KIND_COUNT);
    for (int i = 0; i < tdm_backend_count(); i++) {
        tdm_backend_info bi;
        assert_int_equal(tdm_runtime_backend(rt, i, &bi), 0);
        assert_int_equal((int)bi.kind, i);
        assert_string_equal(bi.name, tdm_backend_kind_name((tdm_backend_kind)i));
        if (!bi.built)
            assert_int_equal(bi.n_devices, 0); /* zero devices is fine, never an error */
    }
    tdm_backend_info cpu;
    assert_int_equal(tdm_runtime_backend(rt, TDM_BACKEND_CPU_THREADS, &cpu), 0);
    assert_true(cpu.built && cpu.enabled && cpu.runs_kernels);
    assert_int_equal(cpu.n_devices, 1);
    tdm_backend_info bi;
    assert_int_equal(tdm_runtime_backend(rt, -1, &bi), TDM_ENOTFOUND);
    assert_int_equal(tdm_runtime_backend(rt, TDM_BACKEND_KIND_COUNT, &bi), TDM_ENOTFOUND);
    assert_int_equal(tdm_runtime_backend(rt, 0, NULL), TDM_EINVAL);
    assert_int_equal(tdm_runtime_backend(NULL, 0, &bi), TDM_EINVAL);
    assert_string_equal(tdm_backend_kind_name((tdm_backend_kind)42), "unknown");
    tdm_test_close(rt);
}

static void test_devices(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    int n = tdm_runtime_device_count(rt);
    assert_true(n >= 1);
    tdm_device_info di;
    assert_int_equal(tdm_runtime_device(rt, 0, &di), 0);
    assert_int_equal(di.kind, TDM_BACKEND_CPU_THREADS);
    assert_int_equal(di.compute_units, 2);
    assert_true(di.memory_bytes > 0);
    for (int i = 1; i < n; i++) {
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        assert_true(di.name[0] != '\0');
    }
    assert_int_equal(tdm_runtime_device(rt, n, &di), TDM_ENOTFOUND);
    assert_int_equal(tdm_runtime_device(rt, -1, &di), TDM_ENOTFOUND);
    assert_int_equal(tdm_runtime_device(rt, 0, NULL), TDM_EINVAL);
    assert_int_equal(tdm_runtime_device_count(NULL), TDM_EINVAL);
    tdm_test_close(rt);
}

static void test_no_opencl_platform_is_zero_devices(void **state)
{
    /* The ICD loader finds no vendor here: the backend reports zero devices, open succeeds. */
    setenv("OCL_ICD_VENDORS", "/nonexistent", 1);
    tdm_runtime *rt = tdm_test_open(1);
    tdm_backend_info bi;
    assert_int_equal(tdm_runtime_backend(rt, TDM_BACKEND_OPENCL, &bi), 0);
    assert_int_equal(bi.n_devices, 0);
    tdm_test_close(rt);
    unsetenv("OCL_ICD_VENDORS");
}

/* libtandem does not link the OpenCL ICD loader: it loads it with dlopen. A loader that cannot
 * be loaded (here a path that does not exist, through TDM_OPENCL_LIBRARY) is zero OpenCL
 * devices with the loader's error as the note, and the runtime opens. In a child: the loader is
 * looked up once per process. */
static void test_no_opencl_loader_is_zero_devices(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("TDM_OPENCL_LIBRARY", "/nonexistent/libOpenCL.so.1", 1);
        tdm_config cfg = TDM_CONFIG_INIT;
        cfg.threads = 1;
        tdm_runtime *rt = NULL;
        if (tdm_runtime_open(&rt, &cfg) != 0)
            _exit(10);
        tdm_backend_info bi;
        if (tdm_runtime_backend(rt, TDM_BACKEND_OPENCL, &bi) != 0)
            _exit(11);
        if (bi.n_devices != 0)
            _exit(12);
        /* (a build without the OpenCL backend has its own note) */
        if (bi.built && !strstr(bi.note, "/nonexistent/libOpenCL.so.1"))
            _exit(13);
        if (tdm_runtime_close(rt) != 0)
            _exit(14);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_system_info(void **state)
{
    tdm_system_info si;
    assert_int_equal(tdm_system_info_get(&si), 0);
    assert_true(si.online_cores >= 1);
    assert_true(si.usable_cores >= 1 && si.usable_cores <= si.online_cores);
    assert_true(si.memory_bytes > 0);
    assert_int_equal(tdm_system_info_get(NULL), TDM_EINVAL);
}

static void test_close_null(void **state)
{
    assert_int_equal(tdm_runtime_close(NULL), 0);
}

static void drop_log(void *user, unsigned flag, const char *line)
{
    (void)user;
    (void)flag;
    (void)line;
}

/* Getters that return a value rather than a code: a NULL handle gives the documented neutral
 * value (0 threads, no debug flags, not on a device), never a negative number or a crash. */
static void test_null_handle_getters(void **state)
{
    assert_int_equal(tdm_runtime_threads(NULL), 0);
    assert_int_equal(tdm_runtime_debug(NULL), 0u);
    assert_int_equal(tdm_tensor_on_device(NULL), 0);

    /* ... and the real values on real handles. */
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    cfg.use_env = 0;
    cfg.debug = TDM_DEBUG_SCHED;
    cfg.log_fn = drop_log;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_int_equal(tdm_runtime_threads(rt), 2);
    assert_int_equal(tdm_runtime_debug(rt), TDM_DEBUG_SCHED);
    tdm_tensor *t = NULL;
    const int64_t shape[1] = {4};
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, shape, TDM_MEM_HOST, &t), 0);
    assert_int_equal(tdm_tensor_on_device(t), 0); /* a host tensor no map has moved */
    tdm_tensor_release(t);
    tdm_test_close(rt);

    rt = tdm_test_open(1);
    assert_int_equal(tdm_runtime_threads(rt), 1);
    assert_int_equal(tdm_runtime_debug(rt), 0u);
    tdm_test_close(rt);
}

static void test_close_busy_with_tensor(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t;
    int64_t n = 16;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_HOST, &t), 0);
    assert_int_equal(tdm_runtime_close(rt), TDM_EBUSY);
    assert_non_null(strstr(tdm_errmsg(rt), "tensor"));
    tdm_tensor_release(t);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static int slow_body(const void *p, int64_t b, int64_t e, tdm_task *t)
{
    while (!tdm_task_cancelled(t)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_close_busy_with_job(void **state)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_job *job;
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    assert_int_equal(tdm_parallel_for_async(rt, 4, slow_body, NULL, 0, &o, &job), 0);
    assert_int_equal(tdm_runtime_close(rt), TDM_EBUSY);
    assert_non_null(strstr(tdm_errmsg(rt), "in flight"));
    assert_int_equal(tdm_job_cancel(job), 0);
    assert_int_equal(tdm_job_wait(job, NULL), TDM_ECANCELED);
    tdm_job_free(job);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_config_init(void **state)
{
    tdm_config a, b = TDM_CONFIG_INIT;
    memset(&a, 0xab, sizeof a);
    assert_int_equal(tdm_config_init(&a), 0);
    assert_int_equal(a.size, b.size);
    assert_int_equal(a.version, b.version);
    assert_int_equal(a.threads, 0);
    assert_int_equal(a.procs, 0);
    assert_null(a.backends);
    assert_int_equal(a.debug, 0);
    assert_null(a.log_fn);
    assert_int_equal(a.shm_limit, 0);
    assert_int_equal(a.use_env, 1);
    assert_int_equal(tdm_config_init(NULL), TDM_EINVAL);
}

static void test_status_strings(void **state)
{
    assert_string_equal(tdm_status_name(TDM_OK), "TDM_OK");
    assert_string_equal(tdm_status_name(TDM_EINVAL), "TDM_EINVAL");
    assert_string_equal(tdm_status_name(TDM_ENOSPC), "TDM_ENOSPC");
    assert_string_equal(tdm_status_name(12345), "TDM_UNKNOWN");
    assert_string_equal(tdm_strerror(TDM_EINVAL), "invalid argument");
    assert_string_equal(tdm_strerror(-999), "unknown status");
    /* every code has a distinct name and a description */
#define CHECK(name, value, desc)                                                                   \
    assert_string_equal(tdm_status_name(value), "TDM_" #name);                                     \
    assert_string_equal(tdm_strerror(value), desc);
    TDM_STATUS_MAP(CHECK)
#undef CHECK
}

static void test_version(void **state)
{
    assert_int_equal(tdm_version(), TDM_VERSION_NUMBER);
    assert_string_equal(tdm_version_string(), TDM_VERSION_STRING);
}

static void test_errmsg_per_runtime(void **state)
{
    tdm_runtime *a = tdm_test_open(1), *b = tdm_test_open(1);
    assert_int_equal(tdm_map(a, "nope_a", NULL, 0, NULL, 0, NULL, 0, NULL, NULL), TDM_ENOTFOUND);
    assert_int_equal(tdm_map(b, "nope_b", NULL, 0, NULL, 0, NULL, 0, NULL, NULL), TDM_ENOTFOUND);
    assert_non_null(strstr(tdm_errmsg(a), "nope_a"));
    assert_non_null(strstr(tdm_errmsg(b), "nope_b"));
    tdm_test_close(a);
    tdm_test_close(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_defaults),
        cmocka_unit_test(test_open_threads_config),
        cmocka_unit_test(test_open_null_out),
        cmocka_unit_test(test_open_bad_config_size),
        cmocka_unit_test(test_open_negative_threads),
        cmocka_unit_test(test_env_num_threads),
        cmocka_unit_test(test_env_num_threads_malformed),
        cmocka_unit_test(test_env_backends),
        cmocka_unit_test(test_env_debug),
        cmocka_unit_test(test_debug_log_callback),
        cmocka_unit_test(test_open_checks_shm_limit),
        cmocka_unit_test(test_config_disable_cpu),
        cmocka_unit_test(test_backend_table),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_no_opencl_platform_is_zero_devices),
        cmocka_unit_test(test_no_opencl_loader_is_zero_devices),
        cmocka_unit_test(test_system_info),
        cmocka_unit_test(test_close_null),
        cmocka_unit_test(test_null_handle_getters),
        cmocka_unit_test(test_close_busy_with_tensor),
        cmocka_unit_test(test_close_busy_with_job),
        cmocka_unit_test(test_config_init),
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_errmsg_per_runtime),
    };
    return TDM_TEST_MAIN("runtime", tests);
}
