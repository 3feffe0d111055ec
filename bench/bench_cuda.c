/* SPDX-License-Identifier: MIT */
/* bench_cuda: the CUDA device layer (backends/cuda/device.c) on a real GPU.
 *
 * On a machine with an NVIDIA GPU, from the repository root:
 *
 *     scripts/build.sh -DTDM_WITH_CUDA=ON && build/bench/bench_cuda
 *
 * (options: --gb N  size of the offload run in GiB of f32 input, default 4;  --reps N  repeats
 * per figure, default 5;  --batch-mb N  batch size of the offload run, default 64.)
 * Where there is no device (no driver, or none found) it prints "no CUDA device" and exits 0.
 *
 * What it measures, each against a baseline from the same run (medians of --reps runs):
 *   1. Host<->device bandwidth by transfer size: pageable vs pinned with plain cudaMemcpy, and
 *      tandem's write/read (which stages pageable memory through its pinned buffers). Target on
 *      an H100: pinned >= 85% of the best pinned figure measured (the link's practical peak).
 *   2. exp_sinh (f32 and f64) on device-resident data, as % of the device's copy bandwidth
 *      (cudaMemcpy device to device of the same bytes: both read n and write n). Target >= 80%.
 *   3. Pipelined offload of exp_sinh over a large f32 host array (3 queues, batches round-robin,
 *      each queue finished before reuse, as the core drives a device): total time vs
 *      max(copy in, copy out, compute) each measured alone over the same batches. Target
 *      <= 1.15x. Run for pageable host memory and again with it registered (pinned).
 */
#include <math.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "bench_common.h"
#include "cuda_internal.h"
#include "sched/device.h"

static const tdm__dev_ops *ops = &tdm__cuda_dev_ops;
static int g_reps = 5;

static void die_rc(const char *what, int rc, const char *detail)
{
    fprintf(stderr, "bench_cuda: %s failed: %s: %s\n", what, tdm_status_name(rc), detail);
    exit(1);
}

#define DEV_CHECK(call)                                                                            \
    do {                                                                                           \
        char detail_[1024] = "";                                                                   \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            die_rc(#call, rc_, detail_);                                                           \
    } while (0)
/* (the calls below pass detail_ and sizeof detail_ as their last arguments) */
#define D detail_, sizeof detail_

#define CU_CHECK(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "bench_cuda: %s failed: %s\n", #call, cudaGetErrorName(e_));           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

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

static double gbps(size_t bytes, double s)
{
    return s > 0 ? (double)bytes / s * 1e-9 : 0.0;
}

/* ---- 1. bandwidth ---------------------------------------------------------------------------- */

typedef enum { RAW_H2D, RAW_D2H, TDM_H2D, TDM_D2H } xfer_kind;

static double time_xfer(tdm__dev *d, xfer_kind k, void *host, void *dptr, tdm__dbuf *db, size_t n)
{
    double t[64];
    int reps = g_reps < 64 ? g_reps : 64;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = bench_now();
        switch (k) {
        case RAW_H2D:
            CU_CHECK(cudaMemcpy(dptr, host, n, cudaMemcpyHostToDevice));
            break;
        case RAW_D2H:
            CU_CHECK(cudaMemcpy(host, dptr, n, cudaMemcpyDeviceToHost));
            break;
        case TDM_H2D:
            DEV_CHECK(ops->write(d, 0, db, 0, host, n, D));
            DEV_CHECK(ops->finish(d, 0, D));
            break;
        case TDM_D2H:
            DEV_CHECK(ops->read(d, 0, host, db, 0, n, D));
            DEV_CHECK(ops->finish(d, 0, D));
            break;
        }
        if (r >= 0)
            t[r] = bench_now() - t0;
    }
    return bench_median(t, reps);
}

static void bench_bandwidth(tdm__dev *d)
{
    static const size_t sizes[] = {64u << 10, 1u << 20, 16u << 20, 256u << 20};
    const size_t nmax = sizes[sizeof sizes / sizeof sizes[0] - 1];
    char *pageable = malloc(nmax);
    char *pinned = NULL;
    if (!pageable) {
        fprintf(stderr, "bench_cuda: out of host memory\n");
        exit(1);
    }
    memset(pageable, 1, nmax);
    CU_CHECK(cudaHostAlloc((void **)&pinned, nmax, cudaHostAllocDefault));
    memset(pinned, 1, nmax);
    tdm__dbuf *db;
    DEV_CHECK(ops->alloc(d, nmax, &db, D));
    void *dptr = tdm__cuda_dbuf_ptr(db);

    printf("\n1. host<->device bandwidth, GB/s (median of %d)\n", g_reps);
    printf("%10s | %9s %9s %9s %9s | %9s %9s %9s %9s\n", "bytes", "H2D page", "H2D pin", "tdm page",
           "tdm pin", "D2H page", "D2H pin", "tdm page", "tdm pin");
    double res[4][8];
    double peak_h2d = 0, peak_d2h = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        double *r = res[i];
        r[0] = gbps(n, time_xfer(d, RAW_H2D, pageable, dptr, db, n));
        r[1] = gbps(n, time_xfer(d, RAW_H2D, pinned, dptr, db, n));
        r[2] = gbps(n, time_xfer(d, TDM_H2D, pageable, dptr, db, n));
        r[3] = gbps(n, time_xfer(d, TDM_H2D, pinned, dptr, db, n));
        r[4] = gbps(n, time_xfer(d, RAW_D2H, pageable, dptr, db, n));
        r[5] = gbps(n, time_xfer(d, RAW_D2H, pinned, dptr, db, n));
        r[6] = gbps(n, time_xfer(d, TDM_D2H, pageable, dptr, db, n));
        r[7] = gbps(n, time_xfer(d, TDM_D2H, pinned, dptr, db, n));
        if (r[1] > peak_h2d)
            peak_h2d = r[1];
        if (r[5] > peak_d2h)
            peak_d2h = r[5];
        printf("%10zu | %9.2f %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f %9.2f\n", n, r[0], r[1], r[2],
               r[3], r[4], r[5], r[6], r[7]);
    }
    size_t last = sizeof sizes / sizeof sizes[0] - 1;
    printf("pinned at %zu MiB: H2D %.2f GB/s = %.0f%% of the best pinned H2D, D2H %.2f = %.0f%%;"
           " tandem pinned H2D %.0f%%, D2H %.0f%% (target >= 85%%)\n",
           sizes[last] >> 20, res[last][1], 100 * res[last][1] / peak_h2d, res[last][5],
           100 * res[last][5] / peak_d2h, 100 * res[last][3] / peak_h2d,
           100 * res[last][7] / peak_d2h);
    printf("pageable through tandem's staging vs cudaMemcpy pageable at %zu MiB: H2D %.2fx, "
           "D2H %.2fx\n",
           sizes[last] >> 20, res[last][2] / res[last][0], res[last][6] / res[last][4]);
    ops->free(d, db);
    cudaFreeHost(pinned);
    free(pageable);
}

/* ---- 2. kernel throughput on device-resident data ------------------------------------------ */

static void bench_kernel(tdm__dev *d, const char *entry, size_t elem, size_t n)
{
    size_t bytes = n * elem;
    tdm__dbuf *bx, *by;
    DEV_CHECK(ops->alloc(d, bytes, &bx, D));
    DEV_CHECK(ops->alloc(d, bytes, &by, D));
    /* The memset runs on the legacy stream, which does not order with the backend's non-blocking
     * streams: it must be complete before the first kernel reads bx. */
    CU_CHECK(cudaMemset(tdm__cuda_dbuf_ptr(bx), 0, bytes));
    CU_CHECK(cudaDeviceSynchronize());
    tdm__karg a[4] = {karg_buf(bx), karg_buf(by), karg_i64(0), karg_i64((long long)n)};
    double tk[64], tc[64];
    int reps = g_reps < 64 ? g_reps : 64;
    for (int r = -1; r < reps; r++) { /* interleaved: kernel, then the copy baseline */
        double t0 = bench_now();
        DEV_CHECK(ops->launch(d, 0, "builtin", NULL, entry, a, 4, (int64_t)n, D));
        DEV_CHECK(ops->finish(d, 0, D));
        double t1 = bench_now();
        CU_CHECK(cudaMemcpy(tdm__cuda_dbuf_ptr(by), tdm__cuda_dbuf_ptr(bx), bytes,
                            cudaMemcpyDeviceToDevice));
        CU_CHECK(cudaDeviceSynchronize());
        double t2 = bench_now();
        if (r >= 0) {
            tk[r] = t1 - t0;
            tc[r] = t2 - t1;
        }
    }
    double k = bench_median(tk, reps), c = bench_median(tc, reps);
    /* both move 2 * bytes: read x, write y */
    printf("%-18s %6zu MiB  kernel %8.1f GB/s (%.3f ms)  copy %8.1f GB/s  = %5.1f%% of copy "
           "(target >= 80%%)\n",
           entry, bytes >> 20, gbps(2 * bytes, k), k * 1e3, gbps(2 * bytes, c), 100 * c / k);
    ops->free(d, bx);
    ops->free(d, by);
}

/* ---- 3. pipelined offload -------------------------------------------------------------------- */

enum { DO_IN = 1, DO_COMPUTE = 2, DO_OUT = 4 };

/* Runs the batches over the 3 queues, round-robin, with the steps in `what`. */
static double offload(tdm__dev *d, tdm__dbuf **bx, tdm__dbuf **by, const float *x, float *y,
                      size_t n, size_t batch, unsigned what)
{
    int nq = ops->n_queues(d);
    if (nq > 8)
        nq = 8;
    int busy[8] = {0};
    double t0 = bench_now();
    size_t k = 0;
    for (size_t off = 0; off < n; off += batch, k++) {
        int q = (int)(k % (size_t)nq);
        if (busy[q])
            DEV_CHECK(ops->finish(d, q, D));
        size_t c = n - off < batch ? n - off : batch;
        if (what & DO_IN)
            DEV_CHECK(ops->write(d, q, bx[q], 0, x + off, c * sizeof(float), D));
        if (what & DO_COMPUTE) {
            tdm__karg a[4] = {karg_buf(bx[q]), karg_buf(by[q]), karg_i64(0),
                              karg_i64((long long)c)};
            DEV_CHECK(ops->launch(d, q, "builtin", NULL, "tdm_exp_sinh_f32", a, 4, (int64_t)c, D));
        }
        if (what & DO_OUT)
            DEV_CHECK(ops->read(d, q, y + off, by[q], 0, c * sizeof(float), D));
        busy[q] = 1;
    }
    for (int q = 0; q < nq; q++)
        DEV_CHECK(ops->finish(d, q, D));
    return bench_now() - t0;
}

static double median_offload(tdm__dev *d, tdm__dbuf **bx, tdm__dbuf **by, const float *x, float *y,
                             size_t n, size_t batch, unsigned what, int reps)
{
    double t[16];
    if (reps > 16)
        reps = 16;
    for (int r = 0; r < reps; r++)
        t[r] = offload(d, bx, by, x, y, n, batch, what);
    return bench_median(t, reps);
}

static void bench_offload(tdm__dev *d, double gb, size_t batch_bytes)
{
    size_t n = (size_t)(gb * (double)(1ull << 30)) / sizeof(float);
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    double avail = pages > 0 && psz > 0 ? (double)pages * (double)psz : 0;
    if (avail > 0 && 2.5 * (double)n * sizeof(float) > avail) {
        n = (size_t)(avail / 2.5 / sizeof(float));
        printf("(offload size reduced to %.2f GiB: %.1f GiB of memory available)\n",
               (double)n * sizeof(float) / (double)(1ull << 30), avail / (double)(1ull << 30));
    }
    size_t batch = batch_bytes / sizeof(float);
    if (batch == 0 || batch > n)
        batch = n;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "bench_cuda: cannot allocate 2 x %zu bytes of host memory\n",
                n * sizeof(float));
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i % 4001) * 5e-4f - 1.0f;
        y[i] = 0.0f;
    }
    tdm__dbuf *bx[8], *by[8];
    int nq = ops->n_queues(d);
    for (int q = 0; q < nq && q < 8; q++) {
        DEV_CHECK(ops->alloc(d, batch * sizeof(float), &bx[q], D));
        DEV_CHECK(ops->alloc(d, batch * sizeof(float), &by[q], D));
    }
    int reps = g_reps < 3 ? g_reps : 3;
    printf("\n3. pipelined offload of exp_sinh_f32: %.2f GiB in, %.2f GiB out, batches of %zu MiB"
           " over %d queues (median of %d)\n",
           (double)n * sizeof(float) / (double)(1ull << 30),
           (double)n * sizeof(float) / (double)(1ull << 30), batch * sizeof(float) >> 20, nq, reps);
    for (int pinned = 0; pinned < 2; pinned++) {
        if (pinned) {
            double t0 = bench_now();
            if (tdm__cuda_host_register(x, n * sizeof *x) != 0 ||
                tdm__cuda_host_register(y, n * sizeof *y) != 0) {
                printf("(cudaHostRegister of the arrays failed: pinned run skipped)\n");
                break;
            }
            printf("(registering both arrays took %.0f ms)\n", (bench_now() - t0) * 1e3);
        }
        offload(d, bx, by, x, y, n, batch, DO_IN | DO_COMPUTE | DO_OUT); /* warm-up */
        double tin = median_offload(d, bx, by, x, y, n, batch, DO_IN, reps);
        double tout = median_offload(d, bx, by, x, y, n, batch, DO_OUT, reps);
        double tcomp = median_offload(d, bx, by, x, y, n, batch, DO_COMPUTE, reps);
        double tall = median_offload(d, bx, by, x, y, n, batch, DO_IN | DO_COMPUTE | DO_OUT, reps);
        double bound = tin > tout ? tin : tout;
        if (tcomp > bound)
            bound = tcomp;
        double serial_bound = tin + tout > tcomp ? tin + tout : tcomp;
        size_t bytes = n * sizeof(float);
        printf("%-9s in %7.1f ms (%5.1f GB/s)  out %7.1f ms (%5.1f GB/s)  compute %7.1f ms  "
               "pipelined %7.1f ms = %.2fx max(in, out, compute) (target <= 1.15x); "
               "%.2fx max(in + out, compute)\n",
               pinned ? "pinned" : "pageable", tin * 1e3, gbps(bytes, tin), tout * 1e3,
               gbps(bytes, tout), tcomp * 1e3, tall * 1e3, tall / bound, tall / serial_bound);
        /* the result is right */
        for (size_t i = 0; i < n; i += n / 1000 + 1) {
            double want = (double)(expf(x[i]) * sinhf(x[i]));
            if (fabs((double)y[i] - want) > 1e-5 * fabs(want) + 1e-30) {
                fprintf(stderr, "bench_cuda: wrong result at %zu: %g, want %g\n", i, y[i], want);
                exit(1);
            }
        }
        if (pinned) {
            tdm__cuda_host_unregister(x);
            tdm__cuda_host_unregister(y);
        }
    }
    for (int q = 0; q < nq && q < 8; q++) {
        ops->free(d, bx[q]);
        ops->free(d, by[q]);
    }
    free(x);
    free(y);
}

/* ---- --sticky-probe: a real kernel fault ----------------------------------------------------
 * A user kernel whose store lands far outside its buffer kills the CUDA context
 * (cudaErrorIllegalAddress, sticky: every later call fails the same way). The map must still
 * complete, on the CPU, with correct results; the device is lost for good. Exit status 0 when it
 * does. */
static const char probe_src[] =
    "TDM_KERNEL tdm_probe_oob(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, tdm_idx begin,\n"
    "                         tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE())\n"
    "        y[i + ((tdm_idx)1 << 40)] = x[i]; /* out of bounds, on purpose */\n"
    "}\n";

static int probe_dev(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                     tdm_dev_launch *l, char *msg, size_t len)
{
    snprintf(l->entry, sizeof l->entry, "tdm_probe_oob");
    l->n_args = 4;
    l->args[0].kind = TDM_DEV_ARG_INPUT;
    l->args[1].kind = TDM_DEV_ARG_OUTPUT;
    l->args[2].kind = TDM_DEV_ARG_BEGIN;
    l->args[3].kind = TDM_DEV_ARG_END;
    l->items_per_row = 1;
    return 0;
}

static int probe_cpu(const tdm_kernel_args *a)
{
    memcpy(a->out[0], a->in[0], (size_t)(a->end - a->begin) * sizeof(float));
    return 0;
}

static int sticky_probe(void)
{
    tdm_runtime *rt;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "probe_oob";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.source = probe_src;
    def.dev = probe_dev;
    def.cpu = probe_cpu;
    BENCH_CHECK(rt, tdm_kernel_register(rt, &def));
    int64_t n = 1 << 20;
    tdm_tensor *x, *y;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F32, 1, &n, TDM_MEM_HOST, &x));
    BENCH_CHECK(rt, tdm_tensor_zeros(rt, TDM_F32, 1, &n, 0, &y));
    float *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (float)i;
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = TDM_POLICY_CUDA;
    o.batch_size = n / 16;
    tdm_report r = TDM_REPORT_INIT;
    int rc = tdm_map(rt, "probe_oob", &x, 1, &y, 1, NULL, 0, &o, &r);
    const float *yd = tdm_tensor_data(y);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; i++)
        wrong += yd[i] != xd[i];
    int rc2 = tdm_map(rt, "probe_oob", &x, 1, &y, 1, NULL, 0, &o, NULL);
    printf("sticky probe: map %s, %lld batches, %lld run on the CPU, %lld wrong values; the next "
           "CUDA map: %s (%s)\n",
           tdm_status_name(rc), (long long)r.batches, (long long)r.fallback_batches,
           (long long)wrong, tdm_status_name(rc2), tdm_errmsg(rt));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_runtime_close(rt);
    return rc == 0 && wrong == 0 && r.fallback_batches > 0 && rc2 == TDM_ENODEV ? 0 : 1;
}

int main(int argc, char **argv)
{
    double gb = 4.0;
    size_t batch_mb = 64;
    int sticky = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--gb") == 0 && i + 1 < argc)
            gb = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            g_reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch-mb") == 0 && i + 1 < argc)
            batch_mb = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--sticky-probe") == 0)
            sticky = 1;
        else /* bench/run_all.sh passes every benchmark the same options */
            fprintf(stderr, "bench_cuda: ignoring %s (options: --gb N --reps N --batch-mb N)\n",
                    argv[i]);
    }
    if (g_reps < 1)
        g_reps = 1;
    if (gb <= 0)
        gb = 4.0;
    char why[256];
    if (tdm__cuda_device_count(why, sizeof why) == 0) {
        printf("bench_cuda: no CUDA device (%s): nothing measured\n", why);
        return sticky; /* the probe needs a device */
    }
    if (sticky)
        return sticky_probe();
    tdm_runtime *rt;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    tdm__dev *d;
    DEV_CHECK(ops->open(rt, 0, &d, D));
    struct cudaDeviceProp prop;
    CU_CHECK(cudaGetDeviceProperties(&prop, tdm__cuda_dev_index(d)));
    printf("bench_cuda: device 0: %s, sm_%d, %d SMs, %.1f GiB\n", prop.name, tdm__cuda_dev_arch(d),
           prop.multiProcessorCount, (double)prop.totalGlobalMem / (double)(1ull << 30));

    bench_bandwidth(d);

    printf("\n2. exp_sinh on device-resident data vs a device-to-device copy of the same bytes"
           " (median of %d)\n",
           g_reps);
    bench_kernel(d, "tdm_exp_sinh_f32", sizeof(float), (size_t)256 << 20);
    bench_kernel(d, "tdm_exp_sinh_f64", sizeof(double), (size_t)128 << 20);

    bench_offload(d, gb, batch_mb << 20);

    tdm__cuda_pool_stats st;
    tdm__cuda_pool_stats_get(d, &st);
    printf("\npool: %llu cudaMalloc, %llu reuses, %.1f MiB held at the end\n",
           (unsigned long long)st.n_cuda_malloc, (unsigned long long)st.n_reused,
           (double)st.reserved_bytes / (double)(1 << 20));
    ops->close(d);
    BENCH_CHECK(rt, tdm_runtime_close(rt));
    return 0;
}
