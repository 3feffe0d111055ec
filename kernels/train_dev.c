/* How the training kernels launch on a device (argument order as documented at the top of
 * train_kernels.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

tdm_kernel_dev_fn tdm__train_dev_fn(const char *name);

static void arg(tdm_dev_launch *l, tdm_dev_arg_kind kind, int index)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->index = index;
    if (kind == TDM_DEV_ARG_BEGIN || kind == TDM_DEV_ARG_END || kind == TDM_DEV_ARG_ROW0)
        a->size = 8;
}

static void val(tdm_dev_launch *l, const void *v, uint32_t size)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = TDM_DEV_ARG_VALUE;
    a->size = size;
    memcpy(a->value, v, size);
}

static void i64(tdm_dev_launch *l, int64_t v)
{
    val(l, &v, sizeof v);
}

static void f32(tdm_dev_launch *l, float v)
{
    val(l, &v, sizeof v);
}

static void range(tdm_dev_launch *l)
{
    arg(l, TDM_DEV_ARG_BEGIN, 0);
    arg(l, TDM_DEV_ARG_END, 0);
}

static int dev_linear(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t K = tdm_tensor_dim(in[0], 1), N = tdm_tensor_dim(in[1], 1);
    int32_t relu = ((const tdm_linear_params *)params)->relu != 0;
    snprintf(l->entry, sizeof l->entry, "tdm_linear_f32");
    arg(l, TDM_DEV_ARG_INPUT, 0);
    arg(l, TDM_DEV_ARG_INPUT, 1);
    arg(l, n_in > 2 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 2);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, K);
    i64(l, N);
    val(l, &relu, sizeof relu);
    range(l);
    l->items_per_row = N;
    return 0;
}

static int dev_grad_x(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t K = tdm_tensor_dim(in[1], 0), N = tdm_tensor_dim(in[1], 1);
    snprintf(l->entry, sizeof l->entry, "tdm_linear_grad_x_f32");
    arg(l, TDM_DEV_ARG_INPUT, 0);
    arg(l, TDM_DEV_ARG_INPUT, 1);
    arg(l, n_in > 2 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 2);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, K);
    i64(l, N);
    range(l);
    l->items_per_row = K;
    return 0;
}

static int dev_grad_w(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t M = tdm_tensor_dim(in[0], 0), K = tdm_tensor_dim(in[0], 1),
            N = tdm_tensor_dim(in[1], 1);
    snprintf(l->entry, sizeof l->entry, "tdm_linear_grad_w_f32");
    arg(l, TDM_DEV_ARG_INPUT, 0);
    arg(l, TDM_DEV_ARG_INPUT, 1);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, M);
    i64(l, K);
    i64(l, N);
    arg(l, TDM_DEV_ARG_ROW0, 0);
    range(l);
    l->items_per_row = N;
    return 0;
}

static int dev_colsum(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_colsum_f32");
    arg(l, TDM_DEV_ARG_INPUT, 0);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, tdm_tensor_dim(in[0], 0));
    i64(l, tdm_tensor_dim(in[0], 1));
    arg(l, TDM_DEV_ARG_ROW0, 0);
    range(l);
    l->items_per_row = 1;
    return 0;
}

static int dev_xent(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_softmax_xent_f32");
    arg(l, TDM_DEV_ARG_INPUT, 0);
    arg(l, TDM_DEV_ARG_INPUT, 1);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    arg(l, TDM_DEV_ARG_OUTPUT, 1);
    arg(l, TDM_DEV_ARG_OUTPUT, 2);
    i64(l, tdm_tensor_dim(in[0], 1));
    f32(l, ((const tdm_softmax_xent_params *)params)->grad_scale);
    range(l);
    l->items_per_row = 1;
    return 0;
}

static int64_t row_elems(const tdm_tensor *t)
{
    int64_t e = 1;
    for (int i = 1; i < tdm_tensor_ndim(t); i++)
        e *= tdm_tensor_dim(t, i);
    return e;
}

static int dev_sgd(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                   tdm_dev_launch *l, char *msg, size_t len)
{
    const tdm_sgd_params *p = params;
    snprintf(l->entry, sizeof l->entry, "tdm_sgd_momentum_f32");
    for (int i = 0; i < 3; i++)
        arg(l, TDM_DEV_ARG_INPUT, i);
    arg(l, TDM_DEV_ARG_OUTPUT, 0);
    arg(l, TDM_DEV_ARG_OUTPUT, 1);
    f32(l, p->lr);
    f32(l, p->momentum);
    f32(l, p->weight_decay);
    range(l);
    l->items_per_row = row_elems(in[0]);
    return 0;
}

static int dev_adam(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    const tdm_adam_params *p = params;
    snprintf(l->entry, sizeof l->entry, "tdm_adam_f32");
    for (int i = 0; i < 4; i++)
        arg(l, TDM_DEV_ARG_INPUT, i);
    for (int i = 0; i < 3; i++)
        arg(l, TDM_DEV_ARG_OUTPUT, i);
    f32(l, p->lr);
    f32(l, p->beta1);
    f32(l, p->beta2);
    f32(l, p->eps);
    f32(l, p->weight_decay);
    f32(l, (float)(1.0 / (1.0 - pow(p->beta1, p->step))));
    f32(l, (float)(1.0 / (1.0 - pow(p->beta2, p->step))));
    range(l);
    l->items_per_row = row_elems(in[0]);
    return 0;
}

tdm_kernel_dev_fn tdm__train_dev_fn(const char *name)
{
    static const struct {
        const char *name;
        tdm_kernel_dev_fn fn;
    } table[] = {
        {"linear", dev_linear},   {"linear_grad_x", dev_grad_x}, {"linear_grad_w", dev_grad_w},
        {"colsum", dev_colsum},   {"softmax_xent", dev_xent},    {"sgd_momentum", dev_sgd},
        {"adam", dev_adam},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].fn;
    return NULL;
}
