/* SPDX-License-Identifier: MIT */
/* Helpers shared by the io tests (test_io*.c): a temporary directory, file bytes, tensors
 * filled with a pattern and compared, hand-made .npy files. */
#ifndef TDM_IO_TEST_UTIL_H
#define TDM_IO_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

#define TDM_TMPDIR_PREFIX "tdm-io"
#include "tmpdir_util.h"

#include "child_test_util.h"

#include "internal.h" /* storage fd / flags of mapped tensors */

/* ---- helpers ---------------------------------------------------------------------------- */

static inline void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static inline bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A deterministic byte pattern: every dtype compares bytewise. */
static inline void fill(tdm_tensor *t, unsigned seed)
{
    unsigned char *p = tdm_tensor_data(t);
    size_t n = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(tdm_tensor_dtype(t));
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (unsigned char)(x >> 24);
    }
}

static inline tdm_tensor *make(tdm_runtime *rt, tdm_dtype dt, int ndim, const int64_t *shape,
                               unsigned seed)
{
    tdm_tensor *t;
    assert_int_equal(tdm_tensor_empty(rt, dt, ndim, shape, TDM_MEM_HOST, &t), 0);
    fill(t, seed);
    return t;
}

static inline void assert_same(const tdm_tensor *a, const tdm_tensor *b)
{
    assert_int_equal(tdm_tensor_dtype(a), tdm_tensor_dtype(b));
    assert_int_equal(tdm_tensor_ndim(a), tdm_tensor_ndim(b));
    for (int i = 0; i < tdm_tensor_ndim(a); i++)
        assert_int_equal(tdm_tensor_dim(a, i), tdm_tensor_dim(b, i));
    size_t n = (size_t)tdm_tensor_numel(a) * tdm_dtype_size(tdm_tensor_dtype(a));
    if (n)
        assert_memory_equal(tdm_tensor_data(a), tdm_tensor_data(b), n);
}

/* Element (multi-index) of a strided tensor, compared bytewise with the same in another. */
static inline void assert_same_elements(const tdm_tensor *a, const tdm_tensor *b)
{
    assert_int_equal(tdm_tensor_numel(a), tdm_tensor_numel(b));
    int nd = tdm_tensor_ndim(a);
    size_t es = tdm_dtype_size(tdm_tensor_dtype(a));
    int64_t idx[TDM_MAX_DIMS] = {0};
    int64_t n = tdm_tensor_numel(a);
    for (int64_t k = 0; k < n; k++) {
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < nd; i++) {
            oa += idx[i] * tdm_tensor_strides(a)[i];
            ob += idx[i] * tdm_tensor_strides(b)[i];
        }
        assert_memory_equal((char *)tdm_tensor_data(a) + oa * (int64_t)es,
                            (char *)tdm_tensor_data(b) + ob * (int64_t)es, es);
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < tdm_tensor_dim(a, i))
                break;
            idx[i] = 0;
        }
    }
}

/* Writes a .npy whose header dict is `dict` (padded to 64 bytes), then `data`. */
static inline void write_npy_raw(const char *path, int major, const char *dict, const void *data,
                                 size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    unsigned char *b = calloc(1, total + n + 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    size_t hl = total - pre;
    b[8] = (unsigned char)hl;
    b[9] = (unsigned char)(hl >> 8);
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', total - pre - dl - 1);
    b[total - 1] = '\n';
    if (n)
        memcpy(b + total, data, n);
    write_bytes(path, b, total + n);
    free(b);
}

static inline int load_code(tdm_runtime *rt, const char *path, const tdm_load_opts *o)
{
    tdm_tensor *t = (tdm_tensor *)(uintptr_t)0x1;
    int rc = tdm_load(rt, path, o, &t);
    if (rc != 0)
        assert_null(t);
    tdm_tensor_release(t);
    return rc;
}

static inline tdm_map_opts quiet(int64_t batch)
{
    tdm_map_opts o = tdm_test_quiet_opts();
    o.batch_size = batch;
    return o;
}

#endif
