/* SPDX-License-Identifier: MIT */
/* Streaming writers (tdm_writer). CTest names io_writer_<behaviour>. */
#include "io_test_util.h"

/* ---- streaming writers ------------------------------------------------------------------ */

static void test_streams_rows(void **state)
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

static void test_errors(void **state)
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

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_rows),
        cmocka_unit_test(test_errors),
    };
    return TDM_TEST_MAIN("io_writer", tests);
}
