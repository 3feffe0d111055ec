/* SPDX-License-Identifier: MIT */
/* Helpers of the cache tests (test_cache.c): a temporary directory, inputs and the exp_sinh
 * check, entry paths, and the tools that damage an entry (its data, its size, its manifest,
 * its .npy header) the way a disk or another program could. */
#ifndef TDM_CACHE_TEST_UTIL_H
#define TDM_CACHE_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "tdm_test.h"

#define TDM_TMPDIR_PREFIX "tdm-cache"
#include "tmpdir_util.h"

#include "child_test_util.h"

static inline tdm_map_opts quiet(void)
{
    return tdm_test_quiet_opts();
}

static inline tdm_tensor *input(tdm_runtime *rt, int64_t n, double scale)
{
    tdm_tensor *x;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &x), 0);
    double *d = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        d[i] = (double)(i % 1000) * 1e-3 * scale;
    return x;
}

static inline void expect_exp_sinh(const tdm_tensor *x, const tdm_tensor *y)
{
    assert_int_equal(tdm_tensor_numel(x), tdm_tensor_numel(y));
    const double *a = tdm_tensor_data(x), *b = tdm_tensor_data(y);
    for (int64_t i = 0; i < tdm_tensor_numel(x); i++) {
        double e = exp(a[i]) * sinh(a[i]);
        assert_true(fabs(b[i] - e) <= 1e-12 * (1 + fabs(e)));
    }
}

static inline tdm_cache *open_cache(tdm_runtime *rt, const tdm_cache_opts *o)
{
    tdm_cache *c;
    assert_int_equal(tdm_cache_open(rt, P("cache"), o, &c), 0);
    return c;
}

/* The body of a forked child of the cache tests: its result is the child's exit code. */
typedef int (*cache_child_fn)(tdm_runtime *rt, tdm_cache *c);

typedef struct {
    int threads;
    cache_child_fn fn;
} cache_child;

/* In the child: a runtime of k->threads threads and the cache in the test's directory (10 if
 * the runtime does not open, 11 if the cache does not), k->fn on them, then both closed. */
static inline int cache_child_main(void *arg)
{
    const cache_child *k = arg;
    tdm_runtime *rt = child_open(k->threads);
    if (!rt)
        return 10;
    tdm_cache *c;
    if (tdm_cache_open(rt, P("cache"), NULL, &c) != 0)
        return 11;
    int code = k->fn(rt, c);
    tdm_cache_close(c);
    tdm_runtime_close(rt);
    return code;
}

/* Runs fn in n forked children at once, each with its own runtime of `threads` threads and the
 * cache; asserts that each one's result is 0. */
static inline void run_cache_children(int n, int threads, cache_child_fn fn)
{
    cache_child k = {threads, fn};
    run_in_children(n, cache_child_main, &k);
}

/* A test's end: releases x and y (either may be NULL), closes c and rt, removes the test's
 * directory. */
static inline void end_cache_test(tdm_runtime *rt, tdm_cache *c, tdm_tensor *x, tdm_tensor *y)
{
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_cache_close(c);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* Path of output 0 of the only entry in the cache. */
static inline void entry_file(const char *key, const char *file, char *out, size_t len)
{
    snprintf(out, len, "%s/cache/%s/%s", g_dir, key, file);
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- damage ---- */

static inline void flip_data_byte(const char *key)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, 1000), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, 1000), 1);
    close(fd);
}

static inline void truncate_output(const char *key)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    assert_int_equal(truncate(p, 500), 0);
}

static inline void flip_manifest(const char *key)
{
    char p[600];
    entry_file(key, "manifest", p, sizeof p);
    int fd = open(p, O_RDWR);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, 50), 1);
    b ^= 0x80;
    assert_int_equal(pwrite(fd, &b, 1, 50), 1);
    close(fd);
}

static inline void damage_header(const char *key)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    int fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4);
    close(fd);
}

static inline void remove_output(const char *key)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    assert_int_equal(unlink(p), 0);
}

/* ---- header damage that keeps the file's size ------------------------------------------- */

/* The .npy header of a 300 x 40 f64 output, edited so that it still parses but says another
 * dtype, order, shape or byte order: the same bytes would come back as something else. The
 * first three are also tried with the manifest re-signed to agree with the damaged header
 * (`structural`): the checks of the loaded tensor's dtype / shape / order catch those alone.
 * A byte-order edit loads as an f64 of the right shape: only the header's hash (or, with
 * verify, the data's) catches it. */
#define HDR_ROWS 300
#define HDR_COLS 40
static const struct {
    const char *name, *from, *to;
    bool structural;
} k_header_edits[] = {
    {"dtype", "'<f8'", "'<i8'", true},
    {"order", "False, ", "True,  ", true},
    {"shape", "(300, 40)", "(40, 300)", true},
    {"byte order", "'<f8'", "'>f8'", false},
};

static inline tdm_tensor *input_2d(tdm_runtime *rt)
{
    int64_t shape[2] = {HDR_ROWS, HDR_COLS};
    tdm_tensor *x;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 2, shape, 0, &x), 0);
    double *d = tdm_tensor_data(x);
    for (int64_t i = 0; i < HDR_ROWS * HDR_COLS; i++)
        d[i] = (double)(i % 977) * 1e-3;
    return x;
}

static inline void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Replaces `from` by `to` (same length) in output 0's header: the file keeps its size. */
static inline void edit_header(const char *key, const char *from, const char *to)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    struct stat st0, st1;
    assert_int_equal(stat(p, &st0), 0);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    char h[128];
    assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    size_t n = strlen(from);
    assert_int_equal(n, strlen(to));
    size_t at = 0;
    while (at + n <= sizeof h && memcmp(h + at, from, n) != 0)
        at++;
    assert_true(at + n <= sizeof h);
    assert_int_equal(pwrite(fd, to, n, (off_t)at), (ssize_t)n);
    close(fd);
    assert_int_equal(stat(p, &st1), 0);
    assert_int_equal(st0.st_size, st1.st_size);
}

/* Makes the manifest agree with output 0's (damaged) header: the head hash re-taken from the
 * file and the manifest's own checksum recomputed, as a forger would. Only the checks of the
 * loaded tensor against the manifest's dtype / shape / order can catch the damage then. */
static inline void resign_manifest(const char *key)
{
    char mp[600], op[600];
    entry_file(key, "manifest", mp, sizeof mp);
    entry_file(key, "out0.npy", op, sizeof op);
    unsigned char m[40 + 96 + 8];
    int fd = open(mp, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, m, sizeof m), (ssize_t)sizeof m);
    struct stat st;
    assert_int_equal(stat(op, &st), 0);
    size_t head = (size_t)st.st_size - (size_t)HDR_ROWS * HDR_COLS * 8;
    assert_true(head >= 64 && head <= 4096);
    unsigned char h[4096];
    int ofd = open(op, O_RDONLY);
    assert_true(ofd >= 0);
    assert_int_equal(pread(ofd, h, head, 0), (ssize_t)head);
    close(ofd);
    put_le64(m + 40 + 88, XXH3_64bits(h, head));
    put_le64(m + 40 + 96, XXH3_64bits(m, 40 + 96));
    assert_int_equal(pwrite(fd, m, sizeof m, 0), (ssize_t)sizeof m);
    close(fd);
}

/* The entry's output 0 as its header says (the damage is a well-formed header). */
static inline void expect_header(tdm_runtime *rt, const char *key, tdm_dtype dt, int fortran,
                                 int big_endian, int64_t d0, int64_t d1)
{
    char p[600];
    entry_file(key, "out0.npy", p, sizeof p);
    tdm_file_info fi;
    assert_int_equal(tdm_file_info_get(rt, p, &fi), 0);
    assert_int_equal(fi.dtype, dt);
    assert_int_equal(fi.fortran_order, fortran);
    assert_int_equal(fi.big_endian, big_endian);
    assert_int_equal(fi.ndim, 2);
    assert_int_equal(fi.shape[0], d0);
    assert_int_equal(fi.shape[1], d1);
}

/* ---- test kernels ---- */

/* Registers a CPU kernel of one input and one output (infer may be NULL). */
static inline void reg_cpu_kernel(tdm_runtime *rt, const char *name, tdm_kernel_cpu_fn cpu,
                                  tdm_kernel_infer_fn infer)
{
    tdm_kernel_def kd = TDM_KERNEL_DEF_INIT;
    kd.name = name;
    kd.n_in_min = kd.n_in_max = 1;
    kd.n_out = 1;
    kd.cpu = cpu;
    kd.infer = infer;
    assert_int_equal(tdm_kernel_register(rt, &kd), 0);
}

/* "copy_any": y = x, any dtype and shape (rows along dim 0), for storing every dtype. */
static inline int infer_copy_any(const tdm_tensor *const *in, int n_in, const void *params,
                                 size_t params_size, tdm_tensor_desc *out, int n_out, char *msg,
                                 size_t len)
{
    (void)n_in, (void)params, (void)params_size, (void)n_out, (void)msg, (void)len;
    memset(&out[0], 0, sizeof out[0]);
    out[0].dtype = tdm_tensor_dtype(in[0]);
    out[0].ndim = tdm_tensor_ndim(in[0]);
    memcpy(out[0].shape, tdm_tensor_shape(in[0]), (size_t)out[0].ndim * sizeof(int64_t));
    return 0;
}

static inline int cpu_copy_any(const tdm_kernel_args *a)
{
    size_t es = tdm_dtype_size(tdm_tensor_dtype(a->tin[0]));
    memcpy(a->out[0], a->in[0], (size_t)((a->end - a->begin) * a->in_row_elems[0]) * es);
    return 0;
}

static inline int cpu_twice(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    for (int64_t i = 0; i < (a->end - a->begin) * a->in_row_elems[0]; i++)
        y[i] = 2 * x[i];
    return 0;
}

static inline int cpu_thrice(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    for (int64_t i = 0; i < (a->end - a->begin) * a->in_row_elems[0]; i++)
        y[i] = 3 * x[i];
    return 0;
}

/* Registers "scaled" (same name and kernel_version every time) in a fresh runtime: its CPU
 * body, its device source text (NULL: CPU only) and its code hash as given. */
static inline tdm_runtime *runtime_with_scaled(tdm_kernel_cpu_fn cpu, const char *source,
                                               uint64_t hash)
{
    tdm_runtime *rt = tdm_test_open(2);
    tdm_kernel_def kd = TDM_KERNEL_DEF_INIT;
    kd.name = "scaled";
    kd.n_in_min = kd.n_in_max = 1;
    kd.n_out = 1;
    kd.cpu = cpu;
    kd.source = source;
    kd.code_hash = hash;
    assert_int_equal(tdm_kernel_register(rt, &kd), 0);
    return rt;
}

#endif
