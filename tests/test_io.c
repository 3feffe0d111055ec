/* SPDX-License-Identifier: MIT */
/* Tensor files: the public entry points' argument and failure handling, every dtype and order
 * through every container, maps between files, NumPy interop. The formats have their own files:
 * test_io_npy.c, test_io_npz.c, test_io_tdz.c, test_io_writer.c, test_io_streaming.c. */
#include "io_test_util.h"

static void test_load_argument_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[1] = {8};
    tdm_tensor *a = make(rt, TDM_F32, 1, shape, 1), *t;
    assert_int_equal(tdm_save(a, P("a.npy"), NULL), 0);
    assert_int_equal(tdm_load(NULL, P("a.npy"), NULL, &t), TDM_EINVAL);
    assert_int_equal(tdm_load(rt, NULL, NULL, &t), TDM_EINVAL);
    assert_int_equal(tdm_load(rt, P("a.npy"), NULL, NULL), TDM_EINVAL);
    assert_int_equal(load_code(rt, P("missing.npy"), NULL), TDM_EIO);
    assert_non_null(strstr(tdm_errmsg(rt), "No such file"));
    assert_int_equal(load_code(rt, g_dir, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "not a regular file"));
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.size = 4;
    assert_int_equal(load_code(rt, P("a.npy"), &lo), TDM_EINVAL);
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.mmap = (tdm_mmap_mode)9;
    assert_int_equal(load_code(rt, P("a.npy"), &lo), TDM_EINVAL);
    lo.mmap = TDM_MMAP_READ;
    lo.c_order = 1;
    assert_int_equal(load_code(rt, P("a.npy"), &lo), TDM_EINVAL);
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.max_bytes = -1;
    assert_int_equal(load_code(rt, P("a.npy"), &lo), TDM_EINVAL);
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.mem = 0x80;
    assert_int_equal(load_code(rt, P("a.npy"), &lo), TDM_EINVAL);
    /* A .npz is not a tensor file; a compressed file cannot be mapped. */
    const char *names[1] = {"a"};
    const tdm_tensor *ts[1] = {a};
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), names, ts, 1, NULL), 0);
    assert_int_equal(load_code(rt, P("a.npz"), NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "tdm_npz_open"));
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_ZSTD;
    assert_int_equal(tdm_save(a, P("a.tdz"), &so), 0);
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(load_code(rt, P("a.tdz"), &lo), TDM_EINVAL);
    /* Shared storage for a loaded tensor. */
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.mem = TDM_MEM_SHARED;
    assert_int_equal(tdm_load(rt, P("a.tdz"), &lo, &t), 0);
    assert_true(tdm_tensor_mem(t) & TDM_MEM_SHARED);
    assert_same(a, t);
    tdm_tensor_release(t);
    tdm_file_info fi;
    assert_int_equal(tdm_file_info_get(rt, NULL, &fi), TDM_EINVAL);
    assert_int_equal(tdm_file_info_get(rt, P("a.npy"), NULL), TDM_EINVAL);
    assert_int_equal(tdm_file_info_get(NULL, P("a.npy"), &fi), TDM_EINVAL);
    assert_int_equal(tdm_file_info_get(rt, P("missing"), &fi), TDM_EIO);
    assert_int_equal(tdm_load_opts_init(NULL), TDM_EINVAL);
    assert_int_equal(tdm_save_opts_init(NULL), TDM_EINVAL);
    assert_int_equal(tdm_load_opts_init(&lo), 0);
    assert_int_equal(lo.size, sizeof lo);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_save_argument_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[1] = {8};
    tdm_tensor *a = make(rt, TDM_F32, 1, shape, 1);
    assert_int_equal(tdm_save(NULL, P("a.npy"), NULL), TDM_EINVAL);
    assert_int_equal(tdm_save(a, NULL, NULL), TDM_EINVAL);
    tdm_save_opts o = TDM_SAVE_OPTS_INIT;
    o.version = 99;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
    o.codec = (tdm_codec)42;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    o.codec = TDM_CODEC_LZ4;
    o.level = 13;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "level 13"));
    o.codec = TDM_CODEC_NONE;
    o.level = 1;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    o.level = 0;
    o.npy_version = 4;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    o.npy_version = 0;
    o.chunk_bytes = 100;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), TDM_EINVAL);
    assert_int_equal(tdm_save(a, "/nonexistent-dir/a.npy", NULL), TDM_EIO);
    assert_non_null(strstr(tdm_errmsg(rt), "/nonexistent-dir/a.npy"));
    assert_false(exists(P("a.npy")));
    /* fsync works. */
    o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
    o.fsync = 1;
    assert_int_equal(tdm_save(a, P("a.npy"), &o), 0);
    tdm_codec c;
    assert_int_equal(tdm_codec_from_name("ZSTD", &c), 0);
    assert_int_equal(c, TDM_CODEC_ZSTD);
    assert_int_equal(tdm_codec_from_name("lz4", &c), 0);
    assert_int_equal(c, TDM_CODEC_LZ4);
    assert_int_equal(tdm_codec_from_name("zlib", &c), 0);
    assert_int_equal(c, TDM_CODEC_DEFLATE);
    assert_int_equal(tdm_codec_from_name("raw", &c), 0);
    assert_int_equal(c, TDM_CODEC_NONE);
    assert_int_equal(tdm_codec_from_name("bz2", &c), TDM_EINVAL);
    assert_int_equal(tdm_codec_from_name(NULL, &c), TDM_EINVAL);
    assert_string_equal(tdm_codec_name(TDM_CODEC_LZ4), "lz4");
    assert_string_equal(tdm_codec_name((tdm_codec)9), "invalid");
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* In a child limited to `limit` bytes per file: a save that does not fit fails with TDM_EIO,
 * leaves the previous file intact and no temporary behind. */
static int full_disk_child(void *arg)
{
    (void)arg;
    tdm_runtime *rt = child_open(1);
    if (!rt)
        return 10;
    int64_t small[1] = {16}, big[1] = {1 << 16};
    tdm_tensor *a, *b;
    tdm_tensor_empty(rt, TDM_F64, 1, small, 0, &a);
    tdm_tensor_empty(rt, TDM_F64, 1, big, 0, &b);
    fill(a, 1);
    fill(b, 2);
    if (tdm_save(a, P("keep.npy"), NULL) != 0)
        return 11;
    child_limit_file_size(100000);
    int code = 0;
    if (tdm_save(b, P("keep.npy"), NULL) != TDM_EIO)
        code = 12;
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_LZ4;
    so.level = 0;
    fill(b, 3);
    tdm_tensor *c;
    int64_t bigger[1] = {1 << 20};
    tdm_tensor_empty(rt, TDM_F64, 1, bigger, 0, &c);
    fill(c, 9);
    if (!code && tdm_save(c, P("keep.npy"), &so) != TDM_EIO)
        code = 13;
    const char *names[1] = {"b"};
    const tdm_tensor *ts[1] = {b};
    if (!code && tdm_npz_save(rt, P("x.npz"), names, ts, 1, NULL) != TDM_EIO)
        code = 14;
    /* A writer whose write failed refuses further rows, then close reports the failure. */
    tdm_writer *w;
    if (!code && tdm_writer_open(rt, P("w.npy"), TDM_F64, 1, (int64_t[]){-1}, NULL, &w) != 0)
        code = 15;
    if (!code && tdm_writer_append(w, c) != TDM_EIO)
        code = 16;
    if (!code && tdm_writer_append(w, a) != TDM_ECANCELED)
        code = 17;
    if (!code && tdm_writer_close(w) != TDM_EIO)
        code = 18;
    tdm_tensor *k;
    if (!code && tdm_load(rt, P("keep.npy"), NULL, &k) != 0)
        code = 19;
    if (!code && memcmp(tdm_tensor_data(k), tdm_tensor_data(a), 16 * 8) != 0)
        code = 20;
    if (!code)
        tdm_tensor_release(k);
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-") || strcmp(e->d_name, "x.npz") == 0 ||
            strcmp(e->d_name, "w.npy") == 0)
            code = code ? code : 21;
    if (d)
        closedir(d);
    tdm_tensor_release(a);
    tdm_tensor_release(b);
    tdm_tensor_release(c);
    tdm_runtime_close(rt);
    return code;
}

static void test_save_failure_keeps_previous_file(void **state)
{
    (void)state;
    mk_tmpdir();
    run_in_children(1, full_disk_child, NULL);
    rm_tmpdir();
}

static void test_load_into_existing_tensor(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t shape[2] = {300, 7};
    tdm_tensor *a = make(rt, TDM_F32, 2, shape, 5), *dst;
    assert_int_equal(tdm_save(a, P("a.npy"), NULL), 0);
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_ZSTD;
    so.chunk_bytes = 4096;
    assert_int_equal(tdm_save(a, P("a.tdz"), &so), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 2, shape, 0, &dst), 0);
    assert_int_equal(tdm_load_into(rt, P("a.npy"), dst), 0);
    assert_same(a, dst);
    memset(tdm_tensor_data(dst), 0, 300 * 7 * 4);
    assert_int_equal(tdm_load_into(rt, P("a.tdz"), dst), 0);
    assert_same(a, dst);
    /* A compressed file decompressed into a mapped .npy: the out-of-core path. */
    tdm_tensor *m;
    assert_int_equal(tdm_npy_create(rt, P("m.npy"), TDM_F32, 2, shape, &m), 0);
    assert_int_equal(tdm_load_into(rt, P("a.tdz"), m), 0);
    tdm_tensor_release(m);
    tdm_tensor *back;
    assert_int_equal(tdm_load(rt, P("m.npy"), NULL, &back), 0);
    assert_same(a, back);
    tdm_tensor_release(back);
    /* Mismatches. */
    tdm_tensor *wrong;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 2, shape, 0, &wrong), 0);
    assert_int_equal(tdm_load_into(rt, P("a.npy"), wrong), TDM_EDTYPE);
    assert_int_equal(tdm_load_into(rt, P("a.tdz"), wrong), TDM_EDTYPE);
    tdm_tensor_release(wrong);
    int64_t other[2] = {300, 8};
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 2, other, 0, &wrong), 0);
    assert_int_equal(tdm_load_into(rt, P("a.npy"), wrong), TDM_ESHAPE);
    tdm_tensor_release(wrong);
    float buf[300 * 7];
    int64_t fst[2] = {1, 300};
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, shape, fst, buf, &wrong), 0);
    assert_int_equal(tdm_load_into(rt, P("a.npy"), wrong), TDM_ELAYOUT);
    tdm_tensor_release(wrong);
    assert_int_equal(tdm_load_into(rt, P("a.npy"), NULL), TDM_EINVAL);
    assert_int_equal(tdm_load_into(rt, NULL, dst), TDM_EINVAL);
    assert_int_equal(tdm_load_into(NULL, P("a.npy"), dst), TDM_EINVAL);
    assert_int_equal(tdm_load_into(rt, P("missing"), dst), TDM_EIO);
    const char *names[1] = {"a"};
    const tdm_tensor *ts[1] = {a};
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), names, ts, 1, NULL), 0);
    assert_int_equal(tdm_load_into(rt, P("a.npz"), dst), TDM_EINVAL);
    tdm_tensor_release(dst);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- every dtype, both orders, every version and container ------------------------------ */

/* `b` (loaded) is `a` (saved): dtype, shape, layout (C-contiguous, or column-major strides
 * when `fortran`) and every element, bytewise. */
static void expect_loaded(const tdm_tensor *a, const tdm_tensor *b, int fortran)
{
    assert_int_equal(tdm_tensor_dtype(b), tdm_tensor_dtype(a));
    assert_int_equal(tdm_tensor_ndim(b), tdm_tensor_ndim(a));
    int nd = tdm_tensor_ndim(a);
    for (int i = 0; i < nd; i++)
        assert_int_equal(tdm_tensor_dim(b, i), tdm_tensor_dim(a, i));
    if (fortran) {
        int64_t s = 1;
        for (int i = 0; i < nd; i++) {
            assert_int_equal(tdm_tensor_strides(b)[i], s);
            s *= tdm_tensor_dim(a, i);
        }
    } else {
        assert_true(tdm_tensor_is_contiguous(b));
    }
    assert_same_elements(a, b);
}

static void test_every_dtype_and_order_round_trips(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    const tdm_dtype dts[] = {TDM_U8,   TDM_I32, TDM_I64, TDM_F16, TDM_BF16, TDM_F32, TDM_F64,
                             TDM_BOOL, TDM_I8,  TDM_I16, TDM_U16, TDM_U32,  TDM_U64};
    assert_int_equal(sizeof dts / sizeof dts[0], TDM_DTYPE_COUNT);
    const int64_t shape[3] = {5, 3, 4}, fst[3] = {1, 5, 15};
    const int64_t numel = 5 * 3 * 4;
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        size_t es = tdm_dtype_size(dts[d]);
        /* One buffer of distinct bytes seen as C order and as Fortran order. */
        unsigned char *buf = malloc((size_t)numel * es), *fbuf = malloc((size_t)numel * es);
        assert_non_null(buf);
        assert_non_null(fbuf);
        for (size_t i = 0; i < (size_t)numel * es; i++)
            buf[i] = (unsigned char)(i * 7 + d * 31 + 1);
        tdm_tensor *t[2];
        assert_int_equal(tdm_tensor_wrap(rt, dts[d], 3, shape, NULL, buf, &t[0]), 0);
        assert_int_equal(tdm_tensor_wrap(rt, dts[d], 3, shape, fst, buf, &t[1]), 0);
        for (int f = 0; f < 2; f++) {
            for (int v = 1; v <= 3; v++) {
                tdm_save_opts so = TDM_SAVE_OPTS_INIT;
                so.npy_version = v;
                assert_int_equal(tdm_save(t[f], P("r.npy"), &so), 0);
                tdm_file_info fi;
                assert_int_equal(tdm_file_info_get(rt, P("r.npy"), &fi), 0);
                assert_int_equal(fi.kind, TDM_FILE_NPY);
                assert_int_equal(fi.npy_version, v);
                assert_int_equal(fi.fortran_order, f);
                assert_int_equal(fi.dtype, dts[d]);
                assert_int_equal(fi.ndim, 3);
                assert_memory_equal(fi.shape, shape, sizeof shape);
                tdm_tensor *b;
                assert_int_equal(tdm_load(rt, P("r.npy"), NULL, &b), 0);
                expect_loaded(t[f], b, f);
                tdm_tensor_release(b);
                tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
                lo.mmap = TDM_MMAP_READ;
                assert_int_equal(tdm_load(rt, P("r.npy"), &lo, &b), 0);
                assert_true(tdm_tensor_mem(b) & TDM_MEM_MAPPED);
                expect_loaded(t[f], b, f);
                tdm_tensor_release(b);
                lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
                lo.c_order = 1;
                assert_int_equal(tdm_load(rt, P("r.npy"), &lo, &b), 0);
                expect_loaded(t[f], b, 0);
                tdm_tensor_release(b);
                /* Into an existing tensor of the file's layout. */
                memset(fbuf, 0, (size_t)numel * es);
                assert_int_equal(tdm_tensor_wrap(rt, dts[d], 3, shape, f ? fst : NULL, fbuf, &b),
                                 0);
                assert_int_equal(tdm_load_into(rt, P("r.npy"), b), 0);
                expect_loaded(t[f], b, f);
                tdm_tensor_release(b);
            }
            /* A compressed file holds C order whatever the tensor's layout. */
            tdm_save_opts so = TDM_SAVE_OPTS_INIT;
            so.codec = TDM_CODEC_LZ4;
            assert_int_equal(tdm_save(t[f], P("r.tdz"), &so), 0);
            tdm_tensor *b;
            assert_int_equal(tdm_load(rt, P("r.tdz"), NULL, &b), 0);
            expect_loaded(t[f], b, 0);
            tdm_tensor_release(b);
        }
        /* .npz: both orders as members, stored (also mapped) and deflated. */
        const char *names[2] = {"c", "f"};
        for (int pass = 0; pass < 2; pass++) {
            tdm_save_opts so = TDM_SAVE_OPTS_INIT;
            so.codec = pass ? TDM_CODEC_DEFLATE : TDM_CODEC_NONE;
            assert_int_equal(
                tdm_npz_save(rt, P("r.npz"), names, (const tdm_tensor *const *)t, 2, &so), 0);
            tdm_npz *z;
            assert_int_equal(tdm_npz_open(rt, P("r.npz"), &z), 0);
            for (int f = 0; f < 2; f++) {
                tdm_tensor *b;
                assert_int_equal(tdm_npz_load(z, names[f], NULL, &b), 0);
                expect_loaded(t[f], b, f);
                tdm_tensor_release(b);
                tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
                lo.c_order = 1;
                assert_int_equal(tdm_npz_load(z, names[f], &lo, &b), 0);
                expect_loaded(t[f], b, 0);
                tdm_tensor_release(b);
                if (pass == 0) {
                    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
                    lo.mmap = TDM_MMAP_READ;
                    assert_int_equal(tdm_npz_load(z, names[f], &lo, &b), 0);
                    assert_true(tdm_tensor_mem(b) & TDM_MEM_MAPPED);
                    expect_loaded(t[f], b, f);
                    tdm_tensor_release(b);
                }
            }
            tdm_npz_close(z);
        }
        tdm_tensor_release(t[0]);
        tdm_tensor_release(t[1]);
        free(buf);
        free(fbuf);
    }
    tdm_test_close(rt);
    rm_tmpdir();
}

static void expect_exp_sinh(const tdm_tensor *x, const tdm_tensor *y)
{
    const double *a = tdm_tensor_data(x), *b = tdm_tensor_data(y);
    for (int64_t i = 0; i < tdm_tensor_numel(x); i++) {
        double e = exp(a[i]) * sinh(a[i]);
        assert_true(fabs(b[i] - e) <= 1e-12 * (1 + fabs(e)));
    }
}

static tdm_tensor *ramp(tdm_runtime *rt, int64_t n)
{
    tdm_tensor *x;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &x), 0);
    double *d = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        d[i] = (double)(i % 1000) * 1e-3;
    return x;
}

static void test_job_save_streams_a_map_to_disk(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 200003;
    tdm_tensor *x = ramp(rt, n);
    for (int variant = 0; variant < 3; variant++) {
        tdm_map_opts mo = quiet(1000);
        mo.order = variant == 0 ? TDM_ORDER_COMPLETION : TDM_ORDER_SUBMISSION;
        mo.max_in_flight = 4;
        tdm_job *job;
        assert_int_equal(tdm_map_async(rt, "exp_sinh", &x, 1, NULL, 1, NULL, 0, &mo, &job), 0);
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = variant == 2 ? TDM_CODEC_LZ4 : TDM_CODEC_NONE;
        tdm_writer *w;
        int64_t shape[1] = {variant == 1 ? n : -1};
        assert_int_equal(tdm_writer_open(rt, P("y.out"), TDM_F64, 1, shape, &so, &w), 0);
        tdm_report rep = TDM_REPORT_INIT;
        assert_int_equal(tdm_job_save(job, &w, 1, &rep), 0);
        assert_int_equal(rep.items, n);
        tdm_job_free(job);
        assert_int_equal(tdm_writer_close(w), 0);
        tdm_tensor *y;
        assert_int_equal(tdm_load(rt, P("y.out"), NULL, &y), 0);
        assert_int_equal(tdm_tensor_numel(y), n);
        expect_exp_sinh(x, y);
        tdm_tensor_release(y);
    }
    /* Errors: a job with its own outputs, a writer count that is not the job's. */
    tdm_tensor *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_map_opts mo = quiet(50000);
    tdm_job *job;
    assert_int_equal(tdm_map_async(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, &job), 0);
    tdm_writer *ws[2];
    int64_t shape[1] = {-1};
    assert_int_equal(tdm_writer_open(rt, P("e.npy"), TDM_F64, 1, shape, NULL, &ws[0]), 0);
    assert_int_equal(tdm_writer_open(rt, P("f.npy"), TDM_F64, 1, shape, NULL, &ws[1]), 0);
    assert_int_equal(tdm_job_save(job, ws, 1, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "writes its own outputs"));
    tdm_job_free(job);
    assert_int_equal(tdm_map_async(rt, "exp_sinh", &x, 1, NULL, 1, NULL, 0, &mo, &job), 0);
    assert_int_equal(tdm_job_save(job, ws, 2, NULL), TDM_EINVAL);
    tdm_job_free(job);
    assert_int_equal(tdm_job_save(NULL, ws, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_job_save(job, NULL, 1, NULL), TDM_EINVAL);
    tdm_writer_abort(ws[0]);
    tdm_writer_abort(ws[1]);
    tdm_tensor_release(y);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* A mapped input through a map into a mapped output: nothing of either is read into memory
 * first, and the output is a complete .npy when released. */
static void test_map_between_mapped_files(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t n = 100000;
    tdm_tensor *x = ramp(rt, n), *xm, *ym;
    assert_int_equal(tdm_save(x, P("x.npy"), NULL), 0);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(tdm_load(rt, P("x.npy"), &lo, &xm), 0);
    assert_int_equal(tdm_npy_create(rt, P("y.npy"), TDM_F64, 1, &n, &ym), 0);
    tdm_map_opts mo = quiet(0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &xm, 1, &ym, 1, NULL, 0, &mo, NULL), 0);
    tdm_tensor_release(ym);
    tdm_tensor *y;
    assert_int_equal(tdm_load(rt, P("y.npy"), NULL, &y), 0);
    expect_exp_sinh(x, y);
    tdm_tensor_release(y);
    tdm_tensor_release(xm);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* What worker processes see of mapped files: a READ or READWRITE mapping is in the shared arena
 * (the same pages: a map on processes reads it, writes through a READWRITE one reach the file);
 * a COPY mapping is private to this process: refused until tdm_tensor_share() copies it. */
static void test_mapped_tensors_on_worker_processes(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open_procs(1, 2);
    int64_t n = 50000;
    tdm_tensor *x = ramp(rt, n), *xm, *xc, *ym;
    assert_int_equal(tdm_save(x, P("x.npy"), NULL), 0);
    tdm_map_opts mo = quiet(0);
    mo.policy = TDM_POLICY_PROCS;
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(tdm_load(rt, P("x.npy"), &lo, &xm), 0);
    assert_true(tdm_tensor_mem(xm) & TDM_MEM_MAPPED);
    assert_int_equal(tdm_npy_create(rt, P("y.npy"), TDM_F64, 1, &n, &ym), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &xm, 1, &ym, 1, NULL, 0, &mo, NULL), 0);
    expect_exp_sinh(x, ym); /* written by the workers into the parent's mapping of y.npy */
    tdm_tensor_release(ym);
    tdm_tensor *y;
    assert_int_equal(tdm_load(rt, P("y.npy"), NULL, &y), 0);
    expect_exp_sinh(x, y); /* and into the file */
    tdm_tensor_release(y);
    /* COPY: private pages, changed here, which the workers could not see. */
    lo.mmap = TDM_MMAP_COPY;
    assert_int_equal(tdm_load(rt, P("x.npy"), &lo, &xc), 0);
    ((double *)tdm_tensor_data(xc))[0] = 0.5;
    ((double *)tdm_tensor_data(x))[0] = 0.5;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &y), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &xc, 1, &y, 1, NULL, 0, &mo, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "shared memory"));
    assert_int_equal(tdm_tensor_share(xc), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &xc, 1, &y, 1, NULL, 0, &mo, NULL), 0);
    expect_exp_sinh(x, y); /* the changed element included */
    tdm_tensor_release(y);
    tdm_tensor_release(xc);
    tdm_tensor_release(xm);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- NumPy interop ---------------------------------------------------------------------- */

static const char *find_python(void)
{
    static const char *cands[] = {"python3", "/usr/bin/python3"};
    const char *env = getenv("TDM_PYTHON");
    if (env && *env) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", env);
        return system(cmd) == 0 ? env : NULL;
    }
    for (size_t i = 0; i < 2; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0)
            return cands[i];
    }
    return NULL;
}

static int run_python(const char *py, const char *script)
{
    const char *sp = P("check.py");
    write_bytes(sp, script, strlen(script));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s", g_dir, py, sp);
    return system(cmd);
}

static void test_numpy_interop_both_ways(void **state)
{
    (void)state;
    const char *py = find_python();
    if (!py) {
        fprintf(stderr, "numpy is not importable by python3: skipped\n");
        exit(77);
    }
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    /* tandem -> numpy: every dtype, C and Fortran order, versions 1-3, npz stored + deflate. */
    int64_t shape[3] = {4, 3, 2};
    const char *dt_names[TDM_DTYPE_COUNT] = {"u1", "i4", "i8", "f4", "f8", "f2", "V2",
                                             "b1", "i1", "i2", "u2", "u4", "u8"};
    for (int dt = 0; dt < TDM_DTYPE_COUNT; dt++) {
        tdm_tensor *t;
        assert_int_equal(tdm_tensor_empty(rt, (tdm_dtype)dt, 3, shape, 0, &t), 0);
        unsigned char *p = tdm_tensor_data(t);
        size_t es = tdm_dtype_size((tdm_dtype)dt);
        for (int i = 0; i < 24; i++) {
            /* value i in the dtype (f16 1.0 = 0x3c00 ... use byte patterns for f16/bf16) */
            switch (dt) {
            case TDM_U8:
                p[i] = (unsigned char)i;
                break;
            case TDM_I32:
                ((int32_t *)p)[i] = i - 5;
                break;
            case TDM_I64:
                ((int64_t *)p)[i] = (int64_t)i << 40;
                break;
            case TDM_F32:
                ((float *)p)[i] = (float)i * 0.5f;
                break;
            case TDM_F64:
                ((double *)p)[i] = i * 0.25;
                break;
            case TDM_BOOL:
                p[i] = (unsigned char)(i % 3 == 0);
                break;
            case TDM_I8:
                ((int8_t *)p)[i] = (int8_t)(i - 12);
                break;
            case TDM_I16:
                ((int16_t *)p)[i] = (int16_t)((i - 12) * 1000);
                break;
            case TDM_U16:
                ((uint16_t *)p)[i] = (uint16_t)(i * 2700);
                break;
            case TDM_U32:
                ((uint32_t *)p)[i] = (uint32_t)i * 170000000u;
                break;
            case TDM_U64:
                ((uint64_t *)p)[i] = (uint64_t)i << 59 | (uint64_t)i;
                break;
            default:
                p[i * es] = (unsigned char)i;
                p[i * es + 1] = 0x3c;
            }
        }
        char name[64];
        snprintf(name, sizeof name, "t_%s.npy", dt_names[dt]);
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.npy_version = dt % 3 + 1;
        assert_int_equal(tdm_save(t, P(name), &so), 0);
        tdm_tensor_release(t);
    }
    double fb[24];
    for (int i = 0; i < 24; i++)
        fb[i] = i;
    int64_t fst[3] = {1, 4, 12};
    tdm_tensor *f;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 3, shape, fst, fb, &f), 0);
    assert_int_equal(tdm_save(f, P("t_fortran.npy"), NULL), 0);
    const char *names[2] = {"a", "fortran"};
    tdm_tensor *i32;
    assert_int_equal(tdm_load(rt, P("t_i4.npy"), NULL, &i32), 0);
    const tdm_tensor *ts[2] = {i32, f};
    assert_int_equal(tdm_npz_save(rt, P("t_stored.npz"), names, ts, 2, NULL), 0);
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_DEFLATE;
    assert_int_equal(tdm_npz_save(rt, P("t_deflate.npz"), names, ts, 2, &so), 0);
    int64_t wsh[2] = {-1, 3};
    tdm_writer *w;
    assert_int_equal(tdm_writer_open(rt, P("t_writer.npy"), TDM_I32, 2, wsh, NULL, &w), 0);
    tdm_tensor *rows;
    int64_t rsh[2] = {2, 3};
    assert_int_equal(tdm_tensor_empty(rt, TDM_I32, 2, rsh, 0, &rows), 0);
    for (int i = 0; i < 6; i++)
        ((int32_t *)tdm_tensor_data(rows))[i] = i;
    for (int k = 0; k < 5; k++)
        assert_int_equal(tdm_writer_append(w, rows), 0);
    assert_int_equal(tdm_writer_close(w), 0);
    tdm_tensor_release(rows);

    const char *script =
        "import numpy as np, sys\n"
        "ar = np.arange(24)\n"
        "exp = {'u1': ar.astype('u1'), 'i4': (ar - 5).astype('i4'), 'i8': ar.astype('i8') << 40,\n"
        "       'f4': (ar * 0.5).astype('f4'), 'f8': ar * 0.25, 'b1': ar % 3 == 0,\n"
        "       'i1': (ar - 12).astype('i1'), 'i2': ((ar - 12) * 1000).astype('i2'),\n"
        "       'u2': (ar * 2700).astype('u2'), 'u4': ar.astype('u4') * np.uint32(170000000),\n"
        "       'u8': (ar.astype('u8') << np.uint64(59)) | ar.astype('u8')}\n"
        "for k, v in exp.items():\n"
        "    a = np.load('t_%s.npy' % k)\n"
        "    assert a.shape == (4, 3, 2), (k, a.shape)\n"
        "    assert a.dtype == np.dtype(v.dtype), (k, a.dtype)\n"
        "    assert (a.ravel() == v).all(), k\n"
        "h = np.load('t_f2.npy'); assert h.dtype == np.float16 and h.shape == (4, 3, 2)\n"
        "assert (h.view('u2').ravel() == (0x3c00 + ar)).all()\n"
        "b = np.load('t_V2.npy'); assert b.dtype.itemsize == 2 and b.dtype.kind == 'V'\n"
        "f = np.load('t_fortran.npy'); assert f.flags.f_contiguous and not f.flags.c_contiguous\n"
        "assert (f == np.arange(24.).reshape((2, 3, 4)).T).all()\n"
        "for z in ('t_stored.npz', 't_deflate.npz'):\n"
        "    d = np.load(z); assert sorted(d.files) == ['a', 'fortran'], d.files\n"
        "    assert (d['a'].ravel() == ar - 5).all() and (d['fortran'] == f).all()\n"
        "w = np.load('t_writer.npy'); assert w.shape == (10, 3) and (w == "
        "np.tile(np.arange(6).reshape(2, 3), (5, 1))).all()\n"
        "m = np.load('t_f8.npy', mmap_mode='r'); assert m[3, 2, 1] == 23 * 0.25\n"
        "# numpy -> tandem\n"
        "np.save('n_f4.npy', (ar * 1.5).astype('f4').reshape(6, 4))\n"
        "np.save('n_i8.npy', np.arange(-10, 10, dtype='i8'))\n"
        "np.save('n_u1.npy', np.arange(200, dtype='u1').reshape(10, 20))\n"
        "np.save('n_f2.npy', np.arange(8, dtype='f2'))\n"
        "np.save('n_scalar.npy', np.float64(2.5))\n"
        "np.save('n_empty.npy', np.zeros((0, 5), 'f4'))\n"
        "np.save('n_fortran.npy', np.asfortranarray(np.arange(12.).reshape(3, 4)))\n"
        "np.save('n_be.npy', np.arange(5, dtype='>i4'))\n"
        "np.lib.format.write_array(open('n_v2.npy', 'wb'), np.arange(6.), version=(2, 0))\n"
        "np.lib.format.write_array(open('n_v3.npy', 'wb'), np.arange(6.), version=(3, 0))\n"
        "np.savez('n.npz', a=np.arange(7, dtype='i4'), b=np.ones((2, 2)))\n"
        "np.savez_compressed('n_c.npz', a=np.arange(7, dtype='i4'), b=np.ones((2, 2)))\n"
        "np.save('n_bool.npy', np.array([True, False, True]))\n"
        "for t in ('i1', 'i2', 'u2', 'u4', 'u8'):\n"
        "    for e in '<>':\n"
        "        np.save('n_%s%s.npy' % (t, 'be' if e == '>' else 'le'),\n"
        "                np.array([0, 1, 100, np.iinfo(t).max, np.iinfo(t).min], dtype=e + t))\n"
        "np.save('n_c16.npy', np.ones(3, complex))\n"
        "print('numpy side ok')\n";
    int rc = run_python(py, script);
    assert_int_equal(rc, 0);

    tdm_tensor *t;
    assert_int_equal(tdm_load(rt, P("n_f4.npy"), NULL, &t), 0);
    assert_int_equal(tdm_tensor_dtype(t), TDM_F32);
    assert_int_equal(tdm_tensor_dim(t, 0), 6);
    assert_true(((float *)tdm_tensor_data(t))[23] == 34.5f);
    tdm_tensor_release(t);
    assert_int_equal(tdm_load(rt, P("n_i8.npy"), NULL, &t), 0);
    assert_int_equal(((int64_t *)tdm_tensor_data(t))[0], -10);
    tdm_tensor_release(t);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(tdm_load(rt, P("n_u1.npy"), &lo, &t), 0);
    assert_int_equal(((uint8_t *)tdm_tensor_data(t))[199], 199);
    tdm_tensor_release(t);
    assert_int_equal(tdm_load(rt, P("n_f2.npy"), NULL, &t), 0);
    assert_int_equal(tdm_tensor_dtype(t), TDM_F16);
    assert_int_equal(((uint16_t *)tdm_tensor_data(t))[1], 0x3c00);
    tdm_tensor_release(t);
    assert_int_equal(tdm_load(rt, P("n_scalar.npy"), NULL, &t), 0);
    assert_int_equal(tdm_tensor_ndim(t), 0);
    assert_true(*(double *)tdm_tensor_data(t) == 2.5);
    tdm_tensor_release(t);
    assert_int_equal(tdm_load(rt, P("n_empty.npy"), NULL, &t), 0);
    assert_int_equal(tdm_tensor_dim(t, 1), 5);
    tdm_tensor_release(t);
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.c_order = 1;
    assert_int_equal(tdm_load(rt, P("n_fortran.npy"), &lo, &t), 0);
    for (int i = 0; i < 12; i++)
        assert_true(((double *)tdm_tensor_data(t))[i] == i);
    tdm_tensor_release(t);
    assert_int_equal(tdm_load(rt, P("n_be.npy"), NULL, &t), 0);
    assert_int_equal(((int32_t *)tdm_tensor_data(t))[4], 4);
    tdm_tensor_release(t);
    for (int v = 2; v <= 3; v++) {
        char name[32];
        snprintf(name, sizeof name, "n_v%d.npy", v);
        tdm_file_info fi;
        assert_int_equal(tdm_file_info_get(rt, P(name), &fi), 0);
        assert_int_equal(fi.npy_version, v);
        assert_int_equal(tdm_load(rt, P(name), NULL, &t), 0);
        assert_true(((double *)tdm_tensor_data(t))[5] == 5.0);
        tdm_tensor_release(t);
    }
    const char *zs[2] = {"n.npz", "n_c.npz"};
    for (int k = 0; k < 2; k++) {
        tdm_npz *z;
        assert_int_equal(tdm_npz_open(rt, P(zs[k]), &z), 0);
        assert_int_equal(tdm_npz_count(z), 2);
        assert_int_equal(tdm_npz_load(z, "a", NULL, &t), 0);
        assert_int_equal(((int32_t *)tdm_tensor_data(t))[6], 6);
        tdm_tensor_release(t);
        assert_int_equal(tdm_npz_load(z, "b", NULL, &t), 0);
        assert_true(((double *)tdm_tensor_data(t))[3] == 1.0);
        tdm_tensor_release(t);
        tdm_npz_close(z);
    }
    assert_int_equal(tdm_load(rt, P("n_bool.npy"), NULL, &t), 0);
    assert_int_equal(tdm_tensor_dtype(t), TDM_BOOL);
    assert_memory_equal(tdm_tensor_data(t), "\1\0\1", 3);
    tdm_tensor_release(t);
    /* Every integer dtype numpy writes, in both byte orders: the same values come back. */
    static const struct {
        const char *name;
        tdm_dtype dt;
    } ints[] = {{"i1", TDM_I8}, {"i2", TDM_I16}, {"u2", TDM_U16}, {"u4", TDM_U32}, {"u8", TDM_U64}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        for (int be = 0; be < 2; be++) {
            char name[32];
            snprintf(name, sizeof name, "n_%s%s.npy", ints[k].name, be ? "be" : "le");
            assert_int_equal(tdm_load(rt, P(name), NULL, &t), 0);
            assert_int_equal(tdm_tensor_dtype(t), ints[k].dt);
            assert_int_equal(tdm_tensor_numel(t), 5);
            const void *d = tdm_tensor_data(t);
            int64_t got[5];
            uint64_t ugot[5];
            for (int i = 0; i < 5; i++) {
                switch (ints[k].dt) {
                case TDM_I8:
                    got[i] = ((const int8_t *)d)[i];
                    break;
                case TDM_I16:
                    got[i] = ((const int16_t *)d)[i];
                    break;
                case TDM_U16:
                    got[i] = ((const uint16_t *)d)[i];
                    break;
                case TDM_U32:
                    got[i] = ((const uint32_t *)d)[i];
                    break;
                default:
                    got[i] = 0;
                }
                ugot[i] = ints[k].dt == TDM_U64 ? ((const uint64_t *)d)[i] : (uint64_t)got[i];
            }
            assert_int_equal(ugot[0], 0);
            assert_int_equal(ugot[1], 1);
            assert_int_equal(ugot[2], 100);
            if (ints[k].dt == TDM_U64) {
                assert_true(ugot[3] == UINT64_MAX);
                assert_true(ugot[4] == 0);
            } else {
                int64_t bits = 8 * (int64_t)tdm_dtype_size(ints[k].dt);
                bool sgn = ints[k].name[0] == 'i';
                assert_true(got[3] == (sgn ? ((int64_t)1 << (bits - 1)) - 1
                                           : (int64_t)(((uint64_t)1 << bits) - 1)));
                assert_true(got[4] == (sgn ? -((int64_t)1 << (bits - 1)) : 0));
            }
            tdm_tensor_release(t);
        }
    assert_int_equal(load_code(rt, P("n_c16.npy"), NULL), TDM_EDTYPE);
    tdm_tensor_release(i32);
    tdm_tensor_release(f);
    tdm_test_close(rt);
    rm_tmpdir();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_argument_errors),
        cmocka_unit_test(test_save_argument_errors),
        cmocka_unit_test(test_save_failure_keeps_previous_file),
        cmocka_unit_test(test_load_into_existing_tensor),
        cmocka_unit_test(test_every_dtype_and_order_round_trips),
        cmocka_unit_test(test_job_save_streams_a_map_to_disk),
        cmocka_unit_test(test_map_between_mapped_files),
        cmocka_unit_test(test_mapped_tensors_on_worker_processes),
        cmocka_unit_test(test_numpy_interop_both_ways),
    };
    return TDM_TEST_MAIN("io", tests);
}
