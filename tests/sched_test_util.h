/* SPDX-License-Identifier: MIT */
/* Helpers of the scheduler tests (test_sched.c, test_sched__budget.c; test_device_fault.c for
 * its logged runtime): a fresh directory for the stored cost model
 * (/tmp/<TDM_SCHED_DIR_PREFIX>-XXXXXX, the includer may define the prefix) and its model file,
 * a runtime that uses it, quiet map options, the items a report gives one backend kind. */
#ifndef TDM_SCHED_TEST_UTIL_H
#define TDM_SCHED_TEST_UTIL_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tdm_test.h"

#ifndef TDM_SCHED_DIR_PREFIX
#define TDM_SCHED_DIR_PREFIX "tdm-sched"
#endif

/* A fresh directory for the stored model; rm_dir() removes it and frees the name. */
static inline char *model_dir(void)
{
    char *d = strdup("/tmp/" TDM_SCHED_DIR_PREFIX "-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static inline void rm_dir(char *d)
{
    DIR *h = opendir(d);
    struct dirent *e;
    char p[512];
    while (h && (e = readdir(h))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        unlink(p);
    }
    if (h)
        closedir(h);
    rmdir(d);
    free(d);
}

/* The model file in d (there is one per machine), or "" if none. */
static inline void model_file(const char *d, char *out, size_t len)
{
    out[0] = '\0';
    DIR *h = opendir(d);
    struct dirent *e;
    while (h && (e = readdir(h)))
        if (!strncmp(e->d_name, "costmodel-", 10) && strstr(e->d_name, ".tsv"))
            snprintf(out, len, "%s/%s", d, e->d_name);
    if (h)
        closedir(h);
}

/* A runtime with its stored model in dir and the given backends (no environment overrides);
 * its scheduler log (TDM_DEBUG_SCHED) goes to log_fn(log_user) when log_user is given. */
static inline tdm_runtime *sched_open(const char *dir, const char *backends, int threads, int procs,
                                      tdm_log_fn log_fn, void *log_user)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = threads;
    cfg.procs = procs;
    cfg.sched_model_dir = dir;
    cfg.backends = backends;
    if (log_user) {
        cfg.debug = TDM_DEBUG_SCHED;
        cfg.log_fn = log_fn;
        cfg.log_user = log_user;
    }
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

static inline tdm_map_opts opts(tdm_policy p)
{
    tdm_map_opts o = tdm_test_quiet_opts();
    o.policy = p;
    return o;
}

/* A pi_leibniz map under policy pol of n items of `terms` terms on rt into a tensor of `mem`
 * storage; checks each item within tol of pi; r (may be NULL) gets the report. */
static inline void pi_map_check(tdm_runtime *rt, tdm_policy pol, int64_t n, int64_t terms,
                                double tol, unsigned mem, tdm_report *r)
{
    tdm_tensor *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, mem, &y), 0);
    tdm_pi_params p = {terms};
    tdm_map_opts o = opts(pol);
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &p, sizeof p, &o, r), 0);
    const double *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(yd[i] - 3.14159265) < tol);
    tdm_tensor_release(y);
}

/* A map that should have opened the devices ran on none: that is only right on a machine
 * with no device, which this checks (a fresh runtime lists none) before skipping the test. */
static inline void no_device_here(void)
{
    tdm_runtime *rt = tdm_test_open(1);
    int n = tdm_runtime_device_count(rt);
    tdm_runtime_close(rt);
    assert_int_equal(n, 0);
    skip();
}

/* Writes `lines` as the stored model in dir: a CPU-only exp_sinh map on a runtime over dir
 * first makes the model file (its name is the machine's), whose content is then replaced. */
static inline void seed_model(const char *dir, const char *lines)
{
    tdm_runtime *rt = sched_open(dir, "cpu", 2, 0, NULL, NULL);
    int64_t n = 1 << 18;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), 0);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
    char path[600];
    model_file(dir, path, sizeof path);
    assert_true(path[0] != '\0');
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(lines, f);
    fclose(f);
}

/* The items the workers of kind k ran, all together. */
static inline int64_t items_of(const tdm_report *r, tdm_backend_kind k)
{
    int64_t n = 0;
    for (int w = 0; w < r->n_workers; w++)
        n += r->workers[w].kind == k ? r->workers[w].items : 0;
    return n;
}

/* Batches run by the workers of kind k in r. */
static inline int64_t batches_of(const tdm_report *r, tdm_backend_kind k)
{
    int64_t n = 0;
    for (int w = 0; w < r->n_workers; w++)
        n += r->workers[w].kind == k ? r->workers[w].batches : 0;
    return n;
}

/* The devices of kind k that rt has now. */
static inline int devices_of(tdm_runtime *rt, tdm_backend_kind k)
{
    int n = 0;
    for (int i = 0; i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        n += di.kind == k;
    }
    return n;
}

#endif
