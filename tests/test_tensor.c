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

/* A pointer no successful call would return: a failed call must overwrite it with NULL. */
#define SENTINEL ((tdm_tensor *)(uintptr_t)0x5a5a5a5a)

static size_t page(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static tdm_runtime *open_with_shm_limit(uint64_t limit)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    cfg.shm_limit = limit;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

static void fill_f32(tdm_tensor *t, float base)
{
    float *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        p[i] = base + (float)i;
}

static void check_f32(const tdm_tensor *t, float base)
{
    const float *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        assert_true(p[i] == base + (float)i);
}

/* Runs fn(arg) in a forked child and returns its exit status (asserting a normal exit). The
 * child never returns into cmocka: it reports through its exit code. */
static int run_in_child(int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Runs fn in a child with a runtime of its own (a runtime opened before the fork belongs to
 * the parent: the child gets TDM_EFORKED from it); the child's exit code, 0 = passed. */
static int child_with_runtime(void *arg)
{
    int (*fn)(void *) = *(int (**)(void *))arg;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    tdm_runtime *rt = NULL;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return 99;
    int rc = fn(rt);
    if (rc == 0 && tdm_runtime_close(rt) != 0)
        return 98;
    return rc;
}

static int run_in_child_rt(int (*fn)(void *))
{
    return run_in_child(child_with_runtime, &fn);
}

/* Makes mlock fail in this process: RLIMIT_MEMLOCK 0 (soft and hard) and, because a process
 * with CAP_IPC_LOCK (root) ignores that limit, drops that capability too. */
static int forbid_mlock(void)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0)
        return -1;
    data[0].effective &= ~(1u << CAP_IPC_LOCK);
    data[0].permitted &= ~(1u << CAP_IPC_LOCK);
    data[0].inheritable &= ~(1u << CAP_IPC_LOCK);
    if (syscall(SYS_capset, &hdr, data) != 0)
        return -1;
    struct rlimit rl = {0, 0};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
        return -1;
    /* Check that it took: a lock of one page must now be refused (asked of the kernel itself,
     * since the sanitizers turn mlock() into a no-op). */
    void *p = mmap(NULL, page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    int locked = syscall(SYS_mlock, p, page()) == 0;
    munmap(p, page());
    return locked ? -1 : 0;
}

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
    assert_int_equal(tdm_dtype_size(TDM_DTYPE_COUNT), 0);
    assert_int_equal(tdm_dtype_size((tdm_dtype)-1), 0);
}

static void test_dtype_names(void **state)
{
    (void)state;
    static const char *const names[] = {"u8", "i32", "i64", "f32", "f64", "f16", "bf16"};
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

static int child_no_fds(void *arg)
{
    tdm_runtime *rt = arg;
    tdm_tensor *h = NULL;
    if (tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){100}, 0, &h) != 0)
        return 10;
    fill_f32(h, 4.0f);
    /* Without worker processes the arena (one memfd) is made by the first shared tensor. */
    tdm_tensor *first = NULL;
    if (tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1}, TDM_MEM_SHARED, &first) != 0)
        return 16;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 11;
    rl.rlim_cur = 0; /* no new descriptor from here on */
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 12;
    /* Shared tensors come from the runtime's arena: no descriptor per tensor. */
    tdm_tensor *t = NULL;
    if (tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){100}, TDM_MEM_SHARED, &t) != 0)
        return 13;
    if (tdm_tensor_share(h) != 0 || !(tdm_tensor_mem(h) & TDM_MEM_SHARED))
        return 14;
    const float *p = tdm_tensor_data(h);
    for (int i = 0; i < 100; i++)
        if (p[i] != 4.0f + (float)i)
            return 15;
    tdm_tensor_release(t);
    tdm_tensor_release(h);
    tdm_tensor_release(first);
    /* A new runtime needs one (its arena's memfd) for its first shared tensor: without it,
     * that creation is TDM_ESYS. */
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    tdm_runtime *rt2 = NULL;
    if (tdm_runtime_open(&rt2, &cfg) != 0) /* without worker processes it reserves nothing */
        return 19;
    tdm_tensor *u = (tdm_tensor *)SENTINEL;
    int rc = tdm_tensor_empty(rt2, TDM_F32, 1, (int64_t[]){100}, TDM_MEM_SHARED, &u);
    if (rc != TDM_ESYS || u != NULL)
        return 20;
    if (!strstr(tdm_errmsg(rt2), "memfd_create"))
        return 17;
    if (tdm_runtime_close(rt2) != 0)
        return 21;
    /* with worker processes the arena is made at open (before the fork): TDM_ESYS there */
    cfg.procs = 1;
    rt2 = (tdm_runtime *)SENTINEL;
    if (tdm_runtime_open(&rt2, &cfg) != TDM_ESYS || rt2 != NULL)
        return 22;
    if (atomic_load(&rt->shm_bytes) != 0)
        return 18;
    return 0;
}

static void test_shared_needs_no_descriptor_open_needs_one(void **state)
{
    (void)state;
    assert_int_equal(run_in_child_rt(child_no_fds), 0);
}

static void test_share_failure_leaves_tensor_unchanged(void **state)
{
    (void)state;
    tdm_runtime *rt = open_with_shm_limit(page());
    int64_t n = (int64_t)(4 * page() / sizeof(float));
    tdm_tensor *h = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, &n, 0, &h), 0);
    fill_f32(h, 4.0f);
    void *before = tdm_tensor_data(h);
    assert_int_equal(tdm_tensor_share(h), TDM_ENOSPC);
    assert_ptr_equal(tdm_tensor_data(h), before);
    assert_int_equal(tdm_tensor_mem(h), TDM_MEM_HOST);
    const float *p = tdm_tensor_data(h);
    for (int64_t i = 0; i < n; i++)
        assert_true(p[i] == 4.0f + (float)i);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_tensor_release(h);
    tdm_test_close(rt);
}

/* ---- shared memory limits ------------------------------------------------------------------ */

static void test_shared_over_shm_limit_enospc(void **state)
{
    (void)state;
    size_t pg = page();
    tdm_runtime *rt = open_with_shm_limit(4 * pg);
    int64_t two_pages = (int64_t)(2 * pg);
    tdm_tensor *a = NULL, *b = NULL, *c = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &two_pages, TDM_MEM_SHARED, &a), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &two_pages, TDM_MEM_SHARED, &b), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){1}, TDM_MEM_SHARED, &c),
                     TDM_ENOSPC);
    assert_null(c);
    assert_non_null(strstr(tdm_errmsg(rt), "tdm_tensor_empty:"));
    assert_non_null(strstr(tdm_errmsg(rt), "shm_limit"));
    /* Host memory does not count against the shared limit. */
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &two_pages, 0, &c), 0);
    tdm_tensor_release(c);
    /* Releasing gives the bytes back. */
    tdm_tensor_release(a);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &two_pages, TDM_MEM_SHARED, &a), 0);
    tdm_tensor_release(a);
    tdm_tensor_release(b);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[128];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib * 1024u;
}

static void test_shared_over_mem_available_enospc(void **state)
{
    (void)state;
    uint64_t avail = mem_available();
    if (avail == 0)
        skip();
    tdm_runtime *rt = tdm_test_open(1);
    /* Well past what the system has, yet small enough not to overflow anything. */
    int64_t n = (int64_t)(2 * avail + ((uint64_t)1 << 30));
    tdm_tensor *t = SENTINEL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_SHARED, &t), TDM_ENOSPC);
    assert_null(t);
    const char *msg = tdm_errmsg(rt);
    assert_non_null(strstr(msg, "tdm_tensor_empty:"));
    assert_non_null(strstr(msg, "more than"));
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

/* ---- pinned memory ------------------------------------------------------------------------- */

static void test_pinned_small_is_locked(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &rl), 0);
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1024}, TDM_MEM_PINNED, &t), 0);
    /* A 4 KiB lock fits any ordinary limit (8 MiB here) and root has no limit. */
    if (geteuid() == 0 || rl.rlim_cur >= 65536)
        assert_int_equal(tdm_tensor_mem(t), TDM_MEM_PINNED);
    fill_f32(t, 1.0f);
    check_f32(t, 1.0f);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static int child_pinned_strict(void *arg)
{
    tdm_runtime *rt = arg;
    if (forbid_mlock() != 0)
        return 10;
    unsigned kinds[] = {TDM_MEM_PINNED | TDM_MEM_STRICT,
                        TDM_MEM_SHARED | TDM_MEM_PINNED | TDM_MEM_STRICT};
    for (int k = 0; k < 2; k++) {
        tdm_tensor *t = SENTINEL;
        int rc = tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1024}, kinds[k], &t);
        if (rc != TDM_EPERM)
            return 11 + k;
        if (t != NULL)
            return 13;
        if (!strstr(tdm_errmsg(rt), "mlock"))
            return 14;
    }
    /* The failed shared+pinned attempt gave its accounting back. */
    if (atomic_load(&rt->shm_bytes) != 0)
        return 15;
    return 0;
}

static void test_pinned_strict_eperm_when_lock_refused(void **state)
{
    (void)state;
    assert_int_equal(run_in_child_rt(child_pinned_strict), 0);
}

static int child_pinned_fallback(void *arg)
{
    tdm_runtime *rt = arg;
    if (forbid_mlock() != 0)
        return 10;
    tdm_tensor *t = NULL;
    if (tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1024}, TDM_MEM_PINNED, &t) != 0)
        return 11;
    if (tdm_tensor_mem(t) != TDM_MEM_HOST)
        return 12; /* the tensor must not claim to be pinned */
    float *p = tdm_tensor_data(t);
    p[0] = 1.0f;
    p[1023] = 2.0f;
    tdm_tensor_release(t);
    t = NULL;
    if (tdm_tensor_zeros(rt, TDM_F32, 1, (int64_t[]){1024}, TDM_MEM_SHARED | TDM_MEM_PINNED, &t) !=
        0)
        return 13;
    if (tdm_tensor_mem(t) != TDM_MEM_SHARED)
        return 14;
    tdm_tensor_release(t);
    return 0;
}

static void test_pinned_falls_back_unlocked_without_strict(void **state)
{
    (void)state;
    assert_int_equal(run_in_child_rt(child_pinned_fallback), 0);
}

static void test_shared_pinned_is_both(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(
        tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1024}, TDM_MEM_SHARED | TDM_MEM_PINNED, &t),
        0);
    assert_true(tdm_tensor_mem(t) & TDM_MEM_SHARED);
    if (geteuid() == 0)
        assert_int_equal(tdm_tensor_mem(t), TDM_MEM_SHARED | TDM_MEM_PINNED);
    assert_int_equal((uintptr_t)tdm_tensor_data(t) % 64, 0);
    fill_f32(t, 3.0f);
    check_f32(t, 3.0f);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

/* ---- shared memory across fork ------------------------------------------------------------- */

static int child_writes(void *arg)
{
    tdm_tensor *t = arg;
    int64_t *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        p[i] = 1000 + i;
    return 0;
}

static void test_shared_child_write_seen_by_parent(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I64, 1, (int64_t[]){5000}, TDM_MEM_SHARED, &t), 0);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_SHARED);
    assert_int_equal(run_in_child(child_writes, t), 0);
    const int64_t *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < 5000; i++)
        assert_int_equal(p[i], 1000 + i);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_host_child_write_not_seen_by_parent(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I64, 1, (int64_t[]){100}, 0, &t), 0);
    assert_int_equal(run_in_child(child_writes, t), 0);
    const int64_t *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < 100; i++)
        assert_int_equal(p[i], 0);
    tdm_tensor_release(t);
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

/* ---- share --------------------------------------------------------------------------------- */

static void test_share_preserves_data_and_views_follow(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL, *v = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 2, (int64_t[]){100, 4}, 0, &t), 0);
    int64_t *old = tdm_tensor_data(t);
    for (int i = 0; i < 400; i++)
        old[i] = 7 * i;
    assert_int_equal(tdm_tensor_view_rows(t, 50, 60, &v), 0);
    assert_int_equal(tdm_tensor_share(v), 0);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_SHARED);
    assert_int_equal(tdm_tensor_mem(v), TDM_MEM_SHARED);
    const int64_t *p = tdm_tensor_data(t);
    for (int i = 0; i < 400; i++)
        assert_int_equal(p[i], 7 * i);
    assert_ptr_equal(tdm_tensor_data(v), p + 200);
    /* A forked child writing through the view is seen through the base. */
    assert_int_equal(run_in_child(child_writes, v), 0);
    assert_int_equal(p[200], 1000);
    assert_int_equal(p[239], 1039);
    assert_int_equal(p[199], 7 * 199);
    assert_int_equal(p[240], 7 * 240);
    tdm_tensor_release(t);
    tdm_tensor_release(v);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

static void test_share_twice_is_noop(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){1000}, 0, &t), 0);
    fill_f32(t, 5.0f);
    assert_int_equal(tdm_tensor_share(t), 0);
    void *first = tdm_tensor_data(t);
    unsigned long long held = atomic_load(&rt->shm_bytes);
    assert_int_equal(tdm_tensor_share(t), 0);
    assert_ptr_equal(tdm_tensor_data(t), first);
    assert_int_equal(atomic_load(&rt->shm_bytes), held);
    check_f32(t, 5.0f);
    tdm_tensor_release(t);
    /* Created shared: share() is a no-op from the start. */
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){10}, TDM_MEM_SHARED, &t), 0);
    first = tdm_tensor_data(t);
    assert_int_equal(tdm_tensor_share(t), 0);
    assert_ptr_equal(tdm_tensor_data(t), first);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_share_over_limit_leaves_tensor_unchanged(void **state)
{
    (void)state;
    size_t pg = page();
    tdm_runtime *rt = open_with_shm_limit(2 * pg);
    tdm_tensor *t = NULL;
    int64_t n = (int64_t)(4 * pg / sizeof(float));
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, &n, 0, &t), 0);
    fill_f32(t, 9.0f);
    void *before = tdm_tensor_data(t);
    assert_int_equal(tdm_tensor_share(t), TDM_ENOSPC);
    assert_non_null(strstr(tdm_errmsg(rt), "tdm_tensor_share:"));
    assert_ptr_equal(tdm_tensor_data(t), before);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_HOST);
    check_f32(t, 9.0f);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_share_pinned_stays_pinned(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){256}, TDM_MEM_PINNED, &t), 0);
    unsigned was = tdm_tensor_mem(t);
    fill_f32(t, 2.0f);
    assert_int_equal(tdm_tensor_share(t), 0);
    assert_int_equal(tdm_tensor_mem(t), was | TDM_MEM_SHARED);
    check_f32(t, 2.0f);
    tdm_tensor_release(t);
    tdm_test_close(rt);
}

static void test_share_wrapped_leaves_user_memory(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    float *buf = malloc(64 * sizeof *buf);
    assert_non_null(buf);
    for (int i = 0; i < 64; i++)
        buf[i] = (float)i;
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F32, 2, (int64_t[]){8, 8}, NULL, buf, &t), 0);
    assert_int_equal(tdm_tensor_share(t), 0);
    assert_int_equal(tdm_tensor_mem(t), TDM_MEM_SHARED);
    assert_ptr_not_equal(tdm_tensor_data(t), buf);
    check_f32(t, 0.0f);
    ((float *)tdm_tensor_data(t))[3] = -5.0f; /* no longer the user's memory */
    assert_true(buf[3] == 3.0f);
    tdm_tensor_release(t);
    for (int i = 0; i < 64; i++)
        assert_true(buf[i] == (float)i);
    free(buf);
    tdm_test_close(rt);
}

static void test_share_null_einval(void **state)
{
    (void)state;
    assert_int_equal(tdm_tensor_share(NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(NULL), "tdm_tensor_share:"));
}

/* ---- share of an imported tensor ----------------------------------------------------------- */

static tdm_runtime *open_with_procs(int procs)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.procs = procs;
    cfg.use_env = 0;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

/* An import is shared memory already: share() maps the same pages into the arena (no copy, no
 * accounting), the exporter keeps seeing every write, and worker processes can use it. */
static void test_share_import_maps_same_pages_no_copy(void **state)
{
    (void)state;
    tdm_runtime *rt = open_with_procs(1);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const int64_t n = 1000;
    tdm_tensor *x = NULL, *imp = NULL, *v = NULL, *in = NULL, *imp2 = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &x), 0);
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)i;
    assert_int_equal(tdm_tensor_export(x, sv[0]), 0);
    assert_int_equal(tdm_tensor_import(rt, sv[1], &imp), 0);
    assert_int_equal(tdm_tensor_mem(imp), TDM_MEM_SHARED);
    assert_false(tdm__arena_contains(rt->arena, tdm_tensor_data(imp)));
    assert_int_equal(tdm_tensor_view_rows(imp, 10, 20, &v), 0);

    /* Not visible to worker processes yet. */
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &in), 0);
    double *ind = tdm_tensor_data(in);
    for (int64_t i = 0; i < n; i++)
        ind[i] = (double)(i % 100);
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = TDM_POLICY_PROCS;
    o.batch_size = 100;
    tdm_scale_shift_params prm = {2.0, 1.0};
    assert_int_equal(tdm_map(rt, "scale_shift", &in, 1, &imp, 1, &prm, sizeof prm, &o, NULL),
                     TDM_EINVAL);

    unsigned long long held = atomic_load(&rt->shm_bytes);
    assert_int_equal(tdm_tensor_share(imp), 0);
    double *id = tdm_tensor_data(imp);
    assert_true(tdm__arena_contains(rt->arena, id)); /* where the workers see it */
    assert_ptr_not_equal(id, xd);
    assert_ptr_equal(tdm_tensor_data(v), id + 10); /* views follow */
    assert_int_equal(tdm_tensor_mem(imp), TDM_MEM_SHARED);
    assert_int_equal(atomic_load(&rt->shm_bytes), held); /* nothing new accounted */
    /* The same pages: no copy was made, and writes go both ways. */
    for (int64_t i = 0; i < n; i++)
        assert_true(id[i] == (double)i);
    id[5] = 42.0;
    assert_true(xd[5] == 42.0);
    xd[6] = -1.0;
    assert_true(id[6] == -1.0);
    /* Now a no-op. */
    assert_int_equal(tdm_tensor_share(imp), 0);
    assert_ptr_equal(tdm_tensor_data(imp), id);
    assert_int_equal(atomic_load(&rt->shm_bytes), held);

    /* Worker processes write into it, and the exporter's tensor has the results. */
    assert_int_equal(tdm_map(rt, "scale_shift", &in, 1, &imp, 1, &prm, sizeof prm, &o, NULL), 0);
    for (int64_t i = 0; i < n; i++)
        assert_true(xd[i] == 2.0 * (double)(i % 100) + 1.0);

    /* It can still be exported (its own descriptor), and the new import sees the same bytes. */
    assert_int_equal(tdm_tensor_export(imp, sv[0]), 0);
    assert_int_equal(tdm_tensor_import(rt, sv[1], &imp2), 0);
    const double *i2 = tdm_tensor_data(imp2);
    for (int64_t i = 0; i < n; i++)
        assert_true(i2[i] == xd[i]);

    close(sv[0]);
    close(sv[1]);
    tdm_tensor_release(v);
    tdm_tensor_release(imp);
    tdm_tensor_release(imp2);
    tdm_tensor_release(in);
    tdm_tensor_release(x);
    assert_int_equal(atomic_load(&rt->shm_bytes), 0);
    tdm_test_close(rt);
}

/* ---- what shared tensors may take (tdm_runtime_shm_info) ------------------------------------ */

static void test_shm_info_sane(void **state)
{
    (void)state;
    size_t pg = page();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_shm_info si;
    assert_int_equal(tdm_runtime_shm_info(rt, &si), 0);
    assert_non_null(si.bound);
    assert_true(!strcmp(si.bound, "memory available") || !strcmp(si.bound, "memory cgroup") ||
                !strcmp(si.bound, "arena address space"));
    assert_int_equal(si.limit_bytes, 0);
    assert_int_equal(si.held_bytes, 0);
    assert_true(si.allowed_bytes > 0);
    assert_int_equal(si.allowed_bytes % pg, 0);
    assert_true(si.arena_bytes >= (1ull << 30));
    assert_true(si.arena_free_bytes <= si.arena_bytes);
    assert_true(si.allowed_bytes <= si.arena_free_bytes);
    assert_true(si.mem_available_bytes > 0); /* Linux has /proc/meminfo */
    assert_true(si.allowed_bytes <= si.mem_available_bytes);
    assert_true(si.allowed_bytes <= si.cgroup_free_bytes);
    /* Shared tensors count as held; host ones do not. */
    tdm_tensor *t = NULL, *h = NULL;
    int64_t n = (int64_t)(3 * pg);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_SHARED, &t), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, 0, &h), 0);
    assert_int_equal(tdm_runtime_shm_info(rt, &si), 0);
    assert_int_equal(si.held_bytes, 3 * pg);
    tdm_tensor_release(t);
    tdm_tensor_release(h);
    tdm_test_close(rt);

    /* Under a cap, the cap minus what is held is the bound, and creation agrees with it. */
    rt = open_with_shm_limit(4 * pg);
    assert_int_equal(tdm_runtime_shm_info(rt, &si), 0);
    assert_int_equal(si.limit_bytes, 4 * pg);
    assert_string_equal(si.bound, "shm_limit");
    assert_int_equal(si.allowed_bytes, 4 * pg);
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_SHARED, &t), 0);
    assert_int_equal(tdm_runtime_shm_info(rt, &si), 0);
    assert_int_equal(si.held_bytes, 3 * pg);
    assert_int_equal(si.allowed_bytes, pg);
    int64_t more = (int64_t)si.allowed_bytes + 1;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &more, TDM_MEM_SHARED, &h), TDM_ENOSPC);
    more = (int64_t)si.allowed_bytes;
    assert_int_equal(tdm_tensor_empty(rt, TDM_U8, 1, &more, TDM_MEM_SHARED, &h), 0);
    assert_int_equal(tdm_runtime_shm_info(rt, &si), 0);
    assert_int_equal(si.allowed_bytes, 0);
    tdm_tensor_release(t);
    tdm_tensor_release(h);
    tdm_test_close(rt);
}

static void test_shm_info_null_einval(void **state)
{
    (void)state;
    tdm_shm_info si;
    memset(&si, 0xab, sizeof si);
    assert_int_equal(tdm_runtime_shm_info(NULL, &si), TDM_EINVAL);
    assert_int_equal(si.allowed_bytes, 0);
    assert_null(si.bound);
    assert_non_null(strstr(tdm_errmsg(NULL), "tdm_runtime_shm_info:"));
    tdm_runtime *rt = tdm_test_open(1);
    assert_int_equal(tdm_runtime_shm_info(rt, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "tdm_runtime_shm_info:"));
    tdm_test_close(rt);
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
