/* SPDX-License-Identifier: MIT */
/* How the training kernels launch on a device (argument order as documented at the top of
 * train_kernels.h). The three matrix products are tiled: 2-D launches in work-groups of
 * TDM_K_TILE x TDM_K_TILE, the size their entries are written for. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dev_args.h"
#include "internal.h"
#include "train_kernels.h"

tdm_kernel_dev_fn tdm__train_dev_fn(const char *name);

static void i64(tdm_dev_launch *l, int64_t v)
{
    tdm__dev_value(l, &v, sizeof v);
}

static void f32(tdm_dev_launch *l, float v)
{
    tdm__dev_value(l, &v, sizeof v);
}

/* A tiled matrix product: output rows of `cols` elements, one work item per element. */
static void tiled(tdm_dev_launch *l, int64_t cols)
{
    l->items_per_row = cols;
    l->dims = 2;
    l->local[0] = TDM_K_TILE;
    l->local[1] = TDM_K_TILE;
}

static int dev_linear(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t K = tdm_tensor_dim(in[0], 1), N = tdm_tensor_dim(in[1], 1);
    int32_t relu = ((const tdm_linear_params *)params)->relu != 0;
    snprintf(l->entry, sizeof l->entry, "tdm_linear_f32");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 1);
    tdm__dev_arg(l, n_in > 2 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 2);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, K);
    i64(l, N);
    tdm__dev_value(l, &relu, sizeof relu);
    tdm__dev_range(l);
    tiled(l, N);
    return 0;
}

static int dev_grad_x(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t K = tdm_tensor_dim(in[1], 0), N = tdm_tensor_dim(in[1], 1);
    snprintf(l->entry, sizeof l->entry, "tdm_linear_grad_x_f32");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 1);
    tdm__dev_arg(l, n_in > 2 ? TDM_DEV_ARG_INPUT : TDM_DEV_ARG_NULL, 2);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, K);
    i64(l, N);
    tdm__dev_range(l);
    tiled(l, K);
    return 0;
}

static int dev_grad_w(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    int64_t M = tdm_tensor_dim(in[0], 0), K = tdm_tensor_dim(in[0], 1),
            N = tdm_tensor_dim(in[1], 1);
    snprintf(l->entry, sizeof l->entry, "tdm_linear_grad_w_f32");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 1);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, M);
    i64(l, K);
    i64(l, N);
    tdm__dev_arg(l, TDM_DEV_ARG_ROW0, 0);
    tdm__dev_range(l);
    tiled(l, N);
    return 0;
}

static int dev_colsum(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                      tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_colsum_f32");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    i64(l, tdm_tensor_dim(in[0], 0));
    i64(l, tdm_tensor_dim(in[0], 1));
    tdm__dev_arg(l, TDM_DEV_ARG_ROW0, 0);
    tdm__dev_range(l);
    l->items_per_row = 1;
    return 0;
}

static int dev_xent(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_softmax_xent_f32");
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_INPUT, 1);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 1);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 2);
    i64(l, tdm_tensor_dim(in[0], 1));
    f32(l, ((const tdm_softmax_xent_params *)params)->grad_scale);
    tdm__dev_range(l);
    l->items_per_row = 1;
    return 0;
}

static int dev_sgd(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                   tdm_dev_launch *l, char *msg, size_t len)
{
    const tdm_sgd_params *p = params;
    snprintf(l->entry, sizeof l->entry, "tdm_sgd_momentum_f32");
    for (int i = 0; i < 3; i++)
        tdm__dev_arg(l, TDM_DEV_ARG_INPUT, i);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, 1);
    f32(l, p->lr);
    f32(l, p->momentum);
    f32(l, p->weight_decay);
    tdm__dev_range(l);
    l->items_per_row = tdm__row_elems(in[0]);
    return 0;
}

static int dev_adam(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                    tdm_dev_launch *l, char *msg, size_t len)
{
    const tdm_adam_params *p = params;
    snprintf(l->entry, sizeof l->entry, "tdm_adam_f32");
    for (int i = 0; i < 4; i++)
        tdm__dev_arg(l, TDM_DEV_ARG_INPUT, i);
    for (int i = 0; i < 3; i++)
        tdm__dev_arg(l, TDM_DEV_ARG_OUTPUT, i);
    f32(l, p->lr);
    f32(l, p->beta1);
    f32(l, p->beta2);
    f32(l, p->eps);
    f32(l, p->weight_decay);
    f32(l, (float)(1.0 / (1.0 - pow(p->beta1, p->step))));
    f32(l, (float)(1.0 / (1.0 - pow(p->beta2, p->step))));
    tdm__dev_range(l);
    l->items_per_row = tdm__row_elems(in[0]);
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
