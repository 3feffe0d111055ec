/* SPDX-License-Identifier: MIT */
/* Compressed tensor files (.tdz): every codec, corrupt and truncated files. CTest names
 * io_tdz_<behaviour>. */
#include "io_test_util.h"

/* ---- compressed files ------------------------------------------------------------------- */

static void test_roundtrip_every_codec(void **state)
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

static void test_corrupt_and_truncated_files(void **state)
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

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_codec),
        cmocka_unit_test(test_corrupt_and_truncated_files),
    };
    return TDM_TEST_MAIN("io_tdz", tests);
}
