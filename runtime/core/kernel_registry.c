/* SPDX-License-Identifier: MIT */
/* The per-runtime registry of named kernels. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

extern const char tdm__builtin_kernel_source[];

/* The text a device backend builds for a kernel. A user kernel's source is compiled after the
 * dialect header and the built-in kernels, so it can use the TDM_* macros and the tdm_k_*
 * device functions; #line makes compiler messages point into the user's own text. */
static char *device_text(const tdm_kernel_def *def)
{
    if (def->source == tdm__builtin_kernel_source)
        return strdup(def->source);
    size_t a = strlen(tdm__builtin_kernel_source), b = strlen(def->source);
    char head[160];
    int h = snprintf(head, sizeof head, "\n#line 1 \"%s\"\n", def->name);
    char *t = malloc(a + (size_t)h + b + 1);
    if (!t)
        return NULL;
    memcpy(t, tdm__builtin_kernel_source, a);
    memcpy(t + a, head, (size_t)h);
    memcpy(t + a + (size_t)h, def->source, b + 1);
    return t;
}

static const tdm__kernel *find_locked(const tdm_runtime *rt, const char *name)
{
    for (int i = 0; i < rt->n_kernels; i++)
        if (strcmp(rt->kernels[i]->name_buf, name) == 0)
            return rt->kernels[i];
    return NULL;
}

const tdm__kernel *tdm__kernel_find(const tdm_runtime *rt, const char *name)
{
    tdm_runtime *mrt = (tdm_runtime *)rt; /* the mutex is not part of the logical state */
    pthread_mutex_lock(&mrt->mu);
    const tdm__kernel *k = find_locked(rt, name);
    pthread_mutex_unlock(&mrt->mu);
    return k;
}

int tdm_kernel_register(tdm_runtime *rt, const tdm_kernel_def *def)
{
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "tdm_kernel_register: runtime is NULL");
    if (!def)
        return tdm__err(rt, TDM_EINVAL, "tdm_kernel_register: def is NULL");
    /* (a def from before its `work` field, exactly that size: accepted, work NULL; a size
     * inside `work` would copy part of a pointer) */
    if ((def->size != offsetof(tdm_kernel_def, work) && def->size < sizeof(tdm_kernel_def)) ||
        def->version != TDM_KERNEL_DEF_VERSION)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register: def size %u / version %u not supported (start "
                        "from TDM_KERNEL_DEF_INIT)",
                        def->size, def->version);
    if (!def->name || !valid_name(def->name))
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register: name must be 1..63 characters of [A-Za-z0-9_.]");
    if (def->n_in_min < 0 || def->n_in_max < def->n_in_min || def->n_out < 0 ||
        def->n_in_max + def->n_out > 16 || def->n_in_max + def->n_out == 0)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register(%s): argument counts in [%d, %d], out %d are "
                        "invalid (at most 16 tensors, at least 1)",
                        def->name, def->n_in_min, def->n_in_max, def->n_out);
    if (def->n_in_max < 32 && (def->whole_inputs >> def->n_in_max) != 0)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register(%s): whole_inputs names inputs beyond n_in_max %d",
                        def->name, def->n_in_max);
    if (def->dev && !def->source)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register(%s): a device launch (dev) needs the kernel's source",
                        def->name);
    if (!def->cpu && !def->source)
        return tdm__err(rt, TDM_EINVAL,
                        "tdm_kernel_register(%s): no implementation (cpu and source are NULL)",
                        def->name);

    tdm__kernel *k = calloc(1, sizeof *k);
    if (!k)
        return tdm__err(rt, TDM_ENOMEM, "tdm_kernel_register: out of memory");
    memcpy(&k->def, def, def->size < sizeof *def ? def->size : sizeof *def);
    k->def.size = (uint32_t)sizeof k->def;
    strcpy(k->name_buf, def->name);
    k->def.name = k->name_buf;
    if (def->source) {
        k->source_copy = device_text(def);
        if (!k->source_copy)
            goto nomem;
        k->def.source = k->source_copy;
    }

    pthread_mutex_lock(&rt->mu);
    if (find_locked(rt, def->name)) {
        pthread_mutex_unlock(&rt->mu);
        free(k->source_copy);
        free(k);
        return tdm__err(rt, TDM_EEXIST, "tdm_kernel_register: a kernel named '%s' exists",
                        def->name);
    }
    if (rt->n_kernels == rt->cap_kernels) {
        int cap = rt->cap_kernels ? rt->cap_kernels * 2 : 16;
        tdm__kernel **grown = realloc(rt->kernels, (size_t)cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&rt->mu);
            goto nomem;
        }
        rt->kernels = grown;
        rt->cap_kernels = cap;
    }
    rt->kernels[rt->n_kernels++] = k;
    pthread_mutex_unlock(&rt->mu);
    return 0;

nomem:
    free(k->source_copy);
    free(k);
    return tdm__err(rt, TDM_ENOMEM, "tdm_kernel_register: out of memory");
}

void tdm__kernel_mark_builtin(tdm_runtime *rt, const char *name)
{
    pthread_mutex_lock(&rt->mu);
    tdm__kernel *k = (tdm__kernel *)find_locked(rt, name);
    if (k)
        k->builtin = true;
    pthread_mutex_unlock(&rt->mu);
}

int tdm_kernel_exists(const tdm_runtime *rt, const char *name)
{
    if (!rt || !name)
        return 0;
    return tdm__kernel_find(rt, name) != NULL;
}

int tdm_kernel_count(const tdm_runtime *rt)
{
    if (!rt)
        return 0;
    tdm_runtime *mrt = (tdm_runtime *)rt;
    pthread_mutex_lock(&mrt->mu);
    int n = rt->n_kernels;
    pthread_mutex_unlock(&mrt->mu);
    return n;
}

const char *tdm_kernel_name(const tdm_runtime *rt, int i)
{
    if (!rt || i < 0)
        return NULL;
    tdm_runtime *mrt = (tdm_runtime *)rt;
    pthread_mutex_lock(&mrt->mu);
    const char *name = i < rt->n_kernels ? rt->kernels[i]->name_buf : NULL;
    pthread_mutex_unlock(&mrt->mu);
    return name;
}

void tdm__kernel_registry_free(tdm_runtime *rt)
{
    for (int i = 0; i < rt->n_kernels; i++) {
        free(rt->kernels[i]->source_copy);
        free(rt->kernels[i]);
    }
    free(rt->kernels);
    rt->kernels = NULL;
    rt->n_kernels = rt->cap_kernels = 0;
}
