/* SPDX-License-Identifier: MIT */
/* How the built-in kernels launch on a device: entry point, arguments, items per row (the
 * argument conventions are those documented at the top of builtin_kernels.h). */
#include <stdio.h>
#include <string.h>

#include "builtin_kernels.h"
#include "dev_args.h"
#include "internal.h"

/* "tdm_<name>_<f32|f64>" for the kernels that come in both; TDM_EDTYPE otherwise. */
static int typed_entry(tdm_dev_launch *l, const char *name, tdm_dtype dt, char *msg, size_t len)
{
    if (dt != TDM_F32 && dt != TDM_F64) {
        snprintf(msg, len, "no device entry of %s for dtype %s", name, tdm_dtype_name(dt));
        return TDM_EDTYPE;
    }
    snprintf(l->entry, sizeof l->entry, "tdm_%s_%s", name, tdm_dtype_name(dt));
    return 0;
}

static void put_scalar(tdm_dev_launch *l, tdm_dtype dt, double v)
{
    if (dt == TDM_F32) {
        float f = (float)v;
        tdm__dev_value(l, &f, sizeof f);
    } else {
        tdm__dev_value(l, &v, sizeof v);
    }
}

static int dev_exp_sinh(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_dev_launch *l, char *msg, size_t len)
{
    int rc = typed_entry(l, "exp_sinh", tdm_tensor_dtype(in[0]), msg, len);
    if (rc)
        return rc;
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_range(l);
    l->items_per_row = tdm__row_elems(in[0]);
    return 0;
}

static int dev_axpy(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    tdm_dtype dt = tdm_tensor_dtype(in[0]);
    int rc = typed_entry(l, "axpy", dt, msg, len);
    if (rc)
        return rc;
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 1);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    put_scalar(l, dt, ((const tdm_axpy_params *)params)->a);
    tdm__dev_range(l);
    l->items_per_row = tdm__row_elems(in[0]);
    return 0;
}

static int dev_scale_shift(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                           tdm_dev_launch *l, char *msg, size_t len)
{
    tdm_dtype dt = tdm_tensor_dtype(in[0]);
    int rc = typed_entry(l, "scale_shift", dt, msg, len);
    if (rc)
        return rc;
    const tdm_scale_shift_params *p = params;
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    put_scalar(l, dt, p->scale);
    put_scalar(l, dt, p->shift);
    tdm__dev_range(l);
    l->items_per_row = tdm__row_elems(in[0]);
    return 0;
}

static int dev_rows(const char *name, const tdm_tensor *const *in, tdm_dev_launch *l, char *msg,
                    size_t len)
{
    int rc = typed_entry(l, name, tdm_tensor_dtype(in[0]), msg, len);
    if (rc)
        return rc;
    int64_t re = tdm__row_elems(in[0]);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_value(l, &re, sizeof re);
    tdm__dev_range(l);
    l->items_per_row = 1;
    return 0;
}

static int dev_sum(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                   tdm_dev_launch *l, char *msg, size_t len)
{
    return dev_rows("sum", in, l, msg, len);
}

static int dev_mean(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    return dev_rows("mean", in, l, msg, len);
}

static int dev_sumsq(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                     tdm_dev_launch *l, char *msg, size_t len)
{
    return dev_rows("sumsq", in, l, msg, len);
}

static int dev_normalize(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                         tdm_dev_launch *l, char *msg, size_t len)
{
    /* x [N, H, W, C] u8 (checked by infer) */
    int64_t H = tdm_tensor_dim(in[0], 1), W = tdm_tensor_dim(in[0], 2);
    int32_t C = (int32_t)tdm_tensor_dim(in[0], 3);
    snprintf(l->entry, sizeof l->entry, "tdm_normalize_u8");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, n_in > 1 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 1);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_value(l, params, sizeof(tdm_normalize_params)); /* same layout as the device struct */
    tdm__dev_value(l, &H, sizeof H);
    tdm__dev_value(l, &W, sizeof W);
    tdm__dev_value(l, &C, sizeof C);
    tdm__dev_range(l);
    l->items_per_row = H; /* an item is one image row */
    return 0;
}

static int dev_pi(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                  tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t terms = ((const tdm_pi_params *)params)->terms;
    snprintf(l->entry, sizeof l->entry, "tdm_pi_leibniz");
    tdm__dev_arg(l, n_in > 0 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_value(l, &terms, sizeof terms);
    tdm__dev_range(l);
    l->items_per_row = 1;
    return 0;
}

tdm_kernel_dev_fn tdm__builtin_dev_fn(const char *name)
{
    static const struct {
        const char *name;
        tdm_kernel_dev_fn fn;
    } table[] = {
        {"exp_sinh", dev_exp_sinh},
        {"axpy", dev_axpy},
        {"scale_shift", dev_scale_shift},
        {"sum", dev_sum},
        {"mean", dev_mean},
        {"sumsq", dev_sumsq},
        {"normalize_u8", dev_normalize},
        {"pi_leibniz", dev_pi},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].fn;
    return NULL;
}
