/* SPDX-License-Identifier: MIT */
/* user_kernel — your own kernel, one body for the CPU and for devices (OpenCL, CUDA).
 *
 * The body is written once in tandem's kernel dialect (<tandem/dialect.h>: the part of C that
 * is also OpenCL C and CUDA, with macros for address spaces, indices and math). This file
 * compiles it as C for the CPU backends and also keeps its text, which tandem builds at run
 * time for each device (OpenCL's compiler, or NVRTC for CUDA). The kernel computes
 * softplus: y = log(1 + exp(beta * x)) / beta, elementwise over f32.
 *
 *   sample_user_kernel [N]
 *
 * Runs the kernel on the CPU and, when a device is present, on it, and checks both against a
 * plain C loop. Exit code 0 when every run matched; 1 otherwise; 2 usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tandem.h>
#include <tandem/dialect.h>

/* TDM_SINGLE_SOURCE(name, code): compiles `code` here (as C) and keeps its text, unexpanded,
 * in the string `name` for the devices. The code may use the dialect's macros and types; it
 * must not contain preprocessor lines (they cannot go through a macro argument). */
#define TDM_SINGLE_SOURCE(name, ...)                                                               \
    __VA_ARGS__                                                                                    \
    static const char name[] = #__VA_ARGS__;

/* ---- the body, once ------------------------------------------------------------------------- */
TDM_SINGLE_SOURCE(softplus_body,
TDM_DEVICE_FN float user_softplus(float x, float beta)
{
    float bx = beta * x;
    /* large arguments: log(1 + e^t) = t to float precision, and e^t would overflow */
    return bx > 20.0f ? x : TDM_LOGF(1.0f + TDM_EXPF(bx)) / beta;
})

/* The device entry point: a grid-stride loop over the batch's items calling the body. Only
 * devices have entry points (TDM_KERNEL is not defined in C), so this part is text only. */
static const char softplus_entry[] =
    "TDM_KERNEL user_softplus_f32(TDM_GLOBAL const float *x, TDM_GLOBAL float *y, float beta,\n"
    "                             tdm_idx begin, tdm_idx end)\n"
    "{\n"
    "    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE())\n"
    "        y[i] = user_softplus(x[i], beta);\n"
    "}\n";

typedef struct {
    float beta;
} softplus_params;

/* The CPU implementation: the same body in a loop over the batch's rows. */
static int softplus_cpu(const tdm_kernel_args *a)
{
    const softplus_params *p = a->params;
    const float *x = a->in[0];
    float *y = a->out[0];
    int64_t n = (a->end - a->begin) * a->in_row_elems[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = user_softplus(x[i], p->beta);
    return 0;
}

/* The device launch: which entry, and its arguments in order. */
static int softplus_dev(const tdm_tensor *const *in, int n_in, const void *params, size_t ps,
                        tdm_dev_launch *l, char *msg, size_t len)
{
    (void)n_in;
    (void)ps;
    if (tdm_tensor_dtype(in[0]) != TDM_F32) {
        snprintf(msg, len, "user_softplus: f32 only");
        return TDM_EDTYPE;
    }
    snprintf(l->entry, sizeof l->entry, "user_softplus_f32");
    l->n_args = 5;
    l->args[0].kind = TDM_DEV_ARG_INPUT;
    l->args[0].index = 0;
    l->args[1].kind = TDM_DEV_ARG_OUTPUT;
    l->args[1].index = 0;
    l->args[2].kind = TDM_DEV_ARG_VALUE; /* beta, by value */
    l->args[2].size = sizeof(float);
    memcpy(l->args[2].value, &((const softplus_params *)params)->beta, sizeof(float));
    l->args[3].kind = TDM_DEV_ARG_BEGIN;
    l->args[4].kind = TDM_DEV_ARG_END;
    l->items_per_row = tdm_tensor_numel(in[0]) / tdm_tensor_shape(in[0])[0];
    return 0;
}

/* Runs the map with `policy` and compares with plain C; returns 1 when it matched. */
static int run(tdm_runtime *rt, tdm_policy policy, const char *what, tdm_tensor *x,
               tdm_tensor *y, const softplus_params *p)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = policy;
    tdm_report rep = TDM_REPORT_INIT;
    memset(tdm_tensor_data(y), 0, (size_t)tdm_tensor_numel(y) * sizeof(float));
    int rc = tdm_map(rt, "user_softplus", &x, 1, &y, 1, p, sizeof *p, &o, &rep);
    if (rc != 0) {
        fprintf(stderr, "%s: %s: %s\n", what, tdm_status_name(rc), tdm_errmsg(rt));
        return 0;
    }
    const float *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    double worst = 0;
    for (int64_t i = 0; i < tdm_tensor_numel(x); i++) {
        double want = log1p(exp((double)p->beta * xd[i])) / p->beta;
        double err = fabs(yd[i] - want) / (1 + fabs(want));
        worst = err > worst ? err : worst;
    }
    printf("%-8s %lld items in %.3f s, largest relative error %.1e: %s\n", what,
           (long long)rep.items, rep.wall_s, worst, worst < 1e-5 ? "ok" : "MISMATCH");
    return worst < 1e-5;
}

int main(int argc, char **argv)
{
    int64_t n = argc > 1 ? strtoll(argv[1], NULL, 10) : 1000000;
    if (argc > 2 || n < 1) {
        fprintf(stderr, "usage: sample_user_kernel [N]\n");
        return 2;
    }
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    /* The device source: the body's text, then the entry point. */
    static char source[sizeof softplus_body + sizeof softplus_entry + 2];
    snprintf(source, sizeof source, "%s\n%s", softplus_body, softplus_entry);

    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "user_softplus";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.params_size = sizeof(softplus_params);
    def.cpu = softplus_cpu;
    def.source = source;
    def.dev = softplus_dev;
    int ok = 1;
    tdm_tensor *x = NULL, *y = NULL;
    int rc = tdm_kernel_register(rt, &def);
    if (rc == 0)
        rc = tdm_tensor_empty(rt, TDM_F32, 1, &n, TDM_MEM_SHARED, &x);
    if (rc == 0)
        rc = tdm_tensor_empty(rt, TDM_F32, 1, &n, TDM_MEM_SHARED, &y);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        ok = 0;
    } else {
        float *xd = tdm_tensor_data(x);
        for (int64_t i = 0; i < n; i++)
            xd[i] = (float)(i % 2001 - 1000) * 0.01f; /* -10 .. 10 */
        softplus_params p = {2.0f};
        ok &= run(rt, TDM_POLICY_CPU, "cpu", x, y, &p);
        int devices = 0;
        for (int d = 0; d < tdm_runtime_device_count(rt); d++) {
            tdm_device_info di;
            if (tdm_runtime_device(rt, d, &di) == 0 && di.kind != TDM_BACKEND_CPU_THREADS &&
                di.kind != TDM_BACKEND_CPU_PROCS)
                devices++;
        }
        if (devices > 0)
            ok &= run(rt, TDM_POLICY_GPU, "device", x, y, &p);
        else
            printf("device   none found: the body ran on the CPU only\n");
        ok &= run(rt, TDM_POLICY_AUTO, "auto", x, y, &p);
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    if (tdm_runtime_close(rt) != 0)
        ok = 0;
    return ok ? 0 : 1;
}
