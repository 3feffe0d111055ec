/* SPDX-License-Identifier: MIT */
/* Streaming maps whose row count the caller gives (tdm_map_async_rows): a kernel without
 * row-carrying inputs ("pi_leibniz" without its terms input) streams into ring buffers. */
#include <math.h>

#include "tdm_test.h"

static tdm_map_opts quiet(int64_t batch)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.batch_size = batch;
    return o;
}

static double leibniz(int64_t terms)
{
    double s = 0;
    for (int64_t k = 0; k < terms; k++)
        s += (k % 2 ? -1.0 : 1.0) / (double)(2 * k + 1);
    return 4 * s;
}

static void test_kernel_without_inputs_streams_the_rows_given(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(2);
    const int64_t n = 1000;
    tdm_pi_params p = {50};
    const double want = leibniz(50);
    static const tdm_order orders[] = {TDM_ORDER_SUBMISSION, TDM_ORDER_COMPLETION};
    for (int k = 0; k < 2; k++) {
        tdm_map_opts mo = quiet(64);
        mo.order = orders[k];
        mo.max_in_flight = 3;
        tdm_job *j = NULL;
        assert_int_equal(
            tdm_map_async_rows(rt, "pi_leibniz", n, NULL, 0, NULL, 1, &p, sizeof p, &mo, &j), 0);
        assert_non_null(j);
        tdm_batch_result r;
        int64_t rows = 0, next = 0;
        char *seen = calloc((size_t)n, 1);
        assert_non_null(seen);
        while (tdm_job_next(j, &r) == 0) {
            assert_int_equal(r.status, 0);
            assert_non_null(r.out);
            if (orders[k] == TDM_ORDER_SUBMISSION) {
                assert_int_equal(r.begin, next);
                next = r.end;
            }
            const tdm_tensor *y = r.out[0];
            assert_int_equal(tdm_tensor_dtype(y), TDM_F64);
            assert_int_equal(tdm_tensor_dim(y, 0), r.end - r.begin);
            const double *v = tdm_tensor_data(y);
            for (int64_t i = 0; i < r.end - r.begin; i++)
                assert_true(fabs(v[i] - want) < 1e-12);
            for (int64_t i = r.begin; i < r.end; i++) {
                assert_int_equal(seen[i], 0);
                seen[i] = 1;
            }
            rows += r.end - r.begin;
        }
        assert_int_equal(rows, n);
        free(seen);
        assert_int_equal(tdm_job_wait(j, NULL), 0);
        tdm_job_free(j);
    }
    /* No rows: a job with nothing to stream. */
    tdm_map_opts mo = quiet(0);
    tdm_job *j = NULL;
    assert_int_equal(
        tdm_map_async_rows(rt, "pi_leibniz", 0, NULL, 0, NULL, 1, &p, sizeof p, &mo, &j), 0);
    tdm_batch_result r;
    assert_int_equal(tdm_job_next(j, &r), TDM_EDONE);
    tdm_job_free(j);
    tdm_test_close(rt);
}

static void test_row_count_errors(void **state)
{
    (void)state;
    tdm_runtime *rt = tdm_test_open(1);
    tdm_pi_params p = {10};
    tdm_map_opts mo = quiet(0);
    tdm_job *j = (tdm_job *)(uintptr_t)0x1;
    /* Without the row count, tdm_map_async cannot know it. */
    assert_int_equal(tdm_map_async(rt, "pi_leibniz", NULL, 0, NULL, 1, &p, sizeof p, &mo, &j),
                     TDM_EINVAL);
    assert_null(j);
    assert_non_null(strstr(tdm_errmsg(rt), "tdm_map_async_rows"));
    j = (tdm_job *)(uintptr_t)0x1;
    assert_int_equal(
        tdm_map_async_rows(rt, "pi_leibniz", -1, NULL, 0, NULL, 1, &p, sizeof p, &mo, &j),
        TDM_EINVAL);
    assert_null(j);
    assert_int_equal(
        tdm_map_async_rows(rt, "pi_leibniz", 5, NULL, 0, NULL, 1, &p, sizeof p, &mo, NULL),
        TDM_EINVAL);
    /* Tensors that carry rows must agree with the count given. */
    tdm_tensor *terms;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I64, 1, (int64_t[]){8}, 0, &terms), 0);
    j = (tdm_job *)(uintptr_t)0x1;
    assert_int_equal(
        tdm_map_async_rows(rt, "pi_leibniz", 9, &terms, 1, NULL, 1, &p, sizeof p, &mo, &j),
        TDM_ESHAPE);
    assert_null(j);
    assert_non_null(strstr(tdm_errmsg(rt), "n_rows is 9"));
    assert_int_equal(
        tdm_map_async_rows(rt, "pi_leibniz", 8, &terms, 1, NULL, 1, &p, sizeof p, &mo, &j), 0);
    tdm_batch_result r;
    int64_t rows = 0;
    while (tdm_job_next(j, &r) == 0) {
        assert_int_equal(r.status, 0);
        rows += r.end - r.begin; /* terms 0: every value is 0 */
        for (int64_t i = 0; i < r.end - r.begin; i++)
            assert_true(((const double *)tdm_tensor_data(r.out[0]))[i] == 0.0);
    }
    assert_int_equal(rows, 8);
    tdm_job_free(j);
    tdm_tensor_release(terms);
    tdm_test_close(rt);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_without_inputs_streams_the_rows_given),
        cmocka_unit_test(test_row_count_errors),
    };
    return TDM_TEST_MAIN("map_rows", tests);
}
