/* SPDX-License-Identifier: MIT */
/* The scheduler in the runtime: AUTO over CPU threads + the OpenCL device (PoCL in CI), the
 * stored cost model (saved at close, a second run starts calibrated, garbage lines dropped,
 * an unwritable directory harmless), share caps, named and round-robin policies, the
 * TDM_DEBUG=sched log, and the errors of bad options. Device tests skip (77) without one. */
#include <pthread.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched_test_util.h"

typedef struct {
    int lines, takes, exploring, cpu_exploring, declines;
    int stale;                /* lines that find a stored figure stale (8x off what a batch took) */
    int cpu_exploring_seeded; /* CPU exploring takes logged before any such line */
} sched_log;

/* Called from every worker at once (the log callback's contract): counted under a lock. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_log(void *user, unsigned flag, const char *line)
{
    sched_log *l = user;
    if (getenv("TDM_TEST_SHOWLOG")) /* the scheduler's log on stderr, to see a failure */
        fprintf(stderr, "%s\n", line);
    if (flag != TDM_DEBUG_SCHED || !strstr(line, "sched "))
        return;
    pthread_mutex_lock(&log_mu);
    l->lines++;
    l->takes += strstr(line, " takes ") != NULL;
    l->exploring += strstr(line, "(exploring)") != NULL;
    bool cpu_exploring = strstr(line, "(exploring)") && strstr(line, ": cpu (worker");
    l->cpu_exploring += cpu_exploring;
    l->stale += strstr(line, " stale ") != NULL;
    l->cpu_exploring_seeded += cpu_exploring && l->stale == 0;
    l->declines += strstr(line, "declines") != NULL || strstr(line, "waits:") != NULL;
    pthread_mutex_unlock(&log_mu);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static tdm_runtime *open_rt(const char *dir, sched_log *log, const char *backends)
{
    return sched_open(dir, backends, 2, 0, on_log, log);
}

typedef struct {
    tdm_tensor *x, *y;
    int64_t n;
} xy;

static xy make_xy(tdm_runtime *rt, int64_t n)
{
    xy t = {NULL, NULL, n};
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &t.x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &t.y), 0);
    double *x = tdm_tensor_data(t.x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (double)(i % 1000) * 1e-3;
    return t;
}

static void check_xy(const xy *t)
{
    const double *x = tdm_tensor_data(t->x), *y = tdm_tensor_data(t->y);
    for (int64_t i = 0; i < t->n; i++) {
        double want = exp(x[i]) * sinh(x[i]);
        if (!(fabs(y[i] - want) <= 1e-12 * (1 + fabs(want))))
            fail_msg("y[%lld] = %.17g, want %.17g", (long long)i, y[i], want);
    }
}

static void free_xy(xy *t)
{
    tdm_tensor_release(t->x);
    tdm_tensor_release(t->y);
}

/* Opens the devices with a small GPU map; false when there is none. */
static bool open_devices(tdm_runtime *rt)
{
    xy t = make_xy(rt, 1000);
    tdm_map_opts o = opts(TDM_POLICY_GPU);
    int rc = tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL);
    free_xy(&t);
    if (rc == TDM_ENODEV)
        return false;
    assert_int_equal(rc, 0);
    return true;
}

static void test_auto_mixes_cpu_and_device(void **state)
{
    char *d = model_dir();
    sched_log log = {0};
    tdm_runtime *rt = open_rt(d, &log, NULL);
    if (!open_devices(rt)) {
        tdm_runtime_close(rt);
        rm_dir(d);
        skip();
    }
    xy t = make_xy(rt, 1 << 20);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r), 0);
    check_xy(&t);
    assert_int_equal(r.items, t.n);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS) + items_of(&r, TDM_BACKEND_OPENCL) +
                         items_of(&r, TDM_BACKEND_CUDA),
                     t.n);
    /* every batch was decided: explorations first, then estimates the report compares (one
     * exploration batch may be all: on vector exp and sinh the threads do this map in ~4 ms,
     * before PoCL has built its program, and a thread's first item, slow with its first-call
     * costs, can end its ladder at once) */
    assert_true(log.takes > 0 && log.exploring >= 1);
    double est = 0;
    for (int w = 0; w < r.n_workers; w++)
        est += r.workers[w].est_s;
    assert_true(est > 0);
    char text[8192];
    assert_true(tdm_report_format(&r, text, sizeof text) > 0);
    assert_non_null(strstr(text, "est/busy"));
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

/* The model is saved at close; a second runtime on it starts calibrated: its CPU threads do
 * not explore. */
static void test_model_saved_second_run_calibrated(void **state)
{
    char *d = model_dir();
    sched_log l1 = {0}, l2 = {0};
    tdm_runtime *rt = open_rt(d, &l1, NULL);
    if (!open_devices(rt)) {
        tdm_runtime_close(rt);
        rm_dir(d);
        skip();
    }
    xy t = make_xy(rt, 1 << 20);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), 0);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_true(l1.cpu_exploring >= 1); /* the threads explored (both, unless one came late) */
    char path[600];
    model_file(d, path, sizeof path);
    assert_true(path[0] != '\0');
    char *text = slurp(path);
    assert_non_null(strstr(text, "exp_sinh.v1\tcpu\t"));
    free(text);

    rt = open_rt(d, &l2, NULL);
    assert_true(open_devices(rt));
    t = make_xy(rt, 1 << 20);
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), 0);
    check_xy(&t);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_true(l2.takes > 0);
    /* No CPU thread explores while the stored figure stands. One batch 8x off it drops it and
     * the threads explore afresh (sched_stale_stored_model_measured_afresh_and_forgotten):
     * CI under ASan once logged 7 such takes here, most likely this: the first run's threads
     * shared two cores with PoCL's compiler, the second run's (its program cached) did not. */
    assert_int_equal(l2.cpu_exploring_seeded, 0);
    rm_dir(d);
}

/* CPU-only maps teach the model the CPU's time per item too (no device needed). */
static void test_cpu_maps_teach_the_model(void **state)
{
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, "cpu");
    xy t = make_xy(rt, 1 << 20);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), 0);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    char path[600];
    model_file(d, path, sizeof path);
    char *text = slurp(path);
    assert_non_null(strstr(text, "exp_sinh.v1\tcpu\t"));
    free(text);
    /* garbage appended to the file is dropped at the next save; good lines stay */
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("garbage without tabs\nk\tl\tx\t1\t0\t1\nk\tl\t3\t-5\t0\t1\nk\tl\t3\tnan\t0\t1\n"
          "other.v1\tcpu\t3\t42.5\t0\t7\n\n",
          f);
    fclose(f);
    rt = open_rt(d, NULL, "cpu");
    t = make_xy(rt, 1 << 20);
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), 0);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    text = slurp(path);
    assert_null(strstr(text, "garbage"));
    assert_null(strstr(text, "nan"));
    assert_non_null(strstr(text, "other.v1\tcpu\t3\t42.5\t0\t7"));
    free(text);
    rm_dir(d);
}

/* The stored ns per item of `key`'s entry on lane "cpu" in the model text (0: none). */
static double cpu_figure(const char *text, const char *key)
{
    char head[128];
    snprintf(head, sizeof head, "%s\tcpu\t", key);
    const char *p = strstr(text, head);
    if (!p || (p != text && p[-1] != '\n'))
        return 0;
    int cls;
    double tpi;
    return sscanf(p + strlen(head), "%d\t%lf", &cls, &tpi) == 2 ? tpi : 0;
}

typedef struct {
    double work;
} work_params;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A kernel whose items cost about `work` x 100 ns (spinning on the clock), and says so. */
static int spin_cpu(const tdm_kernel_args *a)
{
    work_params p;
    memcpy(&p, a->params, sizeof p);
    double *y = a->out[0];
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        double t0 = now_s(), spin = (isfinite(p.work) && p.work > 0 ? p.work : 1) * 1e-7;
        while (now_s() - t0 < spin)
            ;
        y[i] = p.work;
    }
    return 0;
}

static double spin_work(const void *params, size_t params_size)
{
    work_params p;
    if (!params || params_size != sizeof p)
        return 0;
    memcpy(&p, params, sizeof p);
    return p.work;
}

/* pi_leibniz keeps its figures per power of 2 of its terms (its kernel's work function: the
 * model's key ends ".w<k>"): a map of 1000 terms per item and one of 64000 store two entries,
 * 64x apart in time per item, and neither map reads the other's. Before, both were kept as one
 * kernel's, and a map of 64x the terms started from the other's time per item. A kernel
 * registered with a work function is keyed the same way, and one whose work function answers
 * no figure (NaN) has the kernel's one entry. */
static void test_model_keeps_figures_per_work_class(void **state)
{
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, "cpu");
    pi_map_check(rt, TDM_POLICY_AUTO, 8192, 1000, 2e-3, TDM_MEM_HOST, NULL);
    pi_map_check(rt, TDM_POLICY_AUTO, 512, 64000, 2e-4, TDM_MEM_HOST, NULL);
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "spin";
    def.n_in_min = def.n_in_max = 0;
    def.n_out = 1;
    def.params_size = sizeof(work_params);
    def.cpu = spin_cpu;
    def.work = spin_work;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    const double works[] = {3, NAN};
    for (int i = 0; i < 2; i++) {
        int64_t n = 4096;
        tdm_tensor *y = NULL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
        work_params p = {works[i]};
        tdm_map_opts o = opts(TDM_POLICY_AUTO);
        assert_int_equal(tdm_map(rt, "spin", NULL, 0, &y, 1, &p, sizeof p, &o, NULL), 0);
        tdm_tensor_release(y);
    }
    assert_int_equal(tdm_runtime_close(rt), 0);
    char path[600];
    model_file(d, path, sizeof path);
    char *text = slurp(path);
    double light = cpu_figure(text, "pi_leibniz.v2.w10"),
           heavy = cpu_figure(text, "pi_leibniz.v2.w16");
    if (!(light > 0 && heavy > 0))
        fail_msg("no entry per terms in the model:\n%s", text);
    assert_true(cpu_figure(text, "pi_leibniz.v2") == 0); /* (no entry without a class) */
    /* 64x the terms: 64x the time per item, give or take a busy machine's noise */
    if (!(heavy > 16 * light))
        fail_msg("1000 terms: %g ns per item, 64000: %g", light, heavy);
    assert_true(cpu_figure(text, "spin.v1.w2") > 0); /* 3: nearest 2^2 */
    assert_true(cpu_figure(text, "spin.v1") > 0);    /* NaN: no class */
    free(text);
    rm_dir(d);
}

/* A directory that cannot be written only means the model is not kept; "off" keeps nothing. */
static void test_model_dir_unwritable_or_off(void **state)
{
    const char *dirs[] = {"/proc/self/no/such/dir", "off"};
    for (int i = 0; i < 2; i++) {
        tdm_runtime *rt = open_rt(dirs[i], NULL, "cpu");
        xy t = make_xy(rt, 1 << 20);
        tdm_map_opts o = opts(TDM_POLICY_AUTO);
        assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), 0);
        check_xy(&t);
        free_xy(&t);
        assert_int_equal(tdm_runtime_close(rt), 0);
    }
    assert_int_equal(access("off", F_OK), -1); /* not a directory named "off" */
}

/* A cap on the CPU threads' share: the device takes the rest, even when slower. */
static void test_share_cap_respected(void **state)
{
    /* (Several threads asking at once once overran the cap together, 1 run in 6 under TSan:
     * a capped kind now reserves its items atomically before it claims them.) */
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, NULL);
    if (!open_devices(rt)) {
        tdm_runtime_close(rt);
        rm_dir(d);
        skip();
    }
    xy t = make_xy(rt, 200000);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    o.share_cap[TDM_BACKEND_CPU_THREADS] = 0.25;
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r), 0);
    check_xy(&t);
    assert_true(items_of(&r, TDM_BACKEND_CPU_THREADS) <= 50000);
    assert_int_equal(r.items, t.n);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

/* One exp_sinh map under AUTO with share caps (threads, OpenCL) on a fresh runtime; its
 * status; *ocl gets the OpenCL devices the runtime has (probed after the map). The items
 * each kind ran are checked against its cap. */
static int capped_map(double cap_threads, double cap_ocl, int *ocl)
{
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, NULL);
    xy t = make_xy(rt, 200000);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    o.share_cap[TDM_BACKEND_CPU_THREADS] = cap_threads;
    o.share_cap[TDM_BACKEND_OPENCL] = cap_ocl;
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r);
    *ocl = devices_of(rt, TDM_BACKEND_OPENCL);
    if (rc == 0) {
        check_xy(&t);
        assert_int_equal(r.items, t.n);
        for (int k = 0; k < 2; k++) {
            double cap = k ? cap_ocl : cap_threads;
            int64_t got = items_of(&r, k ? TDM_BACKEND_OPENCL : TDM_BACKEND_CPU_THREADS);
            assert_true(cap <= 0 || (double)got <= cap * (double)t.n);
        }
    }
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    return rc;
}

/* Share caps count the devices that may run the map, opened or not yet: on a fresh runtime,
 * CPU threads 0.5 + OpenCL 0.5, or the threads alone at 0.5, opens the devices and splits the
 * items (both were refused, "share caps allow only 50%", the devices not being open yet);
 * without an OpenCL device the caps leave half the items nowhere to go and are refused. A cap
 * that leaves the threads all of it (OpenCL at 0.5 alone) runs either way. */
static void test_share_caps_open_the_devices(void **state)
{
    (void)state;
    int ocl = 0;
    int rc = capped_map(0.5, 0.5, &ocl);
    assert_int_equal(rc, ocl ? 0 : TDM_EINVAL);
    assert_int_equal(capped_map(0.5, 0, &ocl), ocl ? 0 : TDM_EINVAL);
    assert_int_equal(capped_map(0, 0.5, &ocl), 0);
    if (ocl == 0)
        skip();
}

static void test_named_and_round_robin_policies(void **state)
{
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, NULL);
    if (!open_devices(rt)) {
        tdm_runtime_close(rt);
        rm_dir(d);
        skip();
    }
    xy t = make_xy(rt, 100000);
    tdm_report r = TDM_REPORT_INIT;
    tdm_map_opts o = opts(TDM_POLICY_OPENCL);
    int n_ocl = devices_of(rt, TDM_BACKEND_OPENCL), n_cuda = devices_of(rt, TDM_BACKEND_CUDA);
    int have_ocl = n_ocl > 0, have_cuda = n_cuda > 0, n_dev = n_ocl + n_cuda;
    int rc = tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r);
    if (have_ocl) {
        assert_int_equal(rc, 0);
        check_xy(&t);
        assert_int_equal(items_of(&r, TDM_BACKEND_OPENCL), t.n);
    } else {
        assert_int_equal(rc, TDM_ENODEV);
    }
    o = opts(TDM_POLICY_CUDA);
    rc = tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r);
    if (have_cuda) {
        assert_int_equal(rc, 0);
        assert_int_equal(items_of(&r, TDM_BACKEND_CUDA), t.n);
    } else {
        assert_int_equal(rc, TDM_ENODEV);
        assert_non_null(strstr(tdm_errmsg(rt), "no cuda device"));
    }
    /* round-robin: equal batches (n / (16 x workers)) to whoever is free */
    o = opts(TDM_POLICY_ROUND_ROBIN);
    memset(tdm_tensor_data(t.y), 0, (size_t)t.n * sizeof(double));
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, &r), 0);
    check_xy(&t);
    int64_t bs = t.n / (16 * (2 + n_dev)); /* 2 threads and each device */
    assert_int_equal(r.batch_size, bs);
    assert_int_equal(r.batches, (t.n + bs - 1) / bs);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

static void test_bad_share_caps(void **state)
{
    tdm_runtime *rt = open_rt("off", NULL, "cpu");
    xy t = make_xy(rt, 1000);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    o.share_cap[TDM_BACKEND_OPENCL] = -0.5;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "share_cap[opencl]"));
    o.share_cap[TDM_BACKEND_OPENCL] = NAN;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    o.share_cap[TDM_BACKEND_OPENCL] = 1.5;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    /* the only backend that may run it is capped at half: half the items would have nowhere
     * to go */
    o = opts(TDM_POLICY_CPU);
    o.share_cap[TDM_BACKEND_CPU_THREADS] = 0.5;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "only 50%"));
    o.policy = (tdm_policy)99;
    o.share_cap[TDM_BACKEND_CPU_THREADS] = 0;
    assert_int_equal(tdm_map(rt, "exp_sinh", &t.x, 1, &t.y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    free_xy(&t);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_mixes_cpu_and_device),
        cmocka_unit_test(test_model_saved_second_run_calibrated),
        cmocka_unit_test(test_cpu_maps_teach_the_model),
        cmocka_unit_test(test_model_dir_unwritable_or_off),
        cmocka_unit_test(test_model_keeps_figures_per_work_class),
        cmocka_unit_test(test_share_cap_respected),
        cmocka_unit_test(test_share_caps_open_the_devices),
        cmocka_unit_test(test_named_and_round_robin_policies),
        cmocka_unit_test(test_bad_share_caps),
    };
    return TDM_TEST_MAIN("sched", tests);
}
