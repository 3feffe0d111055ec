/* SPDX-License-Identifier: MIT */
/* .npy files: round trips, versions, orders, mappings, byte order, bad files. CTest names
 * io_npy_<behaviour>. */
#include "io_test_util.h"

/* ---- .npy ------------------------------------------------------------------------------- */

static void test_roundtrip_every_dtype_and_shape(void **state)
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

static void test_versions_2_and_3(void **state)
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

static void test_fortran_order(void **state)
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

static void test_strided_tensor_saved_in_c_order(void **state)
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

static void test_mmap_modes(void **state)
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

static void test_mmap_empty_and_scalar(void **state)
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

static void test_create_is_a_mapped_file(void **state)
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

static void test_big_endian_is_swapped(void **state)
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

/* bool, i8, i16, u16, u32, u64: saved with NumPy's descr strings, loaded from them in both
 * byte orders ('=' and '|' too), big-endian data swapped; a save/load keeps every byte. */
static void test_descr_of_bool_and_every_integer_dtype(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    static const struct {
        tdm_dtype dt;
        const char *descr, *be; /* what numpy writes; its big-endian form (NULL: no order) */
    } k[] = {
        {TDM_BOOL, "|b1", NULL}, {TDM_I8, "|i1", NULL},   {TDM_I16, "<i2", ">i2"},
        {TDM_U16, "<u2", ">u2"}, {TDM_U32, "<u4", ">u4"}, {TDM_U64, "<u8", ">u8"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        size_t es = tdm_dtype_size(k[i].dt);
        tdm_tensor *a = make(rt, k[i].dt, 2, (int64_t[]){3, 5}, (unsigned)i + 1);
        if (k[i].dt == TDM_BOOL) /* numpy's bools are 0 or 1 */
            for (int j = 0; j < 15; j++)
                ((unsigned char *)tdm_tensor_data(a))[j] &= 1;
        assert_int_equal(tdm_save(a, P("a.npy"), NULL), 0);
        size_t n;
        unsigned char *bytes = read_bytes(P("a.npy"), &n);
        char want[64];
        snprintf(want, sizeof want, "{'descr': '%s', 'fortran_order': False, 'shape': (3, 5), }",
                 k[i].descr);
        assert_memory_equal(bytes + 10, want, strlen(want));
        free(bytes);
        tdm_tensor *b;
        assert_int_equal(tdm_load(rt, P("a.npy"), NULL, &b), 0);
        assert_same(a, b);
        tdm_tensor_release(b);
        /* Native order ('=') and, for one-byte types, '|' or '<' alike. */
        char dict[96];
        snprintf(dict, sizeof dict, "{'descr': '=%s', 'fortran_order': False, 'shape': (3, 5), }",
                 k[i].descr + 1);
        write_npy_raw(P("n.npy"), 1, dict, tdm_tensor_data(a), 15 * es);
        assert_int_equal(tdm_load(rt, P("n.npy"), NULL, &b), 0);
        assert_same(a, b);
        tdm_tensor_release(b);
        if (k[i].be) {
            unsigned char *sw = malloc(15 * es);
            assert_non_null(sw);
            const unsigned char *src = tdm_tensor_data(a);
            for (size_t e = 0; e < 15; e++)
                for (size_t j = 0; j < es; j++)
                    sw[e * es + j] = src[e * es + es - 1 - j];
            snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (3, 5), }", k[i].be);
            write_npy_raw(P("be.npy"), 2, dict, sw, 15 * es);
            free(sw);
            assert_int_equal(tdm_load(rt, P("be.npy"), NULL, &b), 0);
            assert_same(a, b);
            tdm_tensor_release(b);
            tdm_file_info fi;
            assert_int_equal(tdm_file_info_get(rt, P("be.npy"), &fi), 0);
            assert_int_equal(fi.big_endian, 1);
            assert_int_equal(fi.dtype, k[i].dt);
        }
        tdm_tensor_release(a);
    }
    /* Sizes numpy has but tandem does not are still refused. */
    static const char *const no[] = {"<i16", "<u3", "|b2", "<b8", "<c8", "|O", "<M8"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        char dict[96];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (1,), }",
                 no[i]);
        write_npy_raw(P("no.npy"), 1, dict, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
        assert_int_equal(load_code(rt, P("no.npy"), NULL), TDM_EDTYPE);
    }
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_bad_files(void **state)
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
        {"{'descr': '<u3', 'fortran_order': False, 'shape': (4,), }", 1, 32, TDM_EDTYPE, "u3"},
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

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_dtype_and_shape),
        cmocka_unit_test(test_versions_2_and_3),
        cmocka_unit_test(test_fortran_order),
        cmocka_unit_test(test_strided_tensor_saved_in_c_order),
        cmocka_unit_test(test_mmap_modes),
        cmocka_unit_test(test_mmap_empty_and_scalar),
        cmocka_unit_test(test_create_is_a_mapped_file),
        cmocka_unit_test(test_big_endian_is_swapped),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_descr_of_bool_and_every_integer_dtype),
    };
    return TDM_TEST_MAIN("io_npy", tests);
}
