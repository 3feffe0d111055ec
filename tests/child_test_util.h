/* SPDX-License-Identifier: MIT */
/* Helpers for tests that run part of their work in forked children (the cache and io tests):
 * code in a child reports by its exit code, never by a cmocka assertion (a failed one there
 * would unwind into the child's copy of the test runner), so the child-side helpers return
 * NULL instead of asserting; only run_in_children(), in the parent, asserts. */
#ifndef TDM_CHILD_TEST_UTIL_H
#define TDM_CHILD_TEST_UTIL_H

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tdm_test.h"

/* In a child: a runtime of `threads` worker threads, no environment overrides; NULL if it
 * does not open. */
static inline tdm_runtime *child_open(int threads)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = threads;
    cfg.use_env = 0;
    tdm_runtime *rt;
    return tdm_runtime_open(&rt, &cfg) == 0 ? rt : NULL;
}

/* In a child: files may grow to `bytes` at most. SIGXFSZ is ignored so that a write past the
 * limit fails (EFBIG), as on a full disk, instead of killing the child. */
static inline void child_limit_file_size(rlim_t bytes)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {bytes, bytes};
    setrlimit(RLIMIT_FSIZE, &rl);
}

/* Runs fn(arg) in n forked children at once; asserts that each one exits with 0 (fn's
 * result). */
static inline void run_in_children(int n, int (*fn)(void *arg), void *arg)
{
    pid_t pid[8];
    assert_true(n >= 1 && n <= 8);
    for (int k = 0; k < n; k++) {
        pid[k] = fork();
        assert_true(pid[k] >= 0);
        if (pid[k] == 0)
            _exit(fn(arg));
    }
    for (int k = 0; k < n; k++) {
        int st;
        assert_int_equal(waitpid(pid[k], &st, 0), pid[k]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
}

#endif
