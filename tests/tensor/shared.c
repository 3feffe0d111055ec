/* SPDX-License-Identifier: MIT */
/* Tensor tests: shared memory (the arena, its limits, across fork), pinned memory,
 * tdm_tensor_share() and what shared tensors may take. Listed in test_tensor.c's main. */
#include "tensor/tensor_util.h"

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

void test_shared_needs_no_descriptor_open_needs_one(void **state)
{
    (void)state;
    assert_int_equal(run_in_child_rt(child_no_fds), 0);
}

void test_share_failure_leaves_tensor_unchanged(void **state)
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

void test_shared_over_shm_limit_enospc(void **state)
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

void test_shared_over_mem_available_enospc(void **state)
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

void test_pinned_small_is_locked(void **state)
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

void test_pinned_strict_eperm_when_lock_refused(void **state)
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

void test_pinned_falls_back_unlocked_without_strict(void **state)
{
    (void)state;
    assert_int_equal(run_in_child_rt(child_pinned_fallback), 0);
}

void test_shared_pinned_is_both(void **state)
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

void test_shared_child_write_seen_by_parent(void **state)
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

void test_host_child_write_not_seen_by_parent(void **state)
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

/* ---- share --------------------------------------------------------------------------------- */

void test_share_preserves_data_and_views_follow(void **state)
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

void test_share_twice_is_noop(void **state)
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

void test_share_over_limit_leaves_tensor_unchanged(void **state)
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

void test_share_pinned_stays_pinned(void **state)
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

void test_share_wrapped_leaves_user_memory(void **state)
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

void test_share_null_einval(void **state)
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
void test_share_import_maps_same_pages_no_copy(void **state)
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

void test_shm_info_sane(void **state)
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

void test_shm_info_null_einval(void **state)
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

