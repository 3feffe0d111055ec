/* SPDX-License-Identifier: MIT */
/* kernels: every error path of the built-ins (each leaving the output untouched), unknown
 * kernels, user kernels and their registration, kernel names and lookups. */
#include "kernels_common.h"
#include "seam.h"

#include <stddef.h>
#include <stdint.h>

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
    /* a def from before its `work` field (a program built against that header): accepted, and
     * whatever lies past its size is not read (work: NULL); a byte short of that is not */
    d = good;
    d.name = "before_work";
    d.size = (uint32_t)offsetof(tdm_kernel_def, work) - 1;
    expect_register(rt, &d, TDM_EINVAL);
    d.size = (uint32_t)offsetof(tdm_kernel_def, work) + 1; /* (inside `work`) */
    expect_register(rt, &d, TDM_EINVAL);
    d.size = (uint32_t)sizeof d - 1;
    expect_register(rt, &d, TDM_EINVAL);
    d.size = (uint32_t)offsetof(tdm_kernel_def, work);
    d.work = (tdm_kernel_work_fn)(uintptr_t)1; /* (garbage past the caller's struct) */
    expect_register(rt, &d, 0);
    assert_true(tdm_kernel_exists(rt, "before_work"));
    assert_null(tdm__kernel_def(rt, "before_work")->work);
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
