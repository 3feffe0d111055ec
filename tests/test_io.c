/* Tensor files: .npy (dtypes, orders, versions, mmap modes), .npz (stored, deflate), compressed
 * files (zstd, lz4, deflate), streaming writers and job saves, NumPy interop, and every error a
 * bad file or bad argument can give. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

#include "internal.h" /* storage fd / flags of mapped tensors */

/* ---- helpers ---------------------------------------------------------------------------- */

static char g_dir[64];

static void mk_tmpdir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/tdm-io-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rm_tmpdir(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *P(const char *name)
{
    static char buf[8][256];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 256, "%s/%s", g_dir, name);
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A deterministic byte pattern: every dtype compares bytewise. */
static void fill(tdm_tensor *t, unsigned seed)
{
    unsigned char *p = tdm_tensor_data(t);
    size_t n = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(tdm_tensor_dtype(t));
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (unsigned char)(x >> 24);
    }
}

static tdm_tensor *make(tdm_runtime *rt, tdm_dtype dt, int ndim, const int64_t *shape,
                        unsigned seed)
{
    tdm_tensor *t;
    assert_int_equal(tdm_tensor_empty(rt, dt, ndim, shape, TDM_MEM_HOST, &t), 0);
    fill(t, seed);
    return t;
}

static void assert_same(const tdm_tensor *a, const tdm_tensor *b)
{
    assert_int_equal(tdm_tensor_dtype(a), tdm_tensor_dtype(b));
    assert_int_equal(tdm_tensor_ndim(a), tdm_tensor_ndim(b));
    for (int i = 0; i < tdm_tensor_ndim(a); i++)
        assert_int_equal(tdm_tensor_dim(a, i), tdm_tensor_dim(b, i));
    size_t n = (size_t)tdm_tensor_numel(a) * tdm_dtype_size(tdm_tensor_dtype(a));
    if (n)
        assert_memory_equal(tdm_tensor_data(a), tdm_tensor_data(b), n);
}

/* Element (multi-index) of a strided tensor, compared bytewise with the same in another. */
static void assert_same_elements(const tdm_tensor *a, const tdm_tensor *b)
{
    assert_int_equal(tdm_tensor_numel(a), tdm_tensor_numel(b));
    int nd = tdm_tensor_ndim(a);
    size_t es = tdm_dtype_size(tdm_tensor_dtype(a));
    int64_t idx[TDM_MAX_DIMS] = {0};
    int64_t n = tdm_tensor_numel(a);
    for (int64_t k = 0; k < n; k++) {
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < nd; i++) {
            oa += idx[i] * tdm_tensor_strides(a)[i];
            ob += idx[i] * tdm_tensor_strides(b)[i];
        }
        assert_memory_equal((char *)tdm_tensor_data(a) + oa * (int64_t)es,
                            (char *)tdm_tensor_data(b) + ob * (int64_t)es, es);
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < tdm_tensor_dim(a, i))
                break;
            idx[i] = 0;
        }
    }
}

/* Writes a .npy whose header dict is `dict` (padded to 64 bytes), then `data`. */
static void write_npy_raw(const char *path, int major, const char *dict, const void *data, size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    unsigned char *b = calloc(1, total + n + 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    size_t hl = total - pre;
    b[8] = (unsigned char)hl;
    b[9] = (unsigned char)(hl >> 8);
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', total - pre - dl - 1);
    b[total - 1] = '\n';
    if (n)
        memcpy(b + total, data, n);
    write_bytes(path, b, total + n);
    free(b);
}

static int load_code(tdm_runtime *rt, const char *path, const tdm_load_opts *o)
{
    tdm_tensor *t = (tdm_tensor *)(uintptr_t)0x1;
    int rc = tdm_load(rt, path, o, &t);
    if (rc != 0)
        assert_null(t);
    tdm_tensor_release(t);
    return rc;
}

static tdm_map_opts quiet(int64_t batch)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = batch;
    return o;
}

/* ---- .npy ------------------------------------------------------------------------------- */

static void test_npy_roundtrip_every_dtype_and_shape(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    const int64_t shapes[][3] = {{0, 0, 0}, {7, 0, 0}, {3, 5, 2}, {4, 0, 3}, {1, 1, 1}};
    const int ndims[] = {0, 1, 3, 3, 2};
    for (int dt = 0; dt < TDM_DTYPE_COUNT; dt++)
        for (size_t s = 0; s < 5; s++) {
            tdm_tensor *a = make(rt, (tdm_dtype)dt, ndims[s], shapes[s], (unsigned)(dt * 10 + s));
            assert_int_equal(tdm_save(a, P("a.npy"), NULL), 0);
            tdm_tensor *b;
            assert_int_equal(tdm_load(rt, P("a.npy"), NULL, &b), 0);
            assert_same(a, b);
            assert_true(tdm_tensor_is_contiguous(b));
            tdm_file_info fi;
            assert_int_equal(tdm_file_info_get(rt, P("a.npy"), &fi), 0);
            assert_int_equal(fi.kind, TDM_FILE_NPY);
            assert_int_equal(fi.npy_version, 1);
            assert_int_equal(fi.data_offset % 64, 0);
            assert_int_equal(fi.file_bytes, fi.data_offset + fi.data_bytes);
            tdm_tensor_release(a);
            tdm_tensor_release(b);
        }
    assert_false(exists(P("a.npy.tmp")));
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_versions_2_and_3(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[2] = {6, 4};
    tdm_tensor *a = make(rt, TDM_F32, 2, shape, 3);
    for (int v = 1; v <= 3; v++) {
        tdm_save_opts o = TDM_SAVE_OPTS_INIT;
        o.npy_version = v;
        assert_int_equal(tdm_save(a, P("v.npy"), &o), 0);
        tdm_file_info fi;
        assert_int_equal(tdm_file_info_get(rt, P("v.npy"), &fi), 0);
        assert_int_equal(fi.npy_version, v);
        tdm_tensor *b;
        assert_int_equal(tdm_load(rt, P("v.npy"), NULL, &b), 0);
        assert_same(a, b);
        tdm_tensor_release(b);
    }
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_fortran_order(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    double buf[3 * 4 * 2];
    for (int i = 0; i < 24; i++)
        buf[i] = i * 1.5;
    int64_t shape[3] = {3, 4, 2}, fst[3] = {1, 3, 12};
    tdm_tensor *f;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 3, shape, fst, buf, &f), 0);
    assert_int_equal(tdm_save(f, P("f.npy"), NULL), 0);
    tdm_file_info fi;
    assert_int_equal(tdm_file_info_get(rt, P("f.npy"), &fi), 0);
    assert_int_equal(fi.fortran_order, 1);
    /* The data is the raw column-major buffer, as numpy writes it. */
    size_t n;
    unsigned char *raw = read_bytes(P("f.npy"), &n);
    assert_memory_equal(raw + fi.data_offset, buf, sizeof buf);
    free(raw);
    tdm_tensor *g;
    assert_int_equal(tdm_load(rt, P("f.npy"), NULL, &g), 0);
    assert_false(tdm_tensor_is_contiguous(g));
    assert_int_equal(tdm_tensor_strides(g)[0], 1);
    assert_int_equal(tdm_tensor_strides(g)[2], 12);
    assert_same_elements(f, g);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.c_order = 1;
    tdm_tensor *c;
    assert_int_equal(tdm_load(rt, P("f.npy"), &lo, &c), 0);
    assert_true(tdm_tensor_is_contiguous(c));
    assert_same_elements(f, c);
    /* Mapped: strides stay column-major. */
    lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    tdm_tensor *m;
    assert_int_equal(tdm_load(rt, P("f.npy"), &lo, &m), 0);
    assert_same_elements(f, m);
    /* Re-saving the loaded tensor keeps Fortran order. */
    assert_int_equal(tdm_save(g, P("g.npy"), NULL), 0);
    assert_int_equal(tdm_file_info_get(rt, P("g.npy"), &fi), 0);
    assert_int_equal(fi.fortran_order, 1);
    tdm_tensor_release(f);
    tdm_tensor_release(g);
    tdm_tensor_release(c);
    tdm_tensor_release(m);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_strided_tensor_saved_in_c_order(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int32_t buf[10 * 6];
    for (int i = 0; i < 60; i++)
        buf[i] = i;
    /* Every other column of a 10x6 matrix: shape 10x3, strides 6, 2. */
    int64_t shape[2] = {10, 3}, st[2] = {6, 2};
    tdm_tensor *v;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_I32, 2, shape, st, buf, &v), 0);
    assert_int_equal(tdm_save(v, P("s.npy"), NULL), 0);
    tdm_tensor *w;
    assert_int_equal(tdm_load(rt, P("s.npy"), NULL, &w), 0);
    assert_true(tdm_tensor_is_contiguous(w));
    assert_same_elements(v, w);
    const int32_t *d = tdm_tensor_data(w);
    assert_int_equal(d[4], 8); /* row 1, col 1 = buf[6 + 2] */
    tdm_tensor_release(v);
    tdm_tensor_release(w);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_mmap_modes(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[2] = {100, 10};
    tdm_tensor *a = make(rt, TDM_F64, 2, shape, 7);
    assert_int_equal(tdm_save(a, P("m.npy"), NULL), 0);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;

    lo.mmap = TDM_MMAP_READ;
    tdm_tensor *r;
    assert_int_equal(tdm_load(rt, P("m.npy"), &lo, &r), 0);
    assert_true(tdm_tensor_mem(r) & TDM_MEM_MAPPED);
    assert_true(r->storage->fd >= 0); /* handed to worker processes */
    assert_same(a, r);

    lo.mmap = TDM_MMAP_COPY;
    tdm_tensor *c;
    assert_int_equal(tdm_load(rt, P("m.npy"), &lo, &c), 0);
    assert_true(tdm_tensor_mem(c) & TDM_MEM_MAPPED);
    assert_int_equal(c->storage->fd, -1); /* private pages: not shareable by fd */
    ((double *)tdm_tensor_data(c))[0] = 42.0;
    tdm_tensor *check;
    assert_int_equal(tdm_load(rt, P("m.npy"), NULL, &check), 0);
    assert_same(a, check); /* the file is unchanged */
    tdm_tensor_release(check);

    lo.mmap = TDM_MMAP_READWRITE;
    tdm_tensor *w;
    assert_int_equal(tdm_load(rt, P("m.npy"), &lo, &w), 0);
    ((double *)tdm_tensor_data(w))[5] = -3.25;
    tdm_tensor_release(w);
    assert_int_equal(tdm_load(rt, P("m.npy"), NULL, &check), 0);
    assert_true(((double *)tdm_tensor_data(check))[5] == -3.25);
    /* The read-only mapping shares the file's pages: it sees the write too. */
    assert_true(((double *)tdm_tensor_data(r))[5] == -3.25);
    tdm_tensor_release(check);

    /* Views of a mapped tensor keep the mapping alive. */
    tdm_tensor *v;
    assert_int_equal(tdm_tensor_view_rows(r, 10, 20, &v), 0);
    tdm_tensor_release(r);
    assert_true(((double *)tdm_tensor_data(v))[0] == ((double *)tdm_tensor_data(a))[100]);
    tdm_tensor_release(v);
    tdm_tensor_release(c);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_mmap_empty_and_scalar(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[1] = {0};
    tdm_tensor *e = make(rt, TDM_F32, 1, shape, 1), *s = make(rt, TDM_I64, 0, NULL, 2);
    assert_int_equal(tdm_save(e, P("e.npy"), NULL), 0);
    assert_int_equal(tdm_save(s, P("s.npy"), NULL), 0);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    tdm_tensor *e2, *s2;
    assert_int_equal(tdm_load(rt, P("e.npy"), &lo, &e2), 0);
    assert_int_equal(tdm_load(rt, P("s.npy"), &lo, &s2), 0);
    assert_int_equal(tdm_tensor_numel(e2), 0);
    assert_non_null(tdm_tensor_data(e2));
    assert_same(s, s2);
    tdm_tensor_release(e);
    tdm_tensor_release(s);
    tdm_tensor_release(e2);
    tdm_tensor_release(s2);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_create_is_a_mapped_file(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[2] = {1000, 3};
    tdm_tensor *t;
    assert_int_equal(tdm_npy_create(rt, P("c.npy"), TDM_I32, 2, shape, &t), 0);
    assert_true(tdm_tensor_mem(t) & TDM_MEM_MAPPED);
    int32_t *d = tdm_tensor_data(t);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(d[i], 0);
    for (int i = 0; i < 3000; i++)
        d[i] = i * 7;
    tdm_tensor_release(t);
    tdm_tensor *u;
    assert_int_equal(tdm_load(rt, P("c.npy"), NULL, &u), 0);
    assert_int_equal(tdm_tensor_dim(u, 0), 1000);
    assert_int_equal(((int32_t *)tdm_tensor_data(u))[2999], 2999 * 7);
    tdm_tensor_release(u);
    /* Errors. */
    assert_int_equal(tdm_npy_create(rt, P("x.npy"), TDM_DTYPE_COUNT, 1, shape, &t), TDM_EINVAL);
    assert_null(t);
    int64_t neg[1] = {-1};
    assert_int_equal(tdm_npy_create(rt, P("x.npy"), TDM_F32, 1, neg, &t), TDM_EINVAL);
    int64_t huge[2] = {INT64_MAX / 2, 4};
    assert_int_equal(tdm_npy_create(rt, P("x.npy"), TDM_F32, 2, huge, &t), TDM_EOVERFLOW);
    assert_int_equal(tdm_npy_create(rt, "/nonexistent-dir/x.npy", TDM_F32, 1, shape, &t), TDM_EIO);
    assert_int_equal(tdm_npy_create(NULL, P("x.npy"), TDM_F32, 1, shape, &t), TDM_EINVAL);
    assert_int_equal(tdm_npy_create(rt, NULL, TDM_F32, 1, shape, &t), TDM_EINVAL);
    assert_int_equal(tdm_npy_create(rt, P("x.npy"), TDM_F32, 1, shape, NULL), TDM_EINVAL);
    assert_false(exists(P("x.npy")));
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_big_endian_is_swapped(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    unsigned char be[3 * 8];
    double v[3] = {1.5, -2.25, 1e300};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 8; j++)
            be[i * 8 + j] = ((unsigned char *)&v[i])[7 - j];
    write_npy_raw(P("be.npy"), 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }", be,
                  sizeof be);
    tdm_tensor *t;
    assert_int_equal(tdm_load(rt, P("be.npy"), NULL, &t), 0);
    assert_memory_equal(tdm_tensor_data(t), v, sizeof v);
    tdm_tensor_release(t);
    tdm_file_info fi;
    assert_int_equal(tdm_file_info_get(rt, P("be.npy"), &fi), 0);
    assert_int_equal(fi.big_endian, 1);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(load_code(rt, P("be.npy"), &lo), TDM_ELAYOUT);
    assert_non_null(strstr(tdm_errmsg(rt), "big-endian"));
    /* Python 2 'L' suffixes and double quotes are accepted too. */
    write_npy_raw(P("py2.npy"), 1,
                  "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (3L,)}", v, sizeof v);
    assert_int_equal(tdm_load(rt, P("py2.npy"), NULL, &t), 0);
    assert_memory_equal(tdm_tensor_data(t), v, sizeof v);
    tdm_tensor_release(t);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npy_bad_files(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    double d[4] = {1, 2, 3, 4};
    struct {
        const char *dict;
        int major;
        size_t data;
        int code;
        const char *msg;
    } cases[] = {
        /* A header that claims 10^15 elements over 32 bytes of data: refused before any
         * allocation (a 8 PB malloc would fail or, worse, succeed lazily). */
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }", 1, 32,
         TDM_EFORMAT, "truncated"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", 1, 32, TDM_EFORMAT,
         "truncated"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 8), }", 1, 32,
         TDM_EFORMAT, "overflow"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 1, 32,
         TDM_EFORMAT, "too large"},
        {"{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 1, 32, TDM_EDTYPE,
         "no tandem equivalent"},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }", 1, 32, TDM_EDTYPE, "b1"},
        {"{'descr': '<U8', 'fortran_order': False, 'shape': (1,), }", 1, 32, TDM_EDTYPE, "U8"},
        {"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (4,), }", 1, 32, TDM_EDTYPE,
         "structured"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 1, 32,
         TDM_ESHAPE, "dimensions"},
        {"{'descr': '<f8', 'fortran_order': maybe, 'shape': (4,), }", 1, 32, TDM_EFORMAT,
         "fortran_order"},
        {"{'descr': '<f8', 'shape': (4,), }", 1, 32, TDM_EFORMAT, "lacks"},
        {"{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 1, 32,
         TDM_EFORMAT, "repeated"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), 'extra': 1, }", 1, 32,
         TDM_EFORMAT, "unexpected"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (-4,), }", 1, 32, TDM_EFORMAT,
         "non-integer"},
        {"['descr', '<f8']", 1, 32, TDM_EFORMAT, "dict"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': 4, }", 1, 32, TDM_EFORMAT, "tuple"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), ", 1, 32, TDM_EFORMAT,
         "malformed"},
        {"{'descr: '<f8', 'fortran_order': False, 'shape': (4,), }", 1, 32, TDM_EFORMAT,
         "malformed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_npy_raw(P("bad.npy"), cases[i].major, cases[i].dict, d, cases[i].data);
        int rc = load_code(rt, P("bad.npy"), NULL);
        if (rc != cases[i].code || !strstr(tdm_errmsg(rt), cases[i].msg))
            fail_msg("case %zu: %s -> %s '%s'", i, cases[i].dict, tdm_status_name(rc),
                     tdm_errmsg(rt));
        tdm_file_info fi;
        assert_int_equal(tdm_file_info_get(rt, P("bad.npy"), &fi), cases[i].code);
    }
    /* Wrong magic, bad version, truncated prefix and header, header longer than allowed. */
    write_bytes(P("bad.npy"), "\x93NUMPX\x01\x00\x10\x00", 10);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "not a .npy, .npz or tandem"));
    write_bytes(P("bad.npy"), "\x93NUMPY\x04\x00\x10\x00", 10);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "version 4.0"));
    write_bytes(P("bad.npy"), "\x93NUMPY\x02\x00\x10", 9);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    write_bytes(P("bad.npy"), "\x93NUMPY\x01\x00\x76\x00{'descr'", 17);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "truncated"));
    write_bytes(P("bad.npy"), "\x93NUMPY\x02\x00\xff\xff\xff\x7f{", 13);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "longer than"));
    write_bytes(P("bad.npy"), "", 0);
    assert_int_equal(load_code(rt, P("bad.npy"), NULL), TDM_EFORMAT);
    /* max_bytes. */
    write_npy_raw(P("ok.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", d,
                  32);
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.max_bytes = 16;
    assert_int_equal(load_code(rt, P("ok.npy"), &lo), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "max_bytes"));
    lo.max_bytes = 32;
    assert_int_equal(load_code(rt, P("ok.npy"), &lo), 0);
    /* Data not aligned to its elements cannot be mapped (a hand-made 10 + 52 byte header). */
    {
        const char *dict = "{'descr':'<f8','fortran_order':False,'shape':(4,)}";
        size_t dl = strlen(dict);
        unsigned char b[200] = {0};
        memcpy(b, "\x93NUMPY\x01\x00", 8);
        size_t hl = 52; /* data at 62: not a multiple of 8 */
        b[8] = (unsigned char)hl;
        memcpy(b + 10, dict, dl);
        memset(b + 10 + dl, ' ', hl - dl - 1);
        b[10 + hl - 1] = '\n';
        memcpy(b + 10 + hl, d, 32);
        write_bytes(P("mis.npy"), b, 10 + hl + 32);
        tdm_tensor *t;
        assert_int_equal(tdm_load(rt, P("mis.npy"), NULL, &t), 0);
        assert_memory_equal(tdm_tensor_data(t), d, 32);
        tdm_tensor_release(t);
        lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
        lo.mmap = TDM_MMAP_READ;
        assert_int_equal(load_code(rt, P("mis.npy"), &lo), TDM_ELAYOUT);
        assert_non_null(strstr(tdm_errmsg(rt), "not aligned"));
    }
    tdm_test_close(rt);
    rm_tmpdir();
}

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
    signal(SIGXFSZ, SIG_IGN);
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return 10;
    int64_t small[1] = {16}, big[1] = {1 << 16};
    tdm_tensor *a, *b;
    tdm_tensor_empty(rt, TDM_F64, 1, small, 0, &a);
    tdm_tensor_empty(rt, TDM_F64, 1, big, 0, &b);
    fill(a, 1);
    fill(b, 2);
    if (tdm_save(a, P("keep.npy"), NULL) != 0)
        return 11;
    struct rlimit rl = {100000, 100000};
    setrlimit(RLIMIT_FSIZE, &rl);
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
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(full_disk_child(NULL));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
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
    const tdm_dtype dts[] = {TDM_U8, TDM_I32, TDM_I64, TDM_F16, TDM_BF16, TDM_F32, TDM_F64};
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

/* ---- compressed files ------------------------------------------------------------------- */

static void test_tdz_roundtrip_every_codec(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    struct {
        tdm_codec c;
        int level;
    } cs[] = {{TDM_CODEC_ZSTD, 0},    {TDM_CODEC_ZSTD, 1},   {TDM_CODEC_ZSTD, -5},
              {TDM_CODEC_ZSTD, 19},   {TDM_CODEC_LZ4, 0},    {TDM_CODEC_LZ4, 9},
              {TDM_CODEC_DEFLATE, 0}, {TDM_CODEC_DEFLATE, 1}};
    int64_t shape[2] = {1001, 37}; /* not a multiple of any chunk: a short last chunk */
    tdm_tensor *a;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 2, shape, 0, &a), 0);
    double *d = tdm_tensor_data(a);
    for (int64_t i = 0; i < 1001 * 37; i++)
        d[i] = (double)(i % 1000) * 0.25; /* compressible */
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = cs[i].c;
        so.level = cs[i].level;
        so.chunk_bytes = i % 2 ? 4096 : 0; /* many groups of chunks, or one chunk */
        assert_int_equal(tdm_save(a, P("a.tdz"), &so), 0);
        tdm_file_info fi;
        assert_int_equal(tdm_file_info_get(rt, P("a.tdz"), &fi), 0);
        assert_int_equal(fi.kind, TDM_FILE_TDZ);
        assert_int_equal(fi.codec, cs[i].c);
        assert_int_equal(fi.data_bytes, 1001 * 37 * 8);
        assert_true(fi.file_bytes < fi.data_bytes);
        tdm_tensor *b;
        assert_int_equal(tdm_load(rt, P("a.tdz"), NULL, &b), 0);
        assert_same(a, b);
        tdm_tensor_release(b);
    }
    /* Every dtype, empty and 0-dim tensors, Fortran-order and strided tensors. */
    for (int dt = 0; dt < TDM_DTYPE_COUNT; dt++) {
        int64_t s3[3] = {5, 0, 2};
        tdm_tensor *e = make(rt, (tdm_dtype)dt, 3, s3, 1), *z = make(rt, (tdm_dtype)dt, 0, NULL, 2);
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = TDM_CODEC_LZ4;
        tdm_tensor *b;
        assert_int_equal(tdm_save(e, P("e.tdz"), &so), 0);
        assert_int_equal(tdm_load(rt, P("e.tdz"), NULL, &b), 0);
        assert_same(e, b);
        tdm_tensor_release(b);
        assert_int_equal(tdm_save(z, P("z.tdz"), &so), 0);
        assert_int_equal(tdm_load(rt, P("z.tdz"), NULL, &b), 0);
        assert_same(z, b);
        tdm_tensor_release(b);
        tdm_tensor_release(e);
        tdm_tensor_release(z);
    }
    double buf[24];
    for (int i = 0; i < 24; i++)
        buf[i] = i;
    int64_t fs[3] = {3, 4, 2}, fst[3] = {1, 3, 12};
    tdm_tensor *f, *b;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 3, fs, fst, buf, &f), 0);
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_ZSTD;
    assert_int_equal(tdm_save(f, P("f.tdz"), &so), 0);
    assert_int_equal(tdm_load(rt, P("f.tdz"), NULL, &b), 0);
    assert_true(tdm_tensor_is_contiguous(b));
    assert_same_elements(f, b);
    tdm_tensor_release(b);
    tdm_tensor_release(f);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_tdz_corrupt_and_truncated_files(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t shape[1] = {50000};
    tdm_tensor *a;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, shape, 0, &a), 0);
    float *d = tdm_tensor_data(a);
    for (int i = 0; i < 50000; i++)
        d[i] = (float)(i % 77);
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_ZSTD;
    so.chunk_bytes = 8192;
    assert_int_equal(tdm_save(a, P("a.tdz"), &so), 0);
    size_t n;
    unsigned char *good = read_bytes(P("a.tdz"), &n);
    unsigned char *b = malloc(n);
    /* A flipped byte inside a chunk: its checksum fails. */
    memcpy(b, good, n);
    b[96 + 5] ^= 0x40;
    write_bytes(P("c.tdz"), b, n);
    assert_int_equal(load_code(rt, P("c.tdz"), NULL), TDM_ECORRUPT);
    assert_non_null(strstr(tdm_errmsg(rt), "corrupted"));
    /* The header's checksum. */
    memcpy(b, good, n);
    b[30] ^= 1;
    write_bytes(P("c.tdz"), b, n);
    assert_int_equal(load_code(rt, P("c.tdz"), NULL), TDM_ECORRUPT);
    /* The index's checksum. */
    memcpy(b, good, n);
    b[n - 40 - 10] ^= 1;
    write_bytes(P("c.tdz"), b, n);
    assert_int_equal(load_code(rt, P("c.tdz"), NULL), TDM_ECORRUPT);
    /* Truncated anywhere: at the end marker, the header, in the middle. */
    size_t cuts[] = {n - 1, n - 41, n / 2, 120, 96, 50, 8, 3};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(P("t.tdz"), good, cuts[i]);
        int rc = load_code(rt, P("t.tdz"), NULL);
        assert_true(rc == TDM_EFORMAT);
    }
    /* A footer whose raw total disagrees with the shape: refused before allocating. */
    memcpy(b, good, n);
    put64(b + n - 40 + 8, (uint64_t)1 << 50);
    write_bytes(P("c.tdz"), b, n);
    assert_int_equal(load_code(rt, P("c.tdz"), NULL), TDM_EFORMAT);
    /* max_bytes. */
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.max_bytes = 1000;
    assert_int_equal(load_code(rt, P("a.tdz"), &lo), TDM_EFORMAT);
    free(b);
    free(good);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- .npz ------------------------------------------------------------------------------- */

static void test_npz_roundtrip_stored_and_deflate(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t s1[2] = {33, 5}, s2[1] = {0}, s3[3] = {2, 3, 4};
    tdm_tensor *t[4];
    t[0] = make(rt, TDM_F64, 2, s1, 1);
    t[1] = make(rt, TDM_U8, 1, s2, 2);
    t[2] = make(rt, TDM_I32, 3, s3, 3);
    double buf[24];
    for (int i = 0; i < 24; i++)
        buf[i] = i;
    int64_t fst[3] = {1, 2, 6};
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 3, s3, fst, buf, &t[3]), 0);
    const char *names[4] = {"x", "empty", "labels", "fortran"};
    for (int pass = 0; pass < 2; pass++) {
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = pass ? TDM_CODEC_DEFLATE : TDM_CODEC_NONE;
        so.level = pass ? 9 : 0;
        assert_int_equal(tdm_npz_save(rt, P("a.npz"), names, (const tdm_tensor *const *)t, 4, &so),
                         0);
        tdm_file_info fi;
        assert_int_equal(tdm_file_info_get(rt, P("a.npz"), &fi), 0);
        assert_int_equal(fi.kind, TDM_FILE_NPZ);
        assert_int_equal(fi.npz_members, 4);
        tdm_npz *z;
        assert_int_equal(tdm_npz_open(rt, P("a.npz"), &z), 0);
        assert_int_equal(tdm_npz_count(z), 4);
        for (int i = 0; i < 4; i++) {
            assert_string_equal(tdm_npz_name(z, i), names[i]);
            tdm_tensor *u;
            assert_int_equal(tdm_npz_load(z, names[i], NULL, &u), 0);
            assert_same_elements(t[i], u);
            tdm_tensor_release(u);
        }
        assert_null(tdm_npz_name(z, 4));
        assert_null(tdm_npz_name(z, -1));
        tdm_tensor *u;
        assert_int_equal(tdm_npz_load(z, "x.npy", NULL, &u), 0); /* with the suffix too */
        tdm_tensor_release(u);
        tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
        lo.mmap = TDM_MMAP_READ;
        if (pass == 0) {
            /* Stored members are aligned: they map. */
            for (int i = 0; i < 4; i++) {
                assert_int_equal(tdm_npz_load(z, names[i], &lo, &u), 0);
                assert_true(tdm_tensor_mem(u) & TDM_MEM_MAPPED);
                assert_same_elements(t[i], u);
                tdm_tensor_release(u);
            }
            lo.mmap = TDM_MMAP_READWRITE;
            assert_int_equal(tdm_npz_load(z, "x", &lo, &u), 0);
            tdm_tensor_release(u);
        } else {
            assert_int_equal(tdm_npz_load(z, "x", &lo, &u), TDM_EINVAL);
            assert_null(u);
        }
        lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
        lo.c_order = 1;
        assert_int_equal(tdm_npz_load(z, "fortran", &lo, &u), 0);
        assert_true(tdm_tensor_is_contiguous(u));
        assert_same_elements(t[3], u);
        tdm_tensor_release(u);
        lo = (tdm_load_opts)TDM_LOAD_OPTS_INIT;
        lo.max_bytes = 8;
        assert_int_equal(tdm_npz_load(z, "x", &lo, &u), TDM_EFORMAT);
        assert_int_equal(tdm_npz_load(z, "nope", NULL, &u), TDM_ENOTFOUND);
        assert_int_equal(tdm_npz_load(z, NULL, NULL, &u), TDM_EINVAL);
        assert_int_equal(tdm_npz_load(NULL, "x", NULL, &u), TDM_EINVAL);
        assert_int_equal(tdm_npz_load(z, "x", NULL, NULL), TDM_EINVAL);
        lo.size = 1;
        assert_int_equal(tdm_npz_load(z, "x", &lo, &u), TDM_EINVAL);
        tdm_npz_close(z);
    }
    /* An empty archive. */
    assert_int_equal(tdm_npz_save(rt, P("e.npz"), NULL, NULL, 0, NULL), 0);
    tdm_npz *z;
    assert_int_equal(tdm_npz_open(rt, P("e.npz"), &z), 0);
    assert_int_equal(tdm_npz_count(z), 0);
    tdm_npz_close(z);
    tdm_npz_close(NULL);
    assert_int_equal(tdm_npz_count(NULL), 0);
    for (int i = 0; i < 4; i++)
        tdm_tensor_release(t[i]);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_npz_save_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t s[1] = {4};
    tdm_tensor *a = make(rt, TDM_F32, 1, s, 1);
    const tdm_tensor *ts[2] = {a, a};
    const char *dup[2] = {"a", "a"}, *empty[1] = {""}, *nul[1] = {NULL};
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *lng[1] = {longname};
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), dup, ts, 2, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "twice"));
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), empty, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), nul, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), lng, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), NULL, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, NULL, dup, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(NULL, P("a.npz"), dup, ts, 1, NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), dup, ts, -1, NULL), TDM_EINVAL);
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    so.codec = TDM_CODEC_ZSTD;
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), dup, ts, 1, &so), TDM_EINVAL);
    so.size = 0;
    assert_int_equal(tdm_npz_save(rt, P("a.npz"), dup, ts, 1, &so), TDM_EINVAL);
    assert_int_equal(tdm_npz_save(rt, "/nonexistent-dir/a.npz", dup, ts, 1, NULL), TDM_EIO);
    assert_false(exists(P("a.npz")));
    tdm_npz *z;
    assert_int_equal(tdm_npz_open(NULL, P("a.npz"), &z), TDM_EINVAL);
    assert_int_equal(tdm_npz_open(rt, NULL, &z), TDM_EINVAL);
    assert_int_equal(tdm_npz_open(rt, P("a.npz"), NULL), TDM_EINVAL);
    assert_int_equal(tdm_npz_open(rt, P("a.npz"), &z), TDM_EIO);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Offset of the first central directory entry (from the end record). */
static size_t central_of(const unsigned char *b, size_t n)
{
    return get32(b + n - 22 + 16);
}

static void test_npz_bad_archives(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t s[1] = {1000};
    tdm_tensor *a = make(rt, TDM_F64, 1, s, 4);
    const tdm_tensor *ts[1] = {a};
    const char *names[1] = {"a"};
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    assert_int_equal(tdm_npz_save(rt, P("s.npz"), names, ts, 1, &so), 0);
    so.codec = TDM_CODEC_DEFLATE;
    assert_int_equal(tdm_npz_save(rt, P("d.npz"), names, ts, 1, &so), 0);
    size_t ns, nd;
    unsigned char *gs = read_bytes(P("s.npz"), &ns), *gd = read_bytes(P("d.npz"), &nd);
    unsigned char *b = malloc(ns > nd ? ns : nd);
    tdm_npz *z;
    tdm_tensor *u;

    /* Not a zip; truncated (no end record). */
    write_bytes(P("x.npz"), "PK\x03\x04 this is not a zip", 23);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);
    assert_null(z);
    for (size_t cut = ns - 1; cut > ns - 30; cut -= 7) {
        write_bytes(P("x.npz"), gs, cut);
        assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);
    }
    /* Truncated in the data: the directory's offsets point past the end. */
    write_bytes(P("x.npz"), gs + 0, 100);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);

    /* A member whose local header offset points outside the file. */
    memcpy(b, gs, ns);
    size_t cd = central_of(b, ns);
    put32(b + cd + 42, 0x7ffffff0u);
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "outside"));
    /* A member whose size runs past the directory. */
    memcpy(b, gs, ns);
    put32(b + cd + 20, 0x10000000u);
    put32(b + cd + 24, 0x10000000u);
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);
    /* A directory that claims more entries than it can hold. */
    memcpy(b, gs, ns);
    b[ns - 22 + 8] = 0xfe;
    b[ns - 22 + 10] = 0xfe;
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), TDM_EFORMAT);

    /* Unsupported method, encryption. */
    memcpy(b, gs, ns);
    b[cd + 10] = 12; /* bzip2 */
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "method 12"));
    tdm_npz_close(z);
    memcpy(b, gs, ns);
    b[cd + 8] |= 1;
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "encrypted"));
    tdm_npz_close(z);

    /* A flipped data byte in a stored member: CRC mismatch (not checked when mapped). */
    memcpy(b, gs, ns);
    b[cd - 100] ^= 0x10;
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_ECORRUPT);
    assert_non_null(strstr(tdm_errmsg(rt), "CRC"));
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    assert_int_equal(tdm_npz_load(z, "a", &lo, &u), 0);
    tdm_tensor_release(u);
    tdm_npz_close(z);
    /* Stored sizes that differ. */
    memcpy(b, gs, ns);
    put32(b + cd + 24, get32(b + cd + 24) - 8);
    write_bytes(P("x.npz"), b, ns);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_EFORMAT);
    tdm_npz_close(z);

    /* Deflated member: a damaged stream, a wrong CRC, an impossible size claim. */
    size_t cdd = central_of(gd, nd);
    memcpy(b, gd, nd);
    for (size_t i = 200; i < 260; i++)
        b[i] ^= 0xa5;
    write_bytes(P("x.npz"), b, nd);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    int rc = tdm_npz_load(z, "a", NULL, &u);
    assert_true(rc == TDM_ECORRUPT || rc == TDM_EFORMAT);
    tdm_npz_close(z);
    memcpy(b, gd, nd);
    b[cdd + 16] ^= 1;
    write_bytes(P("x.npz"), b, nd);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_ECORRUPT);
    assert_non_null(strstr(tdm_errmsg(rt), "CRC"));
    tdm_npz_close(z);
    memcpy(b, gd, nd);
    put32(b + cdd + 24, 0xfffffff0u);
    write_bytes(P("x.npz"), b, nd);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_EFORMAT);
    assert_non_null(strstr(tdm_errmsg(rt), "more than deflate"));
    tdm_npz_close(z);
    memcpy(b, gd, nd);
    put32(b + cdd + 24, get32(b + cdd + 24) + 1);
    write_bytes(P("x.npz"), b, nd);
    assert_int_equal(tdm_npz_open(rt, P("x.npz"), &z), 0);
    assert_int_equal(tdm_npz_load(z, "a", NULL, &u), TDM_ECORRUPT);
    tdm_npz_close(z);

    free(b);
    free(gs);
    free(gd);
    tdm_tensor_release(a);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- streaming writers ------------------------------------------------------------------ */

static void test_writer_streams_rows(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t shape[2] = {1000, 13};
    tdm_tensor *all = make(rt, TDM_I64, 2, shape, 8);
    tdm_codec codecs[3] = {TDM_CODEC_NONE, TDM_CODEC_ZSTD, TDM_CODEC_LZ4};
    for (int c = 0; c < 3; c++)
        for (int known = 0; known < 2; known++) {
            tdm_save_opts so = TDM_SAVE_OPTS_INIT;
            so.codec = codecs[c];
            so.chunk_bytes = 4096;
            int64_t ws[2] = {known ? 1000 : -1, 13};
            tdm_writer *w;
            unlink(P("w.out"));
            assert_int_equal(tdm_writer_open(rt, P("w.out"), TDM_I64, 2, ws, &so, &w), 0);
            assert_false(exists(P("w.out")));
            for (int64_t r = 0; r < 1000;) {
                int64_t n = (r * 7 + 3) % 97 + 1;
                if (r + n > 1000)
                    n = 1000 - r;
                tdm_tensor *v;
                assert_int_equal(tdm_tensor_view_rows(all, r, r + n, &v), 0);
                assert_int_equal(tdm_writer_append(w, v), 0);
                tdm_tensor_release(v);
                r += n;
            }
            assert_int_equal(tdm_writer_rows(w), 1000);
            assert_int_equal(tdm_writer_close(w), 0);
            tdm_tensor *b;
            assert_int_equal(tdm_load(rt, P("w.out"), NULL, &b), 0);
            assert_same(all, b);
            tdm_tensor_release(b);
        }
    /* Random-order writes into a .npy writer. */
    int64_t ws[2] = {-1, 13};
    tdm_writer *w;
    assert_int_equal(tdm_writer_open(rt, P("r.npy"), TDM_I64, 2, ws, NULL, &w), 0);
    for (int k = 9; k >= 0; k--) {
        tdm_tensor *v;
        assert_int_equal(tdm_tensor_view_rows(all, k * 100, k * 100 + 100, &v), 0);
        assert_int_equal(tdm_writer_write_at(w, k * 100, v), 0);
        tdm_tensor_release(v);
    }
    assert_int_equal(tdm_writer_close(w), 0);
    tdm_tensor *b;
    assert_int_equal(tdm_load(rt, P("r.npy"), NULL, &b), 0);
    assert_same(all, b);
    tdm_tensor_release(b);
    /* A zero-row file. */
    assert_int_equal(tdm_writer_open(rt, P("z.npy"), TDM_F32, 2, ws, NULL, &w), 0);
    assert_int_equal(tdm_writer_close(w), 0);
    assert_int_equal(tdm_load(rt, P("z.npy"), NULL, &b), 0);
    assert_int_equal(tdm_tensor_dim(b, 0), 0);
    tdm_tensor_release(b);
    tdm_tensor_release(all);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_writer_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t ws[2] = {10, 4}, bad[2] = {-2, 4}, rs[2] = {6, 4}, rs3[2] = {6, 3};
    tdm_writer *w;
    assert_int_equal(tdm_writer_open(NULL, P("w.npy"), TDM_F32, 2, ws, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, NULL, TDM_F32, 2, ws, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 2, NULL, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 2, ws, NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 0, ws, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_DTYPE_COUNT, 2, ws, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 2, bad, NULL, &w), TDM_EINVAL);
    int64_t neg[2] = {4, -4}, huge[2] = {INT64_MAX / 2, 16};
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 2, neg, NULL, &w), TDM_EINVAL);
    assert_int_equal(tdm_writer_open(rt, P("w.npy"), TDM_F32, 2, huge, NULL, &w), TDM_EOVERFLOW);
    assert_int_equal(tdm_writer_open(rt, "/nonexistent-dir/w.npy", TDM_F32, 2, ws, NULL, &w),
                     TDM_EIO);
    tdm_tensor *r6 = make(rt, TDM_F32, 2, rs, 1), *r63 = make(rt, TDM_F32, 2, rs3, 1),
               *d6 = make(rt, TDM_F64, 2, rs, 1);
    for (int z = 0; z < 2; z++) {
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = z ? TDM_CODEC_ZSTD : TDM_CODEC_NONE;
        assert_int_equal(tdm_writer_open(rt, P("w.out"), TDM_F32, 2, ws, &so, &w), 0);
        assert_int_equal(tdm_writer_append(w, d6), TDM_EDTYPE);
        assert_int_equal(tdm_writer_append(w, r63), TDM_ESHAPE);
        assert_int_equal(tdm_writer_append(w, NULL), TDM_EINVAL);
        assert_int_equal(tdm_writer_append(w, r6), 0);
        assert_int_equal(tdm_writer_append(w, r6), TDM_ESHAPE); /* 12 > 10 rows */
        if (z)
            assert_int_equal(tdm_writer_write_at(w, 6, r6), TDM_EINVAL);
        else
            assert_int_equal(tdm_writer_write_at(w, -1, r6), TDM_EINVAL);
        assert_int_equal(tdm_writer_close(w), TDM_ESHAPE); /* 6 of 10 */
        assert_false(exists(P("w.out")));
        assert_int_equal(tdm_writer_open(rt, P("w.out"), TDM_F32, 2, ws, &so, &w), 0);
        tdm_writer_abort(w);
        assert_false(exists(P("w.out")));
    }
    /* Gaps and overlaps in write_at. */
    int64_t us[2] = {-1, 4};
    assert_int_equal(tdm_writer_open(rt, P("g.npy"), TDM_F32, 2, us, NULL, &w), 0);
    assert_int_equal(tdm_writer_write_at(w, 10, r6), 0);
    assert_int_equal(tdm_writer_close(w), TDM_ESHAPE);
    assert_non_null(strstr(tdm_errmsg(rt), "gaps"));
    assert_false(exists(P("g.npy")));
    assert_int_equal(tdm_writer_append(NULL, r6), TDM_EINVAL);
    assert_int_equal(tdm_writer_write_at(NULL, 0, r6), TDM_EINVAL);
    assert_int_equal(tdm_writer_close(NULL), TDM_EINVAL);
    assert_int_equal(tdm_writer_rows(NULL), 0);
    tdm_writer_abort(NULL);
    tdm_tensor_release(r6);
    tdm_tensor_release(r63);
    tdm_tensor_release(d6);
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

/* ---- flat memory: results larger than the memory they pass through ----------------------- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TDM_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define TDM_TEST_SANITIZED 1
#endif
#endif
#ifndef TDM_TEST_SANITIZED
#define TDM_TEST_SANITIZED 0 /* sanitizers inflate RSS: only the memory assertions are skipped */
#endif

/* "flat_gen": u8 x [N] -> f64 y [N, 16], y[r][c] = r * 16 + c + x[r] / 4: 128 output bytes per
 * input byte, so a small input makes a large result. */
#define FLAT_COLS 16

static double flat_value(int64_t row, int64_t col, unsigned char x)
{
    return (double)(row * FLAT_COLS + col) + 0.25 * x;
}

static unsigned char flat_input(int64_t row)
{
    return (unsigned char)(row * 131 % 251);
}

static int infer_flat_gen(const tdm_tensor *const *in, int n_in, const void *params,
                          size_t params_size, tdm_tensor_desc *out, int n_out, char *msg,
                          size_t len)
{
    (void)params;
    (void)params_size;
    if (n_in != 1 || n_out != 1 || tdm_tensor_dtype(in[0]) != TDM_U8 ||
        tdm_tensor_ndim(in[0]) != 1) {
        snprintf(msg, len, "flat_gen: one u8 [N] input");
        return TDM_EINVAL;
    }
    out[0].dtype = TDM_F64;
    out[0].ndim = 2;
    out[0].shape[0] = tdm_tensor_dim(in[0], 0);
    out[0].shape[1] = FLAT_COLS;
    return 0;
}

static int cpu_flat_gen(const tdm_kernel_args *a)
{
    const unsigned char *x = a->in[0];
    double *y = a->out[0];
    for (int64_t r = a->begin; r < a->end; r++)
        for (int c = 0; c < FLAT_COLS; c++)
            y[(r - a->begin) * FLAT_COLS + c] = flat_value(r, c, x[r - a->begin]);
    return 0;
}

/* A field of /proc/self/status in kB ("VmHWM:", "RssAnon:", "RssFile:"), -1 when absent. */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0); without it the growth is measured from the
 * (small) high-water mark inherited at fork. */
static void reset_peak_rss(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) {
        }
        close(fd);
    }
}

/* Anonymous memory is what must stay flat while a file-backed mapping is written (its pages
 * are the file's, reclaimable): no counter keeps RssAnon's peak, so a thread samples it. */
typedef struct anon_sampler {
    atomic_int stop;
    long peak_kb;
} anon_sampler;

static void *sample_anon(void *p)
{
    anon_sampler *s = p;
    while (!atomic_load(&s->stop)) {
        long v = status_kb("RssAnon:");
        if (v > s->peak_kb)
            s->peak_kb = v;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct flat_result {
    int line; /* 0: every check passed; else the line of the first that failed */
    int code; /* the tandem code of a failed call */
    long data_kb;
    long npy_save_growth_kb, tdz_save_growth_kb; /* VmHWM growth during each tdm_job_save */
    long load_anon_growth_kb, load_file_kb;      /* tdz -> mapped .npy: RssAnon peak growth */
} flat_result;

#define FLAT_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            res->line = __LINE__;                                                                  \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
#define FLAT_OK(call)                                                                              \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            res->code = rc_;                                                                       \
            res->line = __LINE__;                                                                  \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Runs in a forked child (its own peak RSS): no cmocka assertions here, only res. */
static void flat_child(int64_t rows, flat_result *res)
{
    tdm_runtime *rt = NULL;
    tdm_tensor *x = NULL, *m = NULL;
    double *chunk = NULL;
    int fd = -1;
    char files[3][256];
    snprintf(files[0], sizeof files[0], "%s/flat.npy", g_dir);
    snprintf(files[1], sizeof files[1], "%s/flat.tdz", g_dir);
    snprintf(files[2], sizeof files[2], "%s/flat_back.npy", g_dir);
    int64_t shape[2] = {rows, FLAT_COLS};
    const int64_t chunk_rows = 8192;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    cfg.use_env = 0;
    FLAT_OK(tdm_runtime_open(&rt, &cfg));
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "flat_gen";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.infer = infer_flat_gen;
    def.cpu = cpu_flat_gen;
    FLAT_OK(tdm_kernel_register(rt, &def));
    FLAT_OK(tdm_tensor_empty(rt, TDM_U8, 1, &rows, 0, &x));
    unsigned char *xd = tdm_tensor_data(x);
    for (int64_t r = 0; r < rows; r++)
        xd[r] = flat_input(r);
    /* A streaming map drained into a .npy writer (batches in completion order, written at
     * their rows) and into an lz4 writer (submission order). */
    for (int k = 0; k < 2; k++) {
        tdm_map_opts mo = quiet(16384);
        mo.max_in_flight = 4;
        mo.order = k == 0 ? TDM_ORDER_COMPLETION : TDM_ORDER_SUBMISSION;
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = k == 0 ? TDM_CODEC_NONE : TDM_CODEC_LZ4;
        reset_peak_rss();
        long before = status_kb("VmHWM:");
        tdm_job *job;
        FLAT_OK(tdm_map_async(rt, "flat_gen", &x, 1, NULL, 1, NULL, 0, &mo, &job));
        tdm_writer *w;
        int rc = tdm_writer_open(rt, files[k], TDM_F64, 2, shape, &so, &w);
        if (rc != 0) {
            tdm_job_free(job);
            FLAT_OK(rc);
        }
        tdm_report rep = TDM_REPORT_INIT;
        rc = tdm_job_save(job, &w, 1, &rep);
        tdm_job_free(job);
        int rc2 = tdm_writer_close(w);
        FLAT_OK(rc);
        FLAT_OK(rc2);
        FLAT_CHECK(rep.items == rows);
        long after = status_kb("VmHWM:");
        FLAT_CHECK(before > 0 && after > 0);
        if (k == 0)
            res->npy_save_growth_kb = after - before;
        else
            res->tdz_save_growth_kb = after - before;
    }
    /* The .npy, read back a chunk at a time: every element. */
    tdm_file_info fi;
    FLAT_OK(tdm_file_info_get(rt, files[0], &fi));
    FLAT_CHECK(fi.kind == TDM_FILE_NPY && fi.dtype == TDM_F64 && fi.ndim == 2 &&
               fi.shape[0] == rows && fi.shape[1] == FLAT_COLS && !fi.fortran_order);
    FLAT_CHECK(fi.file_bytes == fi.data_offset + rows * FLAT_COLS * 8);
    chunk = malloc((size_t)chunk_rows * FLAT_COLS * sizeof(double));
    FLAT_CHECK(chunk != NULL);
    fd = open(files[0], O_RDONLY | O_CLOEXEC);
    FLAT_CHECK(fd >= 0);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
        int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        size_t nb = (size_t)nr * FLAT_COLS * sizeof(double);
        FLAT_CHECK(pread(fd, chunk, nb, (off_t)(fi.data_offset + r0 * FLAT_COLS * 8)) ==
                   (ssize_t)nb);
        for (int64_t r = 0; r < nr; r++)
            for (int c = 0; c < FLAT_COLS; c++)
                FLAT_CHECK(chunk[r * FLAT_COLS + c] == flat_value(r0 + r, c, flat_input(r0 + r)));
    }
    close(fd);
    fd = -1;
    /* The compressed file decompressed into a mapped .npy (the out-of-core read). */
    FLAT_OK(tdm_npy_create(rt, files[2], TDM_F64, 2, shape, &m));
    anon_sampler smp;
    atomic_init(&smp.stop, 0);
    long anon_before = status_kb("RssAnon:");
    smp.peak_kb = anon_before;
    pthread_t th;
    FLAT_CHECK(anon_before > 0 && pthread_create(&th, NULL, sample_anon, &smp) == 0);
    int lrc = tdm_load_into(rt, files[1], m);
    long anon_after = status_kb("RssAnon:");
    atomic_store(&smp.stop, 1);
    pthread_join(th, NULL);
    FLAT_OK(lrc);
    if (anon_after > smp.peak_kb)
        smp.peak_kb = anon_after;
    res->load_anon_growth_kb = smp.peak_kb - anon_before;
    res->load_file_kb = status_kb("RssFile:");
    const double *md = tdm_tensor_data(m);
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < FLAT_COLS; c++)
            FLAT_CHECK(md[r * FLAT_COLS + c] == flat_value(r, c, flat_input(r)));
done:
    if (fd >= 0)
        close(fd);
    free(chunk);
    tdm_tensor_release(m);
    tdm_tensor_release(x);
    if (rt)
        tdm_runtime_close(rt);
    for (int i = 0; i < 3; i++)
        unlink(files[i]);
}

/* A streaming map of 256 MiB of results saved to .npy and to an lz4 file, and the lz4 file
 * read back into a mapped .npy, in a child process whose memory is watched: the peak RSS
 * grows by far less than the data (ring buffers, a few chunks), and every element is right. */
static void test_streaming_save_and_load_keep_memory_flat(void **state)
{
    (void)state;
    mk_tmpdir();
    /* 2 Mi rows x 128 bytes = 256 MiB (64 MiB under sanitizers, which only check the data). */
    int64_t rows = TDM_TEST_SANITIZED ? (int64_t)1 << 19 : (int64_t)1 << 21;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        flat_result r;
        memset(&r, 0, sizeof r);
        r.data_kb = (long)(rows * FLAT_COLS * 8 / 1024);
        flat_child(rows, &r);
        _exit(write(pfd[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    close(pfd[1]);
    flat_result r;
    memset(&r, 0, sizeof r);
    ssize_t got = read(pfd[0], &r, sizeof r);
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    rm_tmpdir();
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, (ssize_t)sizeof r);
    if (r.line != 0)
        fail_msg("flat-memory child: check at line %d failed (code %d)", r.line, r.code);
    print_message("flat memory: %ld MiB of results; peak RSS growth while streaming them to .npy "
                  "%ld KiB, to lz4 %ld KiB; lz4 -> mapped .npy: anonymous peak growth %ld KiB "
                  "(file-backed pages resident after: %ld KiB)%s\n",
                  r.data_kb / 1024, r.npy_save_growth_kb, r.tdz_save_growth_kb,
                  r.load_anon_growth_kb, r.load_file_kb,
                  TDM_TEST_SANITIZED ? " [sanitizer build: memory not asserted]" : "");
    if (!TDM_TEST_SANITIZED) {
        assert_true(r.npy_save_growth_kb < r.data_kb / 4);
        assert_true(r.tdz_save_growth_kb < r.data_kb / 4);
        assert_true(r.load_anon_growth_kb < r.data_kb / 4);
    }
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
    const char *dt_names[TDM_DTYPE_COUNT] = {"u1", "i4", "i8", "f4", "f8", "f2", "V2"};
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
        "       'f4': (ar * 0.5).astype('f4'), 'f8': ar * 0.25}\n"
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
        "np.save('n_bool.npy', np.ones(3, bool))\n"
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
    assert_int_equal(load_code(rt, P("n_bool.npy"), NULL), TDM_EDTYPE);
    assert_int_equal(load_code(rt, P("n_c16.npy"), NULL), TDM_EDTYPE);
    tdm_tensor_release(i32);
    tdm_tensor_release(f);
    tdm_test_close(rt);
    rm_tmpdir();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npy_roundtrip_every_dtype_and_shape),
        cmocka_unit_test(test_npy_versions_2_and_3),
        cmocka_unit_test(test_npy_fortran_order),
        cmocka_unit_test(test_npy_strided_tensor_saved_in_c_order),
        cmocka_unit_test(test_npy_mmap_modes),
        cmocka_unit_test(test_npy_mmap_empty_and_scalar),
        cmocka_unit_test(test_npy_create_is_a_mapped_file),
        cmocka_unit_test(test_npy_big_endian_is_swapped),
        cmocka_unit_test(test_npy_bad_files),
        cmocka_unit_test(test_load_argument_errors),
        cmocka_unit_test(test_save_argument_errors),
        cmocka_unit_test(test_save_failure_keeps_previous_file),
        cmocka_unit_test(test_load_into_existing_tensor),
        cmocka_unit_test(test_every_dtype_and_order_round_trips),
        cmocka_unit_test(test_tdz_roundtrip_every_codec),
        cmocka_unit_test(test_tdz_corrupt_and_truncated_files),
        cmocka_unit_test(test_npz_roundtrip_stored_and_deflate),
        cmocka_unit_test(test_npz_save_errors),
        cmocka_unit_test(test_npz_bad_archives),
        cmocka_unit_test(test_writer_streams_rows),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_job_save_streams_a_map_to_disk),
        cmocka_unit_test(test_map_between_mapped_files),
        cmocka_unit_test(test_streaming_save_and_load_keep_memory_flat),
        cmocka_unit_test(test_numpy_interop_both_ways),
    };
    return TDM_TEST_MAIN("io", tests);
}
