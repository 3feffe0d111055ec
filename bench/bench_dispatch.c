/* SPDX-License-Identifier: MIT */
/* bench_dispatch — what a batch costs: the thread pool's dispatch overhead.
 *
 *  1. empty batches: tdm_parallel_for over N items with batch_size = 1 and an empty body:
 *     wall time per batch (StarPU 1.3: 1.5-1.8 us per empty task with lws/eager, 2.9 us dmda).
 *  2. trivial items, automatic batching: 10^8 items whose body does one integer operation per
 *     item, vs the same loop run serially in this thread: ns per item (joblib loky auto
 *     2.1 us, multiprocessing Pool.map 0.11 us).
 *  3. latency of one small call, submit to return: back to back (workers may still be awake
 *     from the previous call), and after 10 ms idle (workers asleep).
 *
 * Options: --batches N (1e6), --items N (1e8), --calls N (2000), --idle-calls N (100),
 *          --reps N (7), --threads N.
 */
#include "bench_common.h"

#define SINK_STRIDE 16 /* one 128-byte slot per worker: no false sharing */

typedef struct sink_params {
    uint64_t *sink; /* SINK_STRIDE * workers slots */
} sink_params;

static int empty_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    (void)params, (void)begin, (void)end, (void)task;
    return 0;
}

/* The trivial item: one dependent integer operation the compiler cannot fold into a formula
 * (unsigned: it wraps). */
static inline uint64_t trivial_items(int64_t begin, int64_t end, uint64_t s)
{
    for (int64_t i = begin; i < end; i++)
        s += (uint64_t)i ^ (s >> 7);
    return s;
}

static int trivial_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const sink_params *p = params;
    uint64_t *slot = &p->sink[(size_t)tdm_task_worker(task) * SINK_STRIDE];
    *slot = trivial_items(begin, end, *slot);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t n_batches = bench_opt(argc, argv, "--batches", 1000000);
    int64_t n_items = bench_opt(argc, argv, "--items", 100000000);
    int calls = (int)bench_opt(argc, argv, "--calls", 2000);
    int idle_calls = (int)bench_opt(argc, argv, "--idle-calls", 100);
    int reps = (int)bench_opt(argc, argv, "--reps", 7);
    int threads = (int)bench_opt(argc, argv, "--threads", 0);
    if (reps < 1 || calls < 1 || idle_calls < 1 || n_batches < 1 || n_items < 1) {
        fprintf(stderr, "sizes and --reps must be >= 1\n");
        return 2;
    }

    tdm_runtime *rt = bench_open(threads);
    int nw = tdm_runtime_threads(rt);
    bench_header("bench_dispatch", "overhead of the thread pool per batch, per item, per call", rt,
                 reps);

    uint64_t *sink = calloc((size_t)nw * SINK_STRIDE, sizeof *sink);
    double *t_empty = calloc((size_t)reps, sizeof(double));
    double *t_auto = calloc((size_t)reps, sizeof(double));
    double *t_serial = calloc((size_t)reps, sizeof(double));
    double *t_call = calloc((size_t)calls, sizeof(double));
    double *t_call_w = calloc((size_t)calls, sizeof(double));
    double *t_idle = calloc((size_t)idle_calls, sizeof(double));
    if (!sink || !t_empty || !t_auto || !t_serial || !t_call || !t_call_w || !t_idle) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    sink_params sp = {sink};

    tdm_map_opts one = TDM_MAP_OPTS_INIT;
    one.progress = TDM_PROGRESS_OFF;
    one.batch_size = 1;
    tdm_map_opts autob = TDM_MAP_OPTS_INIT;
    autob.progress = TDM_PROGRESS_OFF;

    /* warm-up: threads scheduled, code paged in */
    BENCH_CHECK(rt, tdm_parallel_for(rt, 10000, empty_body, NULL, 0, &one, NULL));
    BENCH_CHECK(rt, tdm_parallel_for(rt, 1000000, trivial_body, &sp, sizeof sp, &autob, NULL));

    /* 1 and 2, interleaved so slow phases of the machine hit every variant alike */
    uint64_t serial_sink = 0;
    int64_t auto_batches = 0, auto_bs = 0, auto_bs_min = 0, empty_batches = 0;
    for (int r = 0; r < reps; r++) {
        tdm_report rep = TDM_REPORT_INIT;
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, n_batches, empty_body, NULL, 0, &one, &rep));
        t_empty[r] = bench_now() - t0;
        empty_batches = rep.batches;

        t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, n_items, trivial_body, &sp, sizeof sp, &autob, &rep));
        t_auto[r] = bench_now() - t0;
        auto_batches = rep.batches;
        auto_bs = rep.batch_size;
        auto_bs_min = rep.batch_size_min;

        t0 = bench_now();
        serial_sink = trivial_items(0, n_items, serial_sink);
        t_serial[r] = bench_now() - t0;
    }

    /* 3: one call of 1 item, and one of one item per worker (every worker woken) */
    tdm_map_opts lat = TDM_MAP_OPTS_INIT;
    lat.progress = TDM_PROGRESS_OFF;
    lat.batch_size = 1;
    for (int c = 0; c < calls; c++) {
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, 1, trivial_body, &sp, sizeof sp, &lat, NULL));
        t_call[c] = bench_now() - t0;
        t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, nw, trivial_body, &sp, sizeof sp, &lat, NULL));
        t_call_w[c] = bench_now() - t0;
    }
    for (int c = 0; c < idle_calls; c++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, 1, trivial_body, &sp, sizeof sp, &lat, NULL));
        t_idle[c] = bench_now() - t0;
    }

    double mn, mx;
    double m_empty = bench_median(t_empty, reps);
    bench_minmax(t_empty, reps, &mn, &mx);
    double us_batch = m_empty / (double)n_batches * 1e6;
    printf("\n1. empty batches: %" PRId64 " items, batch_size 1, empty body (%" PRId64
           " batches ran)\n",
           n_batches, empty_batches);
    printf("   wall %.3f s (min %.3f, max %.3f)\n", m_empty, mn, mx);
    printf("   %.3f us per batch (wall / batches); %.3f worker-us per batch\n", us_batch,
           us_batch * nw);
    printf("   vs StarPU 1.3 empty task 1.5-1.8 us (lws/eager): %.1f-%.1fx less; "
           "vs 2.9 us (dmda): %.1fx less\n",
           1.5 / us_batch, 1.8 / us_batch, 2.9 / us_batch);
    printf("   vs joblib 1.2 batch 1: loky 139 us, threading 27 us, multiprocessing 69 us\n");

    double m_auto = bench_median(t_auto, reps);
    double m_serial = bench_median(t_serial, reps);
    double ns_item = m_auto / (double)n_items * 1e9;
    double ns_serial = m_serial / (double)n_items * 1e9;
    printf("\n2. trivial items, automatic batching: %" PRId64 " items\n", n_items);
    printf("   tandem: %.3f s, %.3f ns per item (%" PRId64 " batches, sizes %" PRId64 "..%" PRId64
           ")\n",
           m_auto, ns_item, auto_batches, auto_bs_min, auto_bs);
    printf("   serial loop in this thread: %.3f s, %.3f ns per item; tandem speedup %.2fx on %d "
           "workers\n",
           m_serial, ns_serial, m_serial / m_auto, nw);
    printf("   vs joblib loky auto 2.1 us per item: %.0fx less; vs Pool.map default chunks "
           "0.11 us: %.0fx less\n",
           2100.0 / ns_item, 110.0 / ns_item);

    double m_call = bench_median(t_call, calls) * 1e6;
    double m_call_w = bench_median(t_call_w, calls) * 1e6;
    double p90 = t_call[(int)(0.9 * (calls - 1))] * 1e6; /* sorted by bench_median */
    double p90_w = t_call_w[(int)(0.9 * (calls - 1))] * 1e6;
    double m_idle = bench_median(t_idle, idle_calls) * 1e6;
    double p90_i = t_idle[(int)(0.9 * (idle_calls - 1))] * 1e6;
    printf("\n3. latency of one call (submit to return), medians\n");
    char l1[64], l2[64], l3[64];
    snprintf(l1, sizeof l1, "1 item, back to back (%d calls):", calls);
    snprintf(l2, sizeof l2, "%d items, batch 1, back to back:", nw);
    snprintf(l3, sizeof l3, "1 item after 10 ms idle (%d calls):", idle_calls);
    printf("   %-40s %8.2f us (p90 %.2f us)\n", l1, m_call, p90);
    printf("   %-40s %8.2f us (p90 %.2f us)\n", l2, m_call_w, p90_w);
    printf("   %-40s %8.2f us (p90 %.2f us)\n", l3, m_idle, p90_i);
    printf("   vs pool cold start: threads 2.5 ms, Pool 40 ms, loky 242 ms (paid once, at open)\n");

    printf("\n");
    bench_target("empty batch < 0.5 us (wall / batches), us", us_batch, us_batch < 0.5);
    bench_target("trivial item with automatic batching < 20 ns, ns", ns_item, ns_item < 20.0);

    /* keep the sinks alive so the loops are not optimised away */
    uint64_t all = serial_sink;
    for (int w = 0; w < nw; w++)
        all ^= sink[(size_t)w * SINK_STRIDE];
    printf("(checksum %" PRIu64 ")\n", all & 0xffff);

    free(sink);
    free(t_empty);
    free(t_auto);
    free(t_serial);
    free(t_call);
    free(t_call_w);
    free(t_idle);
    bench_close(rt);
    return 0;
}
