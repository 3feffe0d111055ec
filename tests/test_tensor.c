/* SPDX-License-Identifier: MIT */
/* Tensors and storage: creation, validation, memory kinds, views, sharing, wrapping. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/capability.h>

#include "tdm_test.h"
#include "core/core.h"

#include "internal.h" /* tdm__shape_numel and the runtime's shared-memory accounting */

#include "tensor/tensor_util.h"

/* ---- dtypes -------------------------------------------------------------------------------- */

static void test_dtype_sizes(void **state)
{
    (void)state;
    assert_int_equal(tdm_dtype_size(TDM_U8), 1);
    assert_int_equal(tdm_dtype_size(TDM_I32), 4);
    assert_int_equal(tdm_dtype_size(TDM_I64), 8);
    assert_int_equal(tdm_dtype_size(TDM_F32), 4);
    assert_int_equal(tdm_dtype_size(TDM_F64), 8);
    assert_int_equal(tdm_dtype_size(TDM_F16), 2);
    assert_int_equal(tdm_dtype_size(TDM_BF16), 2);
    assert_int_equal(tdm_dtype_size(TDM_BOOL), 1);
    assert_int_equal(tdm_dtype_size(TDM_I8), 1);
    assert_int_equal(tdm_dtype_size(TDM_I16), 2);
    assert_int_equal(tdm_dtype_size(TDM_U16), 2);
    assert_int_equal(tdm_dtype_size(TDM_U32), 4);
    assert_int_equal(tdm_dtype_size(TDM_U64), 8);
    assert_int_equal(tdm_dtype_size(TDM_DTYPE_COUNT), 0);
    assert_int_equal(tdm_dtype_size((tdm_dtype)-1), 0);
}

static void test_dtype_names(void **state)
{
    (void)state;
    static const char *const names[] = {"u8",   "i32", "i64", "f32", "f64", "f16", "bf16",
                                        "bool", "i8",  "i16", "u16", "u32", "u64"};
    assert_int_equal(sizeof names / sizeof names[0], TDM_DTYPE_COUNT);
    for (int d = 0; d < TDM_DTYPE_COUNT; d++)
        assert_string_equal(tdm_dtype_name((tdm_dtype)d), names[d]);
    assert_string_equal(tdm_dtype_name(TDM_DTYPE_COUNT), "invalid");
    assert_string_equal(tdm_dtype_name((tdm_dtype)-3), "invalid");
}

/* ---- creation ------------------------------------------------------------------------------ */

static void test_empty_shape_and_strides(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 3, (int64_t[]){2, 3, 5}, 0, &t), 0);
    assert_int_equal(tdm_tensor_dtype(t), TDM_F64);
    assert_int_equal(tdm_tensor_ndim(t), 3);
    assert_int_equal(tdm_tensor_dim(t, 0), 2);
    assert_int_equal(tdm_tensor_dim(t, 1), 3);
    assert_int_equal(tdm_tensor_dim(t, 2), 5);
    assert_int_equal(tdm_tensor_dim(t, 3), 0);
    assert_int_equal(tdm_tensor_dim(t, -1), 0);
    assert_int_equal(tdm_tensor_shape(t)[1], 3);
    assert_int_equal(tdm_tensor_strides(t)[0], 15);
    assert_int_equal(tdm_tensor_strides(t)[1], 5);
    assert_int_equal(tdm_tensor_strides(t)[2], 1);
    assert_int_equal(tdm_tensor_numel(t), 30);
    assert_int_equal(tdm_tensor_nbytes(t), 240);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_HOST);
    assert_int_equal(tdm_tensor_is_contiguous(t), 1);
    assert_ptr_equal(tdm_tensor_runtime(t), rt);
    assert_string_equal(tdm_errmsg(rt), "");
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_empty_scalar(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    /* ndim 0 with a NULL shape is a scalar of one element. */
    assert_int_equal(tdm_tensor_empty(rt, TDM_I32, 0, NULL, 0, &t), 0);
    assert_int_equal(tdm_tensor_ndim(t), 0);
    assert_int_equal(tdm_tensor_numel(t), 1);
    assert_int_equal(tdm_tensor_nbytes(t), 4);
    assert_non_null(tdm_tensor_data(t));
    *(int32_t *)tdm_tensor_data(t) = 42;
    assert_int_equal(tdm_tensor_is_contiguous(t), 1);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_empty_with_zero_dim(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    unsigned kinds[] = {TDM_MEM_HOST, TDM_MEM_SHARED, TDM_MEM_PINNED};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        tdm_tensor *t = NULL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 3, (int64_t[]){4, 0, 3}, kinds[k], &t), 0);
        assert_int_equal(tdm_tensor_numel(t), 0);
        assert_int_equal(tdm_tensor_nbytes(t), 0);
        assert_int_equal(tdm_tensor_dim(t, 1), 0);
        assert_int_equal(tdm_tensor_is_contiguous(t), 1);
        /* Strides count a 0 dim as 1 so they stay distinct. */
        assert_int_equal(tdm_tensor_strides(t)[0], 3);
        assert_int_equal(tdm_tensor_strides(t)[1], 3);
        tdm_tensor_release(t);
    }
    tdm_test_close(rt);
}

static void test_host_data_aligned_64(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int64_t sizes[] = {1, 3, 17, 63, 64, 65, 1000, 4097};
    tdm_tensor *ts[8];
    for (int i = 0; i < 8; i++) {
        assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &sizes[i], 0, &ts[i]), 0);
        assert_int_equal((uintptr_t)tdm_tensor_data(ts[i]) % 64, 0);
        memset(tdm_tensor_data(ts[i]), 0xab, (size_t)sizes[i]);
    }
    for (int i = 0; i < 8; i++)
        tdm_tensor_release(ts[i]);
    tdm_test_close(rt);
}

static void test_zeros_every_memory_kind(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int64_t n = 3 * 4096 + 5;
    unsigned kinds[] = {TDM_MEM_HOST, TDM_MEM_SHARED, TDM_MEM_PINNED,
                        TDM_MEM_SHARED | TDM_MEM_PINNED};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        /* Dirty memory first, so a reused heap block would show through. */
        tdm_tensor *dirty = NULL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, kinds[k], &dirty), 0);
        memset(tdm_tensor_data(dirty), 0xff, (size_t)n);
        tdm_tensor_release(dirty);
        tdm_tensor *t = NULL;
        assert_int_equal(tdm_tensor_zeros(rt, TDM_U8, 1, &n, kinds[k], &t), 0);
        const unsigned char *p = tdm_tensor_data(t);
        for (int64_t i = 0; i < n; i++)
            assert_int_equal(p[i], 0);
        tdm_tensor_release(t);
    }
    tdm_test_close(rt);
}

static void test_errmsg_names_the_function(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, (int64_t[]){-2}, 0, &t), TDM_EINVAL);
    assert_null(t);
    const char *msg = tdm_errmsg(rt);
    assert_non_null(strstr(msg, "tdm_tensor_zeros:"));
    assert_non_null(strstr(msg, "-2"));
    /* A later success clears the stale message. */
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, (int64_t[]){2}, 0, &t), 0);
    assert_string_equal(tdm_errmsg(rt), "");
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

/* ---- creation errors ----------------------------------------------------------------------- */

static void test_empty_null_runtime_einval(void **state)
{
    (void)state;
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(NULL, TDM_F32, 1, (int64_t[]){4}, 0, &t), TDM_EINVAL);
    assert_null(t);
    assert_non_null(strstr(tdm_errmsg(NULL), "runtime is NULL"));
}

static void test_empty_null_out_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){4}, 0, NULL), TDM_EINVAL);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F32, 1, (int64_t[]){4}, 0, NULL), TDM_EINVAL);
    tdm_test_close(rt);
}

static void test_empty_null_shape_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 2, NULL, 0, &t), TDM_EINVAL);
    assert_null(t);
    assert_non_null(strstr(tdm_errmsg(rt), "shape is NULL"));
    tdm_test_close(rt);
}

static void test_empty_ndim_out_of_range_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int64_t shape[TDM_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, -1, shape, 0, &t), TDM_EINVAL);
    assert_null(t);
    t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, TDM_MAX_DIMS + 1, shape, 0, &t), TDM_EINVAL);
    assert_null(t);
    /* The maximum itself is fine. */
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, TDM_MAX_DIMS, shape, 0, &t), 0);
    assert_int_equal(tdm_tensor_numel(t), 1);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_empty_negative_dim_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 3, (int64_t[]){2, -1, 3}, 0, &t), TDM_EINVAL);
    assert_null(t);
    assert_non_null(strstr(tdm_errmsg(rt), "dim 1"));
    tdm_test_close(rt);
}

static void test_empty_bad_dtype_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_DTYPE_COUNT, 1, (int64_t[]){4}, 0, &t), TDM_EINVAL);
    assert_null(t);
    t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, (tdm_dtype)-1, 1, (int64_t[]){4}, 0, &t), TDM_EINVAL);
    assert_null(t);
    assert_non_null(strstr(tdm_errmsg(rt), "dtype"));
    tdm_test_close(rt);
}

static void test_empty_unknown_mem_flags_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    unsigned bad[] = {1u << 5, TDM_MEM_WRAPPED, TDM_MEM_SHARED | (1u << 12)};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tdm_tensor *t = SENTINEL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){4}, bad[i], &t), TDM_EINVAL);
        assert_null(t);
    }
    assert_non_null(strstr(tdm_errmsg(rt), "mem flags"));
    tdm_test_close(rt);
}

static void test_empty_overflowing_shape_eoverflow(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int64_t big = (int64_t)1 << 32;
    struct {
        tdm_dtype dt;
        int ndim;
        int64_t shape[3];
    } cases[] = {
        {TDM_U8, 2, {big, big}},                               /* element count overflows */
        {TDM_F64, 1, {INT64_MAX / 4}},                         /* byte size overflows */
        {TDM_F32, 3, {0, (int64_t)1 << 40, (int64_t)1 << 40}}, /* strides overflow */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tdm_tensor *t = SENTINEL;
        assert_int_equal(
            tdm_tensor_empty(rt, cases[i].dt, cases[i].ndim, cases[i].shape, TDM_MEM_SHARED, &t),
            TDM_EOVERFLOW);
        assert_null(t);
        assert_non_null(strstr(tdm_errmsg(rt), "overflow"));
    }
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

static void test_shape_numel_checks_overflow(void **state)
{
    (void)state;
    int64_t n = -1;
    assert_int_equal(tdm__shape_numel(0, NULL, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tdm__shape_numel(2, (int64_t[]){6, 7}, &n), 0);
    assert_int_equal(n, 42);
    assert_int_equal(tdm__shape_numel(2, (int64_t[]){6, 0}, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(tdm__shape_numel(2, (int64_t[]){INT64_MAX, 2}, &n), TDM_EOVERFLOW);
    assert_int_equal(tdm__shape_numel(2, (int64_t[]){INT64_MAX, 1}, &n), 0);
    assert_int_equal(n, INT64_MAX);
    assert_int_equal(tdm__shape_numel(1, (int64_t[]){-1}, &n), TDM_EINVAL);
    assert_int_equal(tdm__shape_numel(1, NULL, &n), TDM_EINVAL);
    assert_int_equal(tdm__shape_numel(TDM_MAX_DIMS + 1, (int64_t[9]){0}, &n), TDM_EINVAL);
}

/* A request no allocator can meet (4 EiB) must come back as TDM_ENOMEM, not abort: tell the
 * sanitizers' allocators to return NULL as malloc does. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static void test_empty_impossible_size_enomem(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    int64_t n = (int64_t)1 << 62;
    unsigned kinds[] = {TDM_MEM_HOST, TDM_MEM_PINNED};
    for (size_t k = 0; k < 2; k++) {
        tdm_tensor *t = SENTINEL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, kinds[k], &t), TDM_ENOMEM);
        assert_null(t);
        assert_non_null(strstr(tdm_errmsg(rt), "tdm_tensor_empty:"));
    }
    assert_int_equal(atomic_load(&rt->live_tensors), 0);
    tdm_test_close(rt);
}

/* ---- views --------------------------------------------------------------------------------- */

static void test_view_rows_shape_and_data(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *v = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 2, (int64_t[]){10, 3}, 0, &t), 0);
    fill_f32(t, 0.0f);
    assert_int_equal(tdm_tensor_view_rows(t, 2, 7, &v), 0);
    assert_int_equal(tdm_tensor_ndim(v), 2);
    assert_int_equal(tdm_tensor_dim(v, 0), 5);
    assert_int_equal(tdm_tensor_dim(v, 1), 3);
    assert_int_equal(tdm_tensor_strides(v)[0], 3);
    assert_int_equal(tdm_tensor_numel(v), 15);
    assert_int_equal(tdm_tensor_nbytes(v), 60);
    assert_int_equal(tdm_tensor_is_contiguous(v), 1);
    assert_ptr_equal(tdm_tensor_data(v), (float *)tdm_tensor_data(t) + 6);
    assert_true(((float *)tdm_tensor_data(v))[0] == 6.0f);
    assert_int_equal(tdm_tensor_mem(v), tdm_tensor_mem(t));
    assert_ptr_equal(tdm_tensor_runtime(v), rt);
    /* Writes through the view land in the base. */
    ((float *)tdm_tensor_data(v))[14] = -1.0f;
    assert_true(((float *)tdm_tensor_data(t))[20] == -1.0f);
    tdm_tensor_release(v);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_view_of_view(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *v = NULL, *w = NULL, *e = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){100}, 0, &t), 0);
    assert_int_equal(tdm_tensor_view_rows(t, 10, 60, &v), 0);
    assert_int_equal(tdm_tensor_view_rows(v, 5, 15, &w), 0);
    assert_ptr_equal(tdm_tensor_data(w), (int64_t *)tdm_tensor_data(t) + 15);
    assert_int_equal(tdm_tensor_dim(w, 0), 10);
    /* An empty view at the end is allowed. */
    assert_int_equal(tdm_tensor_view_rows(w, 10, 10, &e), 0);
    assert_int_equal(tdm_tensor_numel(e), 0);
    assert_int_equal(tdm_tensor_nbytes(e), 0);
    tdm_tensor_release(e);
    tdm_tensor_release(w);
    tdm_tensor_release(v);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_view_keeps_storage_alive(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    unsigned kinds[] = {TDM_MEM_HOST, TDM_MEM_SHARED, TDM_MEM_PINNED};
    for (size_t k = 0; k < 3; k++) {
        tdm_tensor *t = NULL, *v = NULL;
        assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){4096}, kinds[k], &t), 0);
        fill_f32(t, 0.0f);
        assert_int_equal(tdm_tensor_view_rows(t, 4000, 4096, &v), 0);
        tdm_tensor_release(t);
        /* Under ASan a freed storage would make this read fail. */
        const float *p = tdm_tensor_data(v);
        for (int i = 0; i < 96; i++)
            assert_true(p[i] == 4000.0f + (float)i);
        tdm_tensor_release(v);
    }
    tdm_test_close(rt);
}

static void test_view_rows_bad_arguments_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *s = NULL, *v = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){10}, 0, &t), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 0, NULL, 0, &s), 0);
    int64_t bad[][2] = {{-1, 3}, {4, 3}, {0, 11}, {11, 11}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = SENTINEL;
        assert_int_equal(tdm_tensor_view_rows(t, bad[i][0], bad[i][1], &v), TDM_EINVAL);
        assert_null(v);
        assert_non_null(strstr(tdm_errmsg(rt), "tdm_tensor_view_rows:"));
    }
    v = SENTINEL;
    assert_int_equal(tdm_tensor_view_rows(s, 0, 0, &v), TDM_EINVAL);
    assert_null(v);
    v = SENTINEL;
    assert_int_equal(tdm_tensor_view_rows(NULL, 0, 0, &v), TDM_EINVAL);
    assert_null(v);
    assert_int_equal(tdm_tensor_view_rows(t, 0, 1, NULL), TDM_EINVAL);
    tdm_tensor_release(s);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

/* ---- refcounts and runtime close ----------------------------------------------------------- */

static void test_retain_release_refcount(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){8}, 0, &t), 0);
    assert_ptr_equal(tdm_tensor_retain(t), t);
    assert_null(tdm_tensor_retain(NULL));
    tdm_tensor_release(t);
    /* Still alive: one reference left. */
    assert_int_equal(tdm_runtime_close(rt), TDM_EBUSY);
    ((unsigned char *)tdm_tensor_data(t))[7] = 1;
    tdm_tensor_release(t);
    tdm_tensor_release(NULL);
    tdm_test_close(rt);
}

static void test_runtime_close_busy_while_tensor_alive(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *v = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){64}, TDM_MEM_SHARED, &t), 0);
    assert_int_equal(tdm_tensor_view_rows(t, 0, 32, &v), 0);
    assert_int_equal(tdm_runtime_close(rt), TDM_EBUSY);
    tdm_tensor_release(t);
    /* The view is a tensor too. */
    assert_int_equal(tdm_runtime_close(rt), TDM_EBUSY);
    /* The runtime stays usable after EBUSY. */
    fill_f32(v, 1.0f);
    tdm_tensor_release(v);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void *churn(void *arg)
{
    tdm_tensor *t = arg;
    for (int i = 0; i < 2000; i++) {
        tdm_tensor *v = NULL;
        tdm_tensor_retain(t);
        if (tdm_tensor_view_rows(t, i % 16, 16, &v) == 0)
            tdm_tensor_release(v);
        tdm_tensor_release(t);
    }
    tdm_tensor_release(t); /* the reference this thread was given */
    return NULL;
}

static void test_concurrent_retain_release(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){16}, TDM_MEM_SHARED, &t), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        tdm_tensor_retain(t);
        assert_int_equal(pthread_create(&th[i], NULL, churn, t), 0);
    }
    tdm_tensor_release(t);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    /* Every reference was dropped: the tensor and its storage are gone. */
    assert_int_equal(atomic_load(&rt->live_tensors), 0);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

static void test_accessors_accept_null(void **state)
{
    (void)state;
    assert_int_equal(tdm_tensor_dtype(NULL), TDM_DTYPE_COUNT);
    assert_int_equal(tdm_tensor_ndim(NULL), 0);
    assert_int_equal(tdm_tensor_dim(NULL, 0), 0);
    assert_null(tdm_tensor_shape(NULL));
    assert_null(tdm_tensor_strides(NULL));
    assert_int_equal(tdm_tensor_numel(NULL), 0);
    assert_int_equal(tdm_tensor_nbytes(NULL), 0);
    assert_null(tdm_tensor_data(NULL));
    assert_int_equal(tdm_tensor_mem(NULL), 0);
    assert_int_equal(tdm_tensor_is_contiguous(NULL), 0);
    assert_null(tdm_tensor_runtime(NULL));
}

/* ---- wrap ---------------------------------------------------------------------------------- */

static void test_wrap_does_not_take_ownership(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    double *buf = malloc(12 * sizeof *buf);
    assert_non_null(buf);
    for (int i = 0; i < 12; i++)
        buf[i] = i * 0.5;
    tdm_tensor *t = NULL, *v = NULL;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 2, (int64_t[]){3, 4}, NULL, buf, &t), 0);
    assert_ptr_equal(tdm_tensor_data(t), buf);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_WRAPPED);
    assert_int_equal(tdm_tensor_is_contiguous(t), 1);
    assert_int_equal(tdm_tensor_nbytes(t), 96);
    assert_int_equal(tdm_tensor_view_rows(t, 1, 3, &v), 0);
    assert_ptr_equal(tdm_tensor_data(v), buf + 4);
    tdm_tensor_release(t);
    tdm_tensor_release(v);
    /* Still the caller's, untouched; ASan would flag a double free below otherwise. */
    for (int i = 0; i < 12; i++)
        assert_true(buf[i] == i * 0.5);
    free(buf);
    tdm_test_close(rt);
}

static void test_wrap_strided_is_contiguous(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    float buf[64] = {0};
    tdm_tensor *t = NULL;
    /* Rows of 4 with a pitch of 8: not contiguous, spans 3 * 8 + 4 elements. */
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){4, 4}, (int64_t[]){8, 1}, buf, &t),
                     0);
    assert_int_equal(tdm_tensor_is_contiguous(t), 0);
    assert_int_equal(tdm_tensor_nbytes(t), (3 * 8 + 4) * 4);
    assert_int_equal(tdm_tensor_strides(t)[0], 8);
    tdm_tensor_release(t);
    /* Explicit row-major strides: contiguous. */
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){4, 4}, (int64_t[]){4, 1}, buf, &t),
                     0);
    assert_int_equal(tdm_tensor_is_contiguous(t), 1);
    tdm_tensor_release(t);
    /* Transposed. */
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){4, 3}, (int64_t[]){1, 4}, buf, &t),
                     0);
    assert_int_equal(tdm_tensor_is_contiguous(t), 0);
    tdm_tensor_release(t);
    /* A dim of size 1 may have any stride. */
    assert_int_equal(
        tdm_tensor_wrap(rt, TDM_F32, 3, (int64_t[]){2, 1, 4}, (int64_t[]){4, 99, 1}, buf, &t), 0);
    assert_int_equal(tdm_tensor_is_contiguous(t), 1);
    tdm_tensor_release(t);
    /* Broadcast (stride 0) rows: legal, not contiguous. */
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){5, 4}, (int64_t[]){0, 1}, buf, &t),
                     0);
    assert_int_equal(tdm_tensor_is_contiguous(t), 0);
    assert_int_equal(tdm_tensor_nbytes(t), 16);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_wrap_empty_with_null_data(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *v = NULL;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){0, 5}, NULL, NULL, &t), 0);
    assert_null(tdm_tensor_data(t));
    assert_int_equal(tdm_tensor_numel(t), 0);
    assert_int_equal(tdm_tensor_view_rows(t, 0, 0, &v), 0);
    assert_null(tdm_tensor_data(v));
    tdm_tensor_release(v);
    /* Sharing an empty wrapped tensor gives it a (small) shared mapping. */
    assert_int_equal(tdm_tensor_share(t), 0);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_SHARED);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_wrap_bad_arguments_einval(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    _Alignas(8) unsigned char buf[256];
    memset(buf, 0x11, sizeof buf);
    int64_t shape[2] = {4, 4};
    struct {
        tdm_dtype dt;
        int ndim;
        const int64_t *strides;
        void *data;
        const char *msg;
    } cases[] = {
        {TDM_F32, 2, NULL, NULL, "data is NULL"},
        {TDM_F32, 2, NULL, buf + 1, "aligned"},
        {TDM_F64, 2, NULL, buf + 4, "aligned"},
        {TDM_F32, 2, (int64_t[]){-4, 1}, buf, "stride 0 is negative"},
        {TDM_DTYPE_COUNT, 2, NULL, buf, "dtype"},
        {TDM_F32, -1, NULL, buf, "ndim"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tdm_tensor *t = SENTINEL;
        assert_int_equal(tdm_tensor_wrap(rt, cases[i].dt, cases[i].ndim, shape, cases[i].strides,
                                         cases[i].data, &t),
                         TDM_EINVAL);
        assert_null(t);
        assert_non_null(strstr(tdm_errmsg(rt), "tdm_tensor_wrap:"));
        assert_non_null(strstr(tdm_errmsg(rt), cases[i].msg));
    }
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){4, -4}, NULL, buf, &t),
                     TDM_EINVAL);
    assert_null(t);
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, shape, NULL, buf, NULL), TDM_EINVAL);
    t = SENTINEL;
    assert_int_equal(tdm_tensor_wrap(NULL, TDM_F32, 2, shape, NULL, buf, &t), TDM_EINVAL);
    assert_null(t);
    /* The caller's memory was never written. */
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0x11);
    tdm_test_close(rt);
}

static void test_wrap_overflowing_strides_eoverflow(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    float buf[4];
    tdm_tensor *t = SENTINEL;
    assert_int_equal(
        tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){3, 2}, (int64_t[]){INT64_MAX / 2, 1}, buf, &t),
        TDM_EOVERFLOW);
    assert_null(t);
    t = SENTINEL;
    assert_int_equal(
        tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){(int64_t)1 << 40, 1 << 30}, NULL, buf, &t),
        TDM_EOVERFLOW);
    assert_null(t);
    tdm_test_close(rt);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_sizes),
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_empty_shape_and_strides),
        cmocka_unit_test(test_empty_scalar),
        cmocka_unit_test(test_empty_with_zero_dim),
        cmocka_unit_test(test_host_data_aligned_64),
        cmocka_unit_test(test_zeros_every_memory_kind),
        cmocka_unit_test(test_errmsg_names_the_function),
        cmocka_unit_test(test_empty_null_runtime_einval),
        cmocka_unit_test(test_empty_null_out_einval),
        cmocka_unit_test(test_empty_null_shape_einval),
        cmocka_unit_test(test_empty_ndim_out_of_range_einval),
        cmocka_unit_test(test_empty_negative_dim_einval),
        cmocka_unit_test(test_empty_bad_dtype_einval),
        cmocka_unit_test(test_empty_unknown_mem_flags_einval),
        cmocka_unit_test(test_empty_overflowing_shape_eoverflow),
        cmocka_unit_test(test_shape_numel_checks_overflow),
        cmocka_unit_test(test_empty_impossible_size_enomem),
        cmocka_unit_test(test_shared_needs_no_descriptor_open_needs_one),
        cmocka_unit_test(test_share_failure_leaves_tensor_unchanged),
        cmocka_unit_test(test_shared_over_shm_limit_enospc),
        cmocka_unit_test(test_shared_over_mem_available_enospc),
        cmocka_unit_test(test_pinned_small_is_locked),
        cmocka_unit_test(test_pinned_strict_eperm_when_lock_refused),
        cmocka_unit_test(test_pinned_falls_back_unlocked_without_strict),
        cmocka_unit_test(test_shared_pinned_is_both),
        cmocka_unit_test(test_shared_child_write_seen_by_parent),
        cmocka_unit_test(test_host_child_write_not_seen_by_parent),
        cmocka_unit_test(test_view_rows_shape_and_data),
        cmocka_unit_test(test_view_of_view),
        cmocka_unit_test(test_view_keeps_storage_alive),
        cmocka_unit_test(test_view_rows_bad_arguments_einval),
        cmocka_unit_test(test_retain_release_refcount),
        cmocka_unit_test(test_runtime_close_busy_while_tensor_alive),
        cmocka_unit_test(test_concurrent_retain_release),
        cmocka_unit_test(test_accessors_accept_null),
        cmocka_unit_test(test_share_preserves_data_and_views_follow),
        cmocka_unit_test(test_share_twice_is_noop),
        cmocka_unit_test(test_share_over_limit_leaves_tensor_unchanged),
        cmocka_unit_test(test_share_pinned_stays_pinned),
        cmocka_unit_test(test_share_wrapped_leaves_user_memory),
        cmocka_unit_test(test_share_null_einval),
        cmocka_unit_test(test_share_import_maps_same_pages_no_copy),
        cmocka_unit_test(test_shm_info_sane),
        cmocka_unit_test(test_shm_info_null_einval),
        cmocka_unit_test(test_wrap_does_not_take_ownership),
        cmocka_unit_test(test_wrap_strided_is_contiguous),
        cmocka_unit_test(test_wrap_empty_with_null_data),
        cmocka_unit_test(test_wrap_bad_arguments_einval),
        cmocka_unit_test(test_wrap_overflowing_strides_eoverflow),
    };
    return TDM_TEST_MAIN("tensor", tests);
}
