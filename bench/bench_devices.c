/* SPDX-License-Identifier: MIT */
/* bench_devices: every built-in kernel on the device backends (OpenCL here on PoCL; CUDA where
 * a GPU is) against the CPU thread pool, in the same run, through the public API — the
 * figures a per-batch scheduler needs. Device runs keep their data on the device
 * (keep_on_device) after a warm-up, so they measure the kernel, not the copies; a second
 * column gives the full offload (copies in and out) for comparison.
 *
 *   build/bench/bench_devices [--reps N] [--scale S]
 *
 * Prints medians and ratios; never asserts timings. Exits 0 with a note when no device runs
 * kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tandem.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *kernel;
    tdm_dtype dtype;
    int ndim;
    int64_t shape[4];
    int n_in;
    const void *params;
    size_t psize;
} bench_case;

static tdm_tensor *make(tdm_runtime *rt, tdm_dtype dt, int ndim, const int64_t *shape)
{
    tdm_tensor *t;
    if (tdm_tensor_empty(rt, dt, ndim, shape, TDM_MEM_HOST, &t) != 0)
        return NULL;
    int64_t n = tdm_tensor_numel(t);
    void *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < n; i++) {
        double v = (double)(i % 1000) * 1e-3;
        if (dt == TDM_F32)
            ((float *)p)[i] = (float)v;
        else if (dt == TDM_F64)
            ((double *)p)[i] = v;
        else if (dt == TDM_U8)
            ((unsigned char *)p)[i] = (unsigned char)(i * 7);
    }
    return t;
}

/* Median seconds of `reps` runs of one map. */
static int time_map(tdm_runtime *rt, const bench_case *c, tdm_tensor **in, tdm_tensor *out,
                    tdm_policy policy, int keep, int reps, double *median)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = policy;
    o.keep_on_device = keep;
    double t[32];
    if (reps > 32)
        reps = 32;
    int rc = tdm_map(rt, c->kernel, in, c->n_in, &out, 1, c->params, c->psize, &o, NULL); /* warm */
    for (int r = 0; rc == 0 && r < reps; r++) {
        double t0 = now_s();
        rc = tdm_map(rt, c->kernel, in, c->n_in, &out, 1, c->params, c->psize, &o, NULL);
        t[r] = now_s() - t0;
    }
    if (rc != 0) {
        fprintf(stderr, "bench_devices: %s: %s: %s\n", c->kernel, tdm_status_name(rc),
                tdm_errmsg(rt));
        return rc;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_d);
    *median = t[reps / 2];
    return 0;
}

int main(int argc, char **argv)
{
    int reps = 5;
    double scale = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
    }
    if (reps < 1)
        reps = 1;
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "bench_devices: cannot open a runtime: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    int64_t n = (int64_t)(4000000 * scale);
    tdm_axpy_params ap = {0.5};
    tdm_scale_shift_params sp = {2.0, 1.0};
    tdm_normalize_params np = {{0.485f, 0.456f, 0.406f, 0}, {0.229f, 0.224f, 0.225f, 1}, 1, 0};
    tdm_pi_params pp = {20000};
    int64_t imgs = (int64_t)(64 * scale) > 0 ? (int64_t)(64 * scale) : 1;
    const bench_case cases[] = {
        {"exp_sinh", TDM_F64, 1, {n}, 1, NULL, 0},
        {"exp_sinh", TDM_F32, 1, {n}, 1, NULL, 0},
        {"axpy", TDM_F32, 1, {n}, 2, &ap, sizeof ap},
        {"scale_shift", TDM_F64, 1, {n}, 1, &sp, sizeof sp},
        {"sum", TDM_F32, 2, {n / 256, 256}, 1, NULL, 0},
        {"mean", TDM_F64, 2, {n / 256, 256}, 1, NULL, 0},
        {"sumsq", TDM_F64, 2, {n / 256, 256}, 1, NULL, 0},
        {"normalize_u8", TDM_U8, 4, {imgs, 224, 224, 3}, 1, &np, sizeof np},
        {"pi_leibniz", TDM_F64, 1, {2000}, 0, &pp, sizeof pp},
    };
    printf("== bench_devices: built-in kernels on each device vs the CPU thread pool\n");
    printf("   tandem %s, %d CPU thread(s), median of %d runs\n", tdm_version_string(),
           tdm_runtime_threads(rt), reps);
    /* Is there a device at all? */
    {
        int64_t one = 4;
        tdm_tensor *a = make(rt, TDM_F64, 1, &one), *b = make(rt, TDM_F64, 1, &one);
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.policy = TDM_POLICY_GPU;
        int rc = tdm_map(rt, "exp_sinh", &a, 1, &b, 1, NULL, 0, &o, NULL);
        tdm_tensor_release(a);
        tdm_tensor_release(b);
        if (rc == TDM_ENODEV) {
            printf("   no device runs kernels here (%s): nothing measured\n", tdm_errmsg(rt));
            tdm_runtime_close(rt);
            return 0;
        }
    }
    printf("\n   %-14s %-4s %12s %12s %12s %10s %10s\n", "kernel", "type", "CPU pool", "device",
           "dev+copies", "dev/CPU", "full/CPU");
    int status = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0] && status == 0; k++) {
        const bench_case *c = &cases[k];
        tdm_tensor *in[2] = {NULL, NULL}, *out_cpu = NULL, *out_dev = NULL, *out_full = NULL;
        if (c->n_in > 0)
            in[0] = make(rt, c->dtype, c->ndim, c->shape);
        if (c->n_in > 1)
            in[1] = make(rt, c->dtype, c->ndim, c->shape);
        tdm_dtype odt = c->dtype == TDM_U8 ? TDM_F32 : c->dtype;
        int64_t oshape[4] = {c->shape[0], c->shape[1], c->shape[2], c->shape[3]};
        int ondim = c->ndim;
        if (!strcmp(c->kernel, "sum") || !strcmp(c->kernel, "mean") || !strcmp(c->kernel, "sumsq"))
            ondim = 1;
        if (!strcmp(c->kernel, "normalize_u8")) {
            oshape[1] = c->shape[3];
            oshape[2] = c->shape[1];
            oshape[3] = c->shape[2];
        }
        tdm_tensor_empty(rt, odt, ondim, oshape, TDM_MEM_HOST, &out_cpu);
        tdm_tensor_empty(rt, odt, ondim, oshape, TDM_MEM_HOST, &out_dev);
        tdm_tensor_empty(rt, odt, ondim, oshape, TDM_MEM_HOST, &out_full);
        double t_cpu, t_dev, t_full;
        status = time_map(rt, c, in, out_cpu, TDM_POLICY_THREADS, 0, reps, &t_cpu);
        if (status == 0)
            status = time_map(rt, c, in, out_dev, TDM_POLICY_GPU, 1, reps, &t_dev);
        if (status == 0)
            status = time_map(rt, c, in, out_full, TDM_POLICY_GPU, 0, reps, &t_full);
        if (status == 0) {
            /* the results agree (the device's bytes come back for the check) */
            int64_t nn = tdm_tensor_numel(out_cpu);
            double maxrel = 0;
            for (int64_t i = 0; i < nn; i++) {
                double a, b;
                if (odt == TDM_F32) {
                    a = ((float *)tdm_tensor_data(out_cpu))[i];
                    b = ((float *)tdm_tensor_data(out_dev))[i];
                } else {
                    a = ((double *)tdm_tensor_data(out_cpu))[i];
                    b = ((double *)tdm_tensor_data(out_dev))[i];
                }
                double rel = fabs(a - b) / (1.0 + fabs(a));
                if (rel > maxrel)
                    maxrel = rel;
            }
            if (maxrel > (odt == TDM_F32 ? 1e-4 : 1e-10)) {
                fprintf(stderr, "bench_devices: %s: device result differs (max rel %.3g)\n",
                        c->kernel, maxrel);
                status = 1;
            }
            printf("   %-14s %-4s %10.2f ms %10.2f ms %10.2f ms %9.2fx %9.2fx\n", c->kernel,
                   tdm_dtype_name(c->dtype), t_cpu * 1e3, t_dev * 1e3, t_full * 1e3, t_cpu / t_dev,
                   t_cpu / t_full);
        }
        tdm_tensor_release(in[0]);
        tdm_tensor_release(in[1]);
        tdm_tensor_release(out_cpu);
        tdm_tensor_release(out_dev);
        tdm_tensor_release(out_full);
    }
    printf(
        "\n   dev/CPU > 1: the device is faster on data it already holds; full/CPU includes the\n"
        "   copies in and out. These are the per-kernel speeds a scheduler must learn.\n");
    if (tdm_runtime_close(rt) != 0)
        status = 1;
    return status;
}
