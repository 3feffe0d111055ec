/* SPDX-License-Identifier: MIT */
/* cuda: the CUDA backend's device layer (backends/cuda/device.c) through its tdm__dev_ops table,
 * its NVRTC loader, and the "no driver" path.
 *
 * Three groups, chosen per test by name (CTest runs each test on its own):
 *   - NVRTC compile-only tests: run wherever libnvrtc.so.13 can be dlopen'ed (CI has it, no GPU
 *     needed); exit 77 without it;
 *   - host tests: run in every CUDA build (no driver here: it must be zero devices, not an error);
 *   - device tests: exit 77 ("no CUDA device: <reason>") when cudaGetDeviceCount fails or finds
 *     none, so they are reported as skipped, never as passed.
 * Without CUDA in the build (TDM_HAVE_CUDA=0) every test exits 77.
 * On a GPU machine: ctest --test-dir build -R '^cuda_' --output-on-failure */
#include "tdm_test.h"

#if TDM_HAVE_CUDA
#include <math.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "builtin_kernels.h"
#include "cuda_internal.h"
#include "sched/device.h"

extern const char tdm__builtin_kernel_source[];

static const tdm__dev_ops *ops = &tdm__cuda_dev_ops;

/* ---- helpers ------------------------------------------------------------------------------- */

static tdm__karg karg_buf(tdm__dbuf *b)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_BUF;
    a.buf = b;
    return a;
}

static tdm__karg karg_i64(long long v)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_VALUE;
    a.size = sizeof v;
    memcpy(a.value, &v, sizeof v);
    return a;
}

static tdm__karg karg_f32(float v)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_VALUE;
    a.size = sizeof v;
    memcpy(a.value, &v, sizeof v);
    return a;
}

/* |got - want| <= abs + rel * |want|, with the index in the failure message. */
static void check_near(const char *what, size_t i, double want, double got, double rel, double abs)
{
    double tol = abs + rel * fabs(want);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%zu]: got %.17g, want %.17g (tolerance %.3g)", what, i, got, want, tol);
}

typedef struct fixture {
    tdm_runtime *rt;
    tdm__dev *d;
} fixture;

static int dev_setup(void **state)
{
    static fixture f;
    f.rt = tdm_test_open(1);
    char detail[512] = "";
    int rc = ops->open(f.rt, 0, &f.d, detail, sizeof detail);
    if (rc != 0)
        print_error("open: %s: %s\n", tdm_status_name(rc), detail);
    assert_int_equal(rc, 0);
    assert_non_null(f.d);
    *state = &f;
    return 0;
}

static int dev_teardown(void **state)
{
    fixture *f = *state;
    ops->close(f->d);
    tdm_test_close(f->rt);
    return 0;
}

#define EXPECT_OK(call)                                                                            \
    do {                                                                                           \
        detail[0] = 0;                                                                             \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s: %s", #call, tdm_status_name(rc_), detail);                           \
    } while (0)

/* ---- NVRTC (compile only: runs without a GPU) ------------------------------------------------ */

static void test_nvrtc_builds_builtin_source(void **state)
{
    char detail[8192] = "";
    char *code = NULL;
    size_t n = 0;
    int rc = tdm__cuda_nvrtc_compile(tdm__builtin_kernel_source, "builtin", 90, 0, &code, &n,
                                     detail, sizeof detail);
    if (rc != 0)
        fail_msg("PTX for compute_90: %s: %s", tdm_status_name(rc), detail);
    assert_non_null(code);
    assert_true(n > 1000);
    assert_non_null(strstr(code, ".target sm_90"));
    /* every entry point of builtin_kernels.h is in the program, unmangled */
    const char *entries[] = {"tdm_exp_sinh_f32", "tdm_exp_sinh_f64",    "tdm_axpy_f32",
                             "tdm_axpy_f64",     "tdm_scale_shift_f32", "tdm_scale_shift_f64",
                             "tdm_normalize_u8", "tdm_sum_f32",         "tdm_sum_f64",
                             "tdm_mean_f32",     "tdm_mean_f64",        "tdm_sumsq_f32",
                             "tdm_sumsq_f64",    "tdm_pi_leibniz"};
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, ".entry %s(", entries[i]);
        if (!strstr(code, pat))
            fail_msg("the PTX has no %s", pat);
    }
    free(code);

    /* and a CUBIN for sm_90 (an ELF image) */
    rc = tdm__cuda_nvrtc_compile(tdm__builtin_kernel_source, "builtin", 90, 1, &code, &n, detail,
                                 sizeof detail);
    if (rc != 0)
        fail_msg("CUBIN for sm_90: %s: %s", tdm_status_name(rc), detail);
    assert_true(n > 4);
    assert_memory_equal(code, "\177ELF", 4);
    free(code);
}

static void test_nvrtc_syntax_error_is_ekernel(void **state)
{
    const char *bad = "extern \"C\" __global__ void tdm_broken(float *x)\n"
                      "{\n"
                      "    x[0] = ;\n"
                      "}\n";
    char detail[4096] = "";
    char *code = (char *)0x1;
    size_t n = 7;
    int rc = tdm__cuda_nvrtc_compile(bad, "broken.cu", 90, 0, &code, &n, detail, sizeof detail);
    assert_int_equal(rc, TDM_EKERNEL);
    assert_null(code);
    assert_int_equal(n, 0);
    /* the log names the file, the line and says error */
    assert_non_null(strstr(detail, "broken.cu"));
    assert_non_null(strstr(detail, "error"));
    assert_non_null(strstr(detail, "(3)"));
}

/* The NVRTC loaded is named, and is the one of the toolkit the library was built with (here:
 * libnvrtc.so.13 from /usr/local/cuda). */
static void test_nvrtc_names_the_library_loaded(void **state)
{
    char why[256] = "";
    assert_int_equal(tdm__cuda_nvrtc_available(why, sizeof why), 1);
    char want[32];
    snprintf(want, sizeof want, "(libnvrtc.so.%d)", CUDART_VERSION / 1000);
    if (!strstr(why, want))
        fail_msg("NVRTC: %s (want %s)", why, want);
    int major = 0, minor = -1;
    assert_int_equal(tdm__cuda_nvrtc_version(&major, &minor), 0);
    assert_int_equal(major, CUDART_VERSION / 1000);
}

/* ---- host (every CUDA build) ---------------------------------------------------------------- */

/* NVRTC is looked for by soname: the build's toolkit first, then the others, newest first. */
static void test_nvrtc_sonames_toolkit_first(void **state)
{
    const char *names[8];
    int n = tdm__cuda_nvrtc_candidates(13, names, 8);
    assert_int_equal(n, 4);
    assert_string_equal(names[0], "libnvrtc.so.13");
    assert_string_equal(names[1], "libnvrtc.so.12");
    assert_string_equal(names[2], "libnvrtc.so.11.2");
    assert_string_equal(names[3], "libnvrtc.so");
    n = tdm__cuda_nvrtc_candidates(12, names, 8);
    assert_int_equal(n, 4);
    assert_string_equal(names[0], "libnvrtc.so.12");
    assert_string_equal(names[1], "libnvrtc.so.13");
    assert_int_equal(tdm__cuda_nvrtc_candidates(12, names, 2), 2); /* bounded */
    assert_int_equal(tdm__cuda_nvrtc_candidates(99, names, 8), 4); /* unknown: all known */
    assert_string_equal(names[0], "libnvrtc.so.13");
}

/* Which image of the built-ins each GPU generation runs: SASS of its major version and a minor
 * at most its own, else the newest PTX at most its architecture, else NVRTC. */
static void test_builtin_image_per_arch(void **state)
{
    const char *built = tdm__cuda_archs_built();
    static const struct {
        const char *archs;
        int arch, path, image;
    } cases[] = {
        {"80-real,86-real,89-real,90-real,90-virtual", 80, TDM__CUDA_BUILTIN_SASS, 80},
        {"80-real,86-real,89-real,90-real,90-virtual", 86, TDM__CUDA_BUILTIN_SASS, 86},
        {"80-real,86-real,89-real,90-real,90-virtual", 87, TDM__CUDA_BUILTIN_SASS, 86},
        {"80-real,86-real,89-real,90-real,90-virtual", 89, TDM__CUDA_BUILTIN_SASS, 89},
        {"80-real,86-real,89-real,90-real,90-virtual", 90, TDM__CUDA_BUILTIN_SASS, 90},
        {"80-real,86-real,89-real,90-real,90-virtual", 100, TDM__CUDA_BUILTIN_PTX, 90},
        {"80-real,86-real,89-real,90-real,90-virtual", 120, TDM__CUDA_BUILTIN_PTX, 90},
        {"80-real,86-real,89-real,90-real,90-virtual", 75, TDM__CUDA_BUILTIN_NVRTC, 0},
        {"90-real,90-virtual", 86, TDM__CUDA_BUILTIN_NVRTC, 0}, /* the old default on an A10 */
        {"90", 90, TDM__CUDA_BUILTIN_SASS, 90},                 /* bare: both */
        {"90", 103, TDM__CUDA_BUILTIN_PTX, 90},
        {"", 90, TDM__CUDA_BUILTIN_NVRTC, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int image = -1;
        int path = tdm__cuda_builtin_image(cases[i].archs, cases[i].arch, &image);
        if (path != cases[i].path || image != cases[i].image)
            fail_msg("archs '%s', sm_%d: %s %d, want %s %d", cases[i].archs, cases[i].arch,
                     tdm__cuda_builtin_path_name(path), image,
                     tdm__cuda_builtin_path_name(cases[i].path), cases[i].image);
    }
    /* the default architectures (a build may choose fewer: CMAKE_CUDA_ARCHITECTURES) */
    for (int arch = 80; strstr(built, "80-real") && arch <= 121; arch++) {
        int image = 0;
        int path = tdm__cuda_builtin_image(built, arch, &image);
        if (arch < 90 && arch / 10 == 8 && path != TDM__CUDA_BUILTIN_SASS)
            fail_msg("built for '%s': sm_%d has no SASS", built, arch);
        if (path == TDM__CUDA_BUILTIN_NVRTC)
            fail_msg("built for '%s': sm_%d has no image", built, arch);
    }
}

/* The byte sizes both device backends read from TDM_DEVICE_MEM_CAP (runtime/sched). */
static void test_mem_cap_sizes_parse(void **state)
{
    uint64_t v = 0;
    assert_int_equal(tdm__parse_bytes("1048576", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(tdm__parse_bytes("64M", &v), 0);
    assert_int_equal(v, 64u << 20);
    assert_int_equal(tdm__parse_bytes("2GiB", &v), 0);
    assert_int_equal(v, (uint64_t)2 << 30);
    assert_int_equal(tdm__parse_bytes(" 512 kb ", &v), 0);
    assert_int_equal(v, 512u << 10);
    assert_int_equal(tdm__parse_bytes("lots", &v), -1);
    assert_int_equal(tdm__parse_bytes("-1", &v), -1);
    assert_int_equal(tdm__parse_bytes("3X", &v), -1);
    assert_int_equal(tdm__parse_bytes("99999999999T", &v), -1); /* over 2^64 */
    char detail[256] = "";
    setenv("TDM_DEVICE_MEM_CAP", "lots", 1);
    assert_int_equal(tdm__device_mem_cap(NULL, "cuda", &v, detail, sizeof detail), TDM_EINVAL);
    assert_non_null(strstr(detail, "TDM_DEVICE_MEM_CAP"));
    setenv("TDM_DEVICE_MEM_CAP", "3m", 1);
    assert_int_equal(tdm__device_mem_cap(NULL, "cuda", &v, detail, sizeof detail), 0);
    assert_int_equal(v, 3u << 20);
    unsetenv("TDM_DEVICE_MEM_CAP");
}

static void test_no_driver_is_zero_devices(void **state)
{
    int n_rt = 0;
    cudaError_t e = cudaGetDeviceCount(&n_rt);
    int expected = (e == cudaSuccess && n_rt > 0) ? n_rt : 0;
    (void)cudaGetLastError();

    tdm_runtime *rt = tdm_test_open(1);
    int found = 0;
    for (int i = 0; i < tdm_backend_count(); i++) {
        tdm_backend_info bi;
        assert_int_equal(tdm_runtime_backend(rt, i, &bi), 0);
        if (bi.kind != TDM_BACKEND_CUDA)
            continue;
        found = 1;
        assert_true(bi.built);
        assert_int_equal(bi.n_devices, expected);
        if (expected == 0)
            assert_true(strlen(bi.note) > 0); /* says why */
    }
    assert_true(found);
    int cuda_devs = 0;
    int n = tdm_runtime_device_count(rt);
    assert_true(n >= 1); /* the CPU pool at least */
    for (int i = 0; i < n; i++) {
        tdm_device_info di;
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        cuda_devs += di.kind == TDM_BACKEND_CUDA;
    }
    assert_int_equal(cuda_devs, expected);

    char why[256] = "";
    assert_int_equal(tdm__cuda_device_count(why, sizeof why), expected);
    assert_true(strlen(why) > 0);
    if (expected == 0) {
        /* opening a device that is not there fails cleanly, with a reason */
        tdm__dev *d = (tdm__dev *)0x1;
        char detail[256] = "";
        int rc = ops->open(rt, 0, &d, detail, sizeof detail);
        assert_int_equal(rc, TDM_ENODEV);
        assert_null(d);
        assert_non_null(strstr(detail, "no CUDA device"));
        /* pinning needs a driver too */
        char page[64];
        int hr = tdm__cuda_host_register(page, sizeof page);
        assert_true(hr == TDM_ENODEV || hr == TDM_ESYS);
    }
    /* a device index past the end is not found */
    tdm__dev *d = NULL;
    char detail[256] = "";
    int rc = ops->open(rt, expected + 3, &d, detail, sizeof detail);
    assert_true(rc == TDM_ENODEV || rc == TDM_ENOTFOUND);
    assert_null(d);
    tdm_test_close(rt);
}

/* ---- device tests ---------------------------------------------------------------------------- */

static void test_open_has_queues(void **state)
{
    fixture *f = *state;
    assert_true(ops->n_queues(f->d) >= 2);
    assert_int_equal(ops->kind, TDM_BACKEND_CUDA);
    assert_true(tdm__cuda_dev_arch(f->d) >= 75);
}

/* exp_sinh_f64 over n doubles: write, launch, read, through pageable (or pinned) host memory. */
static void run_exp_sinh_f64(tdm__dev *d, double *x, double *y, size_t n, int64_t begin,
                             int64_t end)
{
    char detail[512];
    tdm__dbuf *bx, *by;
    EXPECT_OK(ops->alloc(d, n * sizeof(double), &bx, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, n * sizeof(double), &by, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, bx, 0, x, n * sizeof(double), detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, by, 0, y, n * sizeof(double), detail, sizeof detail));
    tdm__karg a[4] = {karg_buf(bx), karg_buf(by), karg_i64(begin), karg_i64(end)};
    EXPECT_OK(ops->launch(d, 0, "builtin", NULL, "tdm_exp_sinh_f64", a, 4, end - begin, detail,
                          sizeof detail));
    EXPECT_OK(ops->read(d, 0, y, by, 0, n * sizeof(double), detail, sizeof detail));
    EXPECT_OK(ops->finish(d, 0, detail, sizeof detail));
    ops->free(d, bx);
    ops->free(d, by);
}

static void test_exp_sinh_f64_matches_c(void **state)
{
    fixture *f = *state;
    /* larger than a staging chunk (4 MiB) so the pageable path takes several slots */
    const size_t n = (size_t)3 << 20;
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)(i % 2000) * 1e-3 - 1.0;
        y[i] = -7.0;
    }
    /* items [5, n - 3): the rest must stay untouched */
    run_exp_sinh_f64(f->d, x, y, n, 5, (int64_t)n - 3);
    for (size_t i = 0; i < n; i++) {
        if (i < 5 || i >= n - 3)
            check_near("untouched", i, -7.0, y[i], 0, 0);
        else
            check_near("exp_sinh_f64", i, exp(x[i]) * sinh(x[i]), y[i], 1e-14, 1e-300);
    }
    free(x);
    free(y);
}

static void test_exp_sinh_f64_pinned_host(void **state)
{
    fixture *f = *state;
    const size_t n = 100003;
    double *x, *y;
    assert_int_equal(cudaHostAlloc((void **)&x, n * sizeof *x, cudaHostAllocDefault), cudaSuccess);
    /* registered (not allocated) memory takes the direct path too */
    y = aligned_alloc(4096, ((n * sizeof *y + 4095) / 4096) * 4096);
    assert_non_null(y);
    assert_int_equal(tdm__cuda_host_register(y, n * sizeof *y), 0);
    assert_int_equal(tdm__cuda_host_register(y, n * sizeof *y), TDM_EEXIST);
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)(i % 777) * 1e-2 - 3.0;
        y[i] = 0;
    }
    run_exp_sinh_f64(f->d, x, y, n, 0, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        check_near("exp_sinh_f64 pinned", i, exp(x[i]) * sinh(x[i]), y[i], 1e-14, 1e-300);
    tdm__cuda_host_unregister(y);
    free(y);
    cudaFreeHost(x);
}

/* f32 exp_sinh in batches over every queue, round-robin, each queue finished before it is
 * reused (the core's pipeline), with per-queue device buffers allocated once. */
static void test_three_queue_pipeline(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[512];
    const int nq = ops->n_queues(d);
    assert_int_equal(nq, 3);
    const size_t n = 10u << 20, batch = 1u << 20; /* 10 batches of 4 MiB */
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i % 3001) * 1e-3f - 1.5f;
        y[i] = -1.0f;
    }
    tdm__dbuf *bx[3], *by[3];
    for (int q = 0; q < nq; q++) {
        EXPECT_OK(ops->alloc(d, batch * sizeof(float), &bx[q], detail, sizeof detail));
        EXPECT_OK(ops->alloc(d, batch * sizeof(float), &by[q], detail, sizeof detail));
    }
    int busy[3] = {0, 0, 0};
    size_t k = 0;
    for (size_t off = 0; off < n; off += batch, k++) {
        int q = (int)(k % (size_t)nq);
        if (busy[q])
            EXPECT_OK(ops->finish(d, q, detail, sizeof detail));
        size_t c = n - off < batch ? n - off : batch;
        EXPECT_OK(ops->write(d, q, bx[q], 0, x + off, c * sizeof(float), detail, sizeof detail));
        tdm__karg a[4] = {karg_buf(bx[q]), karg_buf(by[q]), karg_i64(0), karg_i64((long long)c)};
        EXPECT_OK(ops->launch(d, q, "builtin", NULL, "tdm_exp_sinh_f32", a, 4, (int64_t)c, detail,
                              sizeof detail));
        EXPECT_OK(ops->read(d, q, y + off, by[q], 0, c * sizeof(float), detail, sizeof detail));
        busy[q] = 1;
    }
    for (int q = 0; q < nq; q++)
        EXPECT_OK(ops->finish(d, q, detail, sizeof detail));
    for (size_t i = 0; i < n; i++)
        check_near("exp_sinh_f32", i, (double)(expf(x[i]) * sinhf(x[i])), y[i], 2e-6, 1e-30);
    for (int q = 0; q < nq; q++) {
        ops->free(d, bx[q]);
        ops->free(d, by[q]);
    }
    free(x);
    free(y);
}

static void test_memory_cap_is_enomem(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[512];
    tdm__cuda_set_mem_cap(d, 3u << 20); /* 3 MiB */
    tdm__dbuf *a = NULL, *b = NULL, *c = NULL;
    EXPECT_OK(ops->alloc(d, 2u << 20, &a, detail, sizeof detail));
    detail[0] = 0;
    assert_int_equal(ops->alloc(d, 2u << 20, &b, detail, sizeof detail), TDM_ENOMEM);
    assert_null(b);
    assert_non_null(strstr(detail, "cap"));
    /* freeing makes room again (the cached block is reused or trimmed) */
    ops->free(d, a);
    EXPECT_OK(ops->alloc(d, 2u << 20, &b, detail, sizeof detail));
    /* a different class still fits once the cache is trimmed */
    ops->free(d, b);
    EXPECT_OK(ops->alloc(d, 3u << 20, &c, detail, sizeof detail));
    ops->free(d, c);
    tdm__cuda_pool_stats st;
    tdm__cuda_pool_stats_get(d, &st);
    assert_true(st.reserved_bytes <= 3u << 20);
    assert_true(st.n_trims >= 1);
    /* more than the device has is ENOMEM too, without a cap */
    tdm__cuda_set_mem_cap(d, 0);
    detail[0] = 0;
    assert_int_equal(ops->alloc(d, (size_t)1 << 50, &a, detail, sizeof detail), TDM_ENOMEM);
    assert_null(a);
    assert_true(strlen(detail) > 0);
    /* and the device still works afterwards */
    EXPECT_OK(ops->alloc(d, 1024, &a, detail, sizeof detail));
    ops->free(d, a);

    /* the cap from the environment, read at open: bytes with an optional k/m/g/t suffix. The
     * environment counts for a device opened with no runtime, or on one with use_env (the
     * fixture's runtime has use_env = 0, as every test runtime: it ignores the variable) */
    setenv("TDM_DEVICE_MEM_CAP", "2MiB", 1);
    tdm__dev *d2 = NULL;
    EXPECT_OK(ops->open(f->rt, 0, &d2, detail, sizeof detail));
    tdm__cuda_pool_stats st0;
    tdm__cuda_pool_stats_get(d2, &st0);
    assert_int_equal(st0.cap_bytes, 0);
    ops->close(d2);
    d2 = NULL;
    EXPECT_OK(ops->open(NULL, 0, &d2, detail, sizeof detail));
    tdm__cuda_pool_stats st2;
    tdm__cuda_pool_stats_get(d2, &st2);
    assert_int_equal(st2.cap_bytes, 2u << 20);
    assert_int_equal(ops->alloc(d2, 3u << 20, &a, detail, sizeof detail), TDM_ENOMEM);
    ops->close(d2);
    setenv("TDM_DEVICE_MEM_CAP", "lots", 1);
    d2 = (tdm__dev *)0x1;
    assert_int_equal(ops->open(NULL, 0, &d2, detail, sizeof detail), TDM_EINVAL);
    assert_null(d2);
    assert_non_null(strstr(detail, "TDM_DEVICE_MEM_CAP"));
    unsetenv("TDM_DEVICE_MEM_CAP");
}

static void test_pool_reuses_freed_blocks(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[512];
    tdm__cuda_pool_stats s0, s1;
    tdm__dbuf *a, *b;
    EXPECT_OK(ops->alloc(d, 1u << 20, &a, detail, sizeof detail));
    void *pa = tdm__cuda_dbuf_ptr(a);
    /* used by a copy on queue 1, then freed while that may still run */
    static char host[1 << 20];
    EXPECT_OK(ops->write(d, 1, a, 0, host, sizeof host, detail, sizeof detail));
    ops->free(d, a);
    tdm__cuda_pool_stats_get(d, &s0);
    assert_true(s0.cached_bytes >= 1u << 20);
    EXPECT_OK(ops->finish(d, 1, detail, sizeof detail));
    /* 1,000,000 bytes is the same size class as 1 MiB: the block comes back, no cudaMalloc */
    EXPECT_OK(ops->alloc(d, 1000000, &b, detail, sizeof detail));
    tdm__cuda_pool_stats_get(d, &s1);
    assert_ptr_equal(tdm__cuda_dbuf_ptr(b), pa);
    assert_int_equal(s1.n_cuda_malloc, s0.n_cuda_malloc);
    assert_int_equal(s1.n_reused, s0.n_reused + 1);
    /* a buffer is still addressable to its requested size only */
    detail[0] = 0;
    assert_int_equal(ops->write(d, 0, b, 999999, host, 2, detail, sizeof detail), TDM_EINVAL);
    ops->free(d, b);
}

static void test_bad_launches_are_refused(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[512];
    tdm__dbuf *b;
    EXPECT_OK(ops->alloc(d, 4096, &b, detail, sizeof detail));
    tdm__karg a[4] = {karg_buf(b), karg_buf(b), karg_i64(0), karg_i64(16)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", NULL, "tdm_no_such", a, 4, 16, detail, sizeof detail),
        TDM_ENOTFOUND);
    /* wrong count, wrong value size: refused before launching */
    assert_int_equal(
        ops->launch(d, 0, "builtin", NULL, "tdm_exp_sinh_f64", a, 3, 16, detail, sizeof detail),
        TDM_EINVAL);
    a[3] = karg_f32(16.0f);
    assert_int_equal(
        ops->launch(d, 0, "builtin", NULL, "tdm_exp_sinh_f64", a, 4, 16, detail, sizeof detail),
        TDM_EINVAL);
    assert_int_equal(
        ops->launch(d, 7, "builtin", NULL, "tdm_exp_sinh_f64", a, 4, 16, detail, sizeof detail),
        TDM_EINVAL);
    EXPECT_OK(ops->finish(d, 0, detail, sizeof detail));
    ops->free(d, b);
}

/* A user kernel in the dialect, built at run time with NVRTC and cached under its key; a NULL
 * argument becomes a null device pointer. */
static void test_user_kernel_through_nvrtc(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[8192];
    char why[256];
    if (!tdm__cuda_nvrtc_available(why, sizeof why))
        fail_msg("a device but no NVRTC: %s", why);
    /* the dialect text (the embedded source up to builtin_kernels.h) + a kernel in it */
    const char *body = "TDM_KERNEL user_affine(TDM_GLOBAL const float *x, TDM_GLOBAL float *y,\n"
                       "                       TDM_GLOBAL const float *bias, float a, tdm_idx n)\n"
                       "{\n"
                       "    for (tdm_idx i = TDM_GLOBAL_ID(); i < n; i += TDM_GLOBAL_SIZE())\n"
                       "        y[i] = a * x[i] + (bias ? bias[i] : 1.0f);\n"
                       "}\n";
    const char *cut = strstr(tdm__builtin_kernel_source, "#ifndef TDM_BUILTIN_KERNELS_H");
    assert_non_null(cut);
    size_t dl = (size_t)(cut - tdm__builtin_kernel_source);
    char *full = malloc(dl + strlen(body) + 1);
    assert_non_null(full);
    memcpy(full, tdm__builtin_kernel_source, dl);
    strcpy(full + dl, body);

    const size_t n = 50000;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)i * 0.5f;
    tdm__dbuf *bx, *by;
    EXPECT_OK(ops->alloc(d, n * sizeof(float), &bx, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, n * sizeof(float), &by, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 2, bx, 0, x, n * sizeof(float), detail, sizeof detail));
    tdm__karg a[5] = {karg_buf(bx), karg_buf(by), {0}, karg_f32(3.0f), karg_i64((long long)n)};
    a[2].kind = TDM__KARG_NULL;
    for (int rep = 0; rep < 2; rep++) /* the second launch uses the cached program */
        EXPECT_OK(ops->launch(d, 2, "user_affine@1", full, "user_affine", a, 5, (int64_t)n, detail,
                              sizeof detail));
    EXPECT_OK(ops->read(d, 2, y, by, 0, n * sizeof(float), detail, sizeof detail));
    EXPECT_OK(ops->finish(d, 2, detail, sizeof detail));
    for (size_t i = 0; i < n; i++)
        check_near("user_affine", i, 3.0 * x[i] + 1.0, y[i], 1e-6, 0);
    /* an entry the program does not have */
    assert_int_equal(
        ops->launch(d, 2, "user_affine@1", full, "nope", a, 5, (int64_t)n, detail, sizeof detail),
        TDM_ENOTFOUND);
    /* a program that does not compile: TDM_EKERNEL with the log, also on the second try */
    for (int rep = 0; rep < 2; rep++) {
        detail[0] = 0;
        int rc = ops->launch(d, 2, "broken@1", "extern \"C\" __global__ void k(float *x) { x = ; }",
                             "k", a, 1, 1, detail, sizeof detail);
        assert_int_equal(rc, TDM_EKERNEL);
        assert_non_null(strstr(detail, "error"));
    }
    EXPECT_OK(ops->finish(d, 2, detail, sizeof detail));
    ops->free(d, bx);
    ops->free(d, by);
    free(full);
    free(x);
    free(y);
}
/* The tiled matrix products (2-D launches in 16x16 blocks, kernels/train_kernels.h) on sizes
 * that are not multiples of the tile, against a double reference. Tolerance: the float
 * dot-product bound (n + 2) 2^-24 sum |a_k b_k| (tests/test_train.c explains it). */
static void mm_expect(const char *what, const float *got, int rows, int cols, int n, const float *a,
                      int a_r, int a_j, const float *b, int b_j, int b_c, const float *bias)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double ref = bias ? bias[c] : 0.0, S = bias ? fabs(bias[c]) : 0.0;
            for (int j = 0; j < n; j++) {
                double t = (double)a[r * a_r + j * a_j] * b[j * b_j + c * b_c];
                ref += t;
                S += fabs(t);
            }
            check_near(what, (size_t)r * cols + c, ref, got[r * cols + c], 0.0,
                       (n + 2) * S / 16777216.0 + 1e-30);
        }
}

static void test_tiled_matmuls_match_c(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[512];
    enum { M = 37, K = 53, N = 29 };
    static float x[M * K], W[K * N], b[N], dy[M * N], y[M * N], dx[M * K], dW[K * N];
    for (int i = 0; i < M * K; i++)
        x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    for (int i = 0; i < K * N; i++)
        W[i] = (float)((i * 104729) % 2001 - 1000) * 1e-3f;
    for (int i = 0; i < N; i++)
        b[i] = 0.25f - 0.01f * (float)i;
    for (int i = 0; i < M * N; i++)
        dy[i] = (float)((i * 7907) % 2001 - 1000) * 1e-3f;
    tdm__dbuf *bx, *bW, *bb, *bdy, *by, *bdx, *bdW;
    EXPECT_OK(ops->alloc(d, sizeof x, &bx, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof W, &bW, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof b, &bb, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof dy, &bdy, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof y, &by, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof dx, &bdx, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d, sizeof dW, &bdW, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, bx, 0, x, sizeof x, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, bW, 0, W, sizeof W, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, bb, 0, b, sizeof b, detail, sizeof detail));
    EXPECT_OK(ops->write(d, 0, bdy, 0, dy, sizeof dy, detail, sizeof detail));
    tdm__karg relu;
    memset(&relu, 0, sizeof relu);
    relu.kind = TDM__KARG_VALUE;
    relu.size = 4; /* int 0: no ReLU */
    tdm__karg none;
    memset(&none, 0, sizeof none);
    none.kind = TDM__KARG_NULL;
    tdm__karg la[9] = {karg_buf(bx), karg_buf(bW), karg_buf(bb), karg_buf(by),   karg_i64(K),
                       karg_i64(N),  relu,         karg_i64(0),  karg_i64(M * N)};
    tdm__range2 rl = {{N, M}, {16, 16}};
    EXPECT_OK(
        ops->launch_2d(d, 0, "builtin", NULL, "tdm_linear_f32", la, 9, &rl, detail, sizeof detail));
    tdm__karg xa[8] = {karg_buf(bdy), karg_buf(bW), none,        karg_buf(bdx),
                       karg_i64(K),   karg_i64(N),  karg_i64(0), karg_i64(M * K)};
    tdm__range2 rx = {{K, M}, {16, 16}};
    EXPECT_OK(ops->launch_2d(d, 0, "builtin", NULL, "tdm_linear_grad_x_f32", xa, 8, &rx, detail,
                             sizeof detail));
    tdm__karg wa[9] = {karg_buf(bx), karg_buf(bdy), karg_buf(bdW), karg_i64(M),    karg_i64(K),
                       karg_i64(N),  karg_i64(0),   karg_i64(0),   karg_i64(K * N)};
    tdm__range2 rw = {{N, K}, {16, 16}};
    EXPECT_OK(ops->launch_2d(d, 0, "builtin", NULL, "tdm_linear_grad_w_f32", wa, 9, &rw, detail,
                             sizeof detail));
    EXPECT_OK(ops->read(d, 0, y, by, 0, sizeof y, detail, sizeof detail));
    EXPECT_OK(ops->read(d, 0, dx, bdx, 0, sizeof dx, detail, sizeof detail));
    EXPECT_OK(ops->read(d, 0, dW, bdW, 0, sizeof dW, detail, sizeof detail));
    EXPECT_OK(ops->finish(d, 0, detail, sizeof detail));
    mm_expect("linear", y, M, N, K, x, K, 1, W, N, 1, b);
    mm_expect("linear_grad_x", dx, M, K, N, dy, N, 1, W, 1, N, NULL);
    mm_expect("linear_grad_w", dW, K, N, M, x, 1, K, dy, N, 1, NULL);
    /* launched 1-D (256 x 1 blocks), a tiled entry writes nothing rather than outside its tiles */
    for (int i = 0; i < M * N; i++)
        y[i] = -7.0f;
    EXPECT_OK(ops->write(d, 0, by, 0, y, sizeof y, detail, sizeof detail));
    EXPECT_OK(
        ops->launch(d, 0, "builtin", NULL, "tdm_linear_f32", la, 9, M * N, detail, sizeof detail));
    EXPECT_OK(ops->read(d, 0, y, by, 0, sizeof y, detail, sizeof detail));
    EXPECT_OK(ops->finish(d, 0, detail, sizeof detail));
    for (int i = 0; i < M * N; i++)
        check_near("untouched", (size_t)i, -7.0, y[i], 0, 0);
    /* more threads per block than the entry was compiled for (__launch_bounds__(256)) */
    tdm__range2 big = {{N, M}, {64, 32}};
    assert_int_equal(
        ops->launch_2d(d, 0, "builtin", NULL, "tdm_linear_f32", la, 9, &big, detail, sizeof detail),
        TDM_EINVAL);
    EXPECT_OK(ops->finish(d, 0, detail, sizeof detail));
    tdm__dbuf *all[] = {bx, bW, bb, bdy, by, bdx, bdW};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ops->free(d, all[i]);
}
/* A real kernel fault: a user kernel's out-of-bounds store kills the context (sticky
 * cudaErrorIllegalAddress). The queue's finish reports TDM_EDEVLOST, and every later entry of
 * the device returns it at once, naming the fault; close releases what it can. */
static void test_sticky_fault_loses_the_device(void **state)
{
    fixture *f = *state;
    tdm__dev *d = f->d;
    char detail[8192];
    static const char src[] =
        "extern \"C\" __global__ void tdm_oob(float *y, long long n)\n"
        "{\n"
        "    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;\n"
        "    if (i < n)\n"
        "        y[i + (1LL << 40)] = 1.0f;\n"
        "}\n";
    tdm__dbuf *b = NULL, *b2 = (tdm__dbuf *)0x1;
    EXPECT_OK(ops->alloc(d, 4096, &b, detail, sizeof detail));
    tdm__karg a[2] = {karg_buf(b), karg_i64(1024)};
    EXPECT_OK(ops->launch(d, 0, "oob", src, "tdm_oob", a, 2, 1024, detail, sizeof detail));
    assert_int_equal(ops->finish(d, 0, detail, sizeof detail), TDM_EDEVLOST);
    assert_non_null(strstr(detail, "cudaError"));
    float host[16];
    assert_int_equal(ops->read(d, 1, host, b, 0, sizeof host, detail, sizeof detail), TDM_EDEVLOST);
    assert_non_null(strstr(detail, "lost earlier"));
    assert_int_equal(ops->alloc(d, 64, &b2, detail, sizeof detail), TDM_EDEVLOST);
    assert_null(b2);
    assert_int_equal(ops->finish(d, 1, detail, sizeof detail), TDM_EDEVLOST);
    ops->free(d, b);
}

/* The same for an injected loss (TDM_DEVICE_FAULT=alloc:2) on a healthy device. */
static void test_lost_device_refuses_every_entry(void **state)
{
    fixture *f = *state;
    char detail[512];
    setenv("TDM_DEVICE_FAULT", "alloc:2", 1);
    tdm__dev *d = NULL;
    EXPECT_OK(ops->open(f->rt, 0, &d, detail, sizeof detail));
    unsetenv("TDM_DEVICE_FAULT");
    tdm__dbuf *b = NULL, *b2 = (tdm__dbuf *)0x1;
    double x[64] = {0};
    EXPECT_OK(ops->alloc(d, sizeof x, &b, detail, sizeof detail));
    assert_int_equal(ops->alloc(d, sizeof x, &b2, detail, sizeof detail), TDM_EDEVLOST);
    assert_non_null(strstr(detail, "TDM_DEVICE_FAULT=alloc:2"));
    assert_null(b2);
    assert_int_equal(ops->write(d, 0, b, 0, x, sizeof x, detail, sizeof detail), TDM_EDEVLOST);
    assert_int_equal(ops->read(d, 0, x, b, 0, sizeof x, detail, sizeof detail), TDM_EDEVLOST);
    tdm__karg a[4] = {karg_buf(b), karg_buf(b), karg_i64(0), karg_i64(8)};
    assert_int_equal(
        ops->launch(d, 0, "builtin", NULL, "tdm_exp_sinh_f64", a, 4, 8, detail, sizeof detail),
        TDM_EDEVLOST);
    assert_int_equal(ops->finish(d, 0, detail, sizeof detail), TDM_EDEVLOST);
    assert_int_equal(ops->host_register(d, x, sizeof x, detail, sizeof detail), TDM_EDEVLOST);
    ops->free(d, b);
    ops->close(d);
    /* the caller's current device is where it was (every entry restores it): with two GPUs,
     * device 1 stays current across an open and a use of device 0 */
    int n = 0, cur = -1;
    assert_int_equal(cudaGetDeviceCount(&n), cudaSuccess);
    int mine = n >= 2 ? 1 : 0;
    assert_int_equal(cudaSetDevice(mine), cudaSuccess);
    tdm__dev *d3 = NULL;
    EXPECT_OK(ops->open(f->rt, 0, &d3, detail, sizeof detail));
    EXPECT_OK(ops->alloc(d3, 64, &b, detail, sizeof detail));
    ops->free(d3, b);
    assert_int_equal(cudaGetDevice(&cur), cudaSuccess);
    assert_int_equal(cur, mine);
    ops->close(d3);
}
#endif /* TDM_HAVE_CUDA */

int main(int argc, char **argv)
{
#if !TDM_HAVE_CUDA
    (void)argc;
    (void)argv;
    printf("cuda: skipped: this build has no CUDA (TDM_HAVE_CUDA=0)\n");
    return 77;
#else
    /* One test per line: tests/CMakeLists.txt registers one CTest per matching line. */
    /* clang-format off */
    const struct CMUnitTest nvrtc_tests[] = {
        cmocka_unit_test(test_nvrtc_builds_builtin_source),
        cmocka_unit_test(test_nvrtc_syntax_error_is_ekernel),
        cmocka_unit_test(test_nvrtc_names_the_library_loaded),
    };
    const struct CMUnitTest host_tests[] = {
        cmocka_unit_test(test_no_driver_is_zero_devices),
        cmocka_unit_test(test_nvrtc_sonames_toolkit_first),
        cmocka_unit_test(test_builtin_image_per_arch),
        cmocka_unit_test(test_mem_cap_sizes_parse),
    };
    const struct CMUnitTest device_tests[] = {
        cmocka_unit_test_setup_teardown(test_open_has_queues, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_exp_sinh_f64_matches_c, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_exp_sinh_f64_pinned_host, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_three_queue_pipeline, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_memory_cap_is_enomem, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_pool_reuses_freed_blocks, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_bad_launches_are_refused, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_user_kernel_through_nvrtc, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_tiled_matmuls_match_c, dev_setup, dev_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_fault_loses_the_device, dev_setup,
                                        dev_teardown),
        cmocka_unit_test_setup_teardown(test_lost_device_refuses_every_entry, dev_setup,
                                        dev_teardown),
    };
    /* clang-format on */
    const char *only = argc > 1 ? argv[1] : NULL;
    char nvrtc_why[256], dev_why[256];
    int have_nvrtc = tdm__cuda_nvrtc_available(nvrtc_why, sizeof nvrtc_why);
    int have_dev = tdm__cuda_device_count(dev_why, sizeof dev_why) > 0;
    struct {
        const char *name;
        const struct CMUnitTest *tests;
        size_t n;
        int runs;
        const char *why;
    } groups[] = {
        {"cuda_nvrtc", nvrtc_tests, sizeof nvrtc_tests / sizeof nvrtc_tests[0], have_nvrtc,
         nvrtc_why},
        {"cuda_host", host_tests, sizeof host_tests / sizeof host_tests[0], 1, ""},
        {"cuda_device", device_tests, sizeof device_tests / sizeof device_tests[0], have_dev,
         dev_why},
    };
    int rc = 0, ran = 0;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        int member = 0;
        for (size_t i = 0; only && i < groups[g].n; i++)
            member |= strcmp(groups[g].tests[i].name, only) == 0;
        if (only && !member)
            continue;
        if (!groups[g].runs) {
            if (g == 0)
                printf("cuda: skipped %s: no NVRTC: %s\n", groups[g].name, groups[g].why);
            else
                printf("cuda: skipped %s: no CUDA device: %s\n", groups[g].name, groups[g].why);
            continue;
        }
        rc |= tdm_test_run(groups[g].name, groups[g].tests, groups[g].n, argc, argv);
        ran++;
    }
    if (ran == 0)
        return 77;
    return rc;
#endif
}
