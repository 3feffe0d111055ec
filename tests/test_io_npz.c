/* SPDX-License-Identifier: MIT */
/* .npz archives: stored and deflated round trips, save errors, hostile archives. CTest names
 * io_npz_<behaviour>. */
#include "io_test_util.h"

/* ---- .npz ------------------------------------------------------------------------------- */

static void test_roundtrip_stored_and_deflate(void **state)
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

static void test_save_errors(void **state)
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

static void test_bad_archives(void **state)
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

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_stored_and_deflate),
        cmocka_unit_test(test_save_errors),
        cmocka_unit_test(test_bad_archives),
    };
    return TDM_TEST_MAIN("io_npz", tests);
}
