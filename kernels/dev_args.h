/* SPDX-License-Identifier: MIT */
/* tandem — building a tdm_dev_launch: the argument helpers shared by the built-in kernels'
 * device descriptions (builtin_dev.c, train_dev.c). Not API. */
#ifndef TANDEM_DEV_ARGS_H
#define TANDEM_DEV_ARGS_H

#include <string.h>

#include "internal.h"

/* A tensor, NULL, begin, end or row0 argument (index: which input/output). */
static inline void tdm__dev_arg(tdm_dev_launch *l, tdm_dev_arg_kind kind, int index)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->index = index;
    if (kind == TDM_DEV_ARG_BEGIN || kind == TDM_DEV_ARG_END || kind == TDM_DEV_ARG_ROW0)
        a->size = 8;
}

/* `size` bytes by value. */
static inline void tdm__dev_value(tdm_dev_launch *l, const void *v, uint32_t size)
{
    tdm_dev_arg *a = &l->args[l->n_args++];
    memset(a, 0, sizeof *a);
    a->kind = TDM_DEV_ARG_VALUE;
    a->size = size;
    memcpy(a->value, v, size);
}

/* The batch's item range, last in every entry point. */
static inline void tdm__dev_range(tdm_dev_launch *l)
{
    tdm__dev_arg(l, TDM_DEV_ARG_BEGIN, 0);
    tdm__dev_arg(l, TDM_DEV_ARG_END, 0);
}

/* Elements per row (dim 0) of t. */
static inline int64_t tdm__row_elems(const tdm_tensor *t)
{
    int64_t e = 1;
    for (int i = 1; i < tdm_tensor_ndim(t); i++)
        e *= tdm_tensor_dim(t, i);
    return e;
}

#endif
