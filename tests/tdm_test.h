/* SPDX-License-Identifier: MIT */
/* Shared helpers for tandem's cmocka tests. */
#ifndef TDM_TEST_H
#define TDM_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tandem.h"

/* 1 in a build with AddressSanitizer, ThreadSanitizer or MemorySanitizer: their shadow memory
 * inflates RSS, address space and page-fault counts, so tests skip assertions on those. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TDM_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define TDM_TEST_SANITIZED 1
#endif
#endif
#ifndef TDM_TEST_SANITIZED
#define TDM_TEST_SANITIZED 0
#endif

/* skip() also notes that a test skipped: cmocka's exits 0, so CTest counted a skipped test
 * (a device test with no device, a count not asserted under a sanitizer) as passed. */
static int tdm_test_skips;
#undef skip
#define skip() (tdm_test_skips++, _skip(__FILE__, __LINE__))

/* Runs the group; argv[1], when given, is the name of the single test to run (CTest runs each
 * test on its own this way). A single test that skipped exits 77, which CTest reports as
 * skipped (SKIP_RETURN_CODE). */
static inline int tdm_test_run(const char *group, const struct CMUnitTest *tests, size_t n,
                               int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    int failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
    return failed == 0 && argc > 1 && tdm_test_skips > 0 ? 77 : failed;
}
#define TDM_TEST_MAIN(group, tests)                                                                \
    tdm_test_run(group, tests, sizeof(tests) / sizeof(tests[0]), argc, argv)

/* Opens a runtime with `threads` worker threads, `procs` worker processes and no environment
 * overrides; asserts success. */
static inline tdm_runtime *tdm_test_open_procs(int threads, int procs)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = threads;
    cfg.procs = procs;
    cfg.use_env = 0;
    tdm_runtime *rt = NULL;
    int rc = tdm_runtime_open(&rt, &cfg);
    assert_int_equal(rc, 0);
    assert_non_null(rt);
    return rt;
}

/* The same with threads only. */
static inline tdm_runtime *tdm_test_open(int threads)
{
    return tdm_test_open_procs(threads, 0);
}

static inline void tdm_test_close(tdm_runtime *rt)
{
    assert_int_equal(tdm_runtime_close(rt), 0);
}

/* The whole file at path, in a malloc'd buffer the caller frees (one spare byte at the end);
 * *n gets its size. Asserts that it can be read. */
static inline unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Map options with the progress display off, for the tests' map-option helpers to start from
 * (the display would write to the test's output). */
static inline tdm_map_opts tdm_test_quiet_opts(void)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    return o;
}

#endif
