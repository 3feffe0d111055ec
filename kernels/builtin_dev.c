/* How the built-in kernels launch on a device: entry point, arguments, items per row (the
 * argument conventions are those documented at the top of builtin_kernels.h). */
#include <stdio.h>
#include <string.h>

#include "builtin_kernels.h"
#include "internal.h"

static void arg_tensor(tdm_dev_launch *l, tdm_dev_arg_kind kind, int index)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->index = index;
}

static void arg_value(tdm_dev_launch *l, const void *v, uint32_t size)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = TDM_DEV_ARG_VALUE;
    a->size = size;
    memcpy(a->value, v, size);
}

static void arg_range(tdm_dev_launch *l)
{
    arg_tensor(l, TDM_DEV_ARG_BEGIN, 0);
    l->args[l->n_args - 1].size = 8;
    arg_tensor(l, TDM_DEV_ARG_END, 0);
    l->args[l->n_args - 1].size = 8;
}

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

static int64_t row_elems(const tdm_tensor *t)
{
    int64_t e = 1;
    for (int i = 1; i < tdm_tensor_ndim(t); i++)
        e *= tdm_tensor_dim(t, i);
    return e;
}

static void put_scalar(tdm_dev_launch *l, tdm_dtype dt, double v)
{
    if (dt == TDM_F32) {
        float f = (float)v;
        arg_value(l, &f, sizeof f);
    } else {
        arg_value(l, &v, sizeof v);
    }
}

static int dev_exp_sinh(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_dev_launch *l, char *msg, size_t len)
{
    int rc = typed_entry(l, "exp_sinh", tdm_tensor_dtype(in[0]), msg, len);
    if (rc)
        return rc;
    arg_tensor(l, TDM_DEV_ARG_INPUT, 0);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    arg_range(l);
    l->items_per_row = row_elems(in[0]);
    return 0;
}

static int dev_axpy(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    tdm_dtype dt = tdm_tensor_dtype(in[0]);
    int rc = typed_entry(l, "axpy", dt, msg, len);
    if (rc)
        return rc;
    arg_tensor(l, TDM_DEV_ARG_INPUT, 0);
    arg_tensor(l, TDM_DEV_ARG_INPUT, 1);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    put_scalar(l, dt, ((const tdm_axpy_params *)params)->a);
    arg_range(l);
    l->items_per_row = row_elems(in[0]);
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
    arg_tensor(l, TDM_DEV_ARG_INPUT, 0);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    put_scalar(l, dt, p->scale);
    put_scalar(l, dt, p->shift);
    arg_range(l);
    l->items_per_row = row_elems(in[0]);
    return 0;
}

static int dev_rows(const char *name, const tdm_tensor *const *in, tdm_dev_launch *l, char *msg,
                    size_t len)
{
    int rc = typed_entry(l, name, tdm_tensor_dtype(in[0]), msg, len);
    if (rc)
        return rc;
    int64_t re = row_elems(in[0]);
    arg_tensor(l, TDM_DEV_ARG_INPUT, 0);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    arg_value(l, &re, sizeof re);
    arg_range(l);
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
    arg_tensor(l, TDM_DEV_ARG_INPUT, 0);
    arg_tensor(l, n_in > 1 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 1);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    arg_value(l, params, sizeof(tdm_normalize_params)); /* same layout as the device struct */
    arg_value(l, &H, sizeof H);
    arg_value(l, &W, sizeof W);
    arg_value(l, &C, sizeof C);
    arg_range(l);
    l->items_per_row = H; /* an item is one image row */
    return 0;
}

static int dev_pi(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                  tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t terms = ((const tdm_pi_params *)params)->terms;
    snprintf(l->entry, sizeof l->entry, "tdm_pi_leibniz");
    arg_tensor(l, n_in > 0 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 0);
    arg_tensor(l, TDM_DEV_ARG_OUTPUT, 0);
    arg_value(l, &terms, sizeof terms);
    arg_range(l);
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
