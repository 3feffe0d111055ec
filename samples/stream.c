/* SPDX-License-Identifier: MIT */
/* stream — an asynchronous map whose results stream back batch by batch, with a bounded
 * number in flight (joblib's return_as="generator_unordered"): the outputs are not allocated
 * whole; each finished batch arrives as a view of a ring slot, is consumed (here: summed), and
 * its slot is reused. Memory stays flat however many items there are.
 *
 *   sample_stream [N] [--ordered]
 *
 * N items (default 2e7) of exp(x)*sinh(x), at most 4 batches in flight, in completion order
 * (submission order with --ordered). Checks the streamed sum against a serial one.
 * Exit code 0 when every batch succeeded and the sums agree; 1 otherwise; 2 usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tandem.h>

int main(int argc, char **argv)
{
    int64_t n = 20000000;
    int ordered = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ordered"))
            ordered = 1;
        else if ((n = strtoll(argv[i], NULL, 10)) < 1) {
            fprintf(stderr, "usage: sample_stream [N] [--ordered]\n");
            return 2;
        }
    }
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    tdm_tensor *x = NULL;
    tdm_job *job = NULL;
    int rc = tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_SHARED, &x);
    double serial = 0;
    if (rc == 0) {
        double *xd = tdm_tensor_data(x);
        for (int64_t i = 0; i < n; i++) {
            xd[i] = (double)(i % 1000) * 1e-3;
            serial += exp(xd[i]) * sinh(xd[i]);
        }
    }

    /* Outputs NULL: the job allocates max_in_flight ring slots of one batch each. */
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.max_in_flight = 4;
    o.order = ordered ? TDM_ORDER_SUBMISSION : TDM_ORDER_COMPLETION;
    o.batch_size = 1 << 18;
    if (rc == 0)
        rc = tdm_map_async(rt, "exp_sinh", &x, 1, NULL, 1, NULL, 0, &o, &job);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        tdm_tensor_release(x);
        tdm_runtime_close(rt);
        return 1;
    }

    /* Consume batches as they finish. r.out[0] is valid until the next tdm_job_next(). */
    tdm_batch_result r;
    double sum = 0;
    int64_t batches = 0, failed = 0, items = 0, last_begin = -1, out_of_order = 0;
    while ((rc = tdm_job_next(job, &r)) == 0) {
        batches++;
        if (r.status != 0) {
            fprintf(stderr, "batch %lld (items %lld..%lld) failed: %s\n", (long long)r.batch,
                    (long long)r.begin, (long long)r.end, tdm_status_name(r.status));
            failed++;
            continue;
        }
        const double *y = tdm_tensor_data(r.out[0]);
        for (int64_t i = 0; i < r.end - r.begin; i++)
            sum += y[i];
        items += r.end - r.begin;
        out_of_order += r.begin < last_begin;
        last_begin = r.begin;
    }
    tdm_report rep = TDM_REPORT_INIT;
    int status = tdm_job_wait(job, &rep);
    tdm_job_free(job);
    tdm_tensor_release(x);
    tdm_runtime_close(rt);

    double rel = fabs(sum - serial) / fabs(serial);
    printf("%lld items in %lld batches (%s order, %lld arrived before an earlier one), "
           "at most %d in flight, %.3f s\n",
           (long long)items, (long long)batches, ordered ? "submission" : "completion",
           (long long)out_of_order, o.max_in_flight, rep.wall_s);
    printf("streamed sum %.10e, serial %.10e (relative difference %.1e)\n", sum, serial, rel);
    if (rc != TDM_EDONE || status != 0 || failed > 0 || items != n || rel > 1e-9) {
        fprintf(stderr, "FAILED: %lld batch(es) failed, status %s\n", (long long)failed,
                tdm_status_name(status));
        return 1;
    }
    return 0;
}
