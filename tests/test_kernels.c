/* SPDX-License-Identifier: MIT */
/* kernels: every built-in kernel through the public tdm_map(), against a plain C reference
 * written here, with 1, 2 and 3 threads and batch sizes 1, 7 and automatic. Their error paths
 * and kernel registration are in test_kernels__errors.c. */
#include "kernels_common.h"

/* ---- registration and the embedded source ---------------------------------------------------- */

static void test_builtins_registered(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    const char *names[] = {"exp_sinh", "axpy",  "scale_shift",  "sum",
                           "mean",     "sumsq", "normalize_u8", "pi_leibniz"};
    for (size_t i = 0; i < COUNT(names); i++)
        if (!tdm_kernel_exists(rt, names[i]))
            fail_msg("built-in kernel %s is not registered", names[i]);
    assert_true(tdm_kernel_count(rt) >= (int)COUNT(names));
    tdm_test_close(rt);
}

static void test_source_embedded(void **state)
{
    (void)state;
    const char *s = tdm__builtin_kernel_source;
    /* the dialect comes first, then the bodies, without the include between them */
    const char *dialect = strstr(s, "#define TDM_DIALECT_H");
    const char *bodies = strstr(s, "#define TDM_BUILTIN_KERNELS_H");
    assert_non_null(dialect);
    assert_non_null(bodies);
    assert_true(dialect < bodies);
    assert_null(strstr(s, "#include \"tdm_dialect.h\""));
    const char *entries[] = {"tdm_exp_sinh_f32",    "tdm_exp_sinh_f64",     "tdm_axpy_f64",
                             "tdm_scale_shift_f32", "tdm_sum_f64",          "tdm_mean_f32",
                             "tdm_sumsq_f64",       "tdm_normalize_u8",     "tdm_pi_leibniz",
                             "tdm_linear_f32",      "tdm_softmax_xent_f32", "tdm_adam_f32"};
    for (size_t i = 0; i < COUNT(entries); i++)
        if (!strstr(s, entries[i]))
            fail_msg("entry point %s is missing from the embedded source", entries[i]);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        assert_true(*p < 0x80); /* plain ASCII: any device compiler takes it */
}

/* ---- exp_sinh -------------------------------------------------------------------------------- */

static void exp_sinh_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    tdm_dtype dt = *(const tdm_dtype *)ctx;
    tdm_tensor *x = tensor2(rt, dt, rows, 3), *y = tensor2(rt, dt, rows, 3);
    fill_float(x, -5.0, 5.0);
    fill_sentinel(y);
    map_ok(rt, "exp_sinh", &x, 1, y, NULL, 0, batch);
    for (int64_t i = 0; i < rows * 3; i++) {
        double v = get(x, i);
        check_near("exp_sinh", i, get(y, i), exp(v) * sinh(v), dt == TDM_F64 ? REL_F64 : REL_F32,
                   0.0);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
}

static void test_exp_sinh_f64(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F64;
    for_each_case(exp_sinh_case, &dt);
}

static void test_exp_sinh_f32(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F32;
    for_each_case(exp_sinh_case, &dt);
}

/* ---- axpy ------------------------------------------------------------------------------------ */

static void axpy_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    tdm_dtype dt = *(const tdm_dtype *)ctx;
    tdm_tensor *x = tensor1(rt, dt, rows), *y = tensor1(rt, dt, rows), *z = tensor1(rt, dt, rows);
    fill_float(x, -10.0, 10.0);
    fill_float(y, 0.0, 1.0);
    fill_sentinel(z);
    tdm_axpy_params p = {-2.5};
    tdm_tensor *in[2] = {x, y};
    map_ok(rt, "axpy", in, 2, z, &p, sizeof p, batch);
    for (int64_t i = 0; i < rows; i++) {
        double want = dt == TDM_F64 ? p.a * get(x, i) + get(y, i)
                                    : (double)((float)p.a * (float)get(x, i) + (float)get(y, i));
        check_near("axpy", i, get(z, i), want, dt == TDM_F64 ? REL_F64 : REL_F32, 1e-7);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(z);
}

static void test_axpy_f64(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F64;
    for_each_case(axpy_case, &dt);
}

static void test_axpy_f32(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F32;
    for_each_case(axpy_case, &dt);
}

/* z may be y itself (kernel.h): y += a * x */
static void test_axpy_in_place(void **state)
{
    (void)state;
    tdm_dtype dts[] = {TDM_F32, TDM_F64};
    tdm_runtime *rt = tdm_test_open(2);
    for (size_t d = 0; d < COUNT(dts); d++) {
        int64_t rows = 1001;
        tdm_tensor *x = tensor2(rt, dts[d], rows, 5), *y = tensor2(rt, dts[d], rows, 5);
        fill_float(x, -1.0, 1.0);
        fill_float(y, 2.0, 3.0);
        double *before = malloc((size_t)rows * 5 * sizeof *before);
        assert_non_null(before);
        for (int64_t i = 0; i < rows * 5; i++)
            before[i] = get(y, i);
        tdm_axpy_params p = {0.75};
        tdm_tensor *in[2] = {x, y};
        map_ok(rt, "axpy", in, 2, y, &p, sizeof p, 7);
        for (int64_t i = 0; i < rows * 5; i++)
            check_near("axpy in place", i, get(y, i), p.a * get(x, i) + before[i],
                       dts[d] == TDM_F64 ? REL_F64 : REL_F32, 0.0);
        free(before);
        tdm_tensor_release(x);
        tdm_tensor_release(y);
    }
    tdm_test_close(rt);
}

/* ---- scale_shift ----------------------------------------------------------------------------- */

static void scale_shift_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    tdm_dtype dt = *(const tdm_dtype *)ctx;
    int64_t shape[3] = {rows, 2, 3};
    tdm_tensor *x = tensor(rt, dt, 3, shape), *y = tensor(rt, dt, 3, shape);
    fill_float(x, -100.0, 100.0);
    fill_sentinel(y);
    tdm_scale_shift_params p = {0.125, -3.0};
    map_ok(rt, "scale_shift", &x, 1, y, &p, sizeof p, batch);
    for (int64_t i = 0; i < rows * 6; i++)
        check_near("scale_shift", i, get(y, i), get(x, i) * p.scale + p.shift,
                   dt == TDM_F64 ? REL_F64 : REL_F32, 1e-6);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
}

static void test_scale_shift_f64(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F64;
    for_each_case(scale_shift_case, &dt);
}

static void test_scale_shift_f32(void **state)
{
    (void)state;
    tdm_dtype dt = TDM_F32;
    for_each_case(scale_shift_case, &dt);
}

/* ---- sum, mean, sumsq ------------------------------------------------------------------------ */

typedef struct reduce_ctx {
    const char *kernel;
    tdm_dtype dt;
} reduce_ctx;

static void reduce_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    const reduce_ctx *c = ctx;
    int64_t shape[3] = {rows, 5, 3}; /* 15 per row: not a multiple of the 4 partial sums */
    tdm_tensor *x = tensor(rt, c->dt, 3, shape), *y = tensor1(rt, c->dt, rows);
    fill_float(x, -2.0, 3.0);
    fill_sentinel(y);
    map_ok(rt, c->kernel, &x, 1, y, NULL, 0, batch);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int64_t j = 0; j < 15; j++) {
            double v = get(x, r * 15 + j);
            s += strcmp(c->kernel, "sumsq") == 0 ? v * v : v;
        }
        if (strcmp(c->kernel, "mean") == 0)
            s /= 15.0;
        /* accumulated in double in both; the sums differ only in their order (few ulp), and an
         * f32 result is that double rounded once */
        check_near(c->kernel, r, get(y, r), s, c->dt == TDM_F64 ? 1e-14 : 2e-7, 1e-13);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
}

static void run_reduce(const char *kernel)
{
    reduce_ctx c64 = {kernel, TDM_F64}, c32 = {kernel, TDM_F32};
    for_each_case(reduce_case, &c64);
    for_each_case(reduce_case, &c32);
}

static void test_sum(void **state)
{
    (void)state;
    run_reduce("sum");
}

static void test_mean(void **state)
{
    (void)state;
    run_reduce("mean");
}

static void test_sumsq(void **state)
{
    (void)state;
    run_reduce("sumsq");
}

/* A 1-D x is N rows of one element; rows of zero elements sum to 0 and have a NaN mean. */
static void test_reduce_degenerate_rows(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = tensor1(rt, TDM_F64, 9), *y = tensor1(rt, TDM_F64, 9);
    fill_float(x, -1.0, 1.0);
    map_ok(rt, "sum", &x, 1, y, NULL, 0, 2);
    for (int64_t i = 0; i < 9; i++)
        check_near("sum 1-D", i, get(y, i), get(x, i), 0.0, 0.0);
    map_ok(rt, "sumsq", &x, 1, y, NULL, 0, 2);
    for (int64_t i = 0; i < 9; i++)
        check_near("sumsq 1-D", i, get(y, i), get(x, i) * get(x, i), 0.0, 0.0);
    tdm_tensor_release(x);

    tdm_tensor *e = tensor2(rt, TDM_F32, 9, 0), *ye = tensor1(rt, TDM_F32, 9);
    map_ok(rt, "sum", &e, 1, ye, NULL, 0, 0);
    for (int64_t i = 0; i < 9; i++)
        assert_true(get(ye, i) == 0.0);
    map_ok(rt, "mean", &e, 1, ye, NULL, 0, 0);
    for (int64_t i = 0; i < 9; i++)
        assert_true(isnan(get(ye, i)));
    tdm_tensor_release(e);
    tdm_tensor_release(ye);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* ---- normalize_u8 ---------------------------------------------------------------------------- */

/* Checks y [N, C, H, W] against (x / 255 - mean) / std of x [N, H, W, C], flipped where the
 * image's flag (or p->flip) says so. */
static void check_normalized(const tdm_tensor *x, const tdm_tensor *y,
                             const tdm_normalize_params *p, const uint8_t *flags)
{
    const int64_t N = tdm_tensor_dim(x, 0), H = tdm_tensor_dim(x, 1), W = tdm_tensor_dim(x, 2);
    const int64_t C = tdm_tensor_dim(x, 3);
    const uint8_t *xs = tdm_tensor_data(x);
    const float *ys = tdm_tensor_data(y);
    for (int64_t n = 0; n < N; n++) {
        int flip = flags ? flags[n] != 0 : p->flip != 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t sw = flip ? W - 1 - w : w;
                    double v = xs[((n * H + h) * W + sw) * C + c];
                    double want = (v / 255.0 - p->mean[c]) / p->std[c];
                    int64_t i = ((n * C + c) * H + h) * W + w;
                    /* x * (1 / (255 std)) - mean / std in f32: a few ulp of values up to ~2.6;
                     * a wrong pixel or channel is off by >= 1 / (255 * 0.25) = 0.0157 */
                    check_near("normalize_u8", i, ys[i], want, 1e-5, 1e-5);
                }
    }
}

static void normalize_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    const int mode = *(const int *)ctx; /* 0 no flip, 1 flip all, 2 per-image flags */
    int64_t xs[4] = {rows, 5, 7, 3}, ys[4] = {rows, 3, 5, 7};
    tdm_tensor *x = tensor(rt, TDM_U8, 4, xs), *y = tensor(rt, TDM_F32, 4, ys);
    tdm_tensor *f = tensor1(rt, TDM_U8, rows);
    fill_u8(x, 1);
    uint8_t *flags = tdm_tensor_data(f);
    for (int64_t i = 0; i < rows; i++)
        flags[i] = (uint8_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 1 : 200); /* any non-zero flips */
    fill_sentinel(y);
    tdm_normalize_params p = k_norm;
    p.flip = mode == 1;
    tdm_tensor *in[2] = {x, f};
    map_ok(rt, "normalize_u8", in, mode == 2 ? 2 : 1, y, &p, sizeof p, batch);
    check_normalized(x, y, &p, mode == 2 ? flags : NULL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(f);
}

static void test_normalize_u8(void **state)
{
    (void)state;
    int mode = 0;
    for_each_case(normalize_case, &mode);
}

static void test_normalize_u8_flip(void **state)
{
    (void)state;
    int mode = 1;
    for_each_case(normalize_case, &mode);
}

static void test_normalize_u8_flags(void **state)
{
    (void)state;
    int mode = 2;
    for_each_case(normalize_case, &mode);
}

/* Every channel count 1..4, odd sizes, a one-pixel-wide image. */
static void test_normalize_u8_channels(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(3);
    const int64_t sizes[][2] = {{3, 5}, {1, 1}, {9, 1}, {2, 33}};
    for (int64_t c = 1; c <= 4; c++)
        for (size_t s = 0; s < COUNT(sizes); s++)
            for (int flip = 0; flip <= 1; flip++) {
                int64_t H = sizes[s][0], W = sizes[s][1];
                int64_t xs[4] = {11, H, W, c}, ys[4] = {11, c, H, W};
                tdm_tensor *x = tensor(rt, TDM_U8, 4, xs), *y = tensor(rt, TDM_F32, 4, ys);
                fill_u8(x, (int)(c * 100 + H));
                fill_sentinel(y);
                tdm_normalize_params p = k_norm;
                p.flip = flip;
                map_ok(rt, "normalize_u8", &x, 1, y, &p, sizeof p, 4);
                check_normalized(x, y, &p, NULL);
                tdm_tensor_release(x);
                tdm_tensor_release(y);
            }
    tdm_test_close(rt);
}

/* ---- pi_leibniz ------------------------------------------------------------------------------ */

static double pi_reference(int64_t terms)
{
    double s = 0.0;
    for (int64_t k = 0; k < terms; k++)
        s += (k % 2 ? -1.0 : 1.0) / (double)(2 * k + 1);
    return 4.0 * s;
}

/* Summation order differs from the reference (pairs), so the results differ by rounding only:
 * far below the 4 / (2 * terms + 1) that one more or one fewer term would change. */
#define PI_TOL 1e-11

static void pi_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    (void)ctx;
    tdm_tensor *y = tensor1(rt, TDM_F64, rows);
    fill_sentinel(y);
    tdm_pi_params p = {257};
    map_ok(rt, "pi_leibniz", NULL, 0, y, &p, sizeof p, batch);
    double want = pi_reference(p.terms);
    for (int64_t i = 0; i < rows; i++)
        check_near("pi_leibniz", i, get(y, i), want, 0.0, PI_TOL);
    tdm_tensor_release(y);
}

static void test_pi_leibniz(void **state)
{
    (void)state;
    for_each_case(pi_case, NULL);
}

static void pi_terms_case(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx)
{
    (void)ctx;
    tdm_tensor *t = tensor1(rt, TDM_I64, rows), *y = tensor1(rt, TDM_F64, rows);
    int64_t *terms = tdm_tensor_data(t);
    for (int64_t i = 0; i < rows; i++)
        terms[i] = i % 50; /* 0 terms included: 0.0 */
    fill_sentinel(y);
    tdm_pi_params p = {123456789}; /* ignored when terms come per item */
    map_ok(rt, "pi_leibniz", &t, 1, y, &p, sizeof p, batch);
    for (int64_t i = 0; i < rows; i++)
        check_near("pi_leibniz per item", i, get(y, i), pi_reference(terms[i]), 0.0, PI_TOL);
    tdm_tensor_release(t);
    tdm_tensor_release(y);
}

static void test_pi_leibniz_per_item_terms(void **state)
{
    (void)state;
    for_each_case(pi_terms_case, NULL);
}

static void test_pi_leibniz_converges(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    int64_t counts[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    tdm_tensor *t = tensor1(rt, TDM_I64, COUNT(counts)), *y = tensor1(rt, TDM_F64, COUNT(counts));
    memcpy(tdm_tensor_data(t), counts, sizeof counts);
    tdm_pi_params p = {0};
    map_ok(rt, "pi_leibniz", &t, 1, y, &p, sizeof p, 1);
    double prev_err = INFINITY;
    for (size_t i = 0; i < COUNT(counts); i++) {
        double err = fabs(get(y, (int64_t)i) - M_PI);
        /* the alternating series' remainder is below its first omitted term, and shrinks */
        if (!(err <= 4.0 / (2.0 * (double)counts[i] + 1.0)))
            fail_msg("pi_leibniz(%lld terms) = %.17g: error %.3g", (long long)counts[i],
                     get(y, (int64_t)i), err);
        assert_true(err < prev_err);
        prev_err = err;
    }
    assert_true(prev_err < 1.1e-6); /* 10^6 terms: pi to about 1e-6 */
    tdm_tensor_release(t);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* ---- error paths: every one leaves the output untouched ------------------------------------- */

int main(int argc, char **argv)
{
    /* One test per line: tests/CMakeLists.txt registers one CTest per matching line. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins_registered),
        cmocka_unit_test(test_source_embedded),
        cmocka_unit_test(test_exp_sinh_f64),
        cmocka_unit_test(test_exp_sinh_f32),
        cmocka_unit_test(test_axpy_f64),
        cmocka_unit_test(test_axpy_f32),
        cmocka_unit_test(test_axpy_in_place),
        cmocka_unit_test(test_scale_shift_f64),
        cmocka_unit_test(test_scale_shift_f32),
        cmocka_unit_test(test_sum),
        cmocka_unit_test(test_mean),
        cmocka_unit_test(test_sumsq),
        cmocka_unit_test(test_reduce_degenerate_rows),
        cmocka_unit_test(test_normalize_u8),
        cmocka_unit_test(test_normalize_u8_flip),
        cmocka_unit_test(test_normalize_u8_flags),
        cmocka_unit_test(test_normalize_u8_channels),
        cmocka_unit_test(test_pi_leibniz),
        cmocka_unit_test(test_pi_leibniz_per_item_terms),
        cmocka_unit_test(test_pi_leibniz_converges),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("kernels", tests);
}
