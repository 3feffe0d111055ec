/* SPDX-License-Identifier: MIT */
/* The result cache: keys (xxh3-128 over the kernel, its version, the parameters, the output
 * descriptions and the inputs' dtype, shape and bytes) and their hex form. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "io/cache_internal.h"

bool tdm__cache_is_key(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 32;
}

/* ---- keys ---------------------------------------------------------------------------------- */

static void hash_u64(XXH3_state_t *s, uint64_t v)
{
    unsigned char b[8];
    tdm__put_u64(b, v);
    XXH3_128bits_update(s, b, 8);
}

/* Validates the call and computes its key and output descriptions. */
int tdm__cache_make_key(tdm_cache *c, const char *who, const char *kernel,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const void *params, size_t params_size, tdm__cache_desc *descs,
                        bool *create, char hex[33])
{
    tdm_runtime *rt = c->rt;
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel is NULL", who);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s'", who, kernel);
    if (n_in < 0 || n_out < 0 || n_out > TDM__CACHE_MAX_OUTPUTS || (n_in > 0 && !inputs) ||
        (n_out > 0 && !outputs))
        return tdm__err(rt, TDM_EINVAL, "%s: bad input/output counts or NULL arrays", who);
    if (n_out != k->def.n_out)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel '%s' has %d outputs, %d given", who, kernel,
                        k->def.n_out, n_out);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", who,
                        params_size);
    int given = 0;
    for (int i = 0; i < n_out; i++)
        given += outputs[i] != NULL;
    if (given != 0 && given != n_out)
        return tdm__err(rt, TDM_EINVAL, "%s: outputs must be all given or all NULL", who);
    *create = n_out > 0 && given == 0;
    for (int i = 0; i < n_in; i++) {
        if (!inputs[i])
            return tdm__err(rt, TDM_EINVAL, "%s: input %d is NULL", who, i);
        if (!tdm_tensor_is_contiguous(inputs[i]))
            return tdm__err(rt, TDM_ELAYOUT, "%s: input %d is not contiguous", who, i);
    }
    if (*create) {
        if (!k->def.infer)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: kernel '%s' has no infer function: pass the outputs", who, kernel);
        if (n_in == 0 || inputs[0]->ndim == 0)
            return tdm__err(rt, TDM_EINVAL,
                            "%s: without row-carrying inputs the row count is unknown: pass the "
                            "outputs",
                            who);
        tdm_tensor_desc d[TDM__CACHE_MAX_OUTPUTS];
        memset(d, 0, sizeof d);
        char msg[256] = "";
        int rc = k->def.infer((const tdm_tensor *const *)inputs, n_in, params, params_size, d,
                              n_out, msg, sizeof msg);
        if (rc != 0)
            return tdm__err(rt, rc, "%s: kernel '%s': %s", who, kernel, msg);
        for (int i = 0; i < n_out; i++) {
            if (d[i].ndim < 1 || d[i].ndim > TDM_MAX_DIMS)
                return tdm__err(rt, TDM_EINVAL, "%s: infer gave output %d %d dims", who, i,
                                d[i].ndim);
            descs[i].dtype = d[i].dtype;
            descs[i].ndim = d[i].ndim;
            memcpy(descs[i].shape, d[i].shape, sizeof d[i].shape);
            descs[i].shape[0] = inputs[0]->shape[0];
        }
    } else {
        for (int i = 0; i < n_out; i++) {
            /* (tdm_map refuses them too; checked here so that no hit is tried into them) */
            if (!tdm_tensor_is_contiguous(outputs[i]))
                return tdm__err(rt, TDM_ELAYOUT, "%s: output %d is not contiguous", who, i);
            memset(&descs[i], 0, sizeof descs[i]);
            descs[i].dtype = outputs[i]->dtype;
            descs[i].ndim = outputs[i]->ndim;
            memcpy(descs[i].shape, outputs[i]->shape, (size_t)outputs[i]->ndim * sizeof(int64_t));
        }
    }
    XXH3_state_t *s = XXH3_createState();
    if (!s)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    XXH3_128bits_reset(s);
    XXH3_128bits_update(s, "tandem-cache-v2", 16);
    XXH3_128bits_update(s, kernel, strlen(kernel) + 1);
    hash_u64(s, k->def.kernel_version);
    /* The code: the device text (for a built-in, the dialect source its CPU version is also
     * compiled from; for a user kernel, the built-ins' text and its own), and the user's hash
     * of a CPU implementation. A changed body is then a new key, never a stale hit. */
    const char *src = k->def.source ? k->def.source : "";
    hash_u64(s, (uint64_t)strlen(src));
    XXH3_128bits_update(s, src, strlen(src));
    hash_u64(s, k->def.code_hash);
    hash_u64(s, (uint64_t)n_in);
    for (int i = 0; i < n_in; i++) {
        const tdm_tensor *t = inputs[i];
        hash_u64(s, (uint64_t)t->dtype);
        hash_u64(s, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            hash_u64(s, (uint64_t)t->shape[d]);
        size_t n = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(t->dtype);
        if (n > 0)
            XXH3_128bits_update(s, tdm_tensor_data(t), n);
    }
    hash_u64(s, (uint64_t)params_size);
    if (params_size > 0)
        XXH3_128bits_update(s, params, params_size);
    hash_u64(s, (uint64_t)n_out);
    for (int i = 0; i < n_out; i++) {
        hash_u64(s, (uint64_t)descs[i].dtype);
        hash_u64(s, (uint64_t)descs[i].ndim);
        for (int d = 0; d < descs[i].ndim; d++)
            hash_u64(s, (uint64_t)descs[i].shape[d]);
    }
    XXH128_hash_t h = XXH3_128bits_digest(s);
    XXH3_freeState(s);
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
    return 0;
}

void tdm__cache_key_bytes(const char *hex, unsigned char *b)
{
    for (int i = 0; i < 16; i++) {
        int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
        int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
}
