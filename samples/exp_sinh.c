/* SPDX-License-Identifier: MIT */
/* exp_sinh — an elementwise kernel over a large tensor, and what an error looks like.
 *
 * The seed "complex_operation": y = exp(x) * sinh(x) over many doubles. tdm_map() cuts the
 * rows into batches (their size chosen by the runtime) and runs them on every core.
 *
 * Build:  cc -O2 exp_sinh.c -ltandem -lm      Run:  ./exp_sinh [elements]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <unistd.h>

#include <tandem.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    int64_t n = argc > 1 ? atoll(argv[1]) : 50000000;
    if (n <= 0) {
        fprintf(stderr, "usage: %s [elements > 0]\n", argv[0]);
        return 2;
    }

    tdm_runtime *rt = NULL;
    tdm_tensor *x = NULL, *y = NULL, *wrong = NULL;
    int status = 1;

    CHECK(tdm_runtime_open(&rt, NULL)); /* NULL config = all defaults */

    /* Input and output: 1-D f64 tensors of n rows. A tensor is refcounted and owned by you. */
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, &x));
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){n}, TDM_MEM_HOST, &y));
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)(i % 1000) * 1e-3; /* in [0, 1): no overflow */

    /* Map the kernel; the built-in "exp_sinh" takes no parameter block (NULL, 0). */
    tdm_map_opts opts = TDM_MAP_OPTS_INIT;
    opts.progress = isatty(STDERR_FILENO) ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF; /* on a tty */
    opts.desc = "exp*sinh";
    tdm_report report = TDM_REPORT_INIT;
    CHECK(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &opts, &report));
    printf("exp*sinh over %lld f64: %.3f s, %.0f Melem/s on %d threads\n", (long long)n,
           report.wall_s, (double)n / report.wall_s * 1e-6, tdm_runtime_threads(rt));
    CHECK(tdm_report_print(&report, stdout));

    /* Spot-check a few results against the C library. */
    const double *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i += n / 7 + 1) {
        double want = exp(xd[i]) * sinh(xd[i]);
        if (fabs(yd[i] - want) > 1e-12) {
            fprintf(stderr, "y[%lld] = %.17g, expected %.17g\n", (long long)i, yd[i], want);
            goto fail;
        }
    }

    /* Errors are values, not aborts: an f32 output for an f64 input is refused before any
     * batch runs, the output is left untouched, and tdm_errmsg() says why. */
    CHECK(tdm_tensor_empty(rt, TDM_F32, 1, (int64_t[]){n}, TDM_MEM_HOST, &wrong));
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &wrong, 1, NULL, 0, &opts, NULL);
    printf("a mismatched output is refused: %s (%s)\n", tdm_status_name(rc), tdm_errmsg(rt));
    if (rc == 0)
        goto fail;

    status = 0;
fail:
    tdm_tensor_release(wrong);
    tdm_tensor_release(y);
    tdm_tensor_release(x);
    if (rt && tdm_runtime_close(rt) != 0) {
        fprintf(stderr, "tdm_runtime_close: %s\n", tdm_errmsg(rt));
        status = 1;
    }
    return status;
}
