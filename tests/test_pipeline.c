/* SPDX-License-Identifier: MIT */
/* Pipelines: stages chained per batch (stage s+1 of batch k starts while stage s still runs
 * later batches), batches in order, ring slots reused, row failures (marked, returned errors,
 * a worker process that dies) skipped by later stages and reported, seeds independent of the
 * backend, and every error of tdm_pipeline_open. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

static tdm_runtime *open_rt(int threads, int procs)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = threads;
    cfg.procs = procs;
    cfg.sched_model_dir = "off";
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

/* stage 0: row r of batch k gets 4 doubles: item, k, r, and a value from the batch's seed */
static double seeded(uint64_t seed, int64_t row)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(row + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct {
    atomic_int *flags; /* shared: [0] stage 1 of batch 0 started, [1] rendezvous timed out,
                        * [2] stage-1 calls on failed rows, [3] crash attempts */
    int fail_item;     /* stage 0 marks this item failed (-1: none) */
    int err_item;      /* stage 0 returns an error for the range holding it */
    int crash_item;    /* stage 0 crashes its worker process on it */
    int rendezvous;    /* stage 0 of batch 1 waits for stage 1 of batch 0 */
} s0_params;

static int stage0(const tdm_stage_io *io, int64_t begin, int64_t end, tdm_task *task)
{
    const s0_params *p = io->params;
    if (p->rendezvous && io->batch == 1) {
        for (int i = 0; i < 5000 && !atomic_load(&p->flags[0]); i++)
            usleep(1000);
        if (!atomic_load(&p->flags[0]))
            atomic_store(&p->flags[1], 1);
    }
    double *out = (double *)io->out;
    for (int64_t r = begin; r < end; r++) {
        int64_t item = io->item0 + r;
        if (item == p->crash_item) {
            atomic_fetch_add(&p->flags[3], 1);
            raise(SIGSEGV);
        }
        if (item == p->err_item)
            return TDM_EKERNEL;
        if (item == p->fail_item) {
            tdm_stage_fail_row(io, r, "corrupt input");
            continue;
        }
        out[r * 4 + 0] = (double)item;
        out[r * 4 + 1] = (double)io->batch;
        out[r * 4 + 2] = (double)r;
        out[r * 4 + 3] = seeded(io->seed, r);
    }
    return 0;
}

typedef struct {
    atomic_int *flags;
} s1_params;

/* stage 1: sums each row into one double (checks that failed rows never reach it) */
static int stage1(const tdm_stage_io *io, int64_t begin, int64_t end, tdm_task *task)
{
    const s1_params *p = io->params;
    if (io->batch == 0)
        atomic_store(&p->flags[0], 1);
    const double *in = (const double *)io->in;
    double *out = (double *)io->out;
    for (int64_t r = begin; r < end; r++) {
        if (in[r * 4 + 0] != (double)(io->item0 + r))
            atomic_fetch_add(&p->flags[2], 1); /* a failed row (garbage) reached us */
        out[r] = in[r * 4 + 0] + in[r * 4 + 3];
    }
    return 0;
}

typedef struct {
    tdm_runtime *rt;
    tdm_tensor *flags_t;
    atomic_int *flags;
    s0_params p0;
    s1_params p1;
    tdm_stage st[3];
} fixture;

static void setup(fixture *f, tdm_runtime *rt, tdm_policy pol0)
{
    memset(f, 0, sizeof *f);
    f->rt = rt;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I32, 1, (int64_t[]){4}, TDM_MEM_SHARED, &f->flags_t),
                     0);
    f->flags = tdm_tensor_data(f->flags_t);
    f->p0 = (s0_params){f->flags, -1, -1, -1, 0};
    f->p1 = (s1_params){f->flags};
    f->st[0] = (tdm_stage){.name = "load", .fn = stage0, .params = &f->p0,
                           .params_size = sizeof f->p0, .dtype = TDM_F64, .row_ndim = 1,
                           .row_shape = {4}, .policy = pol0};
    f->st[1] = (tdm_stage){.name = "sum", .fn = stage1, .params = &f->p1,
                           .params_size = sizeof f->p1, .dtype = TDM_F64, .row_ndim = 0,
                           .policy = TDM_POLICY_THREADS};
    static const tdm_scale_shift_params ss = {2.0, 1.0};
    f->st[2] = (tdm_stage){.kernel = "scale_shift", .params = &ss, .params_size = sizeof ss,
                           .dtype = TDM_F64, .row_ndim = 0};
}

static void teardown(fixture *f)
{
    tdm_tensor_release(f->flags_t);
}

/* Runs the pipeline to the end; checks order and values; returns failed rows. */
static int64_t drain(tdm_pipeline *p, int64_t n, int64_t batch_rows, double *first_seeded)
{
    tdm_pipeline_batch b;
    int64_t next = 0, failed = 0, k = 0;
    int rc;
    while ((rc = tdm_pipeline_next(p, &b)) == 0) {
        assert_int_equal(b.batch, k);
        assert_int_equal(b.item0, next);
        assert_int_equal(b.rows, next + batch_rows <= n ? batch_rows : n - next);
        assert_int_equal(tdm_tensor_dim(b.out, 0), b.rows);
        const double *y = tdm_tensor_data(b.out);
        for (int64_t r = 0; r < b.rows; r++) {
            if (!b.row_ok[r]) {
                assert_true(strlen(tdm_pipeline_row_reason(p, r)) > 0);
                continue;
            }
            assert_string_equal(tdm_pipeline_row_reason(p, r), "");
            double v = (y[r] - 1.0) / 2.0 - (double)(b.item0 + r);
            assert_true(v >= 0 && v < 1);
            if (first_seeded && k == 1 && r == 0)
                *first_seeded = v;
        }
        failed += b.failed_rows;
        next += b.rows;
        k++;
    }
    assert_int_equal(rc, TDM_EDONE);
    assert_int_equal(next, n);
    assert_int_equal(tdm_pipeline_next(p, &b), TDM_EDONE);
    return failed;
}

static void test_three_stages_in_order(void **state)
{
    tdm_runtime *rt = open_rt(2, 0);
    fixture f;
    setup(&f, rt, TDM_POLICY_THREADS);
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    o.batch_rows = 16;
    o.depth = 3;
    o.seed = 7;
    tdm_pipeline *p;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 1000, &o, &p), 0); /* last batch: 8 rows */
    assert_int_equal(drain(p, 1000, 16, NULL), 0);
    tdm_pipeline_stats s;
    assert_int_equal(tdm_pipeline_stats_get(p, &s), 0);
    assert_int_equal(s.batches_done, 63);
    assert_int_equal(s.rows_done, 1000);
    assert_int_equal(s.stage_maps, 63 * 3);
    /* slots: 3 per stage, allocated once: 16 rows of 32 + 8 + 8 bytes */
    assert_int_equal(s.slot_bytes, 3 * 16 * (32 + 8 + 8));
    assert_int_equal(atomic_load(&f.flags[2]), 0);
    assert_int_equal(tdm_pipeline_close(p), 0);
    teardown(&f);
    tdm_test_close(rt);
}

/* Stage 0 of batch 1 waits until stage 1 of batch 0 has started: a pipeline that finished a
 * whole stage before the next would wait 5 s here and set the timeout flag. */
static void test_next_stage_starts_per_batch(void **state)
{
    tdm_runtime *rt = open_rt(2, 0);
    fixture f;
    setup(&f, rt, TDM_POLICY_THREADS);
    f.p0.rendezvous = 1;
    f.st[0].sub_batch = 8; /* one sub-batch per batch: only one thread waits */
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    o.batch_rows = 8;
    tdm_pipeline *p;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 64, &o, &p), 0);
    assert_int_equal(drain(p, 64, 8, NULL), 0);
    assert_int_equal(atomic_load(&f.flags[0]), 1);
    assert_int_equal(atomic_load(&f.flags[1]), 0);
    tdm_pipeline_close(p);
    teardown(&f);
    tdm_test_close(rt);
}

/* A row marked failed and a range whose function failed: reported, skipped by later stages,
 * the rest delivered. */
static void test_failed_rows_skipped_and_reported(void **state)
{
    tdm_runtime *rt = open_rt(2, 0);
    fixture f;
    setup(&f, rt, TDM_POLICY_THREADS);
    f.p0.fail_item = 21;
    f.p0.err_item = 40;
    f.st[0].sub_batch = 1; /* the error fails its own row only */
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    o.batch_rows = 16;
    tdm_pipeline *p;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 100, &o, &p), 0);
    tdm_pipeline_batch b;
    int64_t failed = 0;
    while (tdm_pipeline_next(p, &b) == 0) {
        for (int64_t r = 0; r < b.rows; r++) {
            int64_t item = b.item0 + r;
            bool bad = item == 21 || item == 40;
            assert_int_equal(b.row_ok[r], !bad);
            if (item == 21)
                assert_non_null(strstr(tdm_pipeline_row_reason(p, r), "load: corrupt input"));
            if (item == 40)
                assert_non_null(strstr(tdm_pipeline_row_reason(p, r), "TDM_EKERNEL"));
        }
        failed += b.failed_rows;
    }
    assert_int_equal(failed, 2);
    assert_int_equal(atomic_load(&f.flags[2]), 0); /* stage 1 never saw them */
    tdm_pipeline_stats s;
    tdm_pipeline_stats_get(p, &s);
    assert_int_equal(s.rows_failed, 2);
    tdm_pipeline_close(p);
    teardown(&f);
    tdm_test_close(rt);
}

/* Stage 0 in worker processes; item 37 crashes its process: that row fails with the worker's
 * fate, every other row arrives, the pipeline goes on. */
static void test_worker_crash_fails_one_row(void **state)
{
    tdm_runtime *rt = open_rt(1, 2);
    fixture f;
    setup(&f, rt, TDM_POLICY_PROCS);
    f.p0.crash_item = 37;
    f.st[0].sub_batch = 1;
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    o.batch_rows = 16;
    tdm_pipeline *p;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 96, &o, &p), 0);
    tdm_pipeline_batch b;
    int64_t failed = 0;
    while (tdm_pipeline_next(p, &b) == 0) {
        for (int64_t r = 0; r < b.rows; r++) {
            bool bad = b.item0 + r == 37;
            assert_int_equal(b.row_ok[r], !bad);
            if (bad) {
                const char *why = tdm_pipeline_row_reason(p, r);
                assert_non_null(strstr(why, "load"));
                assert_non_null(strstr(why, "Segmentation fault"));
            }
        }
        failed += b.failed_rows;
    }
    assert_int_equal(failed, 1);
    assert_int_equal(atomic_load(&f.flags[3]), 1);
    tdm_pipeline_close(p);
    teardown(&f);
    tdm_test_close(rt);
}

/* The same seed gives the same values whether stage 0 ran on threads or in processes. */
static void test_seeds_independent_of_backend(void **state)
{
    double v[2];
    for (int i = 0; i < 2; i++) {
        tdm_runtime *rt = open_rt(2, i ? 2 : 0);
        fixture f;
        setup(&f, rt, i ? TDM_POLICY_PROCS : TDM_POLICY_THREADS);
        tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
        o.seed = 1234;
        o.batch_rows = 10;
        tdm_pipeline *p;
        assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 50, &o, &p), 0);
        assert_int_equal(drain(p, 50, 10, &v[i]), 0);
        tdm_pipeline_close(p);
        teardown(&f);
        tdm_test_close(rt);
    }
    assert_true(v[0] == v[1]);
    assert_true(v[0] > 0);
}

/* Closing with batches in flight cancels and waits for them; no items at all is fine. */
static void test_close_early_and_empty(void **state)
{
    tdm_runtime *rt = open_rt(2, 0);
    fixture f;
    setup(&f, rt, TDM_POLICY_THREADS);
    tdm_pipeline *p;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 100000, NULL, &p), 0);
    tdm_pipeline_batch b;
    assert_int_equal(tdm_pipeline_next(p, &b), 0);
    assert_int_equal(tdm_pipeline_close(p), 0);
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 0, NULL, &p), 0);
    assert_int_equal(tdm_pipeline_next(p, &b), TDM_EDONE);
    assert_int_equal(tdm_pipeline_close(p), 0);
    assert_int_equal(tdm_pipeline_close(NULL), 0);
    teardown(&f);
    tdm_test_close(rt);
}

static void test_open_errors(void **state)
{
    tdm_runtime *rt = open_rt(1, 0);
    fixture f;
    setup(&f, rt, TDM_POLICY_THREADS);
    tdm_pipeline *p = NULL;
    assert_int_equal(tdm_pipeline_open(NULL, f.st, 3, 10, NULL, &p), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_open(rt, NULL, 3, 10, NULL, &p), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 10, NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_open(rt, f.st, 0, 10, NULL, &p), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_open(rt, f.st, 17, 10, NULL, &p), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, -1, NULL, &p), TDM_EINVAL);
    tdm_pipeline_opts o = TDM_PIPELINE_OPTS_INIT;
    o.size = 8;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 10, &o, &p), TDM_EINVAL);
    o = (tdm_pipeline_opts)TDM_PIPELINE_OPTS_INIT;
    o.depth = -1;
    assert_int_equal(tdm_pipeline_open(rt, f.st, 3, 10, &o, &p), TDM_EINVAL);
    tdm_stage bad[3];
    memcpy(bad, f.st, sizeof bad);
    bad[0].kernel = "exp_sinh"; /* both fn and kernel */
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "exactly one of fn and kernel"));
    bad[0].fn = NULL; /* a kernel first */
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    memcpy(bad, f.st, sizeof bad);
    bad[2].kernel = "no_such_kernel";
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_ENOTFOUND);
    bad[2].kernel = "scale_shift";
    bad[2].params_size = 4;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    memcpy(bad, f.st, sizeof bad);
    bad[1].dtype = (tdm_dtype)99;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    memcpy(bad, f.st, sizeof bad);
    bad[0].row_shape[0] = 0;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    bad[0].row_shape[0] = 4;
    bad[0].row_ndim = 8;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    memcpy(bad, f.st, sizeof bad);
    bad[1].params = NULL;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    memcpy(bad, f.st, sizeof bad);
    bad[1].policy = (tdm_policy)42;
    assert_int_equal(tdm_pipeline_open(rt, bad, 3, 10, NULL, &p), TDM_EINVAL);
    assert_null(p);
    assert_int_equal(tdm_pipeline_next(NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_stats_get(NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_pipeline_opts_init(NULL), TDM_EINVAL);
    assert_string_equal(tdm_pipeline_row_reason(NULL, 0), "");
    teardown(&f);
    tdm_test_close(rt);
}

/* libtandem does not link libjpeg: it loads it with dlopen at the first decode. When it cannot
 * be loaded (TDM_JPEG_LIBRARY names a path that does not exist), the decoders return
 * TDM_ENODEV with the loader's message and tdm_image_have_jpeg() says 0; nothing else breaks.
 * In a child: the library is looked up once per process. */
static void test_jpeg_library_missing(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("TDM_JPEG_LIBRARY", "/nonexistent/libjpeg.so.62", 1);
        static const unsigned char soi[4] = {0xff, 0xd8, 0xff, 0xd9};
        uint8_t px[16];
        tdm_image_info info;
        char err[256] = "";
        int rc = tdm_image_decode_jpeg(soi, sizeof soi, 0, px, sizeof px, &info, err, sizeof err);
        if (strstr(err, "built without libjpeg"))
            _exit(0); /* (nothing to load in that build) */
        if (tdm_image_have_jpeg())
            _exit(10);
        if (rc != TDM_ENODEV)
            _exit(11);
        if (!strstr(err, "/nonexistent/libjpeg.so.62") || !strstr(err, "tdm_image_decode_jpeg"))
            _exit(12);
        rc = tdm_image_read_jpeg("/nonexistent.jpg", 0, px, sizeof px, &info, err, sizeof err);
        if (rc != TDM_ENODEV || info.width != 0)
            _exit(13);
        rc = tdm_image_jpeg_info(soi, sizeof soi, &info, err, sizeof err);
        _exit(rc == TDM_ENODEV ? 0 : 14);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_stages_in_order),
        cmocka_unit_test(test_next_stage_starts_per_batch),
        cmocka_unit_test(test_failed_rows_skipped_and_reported),
        cmocka_unit_test(test_worker_crash_fails_one_row),
        cmocka_unit_test(test_seeds_independent_of_backend),
        cmocka_unit_test(test_close_early_and_empty),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_jpeg_library_missing),
    };
    return TDM_TEST_MAIN("pipeline", tests);
}
