/* SPDX-License-Identifier: MIT */
/* kernels tests: the helpers shared by test_kernels.c (results) and test_kernels__errors.c
 * (error paths, registration). Static helpers: each file uses some of them. */
#ifndef TDM_KERNELS_COMMON_H
#define TDM_KERNELS_COMMON_H
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
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

/* ---- normalize_u8 ------------------------------------------------------------------------ */

static const tdm_normalize_params k_norm = {
    {0.485f, 0.456f, 0.406f, 0.5f}, {0.229f, 0.224f, 0.225f, 0.25f}, 0, 0};

static void fill_u8(tdm_tensor *t, int seed)
{
    uint8_t *p = tdm_tensor_data(t);
    int64_t n = tdm_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)(value(i + seed, 0.0, 256.0));
}

#endif
