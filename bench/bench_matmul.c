/* SPDX-License-Identifier: MIT */
/* bench_matmul — the training kernels' matrix products (linear, linear_grad_x, linear_grad_w)
 * on OpenCL device 0 (PoCL here), tiled vs untiled, and on the CPU.
 *
 * For each shape x W = [M, K] @ [K, N] and each product, in the same run, interleaved:
 *   tiled     the built-in entry (kernels/train_kernels.h): 2-D launch, 16x16 work-groups,
 *             tiles of both operands in work-group memory (launch_2d of the device layer);
 *   untiled   the entries as they were before tiling (one work item per output element, its
 *             whole dot product from global memory, 1-D grid-stride launch), built from the
 *             text below as a separate program;
 *   CPU       tdm_map on the CPU thread pool (one thread per core): the library's CPU path;
 *   map OCL   tdm_map on OpenCL (TDM_POLICY_OPENCL): the tiled entry plus the batch copies and
 *             the map's own overhead, as a user gets it.
 * The two kernel columns time launches on device-resident buffers (several launches per
 * sample at small shapes, then one finish). GFLOP/s counts 2 M K N per product. Figures are
 * medians of --reps samples; nothing about time is asserted. Every variant's result is checked
 * against the CPU's (exit code 1 when one is wrong, or a device call fails).
 *
 * PoCL runs its work-groups on the same cores as the CPU pool (2 here): the device columns are
 * what the kernels' code does on a CPU, not a GPU.
 *
 * Options: --reps N (7), --device N (0), --big 0 (skip the 512^3 shape).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>

#include "sched/device.h"

extern const char tdm__builtin_kernel_source[];

static const tdm__dev_ops *ops = &tdm__opencl_dev_ops;
static char detail[1024];

#define DEV(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), detail);           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* The untiled entries, as kernels/train_kernels.h had them before tiling (renamed). Built after
 * the built-in source, whose tdm_k_dot_strided_f32 they use. */
static const char untiled_source[] =
    "TDM_KERNEL tdm_linear_untiled_f32(TDM_GLOBAL const float *x, TDM_GLOBAL const float *W,\n"
    "    TDM_GLOBAL const float *b, TDM_GLOBAL float *y, tdm_idx K, tdm_idx N, tdm_i32 relu,\n"
    "    tdm_idx begin, tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {\n"
    "        tdm_idx m = i / N, n = i - m * N;\n"
    "        float a = tdm_k_dot_strided_f32(x + m * K, W + n, K, N) + (b ? b[n] : 0.0f);\n"
    "        y[i] = relu && a < 0.0f ? 0.0f : a;\n"
    "    }\n"
    "}\n"
    "TDM_KERNEL tdm_linear_grad_x_untiled_f32(TDM_GLOBAL const float *dy,\n"
    "    TDM_GLOBAL const float *W, TDM_GLOBAL const float *h, TDM_GLOBAL float *dx, tdm_idx K,\n"
    "    tdm_idx N, tdm_idx begin, tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {\n"
    "        tdm_idx m = i / K, k = i - m * K;\n"
    "        float a = tdm_k_dot_strided_f32(dy + m * N, W + k * N, N, 1);\n"
    "        dx[i] = h && h[i] <= 0.0f ? 0.0f : a;\n"
    "    }\n"
    "}\n"
    "TDM_KERNEL tdm_linear_grad_w_untiled_f32(TDM_GLOBAL const float *x,\n"
    "    TDM_GLOBAL const float *dy, TDM_GLOBAL float *dW, tdm_idx M, tdm_idx K, tdm_idx N,\n"
    "    tdm_idx row0, tdm_idx begin, tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE()) {\n"
    "        tdm_idx j = i - begin, k = row0 + j / N, n = j - (j / N) * N;\n"
    "        float a = 0.0f;\n"
    "        for (tdm_idx m = 0; m < M; m++)\n"
    "            a += x[m * K + k] * dy[m * N + n];\n"
    "        dW[i] = a;\n"
    "    }\n"
    "}\n";
static char *untiled_program;

static tdm__karg karg_buf(tdm__dbuf *b)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = b ? TDM__KARG_BUF : TDM__KARG_NULL;
    a.buf = b;
    return a;
}

static tdm__karg karg_val(const void *v, uint32_t size)
{
    tdm__karg a;
    memset(&a, 0, sizeof a);
    a.kind = TDM__KARG_VALUE;
    a.size = size;
    memcpy(a.value, v, size);
    return a;
}

static tdm__karg karg_i64(int64_t v)
{
    return karg_val(&v, sizeof v);
}

enum { LINEAR, GRAD_X, GRAD_W, N_OPS };
static const char *op_name[N_OPS] = {"linear", "linear_grad_x", "linear_grad_w"};
enum { V_TILED, V_UNTILED, V_CPU, V_MAP, N_VAR };

typedef struct {
    int64_t M, K, N;
    tdm__dbuf *x, *W, *dy, *out[N_OPS];
} shape_bufs;

/* Enqueues one product on queue 0: the tiled entry (2-D) or the untiled one (1-D). */
static void launch(tdm__dev *d, const shape_bufs *s, int op, int tiled)
{
    const int64_t M = s->M, K = s->K, N = s->N;
    tdm__karg a[9];
    int n = 0;
    int32_t relu = 0;
    tdm__range2 r = {{0, 0}, {16, 16}};
    int64_t items = 0;
    switch (op) {
    case LINEAR: /* x, W, b = NULL, y, K, N, relu, begin, end */
        a[n++] = karg_buf(s->x);
        a[n++] = karg_buf(s->W);
        a[n++] = karg_buf(NULL);
        a[n++] = karg_buf(s->out[op]);
        a[n++] = karg_i64(K);
        a[n++] = karg_i64(N);
        a[n++] = karg_val(&relu, sizeof relu);
        items = M * N;
        r.size[0] = N;
        r.size[1] = M;
        break;
    case GRAD_X: /* dy, W, h = NULL, dx, K, N, begin, end */
        a[n++] = karg_buf(s->dy);
        a[n++] = karg_buf(s->W);
        a[n++] = karg_buf(NULL);
        a[n++] = karg_buf(s->out[op]);
        a[n++] = karg_i64(K);
        a[n++] = karg_i64(N);
        items = M * K;
        r.size[0] = K;
        r.size[1] = M;
        break;
    default: /* x, dy, dW, M, K, N, row0, begin, end */
        a[n++] = karg_buf(s->x);
        a[n++] = karg_buf(s->dy);
        a[n++] = karg_buf(s->out[op]);
        a[n++] = karg_i64(M);
        a[n++] = karg_i64(K);
        a[n++] = karg_i64(N);
        a[n++] = karg_i64(0);
        items = K * N;
        r.size[0] = N;
        r.size[1] = K;
        break;
    }
    a[n++] = karg_i64(0);
    a[n++] = karg_i64(items);
    if (tiled) {
        char entry[64];
        snprintf(entry, sizeof entry, "tdm_%s_f32", op_name[op]);
        DEV(ops->launch_2d(d, 0, "builtin", tdm__builtin_kernel_source, entry, a, n, &r, detail,
                           sizeof detail));
    } else {
        char entry[64];
        snprintf(entry, sizeof entry, "tdm_%s_untiled_f32", op_name[op]);
        DEV(ops->launch(d, 0, "bench:untiled", untiled_program, entry, a, n, items, detail,
                        sizeof detail));
    }
}

static void fill(float *p, int64_t n, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((int)(seed >> 9) % 2001 - 1000) * 1e-3f;
    }
}

/* Largest |a - ref| / (1 + |ref|). */
static double max_err(const float *a, const float *ref, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / (1.0 + fabs(ref[i]));
        if (e > m || e != e)
            m = e;
    }
    return m;
}

static tdm_tensor *tensor(tdm_runtime *rt, int64_t d0, int64_t d1)
{
    tdm_tensor *t = NULL;
    int64_t shape[2] = {d0, d1};
    BENCH_CHECK(rt, tdm_tensor_zeros(rt, TDM_F32, 2, shape, TDM_MEM_HOST, &t));
    return t;
}

/* One map of product op on policy pol into out. */
static void map_op(tdm_runtime *rt, int op, tdm_tensor *x, tdm_tensor *W, tdm_tensor *dy,
                   tdm_tensor *out, tdm_policy pol)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = pol;
    tdm_linear_params lp = {0, 0};
    tdm_tensor *in[2];
    switch (op) {
    case LINEAR:
        in[0] = x;
        in[1] = W;
        BENCH_CHECK(rt, tdm_map(rt, "linear", in, 2, &out, 1, &lp, sizeof lp, &o, NULL));
        break;
    case GRAD_X:
        in[0] = dy;
        in[1] = W;
        BENCH_CHECK(rt, tdm_map(rt, "linear_grad_x", in, 2, &out, 1, NULL, 0, &o, NULL));
        break;
    default:
        in[0] = x;
        in[1] = dy;
        BENCH_CHECK(rt, tdm_map(rt, "linear_grad_w", in, 2, &out, 1, NULL, 0, &o, NULL));
        break;
    }
}

static int bench_shape(tdm__dev *d, tdm_runtime *rt, int64_t M, int64_t K, int64_t N, int reps,
                       int with_map)
{
    int bad = 0;
    tdm_tensor *x = tensor(rt, M, K), *W = tensor(rt, K, N), *dy = tensor(rt, M, N);
    tdm_tensor *out[N_OPS] = {tensor(rt, M, N), tensor(rt, M, K), tensor(rt, K, N)};
    fill(tdm_tensor_data(x), M * K, 1);
    fill(tdm_tensor_data(W), K * N, 2);
    fill(tdm_tensor_data(dy), M * N, 3);
    const int64_t out_n[N_OPS] = {M * N, M * K, K * N};
    shape_bufs s = {M, K, N, NULL, NULL, NULL, {NULL, NULL, NULL}};
    DEV(ops->alloc(d, (size_t)(M * K) * 4, &s.x, detail, sizeof detail));
    DEV(ops->alloc(d, (size_t)(K * N) * 4, &s.W, detail, sizeof detail));
    DEV(ops->alloc(d, (size_t)(M * N) * 4, &s.dy, detail, sizeof detail));
    for (int op = 0; op < N_OPS; op++)
        DEV(ops->alloc(d, (size_t)out_n[op] * 4, &s.out[op], detail, sizeof detail));
    DEV(ops->write(d, 0, s.x, 0, tdm_tensor_data(x), (size_t)(M * K) * 4, detail, sizeof detail));
    DEV(ops->write(d, 0, s.W, 0, tdm_tensor_data(W), (size_t)(K * N) * 4, detail, sizeof detail));
    DEV(ops->write(d, 0, s.dy, 0, tdm_tensor_data(dy), (size_t)(M * N) * 4, detail, sizeof detail));
    DEV(ops->finish(d, 0, detail, sizeof detail));

    const double flops = 2.0 * (double)M * (double)K * (double)N;
    /* launches per sample: about 50 MFLOP of work, at least 1, at most 200 */
    int iters = (int)(5e7 / flops);
    iters = iters < 1 ? 1 : iters > 200 ? 200 : iters;
    double *t[N_VAR];
    for (int v = 0; v < N_VAR; v++)
        if (!(t[v] = calloc((size_t)reps, sizeof(double))))
            exit(1);
    int64_t most = out_n[0] > out_n[1] ? out_n[0] : out_n[1];
    most = most > out_n[2] ? most : out_n[2];
    float *host = malloc((size_t)most * sizeof(float));
    tdm_tensor *cpu_out[N_OPS] = {tensor(rt, M, N), tensor(rt, M, K), tensor(rt, K, N)};
    if (!host)
        exit(1);
    for (int op = 0; op < N_OPS; op++) {
        /* warm-up (program builds, PoCL's kernel compile at first enqueue) and the checks */
        map_op(rt, op, x, W, dy, cpu_out[op], TDM_POLICY_THREADS);
        const float *ref = tdm_tensor_data(cpu_out[op]);
        for (int tiled = 1; tiled >= 0; tiled--) {
            launch(d, &s, op, tiled);
            DEV(ops->read(d, 0, host, s.out[op], 0, (size_t)out_n[op] * 4, detail, sizeof detail));
            DEV(ops->finish(d, 0, detail, sizeof detail));
            double e = max_err(host, ref, out_n[op]);
            if (!(e < 1e-4)) {
                fprintf(stderr, "%s %s: max error %.3g against the CPU\n", op_name[op],
                        tiled ? "tiled" : "untiled", e);
                bad = 1;
            }
        }
        if (with_map) {
            map_op(rt, op, x, W, dy, out[op], TDM_POLICY_OPENCL);
            double e = max_err(tdm_tensor_data(out[op]), ref, out_n[op]);
            if (!(e < 1e-4)) {
                fprintf(stderr, "%s map OCL: max error %.3g against the CPU\n", op_name[op], e);
                bad = 1;
            }
        }
        for (int r = 0; r < reps; r++) {
            for (int v = 0; v < N_VAR; v++) {
                double t0 = bench_now();
                if (v == V_TILED || v == V_UNTILED) {
                    for (int i = 0; i < iters; i++)
                        launch(d, &s, op, v == V_TILED);
                    DEV(ops->finish(d, 0, detail, sizeof detail));
                } else if (v == V_CPU) {
                    for (int i = 0; i < iters; i++)
                        map_op(rt, op, x, W, dy, cpu_out[op], TDM_POLICY_THREADS);
                } else if (with_map) {
                    for (int i = 0; i < iters; i++)
                        map_op(rt, op, x, W, dy, out[op], TDM_POLICY_OPENCL);
                }
                t[v][r] = (bench_now() - t0) / iters;
            }
        }
        double med[N_VAR];
        for (int v = 0; v < N_VAR; v++)
            med[v] = bench_median(t[v], reps);
        char shape[48];
        snprintf(shape, sizeof shape, "%lldx%lld @ %lldx%lld", (long long)M, (long long)K,
                 (long long)K, (long long)N);
        printf("   %-22s %-14s %4d %9.2f %9.2f %9.2f", op == 0 ? shape : "", op_name[op], iters,
               flops / med[V_TILED] * 1e-9, flops / med[V_UNTILED] * 1e-9,
               flops / med[V_CPU] * 1e-9);
        if (with_map)
            printf(" %9.2f", flops / med[V_MAP] * 1e-9);
        else
            printf(" %9s", "-");
        printf(" %8.2fx %8.2fx\n", med[V_UNTILED] / med[V_TILED], med[V_CPU] / med[V_TILED]);
    }
    for (int v = 0; v < N_VAR; v++)
        free(t[v]);
    free(host);
    ops->free(d, s.x);
    ops->free(d, s.W);
    ops->free(d, s.dy);
    for (int op = 0; op < N_OPS; op++) {
        ops->free(d, s.out[op]);
        tdm_tensor_release(out[op]);
        tdm_tensor_release(cpu_out[op]);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(W);
    tdm_tensor_release(dy);
    return bad;
}

int main(int argc, char **argv)
{
    int reps = (int)bench_opt(argc, argv, "--reps", 7);
    int dev_index = (int)bench_opt(argc, argv, "--device", 0);
    int big = (int)bench_opt(argc, argv, "--big", 1);
    if (reps < 1) {
        fprintf(stderr, "--reps must be >= 1\n");
        return 2;
    }
    tdm_runtime *rt = bench_open(0);
    bench_header("bench_matmul",
                 "matrix products of the training kernels: OpenCL tiled vs untiled vs CPU", rt,
                 reps);
    tdm__dev *d = NULL;
    int rc = ops->open(NULL, dev_index, &d, detail, sizeof detail);
    if (rc == TDM_ENOTFOUND) {
        printf("   skipped: %s\n", detail);
        bench_close(rt);
        return 0;
    }
    DEV(rc);
    size_t bl = strlen(tdm__builtin_kernel_source), ul = strlen(untiled_source);
    if (!(untiled_program = malloc(bl + ul + 1)))
        return 1;
    memcpy(untiled_program, tdm__builtin_kernel_source, bl);
    memcpy(untiled_program + bl, untiled_source, ul + 1);
    /* the runtime's own OpenCL device, for the "map OCL" column: present when its probe found
     * the same platform */
    int with_map = 0;
    {
        tdm_tensor *a = tensor(rt, 2, 2), *c = tensor(rt, 2, 2);
        tdm_tensor *in[2] = {a, a};
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.policy = TDM_POLICY_OPENCL;
        tdm_linear_params lp = {0, 0};
        with_map = tdm_map(rt, "linear", in, 2, &c, 1, &lp, sizeof lp, &o, NULL) == 0;
        tdm_tensor_release(a);
        tdm_tensor_release(c);
    }
    printf("   GFLOP/s (2 M K N per product); kernels on device-resident buffers, \"map OCL\" and\n"
           "   CPU through tdm_map (copies and map overhead included); x = untiled/tiled and\n"
           "   CPU/tiled time ratios (above 1: the tiled kernel is faster)\n");
    printf("   %-22s %-14s %4s %9s %9s %9s %9s %9s %9s\n", "shape", "product", "its", "tiled",
           "untiled", "CPU", "map OCL", "tiled/un", "tiled/CPU");
    const int64_t shapes[][3] = {{64, 128, 10}, {37, 53, 29}, {256, 512, 384}, {512, 512, 512}};
    int n_shapes = big ? 4 : 3, bad = 0;
    for (int i = 0; i < n_shapes; i++)
        bad |= bench_shape(d, rt, shapes[i][0], shapes[i][1], shapes[i][2], reps, with_map);
    free(untiled_program);
    ops->close(d);
    bench_close(rt);
    return bad;
}
