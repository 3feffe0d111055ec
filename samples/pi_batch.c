/* SPDX-License-Identifier: MIT */
/* pi_batch — a batch of independent items on every core, with a progress bar.
 *
 * The first workload tandem was built for (joblib + tqdm_batch): 1,000 items, each computing
 * pi with the Leibniz series of 10^6 terms. Shown twice:
 *   1. tdm_map() of the built-in kernel "pi_leibniz" into a tensor, with a progress bar;
 *   2. tdm_parallel_for() of your own C function, with a parameter block (joblib's
 *      Parallel(delayed(f)(i) for i in range(n)) in C).
 *
 * Build:  cc -O2 pi_batch.c -ltandem -lm      Run:  ./pi_batch [items] [terms]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <unistd.h>

#include <tandem.h>

/* Every tandem call returns 0 or a negative TDM_E* code; tdm_errmsg() says what went wrong. */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Your own per-item function: pi from `terms` terms of 4 * (1 - 1/3 + 1/5 - ...). */
static double leibniz_pi(int64_t terms)
{
    double s = 0.0;
    int64_t k = 0;
    for (; k + 1 < terms; k += 2)
        s += 1.0 / (double)(2 * k + 1) - 1.0 / (double)(2 * k + 3);
    if (k < terms)
        s += 1.0 / (double)(2 * k + 1);
    return 4.0 * s;
}

/* The parameter block of the parallel_for: tandem copies it by value for the run, so a local
 * variable is fine. A pointer inside must stay valid until the call returns (and, for worker
 * processes, point into a shared tensor: that is why `out` points into one). */
typedef struct pi_params {
    int64_t terms;
    double *out;
} pi_params;

/* The body: items [begin, end) of one batch. Called from several threads at once, each on its
 * own range, so writing out[i] needs no lock. Return 0, or a TDM_E* code to fail the batch. */
static int pi_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const pi_params *p = params;
    /* Every item computes the same pure function of `terms`: read it through a volatile, or the
     * compiler computes it once per batch and copies the value (fine for real work whose items
     * differ; here it would hide the work this sample is about). */
    const volatile int64_t *terms = &p->terms;
    (void)task; /* tdm_task_worker(task) tells which worker runs it, if you need that */
    for (int64_t i = begin; i < end; i++)
        p->out[i] = leibniz_pi(*terms);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t items = argc > 1 ? atoll(argv[1]) : 1000;
    int64_t terms = argc > 2 ? atoll(argv[2]) : 1000000;
    if (items <= 0 || terms <= 0) {
        fprintf(stderr, "usage: %s [items > 0] [terms > 0]\n", argv[0]);
        return 2;
    }

    tdm_runtime *rt = NULL;
    tdm_tensor *y = NULL;
    int status = 1;

    /* 1. Open a runtime: threads = 0 means one worker per core (TDM_NUM_THREADS overrides). */
    tdm_config cfg = TDM_CONFIG_INIT;
    CHECK(tdm_runtime_open(&rt, &cfg));
    printf("pi batch: %lld items x %lld terms on %d worker threads\n", (long long)items,
           (long long)terms, tdm_runtime_threads(rt));

    /* 2. The output: one f64 per item. Shared storage would also let worker processes write it;
     *    plain host memory is enough for threads. */
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){items}, TDM_MEM_HOST, &y));
    double *pi = tdm_tensor_data(y);

    /* 3. Map the built-in kernel over the items. The kernel has no inputs: the output's rows
     *    give the item count. The parameter block is the kernel's own struct. A library
     *    prints nothing unless asked (TDM_PROGRESS_AUTO draws only when env TDM_PROGRESS
     *    asks): this program asks for the bar when stderr is a terminal;
     *    TDM_PROGRESS_CALLBACK gives you the numbers instead. */
    tdm_pi_params kp = {terms};
    tdm_map_opts opts = TDM_MAP_OPTS_INIT; /* auto batch size, auto policy */
    opts.progress = isatty(STDERR_FILENO) ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF;
    opts.desc = "pi batch";
    tdm_report report = TDM_REPORT_INIT; /* `size` must be set: the INIT macro does it */
    CHECK(tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &kp, sizeof kp, &opts, &report));
    printf("tdm_map:          pi[0] = %.12f, %.3f s\n", pi[0], report.wall_s);
    CHECK(tdm_report_print(&report, stdout)); /* who ran how many items, busy time, batches */

    /* 4. The same with your own C function. */
    pi_params pp = {terms, pi};
    opts.desc = "pi batch (parallel_for)";
    tdm_report report2 = TDM_REPORT_INIT;
    CHECK(tdm_parallel_for(rt, items, pi_body, &pp, sizeof pp, &opts, &report2));
    printf("tdm_parallel_for: pi[0] = %.12f, %.3f s (error vs M_PI %.2e)\n", pi[0], report2.wall_s,
           fabs(pi[0] - 3.14159265358979323846));

    status = 0;
fail:
    /* 5. Release tensors before closing: a live tensor makes tdm_runtime_close() TDM_EBUSY. */
    tdm_tensor_release(y);
    if (rt && tdm_runtime_close(rt) != 0) {
        fprintf(stderr, "tdm_runtime_close: %s\n", tdm_errmsg(rt));
        status = 1;
    }
    return status;
}
