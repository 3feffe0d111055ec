/* kernels: every built-in kernel through the public tdm_map(), against a plain C reference
 * written here, with 1, 2 and 3 threads and batch sizes 1, 7 and automatic; every error path
 * of the built-ins (each leaving the output untouched); kernel registration. */
#include "tdm_test.h"

#include <limits.h>
#include <math.h>

extern const char tdm__builtin_kernel_source[];

/* ---- helpers --------------------------------------------------------------------------------- */

static tdm_tensor *tensor(tdm_runtime *rt, tdm_dtype dt, int ndim, const int64_t *shape)
{
    tdm_tensor *t = NULL;
    int rc = tdm_tensor_empty(rt, dt, ndim, shape, TDM_MEM_HOST, &t);
    if (rc != 0)
        fail_msg("tdm_tensor_empty: %s (%s)", tdm_status_name(rc), tdm_errmsg(rt));
    return t;
}

static tdm_tensor *tensor1(tdm_runtime *rt, tdm_dtype dt, int64_t n)
{
    return tensor(rt, dt, 1, &n);
}

static tdm_tensor *tensor2(tdm_runtime *rt, tdm_dtype dt, int64_t n, int64_t m)
{
    int64_t s[2] = {n, m};
    return tensor(rt, dt, 2, s);
}

#define SENTINEL_BYTE 0xA5

static void fill_sentinel(tdm_tensor *t)
{
    size_t n = tdm_tensor_nbytes(t);
    if (n)
        memset(tdm_tensor_data(t), SENTINEL_BYTE, n);
}

static void assert_untouched(const tdm_tensor *t)
{
    const unsigned char *p = tdm_tensor_data(t);
    size_t n = tdm_tensor_nbytes(t);
    for (size_t i = 0; i < n; i++)
        if (p[i] != SENTINEL_BYTE)
            fail_msg("output byte %zu was written (0x%02x) by a call that failed", i, p[i]);
}

/* Deterministic values in [lo, hi). */
static double value(int64_t i, double lo, double hi)
{
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return lo + (hi - lo) * (double)(h >> 11) / 9007199254740992.0;
}

static void fill_float(tdm_tensor *t, double lo, double hi)
{
    int64_t n = tdm_tensor_numel(t);
    if (tdm_tensor_dtype(t) == TDM_F64) {
        double *p = tdm_tensor_data(t);
        for (int64_t i = 0; i < n; i++)
            p[i] = value(i, lo, hi);
    } else {
        float *p = tdm_tensor_data(t);
        for (int64_t i = 0; i < n; i++)
            p[i] = (float)value(i, lo, hi);
    }
}

static double get(const tdm_tensor *t, int64_t i)
{
    return tdm_tensor_dtype(t) == TDM_F64 ? ((const double *)tdm_tensor_data(t))[i]
                                          : (double)((const float *)tdm_tensor_data(t))[i];
}

static void check_near(const char *what, int64_t i, double got, double want, double rel,
                       double abs_tol)
{
    if (isnan(want) && isnan(got))
        return;
    double tol = abs_tol + rel * fabs(want);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%lld]: got %.17g, want %.17g (tolerance %.3g)", what, (long long)i, got, want,
                 tol);
}

static void map_ok(tdm_runtime *rt, const char *k, tdm_tensor **in, int n_in, tdm_tensor *out,
                   const void *params, size_t params_size, int64_t batch)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.batch_size = batch;
    o.progress = TDM_PROGRESS_OFF;
    int rc = tdm_map(rt, k, in, n_in, &out, 1, params, params_size, &o, NULL);
    if (rc != 0)
        fail_msg("tdm_map(%s, batch %lld): %s: %s", k, (long long)batch, tdm_status_name(rc),
                 tdm_errmsg(rt));
}

/* A failing call returns `code`, says `part` in its message, and writes nothing. */
static void map_fails(tdm_runtime *rt, const char *k, tdm_tensor **in, int n_in, tdm_tensor *out,
                      const void *params, size_t params_size, int code, const char *part)
{
    fill_sentinel(out);
    int rc = tdm_map(rt, k, in, n_in, &out, 1, params, params_size, NULL, NULL);
    if (rc != code)
        fail_msg("tdm_map(%s): %s (%s), expected %s", k, tdm_status_name(rc), tdm_errmsg(rt),
                 tdm_status_name(code));
    if (part && !strstr(tdm_errmsg(rt), part))
        fail_msg("tdm_map(%s): message \"%s\" does not say \"%s\"", k, tdm_errmsg(rt), part);
    assert_untouched(out);
}

/* The matrix every kernel runs through: threads x batch size x row count. */
static const int k_threads[] = {1, 2, 3};
static const int64_t k_batches[] = {1, 7, 0};
static const int64_t k_rows[] = {0, 1, 1001};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef void (*case_fn)(tdm_runtime *rt, int64_t rows, int64_t batch, void *ctx);

static void for_each_case(case_fn fn, void *ctx)
{
    for (size_t t = 0; t < COUNT(k_threads); t++) {
        tdm_runtime *rt = tdm_test_open(k_threads[t]);
        assert_int_equal(tdm_runtime_threads(rt), k_threads[t]);
        for (size_t b = 0; b < COUNT(k_batches); b++)
            for (size_t r = 0; r < COUNT(k_rows); r++)
                fn(rt, k_rows[r], k_batches[b], ctx);
        tdm_test_close(rt);
    }
}

/* Tolerances. The CPU runs the same libm as the references here, and -std=c11 keeps a*b+c
 * unfused, so the f64 elementwise results are usually bit-identical; a few ulp of slack keeps
 * the tests honest if the compiler or libm changes. f32 references are computed in double. */
#define REL_F64 4e-15
#define REL_F32 1e-6

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
    const char *entries[] = {"tdm_exp_sinh_f32",    "tdm_exp_sinh_f64", "tdm_axpy_f64",
                             "tdm_scale_shift_f32", "tdm_sum_f64",      "tdm_mean_f32",
                             "tdm_sumsq_f64",       "tdm_normalize_u8", "tdm_pi_leibniz",
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

static const tdm_normalize_params k_norm = {
    {0.485f, 0.456f, 0.406f, 0.5f}, {0.229f, 0.224f, 0.225f, 0.25f}, 0, 0};

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

static void fill_u8(tdm_tensor *t, int seed)
{
    uint8_t *p = tdm_tensor_data(t);
    int64_t n = tdm_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)(value(i + seed, 0.0, 256.0));
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

static void test_exp_sinh_bad_dtype(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_dtype bad[] = {TDM_U8, TDM_I32, TDM_I64, TDM_F16, TDM_BF16};
    tdm_tensor *y = tensor2(rt, TDM_F64, 4, 3);
    for (size_t i = 0; i < COUNT(bad); i++) {
        tdm_tensor *x = tensor2(rt, bad[i], 4, 3);
        map_fails(rt, "exp_sinh", &x, 1, y, NULL, 0, TDM_EDTYPE, "expected f32 or f64");
        tdm_tensor_release(x);
    }
    /* an output whose dtype is not the input's */
    tdm_tensor *x = tensor2(rt, TDM_F32, 4, 3);
    fill_float(x, 0, 1);
    map_fails(rt, "exp_sinh", &x, 1, y, NULL, 0, TDM_EDTYPE, NULL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_exp_sinh_bad_shape(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = tensor2(rt, TDM_F64, 4, 3), *y = tensor2(rt, TDM_F64, 4, 2);
    fill_float(x, 0, 1);
    map_fails(rt, "exp_sinh", &x, 1, y, NULL, 0, TDM_ESHAPE, NULL);
    tdm_tensor_release(y);
    y = tensor1(rt, TDM_F64, 12); /* same element count, other shape */
    map_fails(rt, "exp_sinh", &x, 1, y, NULL, 0, TDM_ESHAPE, NULL);
    tdm_tensor_release(y);
    tdm_tensor_release(x);
    tdm_test_close(rt);
}

/* exp_sinh takes no parameters; axpy / scale_shift / normalize_u8 / pi_leibniz need theirs
 * exactly. */
static void test_bad_params_size(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *x = tensor1(rt, TDM_F64, 4), *y = tensor1(rt, TDM_F64, 4);
    double d[4] = {1, 2, 3, 4};
    map_fails(rt, "exp_sinh", &x, 1, y, d, sizeof(double), TDM_EINVAL, NULL);
    map_fails(rt, "sum", &x, 1, y, d, sizeof(double), TDM_EINVAL, NULL);
    tdm_tensor *in[2] = {x, x};
    map_fails(rt, "axpy", in, 2, y, NULL, 0, TDM_EINVAL, NULL);
    map_fails(rt, "axpy", in, 2, y, d, 2 * sizeof(double), TDM_EINVAL, NULL);
    map_fails(rt, "scale_shift", &x, 1, y, d, sizeof(double), TDM_EINVAL, NULL);
    map_fails(rt, "pi_leibniz", NULL, 0, y, d, 2 * sizeof(double), TDM_EINVAL, NULL);
    map_fails(rt, "pi_leibniz", NULL, 0, y, NULL, 0, TDM_EINVAL, NULL);
    int64_t xs[4] = {4, 2, 2, 3}, ys[4] = {4, 3, 2, 2};
    tdm_tensor *img = tensor(rt, TDM_U8, 4, xs), *out = tensor(rt, TDM_F32, 4, ys);
    fill_u8(img, 0);
    map_fails(rt, "normalize_u8", &img, 1, out, &k_norm, sizeof k_norm - 4, TDM_EINVAL, NULL);
    map_fails(rt, "normalize_u8", &img, 1, out, NULL, 0, TDM_EINVAL, NULL);
    tdm_tensor_release(img);
    tdm_tensor_release(out);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_axpy_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    tdm_axpy_params p = {2.0};
    tdm_tensor *x = tensor2(rt, TDM_F64, 4, 3), *z = tensor2(rt, TDM_F64, 4, 3);
    fill_float(x, 0, 1);
    /* y of another dtype */
    tdm_tensor *y = tensor2(rt, TDM_F32, 4, 3);
    tdm_tensor *in[2] = {x, y};
    map_fails(rt, "axpy", in, 2, z, &p, sizeof p, TDM_EDTYPE, "must match");
    tdm_tensor_release(y);
    /* y of another shape, same rows */
    y = tensor2(rt, TDM_F64, 4, 4);
    in[1] = y;
    map_fails(rt, "axpy", in, 2, z, &p, sizeof p, TDM_ESHAPE, "must match");
    tdm_tensor_release(y);
    /* integer x and y */
    tdm_tensor *xi = tensor2(rt, TDM_I32, 4, 3), *yi = tensor2(rt, TDM_I32, 4, 3);
    tdm_tensor *ini[2] = {xi, yi};
    map_fails(rt, "axpy", ini, 2, z, &p, sizeof p, TDM_EDTYPE, "expected f32 or f64");
    tdm_tensor_release(xi);
    tdm_tensor_release(yi);
    /* z of the wrong shape */
    y = tensor2(rt, TDM_F64, 4, 3);
    in[1] = y;
    tdm_tensor *zb = tensor2(rt, TDM_F64, 4, 1);
    map_fails(rt, "axpy", in, 2, zb, &p, sizeof p, TDM_ESHAPE, NULL);
    tdm_tensor_release(zb);
    /* one input only */
    map_fails(rt, "axpy", in, 1, z, &p, sizeof p, TDM_EINVAL, NULL);
    tdm_tensor_release(y);
    tdm_tensor_release(x);
    tdm_tensor_release(z);
    tdm_test_close(rt);
}

static void test_scale_shift_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_scale_shift_params p = {2.0, 1.0};
    tdm_tensor *x = tensor2(rt, TDM_U8, 4, 3), *y = tensor2(rt, TDM_F32, 4, 3);
    map_fails(rt, "scale_shift", &x, 1, y, &p, sizeof p, TDM_EDTYPE, "expected f32 or f64");
    tdm_tensor_release(x);
    x = tensor2(rt, TDM_F32, 4, 4);
    fill_float(x, 0, 1);
    map_fails(rt, "scale_shift", &x, 1, y, &p, sizeof p, TDM_ESHAPE, NULL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_reduce_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    const char *ks[] = {"sum", "mean", "sumsq"};
    for (size_t k = 0; k < COUNT(ks); k++) {
        tdm_tensor *xu = tensor2(rt, TDM_U8, 4, 3), *y = tensor1(rt, TDM_F64, 4);
        map_fails(rt, ks[k], &xu, 1, y, NULL, 0, TDM_EDTYPE, "expected f32 or f64");
        tdm_tensor_release(xu);
        tdm_tensor *x = tensor2(rt, TDM_F32, 4, 3);
        fill_float(x, 0, 1);
        map_fails(rt, ks[k], &x, 1, y, NULL, 0, TDM_EDTYPE, NULL); /* f64 out of f32 in */
        tdm_tensor *y2 = tensor2(rt, TDM_F32, 4, 1);               /* [N, 1] is not [N] */
        map_fails(rt, ks[k], &x, 1, y2, NULL, 0, TDM_ESHAPE, NULL);
        tdm_tensor *y3 = tensor1(rt, TDM_F32, 5); /* other row count */
        map_fails(rt, ks[k], &x, 1, y3, NULL, 0, TDM_ESHAPE, NULL);
        tdm_tensor_release(x);
        tdm_tensor_release(y);
        tdm_tensor_release(y2);
        tdm_tensor_release(y3);
    }
    tdm_test_close(rt);
}

static void test_normalize_u8_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    int64_t xs[4] = {4, 2, 3, 3}, ys[4] = {4, 3, 2, 3};
    tdm_tensor *x = tensor(rt, TDM_U8, 4, xs), *y = tensor(rt, TDM_F32, 4, ys);
    fill_u8(x, 3);
    tdm_normalize_params p = k_norm;

    /* x not u8 */
    tdm_tensor *xf = tensor(rt, TDM_F32, 4, xs);
    map_fails(rt, "normalize_u8", &xf, 1, y, &p, sizeof p, TDM_EDTYPE, "expected u8");
    tdm_tensor_release(xf);
    /* x not 4-D */
    int64_t x3s[3] = {4, 6, 3};
    tdm_tensor *x3 = tensor(rt, TDM_U8, 3, x3s);
    map_fails(rt, "normalize_u8", &x3, 1, y, &p, sizeof p, TDM_ESHAPE, "[N, H, W, C]");
    tdm_tensor_release(x3);
    /* 5 channels */
    int64_t x5s[4] = {4, 2, 3, 5}, y5s[4] = {4, 5, 2, 3};
    tdm_tensor *x5 = tensor(rt, TDM_U8, 4, x5s), *y5 = tensor(rt, TDM_F32, 4, y5s);
    map_fails(rt, "normalize_u8", &x5, 1, y5, &p, sizeof p, TDM_ESHAPE, "channels");
    tdm_tensor_release(x5);
    tdm_tensor_release(y5);
    /* output laid out HWC instead of CHW, or of another dtype */
    tdm_tensor *yh = tensor(rt, TDM_F32, 4, xs);
    map_fails(rt, "normalize_u8", &x, 1, yh, &p, sizeof p, TDM_ESHAPE, NULL);
    tdm_tensor_release(yh);
    tdm_tensor *yd = tensor(rt, TDM_F64, 4, ys);
    map_fails(rt, "normalize_u8", &x, 1, yd, &p, sizeof p, TDM_EDTYPE, NULL);
    tdm_tensor_release(yd);
    /* flags of the wrong dtype or shape */
    tdm_tensor *fi = tensor1(rt, TDM_I32, 4);
    tdm_tensor *in[2] = {x, fi};
    map_fails(rt, "normalize_u8", in, 2, y, &p, sizeof p, TDM_EDTYPE, "flip flags");
    tdm_tensor_release(fi);
    tdm_tensor *f2 = tensor2(rt, TDM_U8, 4, 1);
    in[1] = f2;
    map_fails(rt, "normalize_u8", in, 2, y, &p, sizeof p, TDM_ESHAPE, "flip flags");
    tdm_tensor_release(f2);
    /* bad parameter values */
    p = k_norm;
    p.std[1] = 0.0f;
    map_fails(rt, "normalize_u8", &x, 1, y, &p, sizeof p, TDM_EINVAL, "std[1]");
    p = k_norm;
    p.std[2] = NAN;
    map_fails(rt, "normalize_u8", &x, 1, y, &p, sizeof p, TDM_EINVAL, "std[2]");
    p = k_norm;
    p.mean[0] = INFINITY;
    map_fails(rt, "normalize_u8", &x, 1, y, &p, sizeof p, TDM_EINVAL, "mean[0]");
    p = k_norm;
    p.flip = 2;
    map_fails(rt, "normalize_u8", &x, 1, y, &p, sizeof p, TDM_EINVAL, "flip");
    p.flip = -1;
    map_fails(rt, "normalize_u8", &x, 1, y, &p, sizeof p, TDM_EINVAL, "flip");
    /* flip = 1 and flags at once is ambiguous */
    tdm_tensor *f = tensor1(rt, TDM_U8, 4);
    memset(tdm_tensor_data(f), 0, 4);
    p = k_norm;
    p.flip = 1;
    in[1] = f;
    map_fails(rt, "normalize_u8", in, 2, y, &p, sizeof p, TDM_EINVAL, "one or the other");
    /* a channel the image does not have is not checked: std[3] = 0 is fine for C = 3 */
    p = k_norm;
    p.std[3] = 0.0f;
    map_ok(rt, "normalize_u8", &x, 1, y, &p, sizeof p, 0);
    tdm_tensor_release(f);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_pi_leibniz_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_pi_params p = {100};
    tdm_tensor *yf = tensor1(rt, TDM_F32, 4);
    map_fails(rt, "pi_leibniz", NULL, 0, yf, &p, sizeof p, TDM_EDTYPE, NULL);
    tdm_tensor_release(yf);
    tdm_tensor *y2 = tensor2(rt, TDM_F64, 4, 2);
    map_fails(rt, "pi_leibniz", NULL, 0, y2, &p, sizeof p, TDM_ESHAPE, NULL);
    tdm_tensor_release(y2);
    tdm_tensor *y = tensor1(rt, TDM_F64, 4);
    p.terms = -1;
    map_fails(rt, "pi_leibniz", NULL, 0, y, &p, sizeof p, TDM_EINVAL, "terms is -1");
    p.terms = 10;
    tdm_tensor *td = tensor1(rt, TDM_F64, 4);
    map_fails(rt, "pi_leibniz", &td, 1, y, &p, sizeof p, TDM_EDTYPE, "expected i64");
    tdm_tensor_release(td);
    tdm_tensor *t2 = tensor2(rt, TDM_I64, 4, 1);
    memset(tdm_tensor_data(t2), 0, 4 * sizeof(int64_t));
    map_fails(rt, "pi_leibniz", &t2, 1, y, &p, sizeof p, TDM_ESHAPE, "expected [N]");
    tdm_tensor_release(t2);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void test_unknown_kernel(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *x = tensor1(rt, TDM_F64, 4), *y = tensor1(rt, TDM_F64, 4);
    map_fails(rt, "exp_sinh2", &x, 1, y, NULL, 0, TDM_ENOTFOUND, "exp_sinh2");
    map_fails(rt, "", &x, 1, y, NULL, 0, TDM_ENOTFOUND, NULL);
    map_fails(rt, "EXP_SINH", &x, 1, y, NULL, 0, TDM_ENOTFOUND, NULL); /* names are exact */
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* ---- user kernels ---------------------------------------------------------------------------- */

static int square_cpu(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    int64_t n = (a->end - a->begin) * a->in_row_elems[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * x[i];
    return 0;
}

static int square_infer(const tdm_tensor *const *in, int n_in, const void *params,
                        size_t params_size, tdm_tensor_desc *out, int n_out, char *msg,
                        size_t msg_len)
{
    (void)n_in, (void)params, (void)params_size, (void)n_out;
    if (tdm_tensor_dtype(in[0]) != TDM_F64) {
        snprintf(msg, msg_len, "square wants f64");
        return TDM_EDTYPE;
    }
    out[0].dtype = TDM_F64;
    out[0].ndim = tdm_tensor_ndim(in[0]);
    memcpy(out[0].shape, tdm_tensor_shape(in[0]), sizeof out[0].shape);
    return 0;
}

/* No infer: writes each row's index, so the batch bounds are checked too. */
static int row_index_cpu(const tdm_kernel_args *a)
{
    int64_t *y = a->out[0];
    for (int64_t i = a->begin; i < a->end; i++)
        y[i - a->begin] = i * 10 + a->n_in;
    return 0;
}

static void test_user_cpu_kernel(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(3);
    int before = tdm_kernel_count(rt);
    tdm_kernel_def d = TDM_KERNEL_DEF_INIT;
    d.name = "user.square_v1";
    d.n_in_min = d.n_in_max = 1;
    d.n_out = 1;
    d.infer = square_infer;
    d.cpu = square_cpu;
    assert_int_equal(tdm_kernel_register(rt, &d), 0);
    assert_true(tdm_kernel_exists(rt, "user.square_v1"));
    assert_int_equal(tdm_kernel_count(rt), before + 1);

    tdm_tensor *x = tensor2(rt, TDM_F64, 1001, 2), *y = tensor2(rt, TDM_F64, 1001, 2);
    fill_float(x, -3, 3);
    for (size_t b = 0; b < COUNT(k_batches); b++) {
        fill_sentinel(y);
        map_ok(rt, "user.square_v1", &x, 1, y, NULL, 0, k_batches[b]);
        for (int64_t i = 0; i < 2002; i++)
            check_near("user.square_v1", i, get(y, i), get(x, i) * get(x, i), 0.0, 0.0);
    }
    tdm_tensor *xf = tensor2(rt, TDM_F32, 1001, 2);
    map_fails(rt, "user.square_v1", &xf, 1, y, NULL, 0, TDM_EDTYPE, "square wants f64");
    tdm_tensor_release(xf);

    d = (tdm_kernel_def)TDM_KERNEL_DEF_INIT;
    d.name = "row_index";
    d.n_in_min = 0;
    d.n_in_max = 1;
    d.n_out = 1;
    d.cpu = row_index_cpu;
    assert_int_equal(tdm_kernel_register(rt, &d), 0);
    tdm_tensor *r = tensor1(rt, TDM_I64, 1001);
    map_ok(rt, "row_index", NULL, 0, r, NULL, 0, 7);
    for (int64_t i = 0; i < 1001; i++)
        assert_int_equal(((int64_t *)tdm_tensor_data(r))[i], i * 10);
    map_ok(rt, "row_index", &x, 1, r, NULL, 0, 0);
    for (int64_t i = 0; i < 1001; i++)
        assert_int_equal(((int64_t *)tdm_tensor_data(r))[i], i * 10 + 1);
    tdm_tensor_release(r);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

/* A kernel with only device source registers, but the CPU cannot run it. */
static void test_source_only_kernel_needs_device(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_kernel_def d = TDM_KERNEL_DEF_INIT;
    d.name = "device_only";
    d.n_in_min = d.n_in_max = 1;
    d.n_out = 1;
    d.source = "TDM_KERNEL tdm_device_only(TDM_GLOBAL float *x) { }";
    assert_int_equal(tdm_kernel_register(rt, &d), 0);
    tdm_tensor *x = tensor1(rt, TDM_F32, 3), *y = tensor1(rt, TDM_F32, 3);
    fill_sentinel(y);
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = TDM_POLICY_CPU;
    tdm_tensor *outs[1] = {y};
    assert_int_equal(tdm_map(rt, "device_only", &x, 1, outs, 1, NULL, 0, &o, NULL), TDM_ENODEV);
    assert_untouched(y);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
}

static void expect_register(tdm_runtime *rt, const tdm_kernel_def *d, int code)
{
    int n = tdm_kernel_count(rt);
    int rc = tdm_kernel_register(rt, d);
    if (rc != code)
        fail_msg("tdm_kernel_register(%s): %s (%s), expected %s", d && d->name ? d->name : "?",
                 tdm_status_name(rc), tdm_errmsg(rt), tdm_status_name(code));
    if (code != 0) {
        assert_int_equal(tdm_kernel_count(rt), n);
        assert_true(tdm_errmsg(rt)[0] != '\0');
    }
}

static void test_register_errors(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_kernel_def good = TDM_KERNEL_DEF_INIT;
    good.name = "good";
    good.n_in_min = good.n_in_max = 1;
    good.n_out = 1;
    good.cpu = square_cpu;

    assert_int_equal(tdm_kernel_register(NULL, &good), TDM_EINVAL);
    expect_register(rt, NULL, TDM_EINVAL);

    /* a built-in's name is taken, and so is a name once registered */
    tdm_kernel_def d = good;
    d.name = "exp_sinh";
    expect_register(rt, &d, TDM_EEXIST);
    expect_register(rt, &good, 0);
    expect_register(rt, &good, TDM_EEXIST);

    /* names: 1..63 characters of [A-Za-z0-9_.] */
    char long_name[65];
    memset(long_name, 'k', 64);
    long_name[64] = '\0';
    const char *bad_names[] = {"", "has space", "a/b", "tab\tname", "dash-name", "é", long_name};
    for (size_t i = 0; i < COUNT(bad_names); i++) {
        d = good;
        d.name = bad_names[i];
        expect_register(rt, &d, TDM_EINVAL);
    }
    d = good;
    d.name = NULL;
    expect_register(rt, &d, TDM_EINVAL);
    long_name[63] = '\0'; /* 63 is the longest allowed */
    d.name = long_name;
    expect_register(rt, &d, 0);
    assert_true(tdm_kernel_exists(rt, long_name));

    /* no implementation at all */
    d = good;
    d.name = "nothing_to_run";
    d.cpu = NULL;
    d.source = NULL;
    expect_register(rt, &d, TDM_EINVAL);
    assert_false(tdm_kernel_exists(rt, "nothing_to_run"));

    /* struct size / version, argument counts */
    d = good;
    d.name = "bad_header";
    d.size = 8;
    expect_register(rt, &d, TDM_EINVAL);
    d.size = sizeof d;
    d.version = 99;
    expect_register(rt, &d, TDM_EINVAL);
    d = good;
    d.name = "bad_counts";
    d.n_in_min = 2;
    d.n_in_max = 1;
    expect_register(rt, &d, TDM_EINVAL);
    d.n_in_min = -1;
    expect_register(rt, &d, TDM_EINVAL);
    assert_false(tdm_kernel_exists(rt, "bad_counts"));

    /* the definition is copied: changing the caller's strings later changes nothing */
    char name[16] = "copied";
    d = good;
    d.name = name;
    expect_register(rt, &d, 0);
    strcpy(name, "changed");
    assert_true(tdm_kernel_exists(rt, "copied"));
    assert_false(tdm_kernel_exists(rt, "changed"));
    tdm_test_close(rt);
}

/* tdm_kernel_count / tdm_kernel_name enumerate what tdm_kernel_exists finds, in registration
 * order, with names that stay put while more kernels are registered. */
static void test_kernel_names(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    const char *builtins[] = {"exp_sinh", "axpy",  "scale_shift",  "sum",
                              "mean",     "sumsq", "normalize_u8", "pi_leibniz"};
    int n = tdm_kernel_count(rt);
    assert_true(n >= (int)COUNT(builtins));
    const char **names = calloc((size_t)n, sizeof *names);
    assert_non_null(names);
    for (int i = 0; i < n; i++) {
        names[i] = tdm_kernel_name(rt, i);
        assert_non_null(names[i]);
        assert_true(tdm_kernel_exists(rt, names[i]));
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                fail_msg("kernel %s listed at %d and %d", names[i], j, i);
    }
    for (size_t b = 0; b < COUNT(builtins); b++) {
        int found = 0;
        for (int i = 0; i < n; i++)
            found += strcmp(names[i], builtins[b]) == 0;
        if (found != 1)
            fail_msg("built-in kernel %s listed %d times", builtins[b], found);
    }

    /* A new kernel is appended; the earlier names keep their index and their pointer. */
    tdm_kernel_def d = TDM_KERNEL_DEF_INIT;
    d.name = "user.listed_last";
    d.n_in_min = d.n_in_max = 1;
    d.n_out = 1;
    d.cpu = square_cpu;
    assert_int_equal(tdm_kernel_register(rt, &d), 0);
    assert_int_equal(tdm_kernel_count(rt), n + 1);
    assert_string_equal(tdm_kernel_name(rt, n), "user.listed_last");
    assert_ptr_not_equal(tdm_kernel_name(rt, n), d.name); /* a copy, owned by the runtime */
    for (int i = 0; i < n; i++)
        assert_ptr_equal(tdm_kernel_name(rt, i), names[i]);
    assert_null(tdm_kernel_name(rt, n + 1));
    free(names);
    tdm_test_close(rt);
}

/* Bad arguments: documented results, never a crash, never a negative count. */
static void test_kernel_lookup_bad_args(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int n = tdm_kernel_count(rt);
    assert_true(n > 0);

    assert_int_equal(tdm_kernel_count(NULL), 0);

    assert_int_equal(tdm_kernel_exists(NULL, "sum"), 0);
    assert_int_equal(tdm_kernel_exists(NULL, NULL), 0);
    assert_int_equal(tdm_kernel_exists(rt, NULL), 0);
    assert_int_equal(tdm_kernel_exists(rt, ""), 0);
    assert_int_equal(tdm_kernel_exists(rt, "no_such_kernel"), 0);
    assert_int_equal(tdm_kernel_exists(rt, "sum"), 1);

    assert_null(tdm_kernel_name(NULL, 0));
    assert_null(tdm_kernel_name(NULL, -1));
    assert_null(tdm_kernel_name(rt, -1));
    assert_null(tdm_kernel_name(rt, INT_MIN));
    assert_null(tdm_kernel_name(rt, n));
    assert_null(tdm_kernel_name(rt, INT_MAX));
    assert_non_null(tdm_kernel_name(rt, 0));
    assert_non_null(tdm_kernel_name(rt, n - 1));

    /* None of these is an error a message reports: the last message is untouched. */
    assert_string_equal(tdm_errmsg(rt), "");
    assert_int_equal(tdm_kernel_count(rt), n);
    tdm_test_close(rt);
}

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
        cmocka_unit_test(test_exp_sinh_bad_dtype),
        cmocka_unit_test(test_exp_sinh_bad_shape),
        cmocka_unit_test(test_bad_params_size),
        cmocka_unit_test(test_axpy_bad_args),
        cmocka_unit_test(test_scale_shift_bad_args),
        cmocka_unit_test(test_reduce_bad_args),
        cmocka_unit_test(test_normalize_u8_bad_args),
        cmocka_unit_test(test_pi_leibniz_bad_args),
        cmocka_unit_test(test_unknown_kernel),
        cmocka_unit_test(test_user_cpu_kernel),
        cmocka_unit_test(test_source_only_kernel_needs_device),
        cmocka_unit_test(test_register_errors),
        cmocka_unit_test(test_kernel_names),
        cmocka_unit_test(test_kernel_lookup_bad_args),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("kernels", tests);
}
