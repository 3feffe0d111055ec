/* SPDX-License-Identifier: MIT */
/* Traces: a Chrome trace-event file with one span per batch on its worker's lane. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tdm_test.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int noop(const void *p, int64_t b, int64_t e, tdm_task *t)
{
    return 0;
}

static void test_one_span_per_batch(void **state)
{
    char path[] = "/tmp/tdm_trace_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 2;
    cfg.trace_path = path;
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = 10;
    assert_int_equal(tdm_parallel_for(rt, 100, noop, NULL, 0, &o, NULL), 0);
    int64_t n = 64;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    o.batch_size = 16;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), 0);
    /* a flush writes what is there so far */
    assert_int_equal(tdm_trace_flush(rt), 0);
    char *mid = slurp(path);
    assert_int_equal(count(mid, "\"ph\":\"X\""), 14);
    free(mid);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0); /* writes it again, complete */
    char *s = slurp(path);
    assert_true(strncmp(s, "{\"displayTimeUnit\"", 18) == 0);
    assert_int_equal(count(s, "\"name\":\"parallel_for\""), 10);
    assert_int_equal(count(s, "\"name\":\"exp_sinh\""), 4);
    assert_non_null(strstr(s, "\"thread_name\""));
    assert_non_null(strstr(s, "cpu thread"));
    assert_non_null(strstr(s, "\"args\":{\"batch\":"));
    assert_true(strstr(s, "]}\n") != NULL);
    free(s);
    unlink(path);
}

static void test_flush_errors(void **state)
{
    tdm_runtime *rt = tdm_test_open(1);
    assert_int_equal(tdm_trace_flush(rt), 0); /* tracing off: nothing to do */
    tdm_test_close(rt);
    assert_int_equal(tdm_trace_flush(NULL), TDM_EINVAL);
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.trace_path = "/nonexistent-dir/trace.json";
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    assert_int_equal(tdm_parallel_for(rt, 4, noop, NULL, 0, NULL, NULL), 0);
    assert_int_equal(tdm_trace_flush(rt), TDM_EIO);
    assert_non_null(strstr(tdm_errmsg(rt), "nonexistent-dir"));
    assert_int_equal(tdm_runtime_close(rt), 0); /* an unwritable trace does not fail close */
}

static void test_env_trace(void **state)
{
    char path[] = "/tmp/tdm_trace_env_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    setenv("TDM_TRACE", path, 1);
    tdm_runtime *rt;
    assert_int_equal(tdm_runtime_open(&rt, NULL), 0);
    unsetenv("TDM_TRACE");
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = 5;
    assert_int_equal(tdm_parallel_for(rt, 20, noop, NULL, 0, &o, NULL), 0);
    assert_int_equal(tdm_runtime_close(rt), 0);
    char *s = slurp(path);
    assert_int_equal(count(s, "\"ph\":\"X\""), 4);
    free(s);
    unlink(path);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_span_per_batch),
        cmocka_unit_test(test_flush_errors),
        cmocka_unit_test(test_env_trace),
    };
    return TDM_TEST_MAIN("trace", tests);
}
