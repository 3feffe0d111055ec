/* SPDX-License-Identifier: MIT */
/* bench_procs — the worker-process backend: shared payloads, sharing cost, round trip, speedup,
 * cold start. Every figure comes with its baseline measured in the same run.
 *
 *  1. seed experiment (joblib + a 200 MB payload): 200 items of 10^5 Leibniz terms, each also
 *     reading payload values, on worker processes: serial loop, processes without the payload,
 *     processes with it (target: with payload within 5% of without). joblib here: payload
 *     pickled per item 0.01x serial, memmapped 1.34x on 2 cores, tqdm_batch 0.97x.
 *  2. cost of sharing a tensor, by size: (a) creating it TDM_MEM_SHARED (allocation, no copy),
 *     (b) tdm_tensor_share() of a filled host tensor (one copy: GB/s), (c) handing an already
 *     shared tensor to the workers = a parallel_for over it on PROCS, against the same call
 *     without it (target: flat, < 1 ms at 200 MB). torch share_memory_() of 200 MB: 135 ms.
 *  3. round trip of an empty batch through a worker process (batch_size 1): target < 10 us
 *     per batch (Pool.map chunksize=1: 15 us, joblib loky batch 1: 139 us).
 *  4. pi speedup on worker processes only: target >= 0.97 x cores. tdm_parallel_for runs the
 *     seed's C function (10^6 terms an item), tdm_map the built-in kernel (4x the terms: its
 *     vector lanes run them in about the same time); each against its own code run serially.
 *  5. cold start: tdm_runtime_open with 2 worker processes until the pool is ready, and close
 *     (target < 5 ms; loky 242 ms, Pool 40 ms, a thread pool 2.5 ms).
 *
 * Timings are never asserted: the exit code is 1 only when a tandem call fails or a result is
 * wrong. Options: --reps N (7), --procs N (0 = usable cores), --items N (200), --terms T (1e5),
 * --rt-items N (50000), --max-mb M (2048: largest size of part 2), --skip-large (stop at 200 MB).
 */
#include "bench_common.h" /* first: it sets the POSIX feature level */

#include <math.h>

#include "pi_cpu.h"

static int g_wrong; /* a wrong result: exit 1 at the end */

static void wrong(const char *what)
{
    fprintf(stderr, "WRONG RESULT: %s\n", what);
    g_wrong = 1;
}

/* ---- the seed's items -------------------------------------------------------------------- */

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

typedef struct seed_params {
    const double *payload; /* NULL: the "without payload" variant */
    int64_t payload_n;
    int64_t terms;
    double *out;
} seed_params;

/* pi plus 8 payload values at positions spread over the payload, picked by the item index. */
static double seed_item(const seed_params *p, int64_t i)
{
    const volatile int64_t *terms = &p->terms; /* one real computation per item */
    double extra = 0.0;
    if (p->payload) {
        for (int64_t j = 0; j < 8; j++) {
            uint64_t pos =
                ((uint64_t)i * 2654435761u + (uint64_t)j * 40503u) * 2862933555777941757u;
            extra += p->payload[pos % (uint64_t)p->payload_n];
        }
    }
    return leibniz_pi(*terms) + 1e-9 * extra;
}

static int seed_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const seed_params *p = params;
    (void)task;
    for (int64_t i = begin; i < end; i++)
        p->out[i] = seed_item(p, i);
    return 0;
}

static int empty_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    (void)params;
    (void)begin;
    (void)end;
    (void)task;
    return 0;
}

/* Part 2 (c): each item reads the first and last byte of the shared tensor in the worker. */
typedef struct touch_params {
    const uint8_t *data; /* NULL: the baseline call without a tensor */
    size_t n;
    int64_t *seen; /* per item: first + last byte, or -1 */
} touch_params;

static int touch_body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const touch_params *p = params;
    (void)task;
    for (int64_t i = begin; i < end; i++)
        p->seen[i] = p->data ? (int64_t)p->data[0] + (int64_t)p->data[p->n - 1] : -1;
    return 0;
}

static int check_same(const double *a, const double *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= 1e-12))
            return 0;
    return 1;
}

static tdm_map_opts procs_opts(int64_t batch_size)
{
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.policy = TDM_POLICY_PROCS;
    o.batch_size = batch_size;
    o.progress = TDM_PROGRESS_OFF;
    return o;
}

static double *vec(int n)
{
    double *v = calloc((size_t)n, sizeof *v);
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return v;
}

/* ---- 5. cold start ----------------------------------------------------------------------- */

static void cold_start(int reps)
{
    enum { N = 21 };
    double o2[N], c2[N], o0[N], c0[N];
    (void)reps;
    for (int r = 0; r < N; r++) {
        for (int v = 0; v < 2; v++) { /* interleaved: procs=2, then the thread-only baseline */
            tdm_config cfg = TDM_CONFIG_INIT;
            cfg.procs = v == 0 ? 2 : 0;
            cfg.use_env = 0;
            tdm_runtime *rt = NULL;
            double t0 = bench_now();
            BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
            double t1 = bench_now();
            BENCH_CHECK(rt, tdm_runtime_close(rt));
            double t2 = bench_now();
            (v == 0 ? o2 : o0)[r] = t1 - t0;
            (v == 0 ? c2 : c0)[r] = t2 - t1;
        }
    }
    double mo2 = bench_median(o2, N), mc2 = bench_median(c2, N);
    double mo0 = bench_median(o0, N), mc0 = bench_median(c0, N);
    printf("\n-- 5. cold start (median of %d, interleaved)\n", N);
    printf("   %-44s %9s %9s\n", "", "open", "close");
    printf("   %-44s %6.2f ms %6.2f ms\n", "tdm_runtime_open, 2 worker processes (ready)",
           mo2 * 1e3, mc2 * 1e3);
    printf("   %-44s %6.2f ms %6.2f ms\n", "baseline: tdm_runtime_open, threads only", mo0 * 1e3,
           mc0 * 1e3);
    printf("   processes add %.2f ms to open; anchors: loky 242 ms (%.0fx slower), Pool 40 ms "
           "(%.0fx), thread pool 2.5 ms\n",
           (mo2 - mo0) * 1e3, 0.242 / mo2, 0.040 / mo2);
    bench_target("cold start of 2 worker processes < 5 ms, ms", mo2 * 1e3, mo2 < 5e-3);
}

/* ---- 1. the seed experiment -------------------------------------------------------------- */

static void seed(tdm_runtime *rt, int reps, int64_t items, int64_t terms, int cores)
{
    tdm_tensor *tp = NULL, *to = NULL;
    int64_t shape[3] = {500, 500, 100};
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 3, shape, TDM_MEM_SHARED, &tp));
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, &items, TDM_MEM_SHARED, &to));
    double *pd = tdm_tensor_data(tp);
    int64_t pn = tdm_tensor_numel(tp);
    uint64_t x = 88172645463325252u;
    for (int64_t i = 0; i < pn; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pd[i] = (double)(x >> 11) * 0x1p-52 - 1.0;
    }
    double *out = tdm_tensor_data(to);
    double *ref_with = vec((int)items), *ref_without = vec((int)items);
    seed_params with = {pd, pn, terms, out}, without = {NULL, 0, terms, out};

    printf("\n-- 1. seed experiment: %" PRId64 " items x %" PRId64 " terms, payload 500x500x100 "
           "f64 (%.0f MB, TDM_MEM_SHARED), %d processes\n",
           items, terms, (double)tdm_tensor_nbytes(tp) / 1e6, cores);

    /* The first run with the payload: the workers map the pages they read for the first time. */
    tdm_map_opts oa = procs_opts(0), o1 = procs_opts(1), ot = procs_opts(0);
    ot.policy = TDM_POLICY_THREADS; /* the same batches on the thread pool, for comparison */
    double t0 = bench_now();
    BENCH_CHECK(rt, tdm_parallel_for(rt, items, seed_body, &with, sizeof with, &oa, NULL));
    double t_first = bench_now() - t0;

    enum { V = 6 };
    const char *names[V] = {"serial loop (with payload)",       "processes, auto, no payload",
                            "processes, auto, with payload",    "processes, batch 1, no payload",
                            "processes, batch 1, with payload", NULL};
    /* the runtime's CPU budget is shared: with worker processes open, fewer threads */
    char tname[64];
    snprintf(tname, sizeof tname, "threads (%d), auto, with payload", tdm_runtime_threads(rt));
    names[5] = tname;
    double *t[V], *cpu[V];
    for (int v = 0; v < V; v++) {
        t[v] = vec(reps);
        cpu[v] = vec(reps);
    }
    for (int r = 0; r < reps; r++) {
        double c0 = bench_cpu_now();
        t0 = bench_now();
        for (int64_t i = 0; i < items; i++)
            ref_with[i] = seed_item(&with, i);
        t[0][r] = bench_now() - t0;
        cpu[0][r] = bench_cpu_now() - c0;
        if (r == 0)
            for (int64_t i = 0; i < items; i++)
                ref_without[i] = seed_item(&without, i);
        for (int v = 1; v < V; v++) {
            const seed_params *p = v < 5 && (v % 2) ? &without : &with;
            memset(out, 0, (size_t)items * sizeof *out);
            c0 = bench_cpu_now();
            t0 = bench_now();
            const tdm_map_opts *o = v == 5 ? &ot : v <= 2 ? &oa : &o1;
            BENCH_CHECK(rt, tdm_parallel_for(rt, items, seed_body, p, sizeof *p, o, NULL));
            t[v][r] = bench_now() - t0;
            cpu[v][r] = bench_cpu_now() - c0;
            if (!check_same(out, p == &without ? ref_without : ref_with, items))
                wrong(names[v]);
        }
    }
    double m[V];
    printf("   %-34s %9s %9s %9s %10s %16s\n", "variant", "wall", "(min)", "speedup", "per core",
           "parent CPU/wall");
    for (int v = 0; v < V; v++) {
        double mc = bench_median(cpu[v], reps), mn, mx;
        bench_minmax(t[v], reps, &mn, &mx);
        m[v] = bench_median(t[v], reps);
        printf("   %-34s %6.1f ms %6.1f ms %8.2fx %10.3f %15.2f\n", names[v], m[v] * 1e3, mn * 1e3,
               m[0] / m[v], m[0] / m[v] / (v ? cores : 1), mc / m[v]);
    }
    printf("   %-34s %6.1f ms %8.2fx %10s\n", "(first run with payload, cold pages)", t_first * 1e3,
           m[0] / t_first, "");
    printf("   with / without payload: auto %.3f, batch 1 %.3f; processes / threads (auto, with "
           "payload): %.3f\n",
           m[2] / m[1], m[4] / m[3], m[2] / m[5]);
    printf("   anchors (joblib, 2 cores, same workload): payload pickled per item 0.01x serial, "
           "memmapped 1.34x, tqdm_batch 0.97x; tandem auto with payload: %.2fx\n",
           m[0] / m[2]);
    bench_target("processes with payload within 5% of without (auto), ratio", m[2] / m[1],
                 m[2] <= 1.05 * m[1]);
    bench_target("processes with payload within 5% of without (batch 1), ratio", m[4] / m[3],
                 m[4] <= 1.05 * m[3]);
    for (int v = 0; v < V; v++) {
        free(t[v]);
        free(cpu[v]);
    }
    free(ref_with);
    free(ref_without);
    tdm_tensor_release(tp);
    tdm_tensor_release(to);
}

/* ---- 2. cost of sharing by size ---------------------------------------------------------- */

static void sharing(tdm_runtime *rt, int reps, int64_t max_mb, int procs)
{
    static const int64_t sizes_mb[] = {1, 16, 200, 1024, 2048};
    tdm_system_info si;
    BENCH_CHECK(NULL, tdm_system_info_get(&si));
    int np = procs < 16 ? procs : 16; /* part (c): one item per worker process */
    tdm_tensor *tseen = NULL;
    int64_t nitems = 16;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_I64, 1, &nitems, TDM_MEM_SHARED, &tseen));
    int64_t *seen = tdm_tensor_data(tseen);
    tdm_map_opts o1 = procs_opts(1);

    printf("\n-- 2. cost of sharing a tensor with the workers, by size (MemAvailable %.1f GB)\n",
           (double)si.memory_available_bytes / 1e9);
    printf("   (a) tdm_tensor_empty(TDM_MEM_SHARED): pages reserved, no copy; + first write of "
           "every byte;\n       baseline: a host tensor + its first write\n");
    printf("   (b) tdm_tensor_share() of a filled host tensor: one copy; baseline: malloc + "
           "memcpy of the same bytes\n");
    printf("   (c) hand the shared tensor to the workers: parallel_for(PROCS, batch 1, one item "
           "per process) reading\n       its first and last byte, vs the same call without a "
           "tensor\n");
    printf("   %8s | %9s %10s %10s | %9s %8s %8s | %9s %9s\n", "size", "(a) create", "+write",
           "host+write", "(b) share", "GB/s", "memcpy", "(c) hand", "no tensor");
    double hand_200 = -1, hand_min = 1e9, hand_max = 0, share_200 = -1, added_max = 0;
    for (size_t k = 0; k < sizeof sizes_mb / sizeof sizes_mb[0]; k++) {
        int64_t mb = sizes_mb[k];
        uint64_t bytes = (uint64_t)mb << 20;
        if (mb > max_mb)
            break;
        /* (b) and its baseline hold two copies at once; keep 1 GB and 25% spare. */
        if (si.memory_available_bytes &&
            2 * bytes + (1ull << 30) > si.memory_available_bytes / 4 * 3) {
            printf("   %6" PRId64 "MB | skipped: needs %.1f GB with margin, MemAvailable %.1f GB\n",
                   mb, (2.0 * (double)bytes + (1ull << 30)) / 1e9,
                   (double)si.memory_available_bytes / 1e9);
            continue;
        }
        int rp = mb >= 1024 ? 3 : reps;
        double *ca = vec(rp), *cw = vec(rp), *hw = vec(rp), *sh = vec(rp), *mc = vec(rp);
        enum { H = 31 };
        double hand[H], base[H];
        int64_t n = (int64_t)bytes;
        for (int r = 0; r < rp; r++) {
            /* (a) */
            tdm_tensor *ts = NULL, *th = NULL;
            double t0 = bench_now();
            BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_SHARED, &ts));
            double t1 = bench_now();
            memset(tdm_tensor_data(ts), 1, bytes);
            double t2 = bench_now();
            ca[r] = t1 - t0;
            cw[r] = t2 - t0;
            t0 = bench_now();
            BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_U8, 1, &n, TDM_MEM_HOST, &th));
            memset(tdm_tensor_data(th), 2, bytes);
            hw[r] = bench_now() - t0;
            /* (c), once per size, on the tensor of (a): interleaved with the baseline */
            if (r == 0) {
                uint8_t *d = tdm_tensor_data(ts);
                d[0] = 3;
                d[bytes - 1] = 4;
                touch_params with = {d, bytes, seen}, none = {NULL, 0, seen};
                for (int h = 0; h < H; h++) {
                    for (int v = 0; v < 2; v++) {
                        const touch_params *p = v ? &none : &with;
                        for (int i = 0; i < np; i++)
                            seen[i] = 0;
                        t0 = bench_now();
                        BENCH_CHECK(rt,
                                    tdm_parallel_for(rt, np, touch_body, p, sizeof *p, &o1, NULL));
                        (v ? base : hand)[h] = bench_now() - t0;
                        for (int i = 0; i < np; i++)
                            if (seen[i] != (v ? -1 : 7))
                                wrong("a worker did not see the shared tensor's bytes");
                    }
                }
            }
            tdm_tensor_release(ts);
            /* (b) */
            t0 = bench_now();
            BENCH_CHECK(rt, tdm_tensor_share(th));
            sh[r] = bench_now() - t0;
            const uint8_t *hd = tdm_tensor_data(th);
            if (!(tdm_tensor_mem(th) & TDM_MEM_SHARED) || hd[0] != 2 || hd[bytes / 2] != 2 ||
                hd[bytes - 1] != 2)
                wrong("tdm_tensor_share() lost the tensor's bytes");
            /* baseline of (b): a private copy, allocation included */
            uint8_t *dst = NULL;
            t0 = bench_now();
            dst = malloc(bytes);
            if (!dst) {
                fprintf(stderr, "out of memory\n");
                exit(1);
            }
            memcpy(dst, hd, bytes);
            mc[r] = bench_now() - t0;
            if (dst[bytes - 1] != 2)
                wrong("memcpy");
            free(dst);
            tdm_tensor_release(th);
        }
        double m_ca = bench_median(ca, rp), m_cw = bench_median(cw, rp);
        double m_hw = bench_median(hw, rp), m_sh = bench_median(sh, rp);
        double m_mc = bench_median(mc, rp);
        double m_hand = bench_median(hand, H), m_base = bench_median(base, H);
        printf("   %6" PRId64 "MB | %7.2f ms %7.2f ms %7.2f ms | %6.2f ms %8.2f %8.2f | %6.3f ms "
               "%6.3f ms\n",
               mb, m_ca * 1e3, m_cw * 1e3, m_hw * 1e3, m_sh * 1e3, (double)bytes / m_sh / 1e9,
               (double)bytes / m_mc / 1e9, m_hand * 1e3, m_base * 1e3);
        if (mb == 200) {
            hand_200 = m_hand;
            share_200 = m_sh;
        }
        if (m_hand - m_base > added_max)
            added_max = m_hand - m_base;
        if (m_hand < hand_min)
            hand_min = m_hand;
        if (m_hand > hand_max)
            hand_max = m_hand;
        free(ca);
        free(cw);
        free(hw);
        free(sh);
        free(mc);
    }
    tdm_tensor_release(tseen);
    printf("   (c) over the sizes: %.3f .. %.3f ms; the tensor adds at most %.3f ms to the same "
           "call without it\n",
           hand_min * 1e3, hand_max * 1e3, added_max * 1e3);
    if (hand_200 < 0) { /* (--max-mb under 200: no target to report, met or not) */
        printf("   (b), (c) at 200 MB: not measured (--max-mb is under 200)\n");
    } else {
        printf("   (b) at 200 MB: %.1f ms, against torch share_memory_() 135 ms (anchor): "
               "creating the tensor shared in the first place costs no copy\n",
               share_200 * 1e3);
        bench_target("(c) handing a shared 200 MB tensor to the workers < 1 ms, ms",
                     hand_200 * 1e3, hand_200 < 1e-3);
    }
    bench_target("(c) flat: the tensor adds < 0.1 ms at every size, ms", added_max * 1e3,
                 added_max < 1e-4);
}

/* ---- 3. round trip ----------------------------------------------------------------------- */

static double round_trip_once(tdm_runtime *rt, int64_t n, tdm_policy policy, double *cpu)
{
    tdm_map_opts o = procs_opts(1);
    o.policy = policy;
    tdm_report rep = TDM_REPORT_INIT;
    double c0 = bench_cpu_now();
    double t0 = bench_now();
    BENCH_CHECK(rt, tdm_parallel_for(rt, n, empty_body, NULL, 0, &o, &rep));
    double t = bench_now() - t0;
    if (cpu)
        *cpu = bench_cpu_now() - c0;
    if (rep.items != n || rep.batches != n)
        wrong("round trip: items or batches missing from the report");
    return t;
}

static void round_trip(tdm_runtime *rt, int reps, int64_t n, int procs)
{
    double *tp = vec(reps), *tt = vec(reps), *cp = vec(reps), *t1 = vec(reps);
    /* The same with a single worker process: its driving thread and the process then have a
     * core each, which `procs` = cores processes plus their `procs` driving threads do not. */
    tdm_runtime *rt1 = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.procs = 1;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt1, &cfg));
    round_trip_once(rt, n / 10 + 1, TDM_POLICY_PROCS, NULL); /* warm-up */
    round_trip_once(rt1, n / 10 + 1, TDM_POLICY_PROCS, NULL);
    for (int r = 0; r < reps; r++) {
        tp[r] = round_trip_once(rt, n, TDM_POLICY_PROCS, &cp[r]);
        t1[r] = round_trip_once(rt1, n, TDM_POLICY_PROCS, NULL);
        tt[r] = round_trip_once(rt, n, TDM_POLICY_THREADS, NULL);
    }
    BENCH_CHECK(rt1, tdm_runtime_close(rt1));
    double mp = bench_median(tp, reps), mt = bench_median(tt, reps);
    double m1 = bench_median(t1, reps), mcpu = bench_median(cp, reps);
    double us = mp / (double)n * 1e6;
    printf("\n-- 3. round trip of an empty batch, batch_size 1, %" PRId64 " items\n", n);
    printf("   %-50s %7.2f us per batch (%.2f us per process)\n",
           "worker processes (PROCS), all of them", us, us * procs);
    printf("   %-50s %7.2f us per batch\n", "one worker process (its own runtime)",
           m1 / (double)n * 1e6);
    printf("   %-50s %7.2f us per batch (%d thread(s))\n",
           "baseline: the thread pool (THREADS), same call", mt / (double)n * 1e6,
           tdm_runtime_threads(rt));
    printf("   parent CPU during the PROCS run: %.2f cores (the threads driving the processes)\n",
           mcpu / mp);
    printf("   anchors: Pool.map chunksize=1 15 us (%.2fx tandem's time), joblib loky batch 1 "
           "139 us (%.1fx)\n",
           15.0 / us, 139.0 / us);
    bench_target("round trip through worker processes < 10 us per batch, us", us, us < 10.0);
    free(tp);
    free(tt);
    free(cp);
    free(t1);
}

/* ---- 4. pi speedup on processes ---------------------------------------------------------- */

static void pi_speedup(tdm_runtime *rt, int reps, int cores)
{
    int64_t terms = 1000000, kterms = 4 * terms; /* (the kernel's: see the header) */
    volatile int64_t vterms = terms, vkterms = kterms;
    volatile double sink = 0.0;
    double t0 = bench_now();
    for (int i = 0; i < 3; i++)
        sink += leibniz_pi(vterms);
    double per_item = (bench_now() - t0) / 3.0;
    int64_t items = (int64_t)ceil(1.0 / per_item / 10.0) * 10; /* ~1 s serial */
    if (items < 8 * cores)
        items = 8 * cores;
    (void)sink;
    tdm_tensor *ty = NULL;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, &items, TDM_MEM_SHARED, &ty));
    double *y = tdm_tensor_data(ty);
    double *ref = vec((int)items), *ts = vec(reps), *tf = vec(reps), *tm = vec(reps);
    double *cf = vec(reps), *refk = vec((int)items), *tk = vec(reps);
    seed_params fp = {NULL, 0, terms, y};
    tdm_pi_params kp = {kterms};
    tdm_map_opts oa = procs_opts(0);
    tdm_report rep = TDM_REPORT_INIT, repf = TDM_REPORT_INIT;
    for (int r = 0; r < reps; r++) {
        t0 = bench_now();
        for (int64_t i = 0; i < items; i++)
            ref[i] = leibniz_pi(vterms);
        ts[r] = bench_now() - t0;
        t0 = bench_now();
        for (int64_t i = 0; i < items; i++)
            tdm__pi_leibniz_cpu(NULL, vkterms, &refk[i], 1);
        tk[r] = bench_now() - t0;

        memset(y, 0, (size_t)items * sizeof *y);
        double c0 = bench_cpu_now();
        t0 = bench_now();
        BENCH_CHECK(rt, tdm_parallel_for(rt, items, seed_body, &fp, sizeof fp, &oa, &repf));
        tf[r] = bench_now() - t0;
        cf[r] = bench_cpu_now() - c0;
        if (!check_same(y, ref, items))
            wrong("pi: parallel_for on processes");

        memset(y, 0, (size_t)items * sizeof *y);
        t0 = bench_now();
        BENCH_CHECK(rt, tdm_map(rt, "pi_leibniz", NULL, 0, &ty, 1, &kp, sizeof kp, &oa, &rep));
        tm[r] = bench_now() - t0;
        if (!check_same(y, refk, items))
            wrong("pi: tdm_map on processes");
    }
    int on_procs = 0;
    for (int w = 0; w < rep.n_workers; w++)
        if (rep.workers[w].kind == TDM_BACKEND_CPU_PROCS && rep.workers[w].items > 0)
            on_procs++;
    int64_t nb = repf.batches;
    double ms = bench_median(ts, reps), mf = bench_median(tf, reps), mm = bench_median(tm, reps);
    double mk = bench_median(tk, reps);
    double mcf = bench_median(cf, reps);
    printf("\n-- 4. pi on worker processes only: %" PRId64 " items x %" PRId64 " terms (tdm_map: "
           "%" PRId64 "), %d processes\n",
           items, terms, kterms, cores);
    printf("   %-40s %7.3f s %8s\n", "serial C loop (baseline)", ms, "1.00x");
    printf("   %-40s %7.3f s %7.2fx  %.3f per core  (%" PRId64 " batches; parent CPU %.2f "
           "cores)\n",
           "tdm_parallel_for, PROCS, auto batches", mf, ms / mf, ms / mf / cores, nb, mcf / mf);
    char kl[64];
    snprintf(kl, sizeof kl, "serial, the kernel's code (%s lanes)", tdm__pi_cpu_isa());
    printf("   %-40s %7.3f s %8s  (4x the terms: %.2fx the C loop's terms per second; "
           "tdm_map's baseline)\n",
           kl, mk, "-", 4.0 * ms / mk);
    printf("   %-40s %7.3f s %7.2fx  %.3f per core  (vs the kernel's code serially; %d processes "
           "ran items)\n",
           "tdm_map(pi_leibniz), PROCS, auto", mm, mk / mm, mk / mm / cores, on_procs);
    char t[96];
    snprintf(t, sizeof t, "parallel_for on processes >= 0.97 x %d cores, per core", cores);
    bench_target(t, ms / mf / cores, ms / mf >= 0.97 * cores);
    snprintf(t, sizeof t, "tdm_map on processes >= 0.97 x %d cores, per core", cores);
    bench_target(t, mk / mm / cores, mk / mm >= 0.97 * cores);
    free(ref);
    free(refk);
    free(ts);
    free(tk);
    free(tf);
    free(tm);
    free(cf);
    tdm_tensor_release(ty);
}

int main(int argc, char **argv)
{
    int reps = (int)bench_opt(argc, argv, "--reps", 7);
    int procs = (int)bench_opt(argc, argv, "--procs", 0);
    int64_t items = bench_opt(argc, argv, "--items", 200);
    int64_t terms = bench_opt(argc, argv, "--terms", 100000);
    int64_t rt_items = bench_opt(argc, argv, "--rt-items", 50000);
    int64_t max_mb = bench_opt(argc, argv, "--max-mb", 2048);
    if (bench_flag(argc, argv, "--skip-large"))
        max_mb = 200;
    if (reps < 1 || items < 1 || terms < 1 || rt_items < 1) {
        fprintf(stderr, "--reps, --items, --terms and --rt-items must be >= 1\n");
        return 2;
    }
    tdm_system_info si;
    BENCH_CHECK(NULL, tdm_system_info_get(&si));
    if (procs == 0)
        procs = si.usable_cores;

    bench_header("bench_procs", "worker processes over shared memory", NULL, reps);

    /* Part 5 first, while this process is small (fork copies the page tables). */
    cold_start(reps);

    /* One runtime for the rest: `procs` worker processes; threads left at the default, which
     * with processes is cores - procs (at least 1): the pool does not oversubscribe the cores
     * the processes use. Everything below runs on the processes only (policy PROCS). */
    tdm_runtime *rt = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.procs = procs;
    BENCH_CHECK(NULL, tdm_runtime_open(&rt, &cfg));
    printf("\n   runtime: %d worker processes; default thread count with them: %d (cores - procs, "
           "at least 1)\n",
           procs, tdm_runtime_threads(rt));
    int cores = procs < si.usable_cores ? procs : si.usable_cores;

    seed(rt, reps < 21 ? 21 : reps, items, terms, cores);
    sharing(rt, reps, max_mb, procs);
    round_trip(rt, reps < 5 ? reps : 5, rt_items, procs);
    pi_speedup(rt, reps < 5 ? reps : 5, cores);

    bench_close(rt);
    if (g_wrong)
        fprintf(stderr, "bench_procs: wrong results (see above)\n");
    return g_wrong;
}
