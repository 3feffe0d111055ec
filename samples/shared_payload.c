/* SPDX-License-Identifier: MIT */
/* shared_payload — the seed experiment: a 200 MB payload read by every item, on worker processes.
 *
 * joblib users pass a big array to every call; loky pickles it for every item and the run gets
 * ~90x slower than serial. Here the payload is a TDM_MEM_SHARED tensor, filled once: its pages
 * are the same in the program and in every worker process (one memfd arena, mapped at the same
 * address before the workers were forked), so the items get it through a plain pointer in the
 * parameter block and nothing is copied, whatever the batch size.
 *
 * 200 items, each a Leibniz pi approximation of 10^5 terms that also reads a few payload values
 * picked by its index; the 500x500x100 f64 payload is 200 MB. Four runs of the same items:
 *   serial                 a plain loop in this thread;
 *   threads                tdm_parallel_for on the thread pool;
 *   processes, per item    worker processes, batch_size 1 (joblib's default dispatch);
 *   processes, batched     worker processes, automatic batches.
 * Each is checked against the serial results. Timings are one run each: on a small shared
 * machine expect a few percent of noise (bench/bench_procs.c quotes medians).
 *
 * Build:  cc -O2 shared_payload.c -ltandem -lm
 * Run:    ./shared_payload [--items N] [--terms T]        (defaults 200 and 100000)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tandem.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Everything an item needs. tandem copies this block by value for the run (into shared memory
 * when worker processes run it); the pointers in it point into shared tensors, so they are valid
 * in the workers too. A pointer to ordinary malloc'd memory would NOT be: workers are forks made
 * when the runtime opened and do not see memory allocated afterwards. */
typedef struct item_params {
    const double *payload; /* 500 x 500 x 100 f64, read only */
    int64_t payload_n;     /* its element count */
    int64_t terms;         /* Leibniz terms per item */
    double *out;           /* one result per item (shared: written by the workers) */
} item_params;

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

/* Item i: pi, plus a small term from 8 payload values spread over the whole 200 MB (their
 * positions depend on i, so every item really reads the payload). */
static double item(const item_params *p, int64_t i)
{
    const volatile int64_t *terms = &p->terms; /* keeps the compiler from computing pi once */
    double extra = 0.0;
    for (int64_t j = 0; j < 8; j++) {
        uint64_t pos = ((uint64_t)i * 2654435761u + (uint64_t)j * 40503u) * 2862933555777941757u;
        extra += p->payload[pos % (uint64_t)p->payload_n];
    }
    return leibniz_pi(*terms) + 1e-9 * extra;
}

/* The parallel_for body: items [begin, end) of one batch, in a thread or a worker process. */
static int body(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const item_params *p = params;
    (void)task;
    for (int64_t i = begin; i < end; i++)
        p->out[i] = item(p, i);
    return 0;
}

static int64_t arg(int argc, char **argv, const char *name, int64_t def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return atoll(argv[i + 1]);
    return def;
}

int main(int argc, char **argv)
{
    int64_t items = arg(argc, argv, "--items", 200);
    int64_t terms = arg(argc, argv, "--terms", 100000);
    if (items <= 0 || terms <= 0) {
        fprintf(stderr, "usage: %s [--items N] [--terms T]   (N, T > 0)\n", argv[0]);
        return 2;
    }

    tdm_runtime *rt = NULL;
    tdm_tensor *payload = NULL, *out = NULL;
    double *ref = NULL;
    int status = 1;

    /* 1. One worker process per core, and one thread per core for the "threads" run. (With
     *    procs set and threads = 0, the pool gets cores - procs threads, at least 1, so that
     *    threads and processes together do not oversubscribe the machine.) */
    tdm_system_info si;
    CHECK(tdm_system_info_get(&si));
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.procs = si.usable_cores;
    cfg.threads = si.usable_cores;
    CHECK(tdm_runtime_open(&rt, &cfg));

    /* 2. The payload: a shared tensor, filled once. Its pages are reserved now (TDM_ENOSPC here
     *    if /dev/shm-backed memory is short, never a SIGBUS later). */
    int64_t shape[3] = {500, 500, 100};
    CHECK(tdm_tensor_empty(rt, TDM_F64, 3, shape, TDM_MEM_SHARED, &payload));
    double *pd = tdm_tensor_data(payload);
    int64_t pn = tdm_tensor_numel(payload);
    uint64_t x = 88172645463325252u; /* xorshift: cheap numbers in [-1, 1) */
    for (int64_t i = 0; i < pn; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pd[i] = (double)(x >> 11) * 0x1p-52 - 1.0;
    }
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, &items, TDM_MEM_SHARED, &out));
    ref = malloc((size_t)items * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "out of memory\n");
        goto fail;
    }
    printf("%lld items x %lld terms, payload %lldx%lldx%lld f64 = %.0f MB (shared); "
           "%d threads, %d worker processes\n\n",
           (long long)items, (long long)terms, (long long)shape[0], (long long)shape[1],
           (long long)shape[2], (double)tdm_tensor_nbytes(payload) / 1e6, tdm_runtime_threads(rt),
           cfg.procs);

    item_params prm = {pd, pn, terms, tdm_tensor_data(out)};

    /* 3. Serial: the reference. */
    double t0 = now_s();
    for (int64_t i = 0; i < items; i++)
        ref[i] = item(&prm, i);
    double t_serial = now_s() - t0;

    /* 4. The same items three ways. Progress is off to time the work alone (TDM_PROGRESS_BAR
     *    draws a tqdm-style bar, from shared counters, for processes as for threads). */
    struct {
        const char *name;
        tdm_policy policy;
        int64_t batch_size;
    } runs[] = {{"threads", TDM_POLICY_THREADS, 0},
                {"processes, per item", TDM_POLICY_PROCS, 1},
                {"processes, batched", TDM_POLICY_PROCS, 0}};
    printf("%-22s %10s %9s %9s\n", "run", "wall", "speedup", "batches");
    printf("%-22s %8.3f s %8.2fx %9s\n", "serial", t_serial, 1.0, "-");
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.policy = runs[r].policy; /* a parallel_for runs in processes only when asked */
        o.batch_size = runs[r].batch_size;
        o.progress = TDM_PROGRESS_OFF;
        tdm_report rep = TDM_REPORT_INIT;
        memset(prm.out, 0, (size_t)items * sizeof(double));
        t0 = now_s();
        CHECK(tdm_parallel_for(rt, items, body, &prm, sizeof prm, &o, &rep));
        double t = now_s() - t0;
        for (int64_t i = 0; i < items; i++) {
            if (fabs(prm.out[i] - ref[i]) > 1e-12) {
                fprintf(stderr, "%s: item %lld = %.15g, serial %.15g\n", runs[r].name, (long long)i,
                        prm.out[i], ref[i]);
                goto fail;
            }
        }
        printf("%-22s %8.3f s %8.2fx %9lld\n", runs[r].name, t, t_serial / t,
               (long long)rep.batches);
    }
    printf("\nall runs match the serial results (pi[0] = %.10f)\n", ref[0]);
    printf("joblib on this machine kind: payload pickled per item 0.01x serial, memmapped 1.34x, "
           "tqdm_batch 0.97x (2 cores)\n");
    status = 0;

fail:
    /* 5. Release the tensors before closing (a live tensor makes close TDM_EBUSY). */
    free(ref);
    tdm_tensor_release(out);
    tdm_tensor_release(payload);
    if (rt && tdm_runtime_close(rt) != 0) {
        fprintf(stderr, "tdm_runtime_close: %s\n", tdm_errmsg(rt));
        status = 1;
    }
    return status;
}
