/* SPDX-License-Identifier: MIT */
/* Helpers shared by the tensor tests (tests/test_tensor.c and the files in tests/tensor/: one
 * executable, test_tensor, whose test list stays in test_tensor.c). */
#ifndef TDM_TENSOR_UTIL_H
#define TDM_TENSOR_UTIL_H

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

static inline size_t page(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static inline tdm_runtime *open_with_shm_limit(uint64_t limit)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    cfg.shm_limit = limit;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

static inline void fill_f32(tdm_tensor *t, float base)
{
    float *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        p[i] = base + (float)i;
}

static inline void check_f32(const tdm_tensor *t, float base)
{
    const float *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < tdm_tensor_numel(t); i++)
        assert_true(p[i] == base + (float)i);
}

/* Runs fn(arg) in a forked child and returns its exit status (asserting a normal exit). The
 * child never returns into cmocka: it reports through its exit code. */
static inline int run_in_child(int (*fn)(void *), void *arg)
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
static inline int child_with_runtime(void *arg)
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

static inline int run_in_child_rt(int (*fn)(void *))
{
    return run_in_child(child_with_runtime, &fn);
}

/* Makes mlock fail in this process: RLIMIT_MEMLOCK 0 (soft and hard) and, because a process
 * with CAP_IPC_LOCK (root) ignores that limit, drops that capability too. */
static inline int forbid_mlock(void)
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

/* tests/tensor/shared.c: shared memory, its limits, pinned memory, fork, share, shm_info */
void test_shared_needs_no_descriptor_open_needs_one(void **state);
void test_share_failure_leaves_tensor_unchanged(void **state);
void test_shared_over_shm_limit_enospc(void **state);
void test_shared_over_mem_available_enospc(void **state);
void test_pinned_small_is_locked(void **state);
void test_pinned_strict_eperm_when_lock_refused(void **state);
void test_pinned_falls_back_unlocked_without_strict(void **state);
void test_shared_pinned_is_both(void **state);
void test_shared_child_write_seen_by_parent(void **state);
void test_host_child_write_not_seen_by_parent(void **state);
void test_share_preserves_data_and_views_follow(void **state);
void test_share_twice_is_noop(void **state);
void test_share_over_limit_leaves_tensor_unchanged(void **state);
void test_share_pinned_stays_pinned(void **state);
void test_share_wrapped_leaves_user_memory(void **state);
void test_share_null_einval(void **state);
void test_share_import_maps_same_pages_no_copy(void **state);
void test_shm_info_sane(void **state);
void test_shm_info_null_einval(void **state);

#endif
