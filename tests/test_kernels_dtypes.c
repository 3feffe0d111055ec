/* SPDX-License-Identifier: MIT */
/* The built-in kernels and the storage-only dtypes (bool, i8, i16, u16, u32, u64): the kernels
 * that make sense for them accept them (normalize_u8's flip flags as bool), every other one
 * refuses them with TDM_EDTYPE and a message naming the dtype, before anything runs. */
#include <math.h>

#include "tdm_test.h"

static const tdm_dtype k_new[] = {TDM_BOOL, TDM_I8, TDM_I16, TDM_U16, TDM_U32, TDM_U64};

static tdm_map_opts quiet(void)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    return o;
}

static void expect_refused(tdm_runtime *rt, int rc, tdm_dtype dt)
{
    assert_int_equal(rc, TDM_EDTYPE);
    assert_non_null(strstr(tdm_errmsg(rt), tdm_dtype_name(dt)));
}

static void test_float_kernels_refuse_integer_and_bool_dtypes(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts mo = quiet();
    for (size_t d = 0; d < sizeof k_new / sizeof k_new[0]; d++) {
        tdm_dtype dt = k_new[d];
        tdm_tensor *x, *y, *z, *r;
        assert_int_equal(tdm_tensor_zeros(rt, dt, 2, (int64_t[]){8, 3}, 0, &x), 0);
        assert_int_equal(tdm_tensor_zeros(rt, dt, 2, (int64_t[]){8, 3}, 0, &y), 0);
        assert_int_equal(tdm_tensor_zeros(rt, dt, 2, (int64_t[]){8, 3}, 0, &z), 0);
        assert_int_equal(tdm_tensor_zeros(rt, dt, 1, (int64_t[]){8}, 0, &r), 0);
        /* The outputs stay untouched: a byte pattern survives every refusal. */
        memset(tdm_tensor_data(z), 0x5a, tdm_tensor_nbytes(z));
        tdm_axpy_params ap = {2.0};
        tdm_scale_shift_params sp = {2.0, 1.0};
        expect_refused(rt, tdm_map(rt, "exp_sinh", &x, 1, &z, 1, NULL, 0, &mo, NULL), dt);
        expect_refused(
            rt, tdm_map(rt, "axpy", (tdm_tensor *[]){x, y}, 2, &z, 1, &ap, sizeof ap, &mo, NULL),
            dt);
        expect_refused(rt, tdm_map(rt, "scale_shift", &x, 1, &z, 1, &sp, sizeof sp, &mo, NULL), dt);
        static const char *const reductions[] = {"sum", "mean", "sumsq"};
        for (int k = 0; k < 3; k++)
            expect_refused(rt, tdm_map(rt, reductions[k], &x, 1, &r, 1, NULL, 0, &mo, NULL), dt);
        for (size_t i = 0; i < tdm_tensor_nbytes(z); i++)
            assert_int_equal(((unsigned char *)tdm_tensor_data(z))[i], 0x5a);
        /* pi_leibniz's per-item terms are i64 only. */
        tdm_tensor *terms, *pi;
        assert_int_equal(tdm_tensor_zeros(rt, dt, 1, (int64_t[]){4}, 0, &terms), 0);
        assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, (int64_t[]){4}, 0, &pi), 0);
        tdm_pi_params pp = {10};
        expect_refused(rt, tdm_map(rt, "pi_leibniz", &terms, 1, &pi, 1, &pp, sizeof pp, &mo, NULL),
                       dt);
        /* normalize_u8's images are u8 only (bool included: it is not an image). */
        tdm_tensor *img, *out;
        assert_int_equal(tdm_tensor_zeros(rt, dt, 4, (int64_t[]){2, 2, 2, 1}, 0, &img), 0);
        assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 4, (int64_t[]){2, 1, 2, 2}, 0, &out), 0);
        tdm_normalize_params np = {{0.5f}, {0.25f}, 0, 0};
        expect_refused(rt, tdm_map(rt, "normalize_u8", &img, 1, &out, 1, &np, sizeof np, &mo, NULL),
                       dt);
        tdm_tensor_release(img);
        tdm_tensor_release(out);
        tdm_tensor_release(terms);
        tdm_tensor_release(pi);
        tdm_tensor_release(x);
        tdm_tensor_release(y);
        tdm_tensor_release(z);
        tdm_tensor_release(r);
    }
    tdm_test_close(rt);
}

/* Per-image flip flags as numpy's bool (one byte, 0 or 1): the same images as with u8 flags;
 * the other new one-byte type (i8) is refused. */
static void test_normalize_takes_bool_flip_flags(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_map_opts mo = quiet();
    const int64_t n = 6, h = 3, w = 4, c = 3;
    tdm_tensor *x, *y_u8, *y_bool, *f_u8, *f_bool, *f_i8;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 4, (int64_t[]){n, h, w, c}, 0, &x), 0);
    unsigned char *px = tdm_tensor_data(x);
    for (size_t i = 0; i < tdm_tensor_nbytes(x); i++)
        px[i] = (unsigned char)(i * 37 % 251);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 4, (int64_t[]){n, c, h, w}, 0, &y_u8), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 4, (int64_t[]){n, c, h, w}, 0, &y_bool), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){n}, 0, &f_u8), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_BOOL, 1, (int64_t[]){n}, 0, &f_bool), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I8, 1, (int64_t[]){n}, 0, &f_i8), 0);
    for (int64_t i = 0; i < n; i++) {
        ((unsigned char *)tdm_tensor_data(f_u8))[i] = (unsigned char)(i % 2);
        ((unsigned char *)tdm_tensor_data(f_bool))[i] = (unsigned char)(i % 2);
    }
    tdm_normalize_params np = {{0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.3f}, 0, 0};
    assert_int_equal(tdm_map(rt, "normalize_u8", (tdm_tensor *[]){x, f_u8}, 2, &y_u8, 1, &np,
                             sizeof np, &mo, NULL),
                     0);
    assert_int_equal(tdm_map(rt, "normalize_u8", (tdm_tensor *[]){x, f_bool}, 2, &y_bool, 1, &np,
                             sizeof np, &mo, NULL),
                     0);
    assert_memory_equal(tdm_tensor_data(y_u8), tdm_tensor_data(y_bool), tdm_tensor_nbytes(y_u8));
    /* Image 1 is flipped: its first pixel is the source row's last one. */
    const float *py = tdm_tensor_data(y_bool);
    float want = ((float)px[(1 * h * w + w - 1) * c] / 255.0f - 0.5f) / 0.2f;
    assert_true(fabsf(py[1 * c * h * w] - want) < 1e-5f);
    expect_refused(rt,
                   tdm_map(rt, "normalize_u8", (tdm_tensor *[]){x, f_i8}, 2, &y_bool, 1, &np,
                           sizeof np, &mo, NULL),
                   TDM_I8);
    tdm_tensor_release(x);
    tdm_tensor_release(y_u8);
    tdm_tensor_release(y_bool);
    tdm_tensor_release(f_u8);
    tdm_tensor_release(f_bool);
    tdm_tensor_release(f_i8);
    tdm_test_close(rt);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_kernels_refuse_integer_and_bool_dtypes),
        cmocka_unit_test(test_normalize_takes_bool_flip_flags),
    };
    return TDM_TEST_MAIN("kernels_dtypes", tests);
}
