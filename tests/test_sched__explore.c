/* SPDX-License-Identifier: MIT */
/* How a device on the host's cores (PoCL) is measured in a map (runtime/sched/job_sched.c):
 * what its exploration batches teach its estimate, that the CPU threads standing down
 * meanwhile are left asleep, and when a stored figure is measured again. CTest names
 * sched_<behaviour>.
 *
 * The executable is linked with --wrap for tdm__pool_kick (the call that wakes the pool's idle
 * threads), tdm__job_batch_done (a device batch accounted) and tdm__jsched_prepared (a device's
 * program built): the wrappers see which wake-ups happen while a host-CPU device explores; and
 * for tdm__beside_judge, which one test makes judge a device near on its first rung; and for
 * tdm__jsched_device_busy, tdm__jsched_done and tdm__est_add, which one test uses to see which
 * CPU batches ran beside a device batch and which of them an estimate learned from. The map
 * tests need such a device (PoCL in CI) and are skipped without one. */
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TDM_SCHED_DIR_PREFIX "tdm-explore"
#include "sched_test_util.h"
#include "sched/costmodel.h"
#include "sched/job_sched.h"
#include "sched/sched_model.h"
#include "seam.h"

/* ---- wrappers ------------------------------------------------------------------------------ */

void __real_tdm__pool_kick(tdm__pool *pool);
void __real_tdm__job_batch_done(tdm__job *job, int w, const tdm_task *task, int64_t begin,
                                int64_t end, int rc, const char *detail);
void __real_tdm__jsched_prepared(tdm__job *job, int w);
int __real_tdm__beside_judge(int64_t n, double dur_ns, double min_ns, int64_t fill,
                             double cpu_rate);
void __real_tdm__jsched_device_busy(tdm__job *job, int w, bool busy);
void __real_tdm__jsched_done(tdm__job *job, int w, int64_t n, double dur_ns, bool idle);
bool __real_tdm__est_add(tdm__est *e, double n, double dur_ns);

/* What the thread running a wrapped call is doing: accounting a batch of a host-CPU device
 * still exploring, or ending the build of one that will explore. */
static _Thread_local tdm__job *tl_job;
static _Thread_local bool tl_exploring_done, tl_prepared;

static atomic_long g_explore_batches; /* batches of a host-CPU device accounted while exploring */
static atomic_long g_kicks_exploring; /* wake-ups made meanwhile, the job not exhausted */
static atomic_long g_prepared_exploring; /* builds ended with the device about to explore */
static atomic_long g_kicks_prepared;     /* wake-ups made as such a build ended */
static atomic_bool g_near_at_once; /* a device beside the threads is judged near on its 1st rung */

static bool host_cpu_lane(tdm__job *job, int w)
{
    return job->sched && w < job->sched->n && tdm__worker_kind(job, w) == TDM__ON_DEVICES &&
           atomic_load(&job->sched->lanes[w].joined) && job->sched->lanes[w].host_cpu;
}

/* ... exploring alone (not beside the threads: tdm__beside_judge) */
static bool exploring_alone(tdm__job *job, int w)
{
    return host_cpu_lane(job, w) && tdm__jsched_exploring(job, w) &&
           !atomic_load(&job->sched->lanes[w].beside);
}

void __wrap_tdm__pool_kick(tdm__pool *pool)
{
    if (tl_exploring_done && !tdm__job_exhausted(tl_job))
        atomic_fetch_add(&g_kicks_exploring, 1);
    if (tl_prepared)
        atomic_fetch_add(&g_kicks_prepared, 1);
    __real_tdm__pool_kick(pool);
}

/* (the scheduler has taken the batch in, tdm__jsched_done, before it is accounted here: a lane
 * still exploring now has its next rung to run) */
void __wrap_tdm__job_batch_done(tdm__job *job, int w, const tdm_task *task, int64_t begin,
                                int64_t end, int rc, const char *detail)
{
    bool watch = exploring_alone(job, w);
    if (watch)
        atomic_fetch_add(&g_explore_batches, 1);
    tl_job = job;
    tl_exploring_done = watch;
    __real_tdm__job_batch_done(job, w, task, begin, end, rc, detail);
    tl_exploring_done = false;
}

void __wrap_tdm__jsched_prepared(tdm__job *job, int w)
{
    bool watch = exploring_alone(job, w);
    if (watch)
        atomic_fetch_add(&g_prepared_exploring, 1);
    tl_prepared = watch;
    __real_tdm__jsched_prepared(job, w);
    tl_prepared = false;
}

/* (a device judged near on its first rung beside the threads explores alone from 4 items) */
static double g_judged_rate[64]; /* the threads' rate each rung beside them was judged against */
static atomic_int g_judged;
int __wrap_tdm__beside_judge(int64_t n, double dur_ns, double min_ns, int64_t fill, double cpu_rate)
{
    int k = atomic_fetch_add(&g_judged, 1);
    if (k < 64)
        g_judged_rate[k] = cpu_rate;
    int verdict = __real_tdm__beside_judge(n, dur_ns, min_ns, fill, cpu_rate);
    return atomic_load(&g_near_at_once) ? TDM__BESIDE_NEAR : verdict;
}

/* A host-CPU device's batches in flight, as spans of time (tdm__jsched_device_busy, from its
 * driver: one device, one thread), and the CPU workers' batches the scheduler took in
 * (tdm__jsched_done): when each ran, whether its lane was calibrated (its ladder done, a
 * figure, no stored one to bear out) and whether its estimate learned from it (tdm__est_add
 * called inside). Recorded while g_watch is set. */
#define SPANS 4096
static atomic_bool g_watch;
static double g_span[SPANS][2]; /* [from, to] ns; to 0 while in flight */
static atomic_int g_spans;
typedef struct {
    double from, to;
    bool calibrated, learned;
} cpu_batch;
static cpu_batch g_cpu[SPANS];
static atomic_int g_cpus;
static _Thread_local cpu_batch *tl_batch; /* the batch whose completion this thread is in */

void __wrap_tdm__jsched_device_busy(tdm__job *job, int w, bool busy)
{
    /* (each span recorded inside the real one: its start after the call, its end before) */
    bool watch = atomic_load(&g_watch) && host_cpu_lane(job, w);
    if (!busy && watch && atomic_load(&g_spans) > 0)
        g_span[atomic_load(&g_spans) - 1][1] = (double)tdm__now_ns();
    __real_tdm__jsched_device_busy(job, w, busy);
    int k = atomic_load(&g_spans);
    if (busy && watch && k < SPANS) {
        g_span[k][0] = (double)tdm__now_ns();
        g_span[k][1] = 0;
        atomic_store(&g_spans, k + 1);
    }
}

void __wrap_tdm__jsched_done(tdm__job *job, int w, int64_t n, double dur_ns, bool idle)
{
    tdm__jlane *l = job->sched && w < job->sched->n ? &job->sched->lanes[w] : NULL;
    bool cpu = l && (l->kind == TDM_BACKEND_CPU_THREADS || l->kind == TDM_BACKEND_CPU_PROCS);
    if (!cpu || n <= 0 || !atomic_load(&g_watch)) {
        __real_tdm__jsched_done(job, w, n, dur_ns, idle);
        return;
    }
    /* (recorded inside what the scheduler reckons: from after the call less its time, to
     * before the call) */
    cpu_batch b = {0, (double)tdm__now_ns(),
                   atomic_load(&l->explore) == 0 && l->est.tpi > 0 && !l->est.seeded, false};
    tl_batch = &b;
    __real_tdm__jsched_done(job, w, n, dur_ns, idle);
    tl_batch = NULL;
    b.from = (double)tdm__now_ns() - dur_ns;
    int k = atomic_fetch_add(&g_cpus, 1);
    if (k < SPANS)
        g_cpu[k] = b;
}

bool __wrap_tdm__est_add(tdm__est *e, double n, double dur_ns)
{
    if (tl_batch)
        tl_batch->learned = true;
    return __real_tdm__est_add(e, n, dur_ns);
}

/* ---- the scheduler's log ------------------------------------------------------------------- */

typedef struct {
    int rungs;       /* "explores with N items ... from this batch alone" lines */
    int bad_rungs;   /* ... whose time per item is not that batch's own */
    int bg_asked;    /* the devices were asked for in the background */
    int again;       /* "it is measured again" lines */
    int dev_exp;     /* exploration batches an OpenCL device took ("takes ... (exploring)") */
    int stale;       /* "stale" findings: a stored figure 8x or more off a batch */
    int picks;       /* "the ... run on the shared CPU cores now" lines */
    int side;        /* the side the last of them named: 0 threads, 2 the device */
    char bad_pick[512]; /* the first that tdm__side_pick's rule would not have made */
    char first[512]; /* the first bad line */
} explore_log;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_log(void *user, unsigned flag, const char *line)
{
    explore_log *l = user;
    if (flag != TDM_DEBUG_SCHED)
        return;
    pthread_mutex_lock(&log_mu);
    if (getenv("TDM_TEST_SHOWLOG"))
        fprintf(stderr, "%s\n", line);
    l->bg_asked += strstr(line, "the devices open in the background") != NULL;
    l->again += strstr(line, "it is measured again") != NULL;
    l->stale += strstr(line, " stale ") != NULL;
    const char *pick = strstr(line, "run on the shared CPU cores now");
    double thr = 0, procs = 0, dev = 0;
    if (pick && sscanf(pick,
                       "run on the shared CPU cores now (each side's speed: threads %lf, worker "
                       "processes %lf, host-CPU device %lf",
                       &thr, &procs, &dev) == 3) {
        /* Each line is a change, checked against the rule on the speeds it gives (printed to 4
         * digits): the device must be 2% faster than the threads to displace them, the threads
         * 5% faster than the device it holds its place against. */
        int side = strstr(line, ": the host-CPU device run") ? 2
                   : strstr(line, ": the CPU threads run")   ? 0
                                                             : -1;
        bool ok = side == 2   ? dev >= TDM__SIDE_MARGIN_DEVICE * thr * (1 - 1e-3)
                  : side != 0 ? false
                  : l->picks > 0 && l->side == 2
                      ? thr >= TDM__SIDE_HOLD * dev * (1 - 1e-3)
                      : dev <= TDM__SIDE_MARGIN_DEVICE * thr * (1 + 1e-3);
        if ((!ok || procs != 0 || (l->picks > 0 && side == l->side)) && !l->bad_pick[0])
            snprintf(l->bad_pick, sizeof l->bad_pick, "%s", line);
        l->side = side;
        l->picks++;
    } else if (pick && !l->bad_pick[0]) {
        snprintf(l->bad_pick, sizeof l->bad_pick, "%s", line);
    }
    l->dev_exp +=
        strstr(line, ": opencl:") && strstr(line, " takes ") && strstr(line, "(exploring)");
    const char *p = strstr(line, " explores with ");
    long long n = 0;
    double us = 0, tpi = 0, lat = 0;
    int dropped = 0;
    if (p && sscanf(p,
                    " explores with %lld items in %lf us: %lf ns/item (fixed cost %lf ns), "
                    "from this batch alone (its %d smaller",
                    &n, &us, &tpi, &lat, &dropped) == 5) {
        l->rungs++;
        /* One batch: its time less the fixed cost, per item (the duration is printed to 0.1
         * us, the figures to 4 digits). */
        double own = (us * 1e3 - lat) / (double)n;
        if (!(n > 0 && dropped >= 1 && fabs(tpi - own) <= 1e-3 * own + 100.0 / (double)n)) {
            if (!l->bad_rungs++)
                snprintf(l->first, sizeof l->first, "%s", line);
        }
    }
    pthread_mutex_unlock(&log_mu);
}

/* A first AUTO pi map (FIRST_ITEMS items of FIRST_TERMS terms, about 2.3 s on two threads here: the
 * devices open for 1 s of the CPU's work or more) on a fresh runtime of two threads over an
 * empty model: the threads start, ask for the devices in the background, and a device joins
 * the map. Returns the OpenCL devices on the host's cores the runtime has. */
#define FIRST_ITEMS 32000
#define FIRST_TERMS 400000
/* The other pi maps' terms per item: 1.5e5 ns per item on one thread here (pi_leibniz v2,
 * whose four running sums run in AVX2 lanes; v1 took 100000 terms for that). */
#define PI_TERMS 400000
/* Their key in the stored model: pi_leibniz keeps its figures per power of 2 of its terms
 * (tdm__cm_map_key: 400000 terms are nearest 2^19). */
#define PI_KEY "pi_leibniz.v2.w19"
static int first_pi_map(explore_log *log, tdm_report *r)
{
    char *d = model_dir();
    tdm_runtime *rt = sched_open(d, NULL, 2, 0, on_log, log);
    pi_map_check(rt, TDM_POLICY_AUTO, FIRST_ITEMS, FIRST_TERMS, 1e-4, TDM_MEM_HOST, r);
    int host = 0;
    for (int i = 0; i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        assert_int_equal(tdm_runtime_device(rt, i, &di), 0);
        host += di.kind == TDM_BACKEND_OPENCL && di.host_cpu;
    }
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    return host;
}

/* ---- tests --------------------------------------------------------------------------------- */

/* tdm__est_drop_smaller, on the batches PoCL ran pi_leibniz (500000 terms) in as it explored
 * on two cores: 1, 4 and 16 items at about 5e5 ns per item (a work-group of 8 items per core:
 * one core, then two with one group each), then 64 items in 16.8 ms (2.6e5, both cores full).
 * Fitted together by plain Theil-Sen, 3.8e5 ns per item, slower than the two CPU threads
 * together (3.6e5): the threads won the map at 0.7 of PoCL's speed. With its slopes weighted by
 * how far apart the sizes are, the line reads 2.45e5 and a fixed cost of 1.1 ms, which PoCL
 * does not have: the rungs measured fewer cores, not a line. The smaller batches forgotten
 * first, the 64 alone: (16.8 ms - 50 us) / 64. */
static void test_estimate_forgets_smaller_batches(void **state)
{
    (void)state;
    const double n[4] = {1, 4, 16, 64}, t[4] = {0.54e6, 2.07e6, 8.05e6, 16.8e6};
    tdm__est all, last;
    tdm__est_init(&all, 50e3);
    tdm__est_init(&last, 50e3);
    for (int i = 0; i < 4; i++)
        tdm__est_add(&all, n[i], t[i]);
    assert_true(all.tpi > 2.4e5 && all.tpi < 2.5e5 && all.lat > 1e6);
    for (int i = 0; i < 3; i++)
        tdm__est_add(&last, n[i], t[i]);
    assert_int_equal(tdm__est_drop_smaller(&last, 32), 3);
    assert_int_equal(last.count, 0);
    assert_true(last.tpi == 0 && last.lat0 == 50e3); /* empty, the prior fixed cost kept */
    tdm__est_add(&last, 64, 16.8e6);
    assert_true(fabs(last.tpi - (16.8e6 - 50e3) / 64) < 1.0);

    /* Nothing smaller: nothing changes. Some smaller: the rest, in order, refitted. */
    tdm__est e;
    tdm__est_init(&e, 50e3);
    const double m[5] = {1, 64, 256, 64, 256};
    for (int i = 0; i < 5; i++)
        tdm__est_add(&e, m[i], 50e3 + m[i] * 1e3 + (i == 0 ? 5e6 : 0)); /* the 1 item slowed */
    tdm__est before = e;
    assert_int_equal(tdm__est_drop_smaller(&e, 1), 0);
    assert_memory_equal(&e, &before, sizeof e);
    assert_int_equal(tdm__est_drop_smaller(&e, 2), 1);
    assert_int_equal(e.count, 4);
    assert_true(fabs(e.tpi - 1e3) < 1e-6 && fabs(e.lat - 50e3) < 1e-3);
    assert_true(e.n[0] == 64 && e.n[1] == 256 && e.n[2] == 64 && e.n[3] == 256);
    tdm__est_add(&e, 1024, 50e3 + 1024e3); /* and it goes on from there */
    assert_int_equal(e.count, 5);

    /* A stored model not yet borne out is left alone. */
    tdm__est s;
    tdm__est_init(&s, 50e3);
    tdm__est_seed(&s, 2e5, 50e3, 4, 0);
    before = s;
    assert_int_equal(tdm__est_drop_smaller(&s, 1e12), 0);
    assert_memory_equal(&s, &before, sizeof s);
}

/* In a real first map, each exploration batch of the host-CPU device after its first learned
 * one sets its estimate alone, the smaller ones forgotten (logged with the batch: its time per
 * item must be that batch's own). */
static void test_host_cpu_device_measured_by_its_largest_batch(void **state)
{
    (void)state;
    explore_log log;
    tdm_report r;
    for (int attempt = 0; attempt < 3; attempt++) {
        log = (explore_log){0};
        r = (tdm_report)TDM_REPORT_INIT;
        if (first_pi_map(&log, &r) == 0)
            skip(); /* no OpenCL device on the host's cores */
        if (log.rungs > 0)
            break; /* (the device joined too late to explore twice: the map is run again) */
    }
    assert_int_equal(log.bg_asked, 1);
    if (log.bad_rungs)
        fail_msg("an exploration batch's estimate is not its own: %s", log.first);
    assert_true(log.rungs >= 1);
    assert_true(items_of(&r, TDM_BACKEND_OPENCL) > 0);
}

static int judge_again(void **state)
{
    (void)state;
    atomic_store(&g_near_at_once, false);
    return 0;
}

/* While a host-CPU device explores alone, the CPU threads that stood down for it are not woken
 * (the end of its exploration calls them back): neither as its program build ends, nor as its
 * batches complete. Waking them changed nothing (they stood down again) but took a core as
 * the device's threads started: perf sched showed PoCL's two threads queued on one core for 12
 * ms of its 24 ms 64-item batch, the other core idle, after a thread woken this way had spun
 * there as they woke. The device is judged near on its first rung beside the threads (the
 * wrapped tdm__beside_judge), so that it explores alone for several rungs (left to the judge,
 * it went alone from 16-256 items, and in 6 maps of 8 beside a second PoCL test its exploration
 * alone ended with its first batch there: CI saw 3 such maps in a row); on busy cores its 4-item
 * rung alone can still end it (2 maps in 10): the map is run again, up to 6 times. */
static void test_threads_not_woken_while_a_device_explores(void **state)
{
    (void)state;
    explore_log log;
    tdm_report r;
    atomic_store(&g_near_at_once, true);
    for (int attempt = 0; attempt < 6; attempt++) {
        atomic_store(&g_explore_batches, 0);
        atomic_store(&g_kicks_exploring, 0);
        atomic_store(&g_prepared_exploring, 0);
        atomic_store(&g_kicks_prepared, 0);
        log = (explore_log){0};
        r = (tdm_report)TDM_REPORT_INIT;
        if (first_pi_map(&log, &r) == 0)
            skip();
        if (atomic_load(&g_explore_batches) >= 2)
            break;
    }
    /* (its build now ends with it exploring beside the threads, which then come back: a
     * build that ends with it about to explore alone is not seen in a first map) */
    assert_true(atomic_load(&g_explore_batches) >= 2);
    assert_int_equal(atomic_load(&g_kicks_prepared), 0);
    assert_int_equal(atomic_load(&g_kicks_exploring), 0);
    /* and they were called back: the whole map ran */
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS) + items_of(&r, TDM_BACKEND_OPENCL) +
                         items_of(&r, TDM_BACKEND_CUDA),
                     FIRST_ITEMS);
}

/* The model's merge (tdm__cm_put): within 2x, an average by sample count; further off, a
 * geometric mean weighted the same way (counts up to 64), the count half the larger one. A
 * device stored at 4.5e5 ns per item from 5 exploration batches, then measured at 1.9e5 over 94
 * batches of a map, ends near the map's figure and settled (the old rule kept 2.9e5 from 2
 * batches: a close call measured again, or a loss, for good); a calibrated figure (1000
 * batches) moves little for one odd run of 5. */
static void test_model_merge_weighs_both_counts(void **state)
{
    (void)state;
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, "off", &cm), 0);
    int n = 0;
    double lat = 0;
    tdm__cm_put(cm, "pi.v1", "opencl:x", 2, 4.5e5, 1e5, 5);
    tdm__cm_put(cm, "pi.v1", "opencl:x", 2, 1.9e5, 5e4, 94);
    double tpi = tdm__cm_get(cm, "pi.v1", "opencl:x", &lat, &n);
    assert_true(fabs(tpi - exp((5 * log(4.5e5) + 64 * log(1.9e5)) / 69)) < 1);
    assert_true(tpi > 1.9e5 && tpi < 2.1e5);
    assert_int_equal(n, 47);
    assert_true(n >= TDM__CM_SETTLED);
    assert_true(fabs(lat - (5 * 1e5 + 64 * 5e4) / 69) < 1e-6); /* the fixed costs too */
    /* a calibrated figure and one odd run */
    tdm__cm_put(cm, "exp.v1", "cpu", 3, 2.0, 0, 1000);
    tdm__cm_put(cm, "exp.v1", "cpu", 3, 10.0, 0, 5);
    tpi = tdm__cm_get(cm, "exp.v1", "cpu", NULL, &n);
    assert_true(fabs(tpi - exp((64 * log(2.0) + 5 * log(10.0)) / 69)) < 1e-9);
    assert_true(tpi < 2.5);
    assert_int_equal(n, 500);
    /* equal counts: halfway (geometrically), as before */
    tdm__cm_put(cm, "k.v1", "cpu", 0, 1.0, 0, 10);
    tdm__cm_put(cm, "k.v1", "cpu", 0, 4.0, 0, 10);
    tpi = tdm__cm_get(cm, "k.v1", "cpu", NULL, &n);
    assert_true(fabs(tpi - 2.0) < 1e-9);
    assert_int_equal(n, 5);
    /* within 2x: averaged by count */
    tdm__cm_put(cm, "k.v1", "cpu", 0, 3.0, 0, 5);
    tpi = tdm__cm_get(cm, "k.v1", "cpu", NULL, &n);
    assert_true(fabs(tpi - 2.5) < 1e-9);
    assert_int_equal(n, 10);
    /* a figure or a count that is not one: nothing stored */
    tdm__cm_put(cm, "k.v1", "cpu", 0, NAN, 0, 5);
    tdm__cm_put(cm, "k.v1", "cpu", 0, 0, 0, 5);
    tdm__cm_put(cm, "k.v1", "cpu", 0, 3.0, 0, 0);
    tpi = tdm__cm_get(cm, "k.v1", "cpu", NULL, &n);
    assert_true(fabs(tpi - 2.5) < 1e-9);
    assert_int_equal(n, 10);
    assert_int_equal(tdm__cm_close(cm), 0);
}

/* tdm__cm_close_unsettled, on the stored figures of a bench_sched run whose first cold pi run
 * explored PoCL while the cores ran slow: PoCL 4.84e5 ns per item from 13 batches, two threads
 * of 5.12e5 each (2.56e5 together): PoCL then lost every warm map (0.834 of its speed alone),
 * though it ran at 2.1e5. A close call is measured again until 32 batches settle it; a device
 * 3x slower or more (TDM__CM_CLOSE: a rung on one of two cores reads 2x slow), or faster, or
 * settled, is taken as stored. */
static void test_close_call_from_few_batches_is_unsettled(void **state)
{
    (void)state;
    assert_true(tdm__cm_close_unsettled(4.84e5, 13, 0, 5.12e5, 2));
    assert_true(tdm__cm_close_unsettled(4.84e5, TDM__CM_SETTLED - 1, 0, 5.12e5, 2));
    assert_false(tdm__cm_close_unsettled(4.84e5, TDM__CM_SETTLED, 0, 5.12e5, 2)); /* settled */
    assert_true(tdm__cm_close_unsettled(5.12e5, 1, 0, 5.12e5, 2));                /* 2x: close */
    /* a 16-item rung that ran on one of PoCL's two cores: 2.06x, from 4 batches */
    assert_true(tdm__cm_close_unsettled(4.84e5, 4, 0, 4.70e5, 2));
    assert_true(tdm__cm_close_unsettled(7.6e5, 1, 0, 5.12e5, 2));   /* 2.97x: close */
    assert_false(tdm__cm_close_unsettled(7.7e5, 1, 0, 5.12e5, 2));  /* over TDM__CM_CLOSE (3x) */
    assert_true(tdm__cm_close_unsettled(2.56e5, 1, 0, 5.12e5, 2));  /* a tie: the threads keep it */
    assert_true(tdm__cm_close_unsettled(2.44e5, 1, 0, 5.12e5, 2));  /* under 5% faster */
    assert_false(tdm__cm_close_unsettled(2.4e5, 1, 0, 5.12e5, 2));  /* faster: it runs anyway */
    assert_false(tdm__cm_close_unsettled(4.84e5, 0, 0, 5.12e5, 2)); /* nothing stored */
    assert_false(tdm__cm_close_unsettled(0, 13, 0, 5.12e5, 2));
    assert_false(tdm__cm_close_unsettled(4.84e5, 13, 0, 0, 2)); /* the CPU not known */
    assert_false(tdm__cm_close_unsettled(4.84e5, 13, 0, 5.12e5, 0));
    assert_false(tdm__cm_close_unsettled(NAN, 13, 0, 5.12e5, 2));
    assert_false(tdm__cm_close_unsettled(4.84e5, 13, 0, INFINITY, 2));
    assert_false(tdm__cm_close_unsettled(-1, 13, 0, 5.12e5, 2));
}

/* ... and a settled close call passed over by TDM__CM_RECHECK maps is measured again (PoCL
 * stored at 2.75e5 ns per item from 94 batches kept every later pi map on the threads, at 0.80
 * of OpenCL alone's speed); a far one, or a faster one, still is not. */
static void test_settled_close_call_passed_over_is_measured_again(void **state)
{
    (void)state;
    assert_false(tdm__cm_close_unsettled(2.75e5, 94, 0, 5.12e5, 2));
    assert_false(tdm__cm_close_unsettled(2.75e5, 94, TDM__CM_RECHECK - 1, 5.12e5, 2));
    assert_true(tdm__cm_close_unsettled(2.75e5, 94, TDM__CM_RECHECK, 5.12e5, 2));
    assert_true(tdm__cm_close_unsettled(2.75e5, 94, 1000, 5.12e5, 2));
    assert_false(tdm__cm_close_unsettled(7.7e5, 94, 1000, 5.12e5, 2)); /* far */
    assert_false(tdm__cm_close_unsettled(2.4e5, 94, 1000, 5.12e5, 2)); /* faster */
    assert_false(tdm__cm_close_unsettled(2.75e5, 0, 1000, 5.12e5, 2)); /* nothing stored */
    /* tdm__cm_measure_again: those, and a far loss from fewer than 32 batches once passed over
     * by TDM__CM_RECHECK maps (PoCL cut short on pi under load: 1.81e6 from 2 batches, 7x the
     * threads' 2.45e5 together) */
    assert_true(tdm__cm_measure_again(2.75e5, 94, TDM__CM_RECHECK, 5.12e5, 2)); /* close */
    assert_true(tdm__cm_measure_again(4.84e5, 13, 0, 5.12e5, 2));
    assert_false(tdm__cm_measure_again(1.81e6, 2, 0, 4.9e5, 2));
    assert_false(tdm__cm_measure_again(1.81e6, 2, TDM__CM_RECHECK - 1, 4.9e5, 2));
    assert_true(tdm__cm_measure_again(1.81e6, 2, TDM__CM_RECHECK, 4.9e5, 2));
    assert_true(tdm__cm_measure_again(1.81e6, TDM__CM_SETTLED - 1, 100, 4.9e5, 2));
    assert_false(tdm__cm_measure_again(1.81e6, TDM__CM_SETTLED, 100, 4.9e5, 2)); /* settled */
    assert_false(tdm__cm_measure_again(1e5, 2, 100, 4.9e5, 2)); /* faster: it runs anyway */
    assert_false(tdm__cm_measure_again(NAN, 2, 100, 4.9e5, 2));
    assert_false(tdm__cm_measure_again(1.81e6, 2, 100, 0, 2));
    assert_false(tdm__cm_measure_again(1.81e6, 2, 100, 4.9e5, 0));
}

/* The count of maps run without a lane (tdm__cm_passed): counted on the lane's entry with the
 * most samples by tdm__cm_pass, on every device lane by tdm__cm_pass_devices (not the CPU's),
 * back to 0 when the lane's figure is stored again; kept in the model file as its seventh
 * column (a file of six columns, from before it, reads as 0; a seventh that is not a count
 * drops the line). And tdm__cm_recheck and tdm__cm_put_again, for a figure measured again. */
static void test_maps_without_a_lane_are_counted_and_kept(void **state)
{
    (void)state;
    char *d = model_dir();
    seed_model(d, "pi.v1\tcpu\t2\t1e5\t200\t100\n"
                  "pi.v1\topencl:x\t2\t2.75e5\t50000\t94\n"
                  "pi.v1\topencl:x\t1\t3e5\t50000\t5\t3\n"
                  "pi.v1\tcuda:y\t4\t1e4\t10000\t40\t6\n"
                  "pi.v1\tprocs\t2\t1e5\t5000\t40\t-1\n"
                  "pi.v1\tprocs\t3\t1e5\t5000\t40\tx\n"
                  "ex.v1\topencl:x\t2\t1e3\t50000\t40\t2\n");
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, d, &cm), 0);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 0); /* the best entry's: 94 */
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "cuda:y"), 6);
    assert_true(tdm__cm_get(cm, "pi.v1", "procs", NULL, NULL) == 0); /* both lines dropped */
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "nothing"), 0);
    tdm__cm_pass(cm, "pi.v1", "opencl:x");
    tdm__cm_pass(cm, "pi.v1", "nothing"); /* (no entry: nothing) */
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 1);
    tdm__cm_pass_devices(cm, "pi.v1");
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 2);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "cuda:y"), 7);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "cpu"), 0);
    assert_int_equal(tdm__cm_passed(cm, "ex.v1", "opencl:x"), 2); /* another kernel */
    assert_int_equal(tdm__cm_close(cm), 0);
    /* kept across a save and a load */
    assert_int_equal(tdm__cm_open(NULL, d, &cm), 0);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 2);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "cuda:y"), 7);
    /* stored again (any size class): back to 0 */
    tdm__cm_put(cm, "pi.v1", "opencl:x", 5, 2e5, 50000, 10);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 0);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "cuda:y"), 7);
    assert_int_equal(tdm__cm_close(cm), 0);
    /* a settled figure measured again (tdm__cm_recheck, then tdm__cm_put_again): its count
     * of maps without it back to 0 at once; what the map measured is merged into its entry
     * with the most samples, against 31 batches, whatever size class the map's batches were,
     * and the lane's other size classes are forgotten (an older far figure among them would
     * otherwise be read: 8e5 from 40 batches, 3.2x slower than the threads) */
    char *d2 = model_dir();
    assert_int_equal(tdm__cm_open(NULL, d2, &cm), 0);
    int n = 0;
    tdm__cm_put(cm, "pi.v1", "opencl:x", 1, 8e5, 1e6, 40);
    tdm__cm_put(cm, "pi.v1", "opencl:x", 5, 2.9e5, 1e6, 94);
    tdm__cm_put(cm, "pi.v1", "cpu", 2, 5e5, 200, 1000);
    for (int m = 0; m < TDM__CM_RECHECK; m++)
        tdm__cm_pass(cm, "pi.v1", "opencl:x");
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), TDM__CM_RECHECK);
    assert_int_equal(tdm__cm_recheck(cm, "pi.v1", "opencl:x"), 5);
    assert_int_equal(tdm__cm_passed(cm, "pi.v1", "opencl:x"), 0);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n) == 2.9e5); /* (not yet cut) */
    assert_int_equal(n, 94);
    tdm__cm_put_again(cm, "pi.v1", "opencl:x", 2, 1.82e5, 1e5, 42);
    double tpi = tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n);
    assert_true(fabs(tpi - (2.9e5 * 31 + 1.82e5 * 42) / 73) < 1); /* 2.28e5 */
    assert_int_equal(n, 73);
    assert_true(tdm__cm_get(cm, "pi.v1", "cpu", NULL, &n) == 5e5); /* another lane: as it was */
    assert_int_equal(n, 1000);
    /* an exploration's few batches: the entry stays settled (31 + 5), moved a little */
    tdm__cm_put_again(cm, "pi.v1", "opencl:x", 1, 3e5, 1e5, 5);
    tpi = tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n);
    assert_int_equal(n, TDM__CM_SETTLED - 1 + 5);
    assert_true(tpi > 2.28e5 && tpi < 2.5e5);
    /* nothing stored for the lane: a plain put in the class given; nothing to put: nothing */
    assert_int_equal(tdm__cm_recheck(cm, "pi.v1", "opencl:new"), -1);
    tdm__cm_put_again(cm, "pi.v1", "opencl:new", 3, 1e5, 1e4, 7);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:new", NULL, &n) == 1e5);
    assert_int_equal(n, 7);
    tdm__cm_put_again(cm, "pi.v1", "opencl:new", 3, NAN, 1e4, 7);
    tdm__cm_put_again(cm, "pi.v1", "opencl:new", 3, 2e5, 1e4, 0);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:new", NULL, &n) == 1e5);
    assert_int_equal(tdm__cm_close(cm), 0);
    char path[600];
    model_file(d2, path, sizeof path);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char text[4096];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    assert_null(strstr(text, "\t800000\t")); /* the far class-1 entry is gone */
    assert_non_null(strstr(text, "pi.v1\topencl:x\t5\t"));
    assert_null(strstr(text, "pi.v1\topencl:x\t1\t"));
    assert_null(strstr(text, "pi.v1\topencl:x\t2\t"));
    rm_dir(d2);
    rm_dir(d);
}

/* tdm__beside_judge, on rungs seen beside two busy CPU threads on two cores: exp_sinh on PoCL
 * (the threads 1.43 ns per item together; its 1-item rung 20 us), 1024 items in 540 us: a
 * lower bound of (540 - 20) us / 1024 / 2 = 254 ns per item, 177x the threads: hopeless. Its
 * 64-item rung, 152 us: an excess under 200 us (TDM__BESIDE_CLEAN_NS) tells nothing (a stall
 * of the device's threads on busy cores is that long), nor one under twice the shortest rung.
 * pi on PoCL (the threads 2.45e5 ns per item together), 4 items in 2235 us after one in 646:
 * (2235 - 646) / 4 / (2 for the shared cores x 2 compute units, the rung being short of
 * filling them) = 9.9e4, 0.4x the threads' time: near. */
static void test_beside_judge_on_measured_rungs(void **state)
{
    (void)state;
    const double exp_thr = 1 / 1.43, pi_thr = 1 / 2.45e5;
    assert_int_equal(tdm__beside_judge(1024, 540e3, 20e3, 128, exp_thr), TDM__BESIDE_HOPELESS);
    assert_int_equal(tdm__beside_judge(64, 152e3, 17e3, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(1024, 540e3, 300e3, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(4, 2235e3, 646e3, 128, pi_thr), TDM__BESIDE_NEAR);
    assert_int_equal(tdm__beside_judge(4, 1500e3, 646e3, 128, pi_thr), TDM__BESIDE_UNSURE);
    /* the bound's factors: 8x after them is hopeless, under it near */
    assert_int_equal(tdm__beside_judge(256, 100e3 + 256 * 16.0 * 1000, 100e3, 128, 1e-3),
                     TDM__BESIDE_HOPELESS); /* 16 us an item / 2 = 8x the threads' 1 us */
    assert_int_equal(tdm__beside_judge(256, 100e3 + 256 * 15.9 * 1000, 100e3, 128, 1e-3),
                     TDM__BESIDE_NEAR);
    assert_int_equal(tdm__beside_judge(64, 100e3 + 64 * 32.0 * 1000, 100e3, 128, 1e-3),
                     TDM__BESIDE_HOPELESS); /* short of filling 2 units: / 4 */
    assert_int_equal(tdm__beside_judge(64, 100e3 + 64 * 31.9 * 1000, 100e3, 128, 1e-3),
                     TDM__BESIDE_NEAR);
    assert_int_equal(tdm__beside_judge(64, 100e3 + 64 * 63.9 * 1000, 100e3, 256, 1e-3),
                     TDM__BESIDE_NEAR); /* 4 units: / 8 */
    assert_int_equal(tdm__beside_judge(64, 100e3 + 64 * 16.0 * 1000, 100e3, 64, 1e-3),
                     TDM__BESIDE_HOPELESS); /* one unit (fill 64): / 2 */
    /* the threads not known: near (it explores alone, as before) */
    assert_int_equal(tdm__beside_judge(1024, 540e3, 20e3, 128, 0), TDM__BESIDE_NEAR);
    /* nothing to go by */
    assert_int_equal(tdm__beside_judge(1024, 540e3, 0, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(0, 540e3, 20e3, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(1024, NAN, 20e3, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(1024, 540e3, INFINITY, 128, exp_thr), TDM__BESIDE_UNSURE);
    assert_int_equal(tdm__beside_judge(1024, 540e3, 20e3, 128, NAN), TDM__BESIDE_NEAR);
}

/* Opens rt's devices (an untimed 64-item exp_sinh map under the OpenCL policy) and gives the
 * model key of its OpenCL device on the host's cores in key ("" when it has none). */
static void open_devices(tdm_runtime *rt, char *key, size_t len)
{
    int64_t few = 64;
    tdm_tensor *fx, *fy;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &few, TDM_MEM_HOST, &fx), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &few, TDM_MEM_HOST, &fy), 0);
    tdm_map_opts o = opts(TDM_POLICY_OPENCL);
    int rc = tdm_map(rt, "exp_sinh", &fx, 1, &fy, 1, NULL, 0, &o, NULL);
    tdm_tensor_release(fx);
    tdm_tensor_release(fy);
    key[0] = '\0';
    for (int i = 0; rc == 0 && i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        if (tdm_runtime_device(rt, i, &di) == 0 && di.kind == TDM_BACKEND_OPENCL && di.host_cpu)
            snprintf(key, len, "opencl:%s", di.name);
    }
}

/* The model key of the OpenCL device on the host's cores (a fresh runtime's, its devices
 * opened) in key; false when there is none. */
static bool host_device_key(char *key, size_t len)
{
    char *d = model_dir();
    tdm_runtime *rt = sched_open(d, NULL, 2, 0, NULL, NULL);
    open_devices(rt, key, len);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    return key[0] != '\0';
}

/* Each thread's ns per item on pi of PI_TERMS terms that the tests below store for the CPU
 * (THREAD_TPI), times threads_slower(): how much slower than that the threads run in this
 * build (1 unless over 1.3x: an unoptimized build with sanitizers runs them 2-3x slower, and a
 * device stored slower than the threads would then really be faster than them). Measured once,
 * by a CPU-only map of 400 items. */
#define THREAD_TPI 1.5e5

/* The CPU threads' busy ns per item in report r (0 when they ran none); *items their items. */
static double threads_ns_per_item(const tdm_report *r, int64_t *items)
{
    double busy = 0;
    *items = 0;
    for (int w = 0; w < r->n_workers; w++)
        if (r->workers[w].kind == TDM_BACKEND_CPU_THREADS) {
            busy += r->workers[w].busy_s * 1e9;
            *items += r->workers[w].items;
        }
    return *items > 0 ? busy / (double)*items : 0;
}

static double threads_slower(void)
{
    static double slower;
    if (slower > 0)
        return slower;
    char *d = model_dir();
    tdm_runtime *rt = sched_open(d, "cpu", 2, 0, NULL, NULL);
    tdm_report r = TDM_REPORT_INIT;
    pi_map_check(rt, TDM_POLICY_CPU, 400, PI_TERMS, 1e-4, TDM_MEM_HOST, &r);
    int64_t items = 0;
    double x = threads_ns_per_item(&r, &items) / THREAD_TPI;
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    assert_true(items == 400);
    slower = x > 1.3 ? x : 1;
    if (getenv("TDM_TEST_SHOWLOG"))
        fprintf(stderr, "threads: %.3g ns per item, %.2fx the stored figure\n", x * THREAD_TPI, x);
    return slower;
}

/* `maps` AUTO pi maps of `items` items of PI_TERMS terms (4000: about 0.3 s on two threads) on
 * two threads, the devices open, over a stored model of the threads (THREAD_TPI ns per item
 * each, about their speed: a stored figure within 8x of what they measure stays) and of the
 * host-CPU device `key` (dev_tpi ns per item from `samples` batches, `passed` maps run without
 * it since), both times threads_slower(); what their log says. Returns the count of maps run
 * without the device that the model holds after, and in *samples_after (may be NULL) its figure's
 * count of batches; *last (may be NULL) gets the last map's report. */
static int maps_with_device_figure(const char *key, double dev_tpi, int samples, int passed,
                                   int64_t items, int maps, explore_log *log, int *samples_after,
                                   tdm_report *last)
{
    char *d = model_dir();
    char lines[512];
    double k = threads_slower(); /* (both figures scaled alike: their ratio is the test's) */
    snprintf(lines, sizeof lines,
             PI_KEY "\tcpu\t0\t%g\t200\t100\n" PI_KEY "\t%s\t0\t%g\t50000\t%d\t%d\n",
             THREAD_TPI * k, key, dev_tpi * k, samples, passed);
    seed_model(d, lines);
    *log = (explore_log){0};
    tdm_runtime *rt = sched_open(d, NULL, 2, 0, on_log, log);
    char dev[200];
    open_devices(rt, dev, sizeof dev);
    /* (pi's program built first, by a map on the device alone, which teaches the model
     * nothing: with a cold PoCL cache a build can outlast a map of this length) */
    pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL);
    for (int m = 0; m < maps; m++)
        pi_map_check(rt, TDM_POLICY_AUTO, items, PI_TERMS, 1e-4, TDM_MEM_HOST,
                     m == maps - 1 ? last : NULL);
    assert_int_equal(tdm_runtime_close(rt), 0);
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, d, &cm), 0);
    int after = tdm__cm_passed(cm, PI_KEY, key);
    int n = 0;
    tdm__cm_get(cm, PI_KEY, key, NULL, &n);
    if (samples_after)
        *samples_after = n;
    assert_int_equal(tdm__cm_close(cm), 0);
    rm_dir(d);
    return after;
}

static int map_with_device_figure(const char *key, double dev_tpi, int samples, int passed,
                                  explore_log *log)
{
    return maps_with_device_figure(key, dev_tpi, samples, passed, 4000, 1, log, NULL, NULL);
}

/* As map_with_device_figure, for a figure the map is to take as stored (the device runs no
 * batch): the device does run when the threads turn out slower than it, as they do when the
 * machine's load takes their cores (a settled close call at 2e5 ns per item loses to threads
 * stored at 1.5e5 each unless they run 2.7x slower; this test failed once with the load
 * average at 7.7, and passed alone). A run whose threads ran over 2x slower than stored is the
 * load's, not the scheduler's, and runs again, up to 4 times in all. (In an unoptimized build
 * with sanitizers the threads run 2.2x slower than THREAD_TPI and the uninstrumented device at
 * its speed: the stored figures are scaled by threads_slower().) */
static int map_taken_as_stored(const char *key, double dev_tpi, int samples, int passed,
                               explore_log *log)
{
    int got = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        tdm_report r = TDM_REPORT_INIT;
        got = maps_with_device_figure(key, dev_tpi, samples, passed, 4000, 1, log, NULL, &r);
        int64_t items = 0;
        double tpi = threads_ns_per_item(&r, &items);
        if (getenv("TDM_TEST_SHOWLOG"))
            fprintf(stderr, "threads: %.3g ns per item\n", tpi);
        if (items > 0 && tpi < 2 * THREAD_TPI * threads_slower())
            break;
    }
    return got;
}

/* Devices open and a stored figure that makes the host-CPU device lose to the threads: it is
 * taken as stored (no exploration: the device runs only if the threads turn out slower than
 * it), and the map counts as one run without it, unless the figure is a close call from fewer
 * than 32 batches or passed over by TDM__CM_RECHECK maps, which the map measures again: the
 * device explores (beside the threads, then alone, once they are calibrated) from the map's
 * start, and the count
 * starts again. */
static void test_close_call_measured_again_in_a_map(void **state)
{
    (void)state;
    char key[200];
    if (!host_device_key(key, sizeof key))
        skip(); /* no OpenCL device on the host's cores */
    explore_log log;
    /* (the threads stored at 7.5e4 ns per item together; the device at 1.3e5 loses by 1.7x, at
     * 2e5 by 2.7x, at 2.5e5 by 3.3x; all times threads_slower()) */
    assert_int_equal(map_with_device_figure(key, 1.3e5, 13, 0, &log), 0); /* close, unsettled */
    assert_int_equal(log.again, 1);
    assert_true(log.dev_exp >= 1);
    /* settled: taken as stored, one more map without it (2e5, losing by 2.7x: the device
     * takes no batch unless the threads run 2.7x slower than stored) */
    assert_int_equal(map_taken_as_stored(key, 2e5, TDM__CM_SETTLED, 0, &log), 1);
    assert_int_equal(log.again, 0);
    assert_int_equal(log.dev_exp, 0);
    assert_int_equal(map_taken_as_stored(key, 2e5, TDM__CM_SETTLED, TDM__CM_RECHECK - 2, &log),
                     TDM__CM_RECHECK - 1);
    assert_int_equal(log.again, 0);
    assert_int_equal(log.dev_exp, 0);
    /* settled, but passed over by TDM__CM_RECHECK maps: measured again (it ran: 0), and what
     * it measured merged against 31 batches (not 100) */
    int after = 0;
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(
        maps_with_device_figure(key, 1.3e5, 100, TDM__CM_RECHECK, 4000, 1, &log, &after, &r), 0);
    assert_int_equal(log.again, 1);
    assert_true(log.dev_exp >= 1);
    int b = 0; /* (the device's batches: merged within 2x, 31 + b; further off, half the larger) */
    for (int w = 0; w < r.n_workers; w++)
        b += r.workers[w].kind == TDM_BACKEND_OPENCL ? (int)r.workers[w].batches : 0;
    assert_true(b > 0);
    assert_true(after == TDM__CM_SETTLED - 1 + b || after == (b > 31 ? b : 31) / 2);
    /* ... once, even when the maps are too short for the device to run (2 items): the count
     * starts again at the first, and a map shorter than a batch that fills the device does not
     * count as one without it */
    assert_int_equal(
        maps_with_device_figure(key, 1.3e5, 100, TDM__CM_RECHECK, 2, 3, &log, &after, NULL), 0);
    assert_int_equal(log.again, 1);
    assert_int_equal(map_with_device_figure(key, 2e5, 13, 0, &log), 0); /* close: 3x */
    assert_int_equal(log.again, 1);
    assert_true(log.dev_exp >= 1);
    /* far: taken as stored; from a few batches, measured again once TDM__CM_RECHECK maps ran
     * without it; settled, never again */
    assert_int_equal(map_taken_as_stored(key, 2.5e5, 13, 0, &log), 1);
    assert_int_equal(log.again, 0);
    assert_int_equal(log.dev_exp, 0);
    assert_int_equal(map_with_device_figure(key, 2.5e5, 13, TDM__CM_RECHECK, &log), 0);
    assert_int_equal(log.again, 1);
    assert_true(log.dev_exp >= 1);
    assert_int_equal(map_taken_as_stored(key, 2.5e5, 100, 100, &log), 101);
    assert_int_equal(log.again, 0);
    assert_int_equal(log.dev_exp, 0);
}

/* The stored figure of `lane` for `kernel` (e.g. PI_KEY) in dir's model (0: none);
 * *n its count of batches, *entries the lane's entries (size classes). */
static double stored(const char *dir, const char *kernel, const char *lane, int *n, int *entries)
{
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, dir, &cm), 0);
    double tpi = tdm__cm_get(cm, kernel, lane, NULL, n);
    *entries = 0;
    char path[600], line[512];
    model_file(dir, path, sizeof path);
    FILE *f = fopen(path, "r");
    char want[300];
    snprintf(want, sizeof want, "%s\t%s\t", kernel, lane);
    while (f && fgets(line, sizeof line, f))
        *entries += strncmp(line, want, strlen(want)) == 0;
    if (f)
        fclose(f);
    assert_int_equal(tdm__cm_close(cm), 0);
    return tpi;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The time per item the OpenCL device `key` ran an OPENCL-policy map of `items` items at (its
 * busy time over them, from the report). */
static double device_tpi(tdm_runtime *rt, const char *key, const tdm_report *r, int64_t items)
{
    int index = -1;
    for (int i = 0; i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        char k[200];
        if (tdm_runtime_device(rt, i, &di) == 0 && di.kind == TDM_BACKEND_OPENCL) {
            snprintf(k, sizeof k, "opencl:%s", di.name);
            if (!strcmp(k, key))
                index = di.index;
        }
    }
    double busy = 0;
    for (int w = 0; w < r->n_workers; w++)
        if (r->workers[w].kind == TDM_BACKEND_OPENCL && r->workers[w].index == index)
            busy += r->workers[w].busy_s * 1e9;
    assert_true(index >= 0 && busy > 0);
    return busy / (double)items;
}

/* The terms of the device-alone maps below, and their key in the stored model (300000 terms
 * are nearest 2^18). */
#define TEACH_TERMS 300000
#define TEACH_KEY "pi_leibniz.v2.w18"

/* A map on the devices alone teaches the stored model the device's time per item (as a
 * CPU-only map teaches it the threads'), from the second map of its kernel on a runtime's
 * device. PoCL's cache of compiled kernels starts empty here (POCL_CACHE_DIR, a fresh
 * directory: a first launch of a kernel's shape compiles, 0.1-0.5 s): the first maps of
 * exp_sinh and pi (64 items, one past 64 ms) teach nothing, nor does a round-robin map beside
 * the threads, nor one whose batches ran on the host (the device out of memory at its first
 * completion: TDM_DEVICE_ENOMEM_AT_FINISH), nor the first of two maps of 2000 pi items of
 * TEACH_TERMS (300000) terms on a new runtime (0.4-1 s on two cores, 4 batches: 1750, 218, 28, 4
 * items); the second stores the device at its time per item within 15%, counted as batches of 4 ms,
 * in one entry; a figure 3x off (from 100 batches) seeded in another size class is merged into (the
 * entry read: no second one), and the lane counts as run. */
static void test_device_alone_map_teaches_the_model(void **state)
{
    (void)state;
    char cache[] = "/tmp/tdm-pocl-cache-XXXXXX";
    assert_non_null(mkdtemp(cache));
    setenv("POCL_CACHE_DIR", cache, 1); /* (read as PoCL starts: this process's first open) */
    char key[200];
    char *d = model_dir();
    tdm_runtime *rt = sched_open(d, NULL, 2, 0, NULL, NULL);
    open_devices(rt, key, sizeof key);
    if (!key[0]) {
        tdm_runtime_close(rt);
        rm_dir(d);
        nftw(cache, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
        skip(); /* no OpenCL device on the host's cores */
    }
    pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL);
    pi_map_check(rt, TDM_POLICY_ROUND_ROBIN, 2000, PI_TERMS, 1e-4, TDM_MEM_HOST, NULL);
    assert_int_equal(tdm_runtime_close(rt), 0);
    int n = 0, entries = 0;
    assert_true(stored(d, PI_KEY, key, &n, &entries) == 0);
    assert_int_equal(entries, 0);
    assert_true(stored(d, "exp_sinh.v1", key, &n, &entries) == 0);
    assert_int_equal(entries, 0);

    /* out of device memory at the first completion: its batch reran on the host */
    setenv("TDM_DEVICE_ENOMEM_AT_FINISH", "1", 1);
    rt = sched_open(d, NULL, 2, 0, NULL, NULL);
    tdm_report r = TDM_REPORT_INIT;
    pi_map_check(rt, TDM_POLICY_OPENCL, 2000, PI_TERMS, 1e-4, TDM_MEM_HOST, &r);
    unsetenv("TDM_DEVICE_ENOMEM_AT_FINISH");
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_true(r.fallback_batches > 0);
    assert_true(stored(d, PI_KEY, key, &n, &entries) == 0);

    rt = sched_open(d, NULL, 2, 0, NULL, NULL);
    pi_map_check(rt, TDM_POLICY_OPENCL, 2000, TEACH_TERMS, 1e-4, TDM_MEM_HOST, NULL);
    tdm__costmodel *cm = tdm__runtime_costmodel(rt); /* (the runtime's: saved as it closes) */
    assert_non_null(cm);
    assert_true(tdm__cm_get(cm, TEACH_KEY, key, NULL, NULL) == 0); /* (its first) */
    cm = NULL;
    r = (tdm_report)TDM_REPORT_INIT;
    pi_map_check(rt, TDM_POLICY_OPENCL, 2000, TEACH_TERMS, 1e-4, TDM_MEM_HOST, &r);
    double tpi = device_tpi(rt, key, &r, 2000);
    assert_int_equal(tdm_runtime_close(rt), 0);
    double got = stored(d, TEACH_KEY, key, &n, &entries);
    assert_int_equal(entries, 1);
    if (fabs(got - tpi) >= 0.15 * tpi)
        fail_msg("stored %.4g ns/item; the map ran at %.4g", got, tpi);
    assert_true(n >= (int)(tpi * 2000 / 4e6) - 2 && n <= (int)(tpi * 2000 / 4e6) + 1);
    rm_dir(d);

    /* a figure 3x off, from 100 batches, in another size class: merged into, no second entry
     * (under TSan, with 5x, a map ran 1.6x faster than the first and stored apart) */
    d = model_dir();
    char lines[512];
    snprintf(lines, sizeof lines,
             TEACH_KEY "\tcpu\t0\t1.5e5\t200\t100\n" TEACH_KEY "\t%s\t2\t%g\t50000\t100\t5\n", key,
             got * 3);
    seed_model(d, lines);
    rt = sched_open(d, NULL, 2, 0, NULL, NULL);
    pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL); /* (its first) */
    pi_map_check(rt, TDM_POLICY_OPENCL, 2000, TEACH_TERMS, 1e-4, TDM_MEM_HOST, NULL);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(tdm__cm_open(NULL, d, &cm), 0);
    assert_int_equal(tdm__cm_passed(cm, TEACH_KEY, key), 0); /* (it ran) */
    assert_int_equal(tdm__cm_close(cm), 0);
    double moved = stored(d, TEACH_KEY, key, &n, &entries);
    assert_int_equal(entries, 1);
    /* (geometric, 64 against the map's: toward what the map ran at; 8x off, it would have
     * kept a class of its own) */
    assert_true(moved < got * 3 && moved > got / 2);
    rm_dir(d);
    nftw(cache, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* What an AUTO map measured of a lane is merged into the lane's entry that is read (the one
 * with the most batches), whatever the size class of the map's own batches: a host-CPU device
 * stored faster than the threads (a third of its measured time per item, from 100 batches,
 * class 0; each thread at the device's measured figure, about half its own) runs a pi map of 4000
 * items (its batches of 16-63 items, class 2), and the model then holds one entry for it, from more
 * than 100 batches or, its figure far off, half the larger count (tdm__cm_put); the threads' one
 * entry too. */
static void test_auto_map_merges_into_the_entry_read(void **state)
{
    (void)state;
    char key[200];
    if (!host_device_key(key, sizeof key))
        skip(); /* no OpenCL device on the host's cores */
    /* The device's figure is measured first (a model of its own, dropped), and stored 3x
     * faster: a constant (5e4 where PoCL runs at 2.2-2.6e5) would be 8x off, a class of its
     * own, were PoCL 1.6x slower than usual beside another test. Another test's PoCL on the
     * same cores can still make the AUTO map's device batches 8x slower than stored (stale:
     * dropped, explored afresh beside the threads) or the device look slower than the threads
     * (one batch): then it all runs again, up to 4 times (CI once: one device batch). */
    char *d = NULL;
    double alone = 0;
    int64_t dev_batches = 0;
    explore_log lg = {0};
    tdm_report r = TDM_REPORT_INIT;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (d)
            rm_dir(d);
        d = model_dir();
        tdm_runtime *rt = sched_open(d, NULL, 2, 0, NULL, NULL);
        pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL); /* (build) */
        r = (tdm_report)TDM_REPORT_INIT;
        pi_map_check(rt, TDM_POLICY_OPENCL, 2000, PI_TERMS, 1e-4, TDM_MEM_HOST, &r);
        alone = device_tpi(rt, key, &r, 2000);
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
        d = model_dir();
        char lines[512];
        snprintf(lines, sizeof lines,
                 PI_KEY "\tcpu\t0\t%g\t200\t100\n" PI_KEY "\t%s\t0\t%g\t50000\t100\t0\n", alone,
                 key, alone / 3);
        seed_model(d, lines);
        lg = (explore_log){0};
        rt = sched_open(d, NULL, 2, 0, on_log, &lg);
        pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL); /* (build) */
        r = (tdm_report)TDM_REPORT_INIT;
        pi_map_check(rt, TDM_POLICY_AUTO, 4000, PI_TERMS, 1e-4, TDM_MEM_HOST, &r);
        assert_int_equal(tdm_runtime_close(rt), 0);
        dev_batches = 0;
        for (int w = 0; w < r.n_workers; w++)
            dev_batches += r.workers[w].kind == TDM_BACKEND_OPENCL ? r.workers[w].batches : 0;
        if (dev_batches > 1 && !lg.stale)
            break;
        print_message("attempt %d: %lld device batches, %d stale findings; again\n", attempt,
                      (long long)dev_batches, lg.stale);
    }
    assert_true(dev_batches > 1);
    assert_int_equal(lg.stale, 0);
    /* (both sides calibrated from the start: a side was picked at the map's first decision,
     * and every change of side the log gives follows the rule on the speeds it gives) */
    assert_true(lg.picks >= 1);
    if (lg.bad_pick[0])
        fail_msg("a pick against the rule: \"%s\"", lg.bad_pick);
    int n = 0, entries = 0;
    double tpi = stored(d, PI_KEY, key, &n, &entries);
    assert_int_equal(entries, 1);
    assert_true(tpi > 0 && tpi != alone / 3);
    assert_true(n > 100 || n == (dev_batches > 100 ? (int)dev_batches : 100) / 2);
    stored(d, PI_KEY, "cpu", &n, &entries);
    assert_int_equal(entries, 1);
    rm_dir(d);
}

/* tdm__cm_put_read merges into the lane's entry read (the most batches) whatever the class
 * given, unless the figure is 8x or more off it: then into that class, as tdm__cm_put (pi over
 * 1000 terms against 350000: another parameter set keeps its own entry, and the entry from
 * more batches is read). A lane with no entry: the class given. */
static void test_model_put_read_merges_into_the_entry_read(void **state)
{
    (void)state;
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, "off", &cm), 0);
    int n = 0;
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 2, 2e5, 5e4, 100); /* none: class 2 */
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 1, 3e5, 5e4, 50);  /* 1.5x: merged */
    double tpi = tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n);
    assert_int_equal(n, 150);
    assert_true(fabs(tpi - (2e5 * 64 + 3e5 * 50) / 114) < 1e-6);
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 5, tpi * 8, 5e4, 30); /* 8x off: its own class */
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 5, tpi / 10, 5e4, 30);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n) == tpi);
    assert_int_equal(n, 150);
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 1, 0, 5e4, 30); /* not a figure: nothing */
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 1, NAN, 5e4, 30);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n) == tpi);
    assert_int_equal(n, 150);
    /* (the far ones were kept: merged geometrically in class 5, 15 batches; one more far one,
     * from 500, makes it the entry read, half the larger count) */
    tdm__cm_put_read(cm, "pi.v1", "opencl:x", 5, tpi * 20, 5e4, 500);
    assert_true(tdm__cm_get(cm, "pi.v1", "opencl:x", NULL, &n) > 8 * tpi);
    assert_int_equal(n, 250);
    assert_int_equal(tdm__cm_close(cm), 0);
}

/* A device's figure measured again by a later map that started from it (tdm__cm_put_confirm):
 * within 1.5x of the entry read, from fewer than TDM__CM_SETTLED batches, two maps agree and
 * the entry counts as settled, so a close call is not measured again in the next map (it is
 * after TDM__CM_RECHECK maps without it); further off, merged as tdm__cm_put_read, still
 * unsettled. The CPU's lanes are never settled this way (their count is only a weight). */
static void test_model_two_maps_agreeing_settle_a_close_call(void **state)
{
    (void)state;
    tdm__costmodel *cm = NULL;
    assert_int_equal(tdm__cm_open(NULL, "off", &cm), 0);
    int n = 0;
    /* PoCL 2x slower than two threads of 5e5 ns per item each, from 4 batches: a close call */
    tdm__cm_put_read(cm, "pi.v2", "opencl:x", 1, 5e5, 5e4, 4);
    double tpi = tdm__cm_get(cm, "pi.v2", "opencl:x", NULL, &n);
    assert_true(tdm__cm_close_unsettled(tpi, n, 0, 5e5, 2));
    tdm__cm_put_confirm(cm, "pi.v2", "opencl:x", 2, 8e5, 5e4, 2); /* 1.6x: no */
    tpi = tdm__cm_get(cm, "pi.v2", "opencl:x", NULL, &n);
    assert_true(n < TDM__CM_SETTLED);
    assert_true(tdm__cm_close_unsettled(tpi, n, 0, 5e5, 2));
    tdm__cm_put_confirm(cm, "pi.v2", "opencl:x", 2, tpi * 1.4, 5e4, 2); /* 1.4x: agreed */
    double settled = tdm__cm_get(cm, "pi.v2", "opencl:x", NULL, &n);
    assert_int_equal(n, TDM__CM_SETTLED);
    assert_false(tdm__cm_close_unsettled(settled, n, 0, 5e5, 2));
    assert_true(tdm__cm_close_unsettled(settled, n, TDM__CM_RECHECK, 5e5, 2)); /* later */
    tdm__cm_put_confirm(cm, "pi.v2", "opencl:x", 2, settled, 5e4, 3); /* (settled: merged) */
    tdm__cm_get(cm, "pi.v2", "opencl:x", NULL, &n);
    assert_int_equal(n, TDM__CM_SETTLED + 3);
    tdm__cm_put_read(cm, "pi.v2", "cpu", 1, 5e5, 0, 4); /* the CPU's: a weight only */
    tdm__cm_put_confirm(cm, "pi.v2", "cpu", 1, 5e5, 0, 2);
    tdm__cm_get(cm, "pi.v2", "cpu", NULL, &n);
    assert_int_equal(n, 6);
    tdm__cm_put_confirm(cm, "pi.v2", "cuda:y", 1, 1e5, 0, 5); /* (none stored: put_read's) */
    tdm__cm_get(cm, "pi.v2", "cuda:y", NULL, &n);
    assert_int_equal(n, 5);
    assert_int_equal(tdm__cm_close(cm), 0);
}

/* The kernel's work function's result for the key tests: *(const double *)params. */
static double work_of_params(const void *params, size_t params_size)
{
    return params && params_size == sizeof(double) ? *(const double *)params : 0;
}

/* The CPU threads' batches while a host-CPU device explores beside them measure the device's
 * load, not the threads: they do not change the threads' figure, against which each of the
 * device's rungs is judged (and the sides compared after). Learned from, they read the threads
 * at 1.85 items per ms (4.2 alone) beside PoCL's first pi rungs, which were compiling, and PoCL
 * ran the map 20% slower than the threads. Here every rung beside them is judged against the
 * same rate: the threads' stored figure, as they were calibrated when the device came. */
static void test_threads_figure_kept_while_a_device_explores_beside_them(void **state)
{
    (void)state;
    char key[200];
    if (!host_device_key(key, sizeof key))
        skip(); /* no OpenCL device on the host's cores */
    int judged = 0;
    for (int attempt = 0; attempt < 4 && judged < 2; attempt++) {
        char *d = model_dir();
        char lines[256];
        snprintf(lines, sizeof lines, PI_KEY "\tcpu\t0\t%g\t200\t100\n",
                 THREAD_TPI * threads_slower());
        seed_model(d, lines);
        tdm_runtime *rt = sched_open(d, NULL, 2, 0, NULL, NULL);
        char dev[200];
        open_devices(rt, dev, sizeof dev);
        pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL); /* (build) */
        atomic_store(&g_judged, 0);
        pi_map_check(rt, TDM_POLICY_AUTO, 4000, PI_TERMS, 1e-4, TDM_MEM_HOST, NULL);
        judged = atomic_load(&g_judged) < 64 ? atomic_load(&g_judged) : 64;
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
    }
    if (judged < 2)
        skip(); /* (the device never ran two rungs beside the threads: nothing to compare) */
    for (int k = 1; k < judged; k++)
        if (g_judged_rate[k] != g_judged_rate[0])
            fail_msg("rung %d beside the threads judged against %.4g items/ms, rung 0 against "
                     "%.4g",
                     k, g_judged_rate[k] * 1e6, g_judged_rate[0] * 1e6);
    assert_true(g_judged_rate[0] > 0);
}

/* A calibrated CPU worker's batch that ran while a host-CPU device had a batch in flight (beside
 * the threads, at a hand-over of the cores, alone while a worker's last batch ran on) teaches
 * its estimate nothing: it measured the device's load. After PoCL's beside rungs, one such
 * batch of one pi item took 8.9 ms and read 3.4e6 ns per item (5e5 before); the threads stood
 * down while PoCL explored alone, were compared with it on that figure (2.27 items per ms
 * together, against PoCL's 3.15), and PoCL ran the map, slower than the threads (4). Cold AUTO
 * pi maps (nothing stored, devices open): every batch of a calibrated CPU worker that ran
 * beside a device batch for more than 50 us is left out of its estimate, and some that ran
 * 50 us or more from any are learned from (the rule does not stop all learning). (The wrappers
 * record each batch inside what the scheduler reckons; the 50 us are a margin besides.) */
static void test_cpu_batches_beside_a_device_batch_not_learned(void **state)
{
    (void)state;
    char key[200];
    if (!host_device_key(key, sizeof key))
        skip(); /* no OpenCL device on the host's cores */
    int overlapped = 0, clear = 0, learned_clear = 0;
    for (int attempt = 0; attempt < 4 && overlapped == 0; attempt++) {
        char *d = model_dir();
        tdm_runtime *rt = sched_open(d, NULL, 2, 0, NULL, NULL);
        char dev[200];
        open_devices(rt, dev, sizeof dev);
        pi_map_check(rt, TDM_POLICY_OPENCL, 64, 1000, 2e-3, TDM_MEM_HOST, NULL); /* (build) */
        atomic_store(&g_spans, 0);
        atomic_store(&g_cpus, 0);
        atomic_store(&g_watch, true);
        tdm_report r = TDM_REPORT_INIT;
        pi_map_check(rt, TDM_POLICY_AUTO, 4000, PI_TERMS, 1e-4, TDM_MEM_HOST, &r);
        atomic_store(&g_watch, false);
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
        int spans = atomic_load(&g_spans), cpus = atomic_load(&g_cpus);
        if (items_of(&r, TDM_BACKEND_OPENCL) > 0 && spans == 0)
            fail_msg("the device ran %lld items, and its driver marked no batch in flight",
                     (long long)items_of(&r, TDM_BACKEND_OPENCL));
        cpus = cpus < SPANS ? cpus : SPANS;
        for (int i = 0; i < cpus; i++) {
            const cpu_batch *b = &g_cpu[i];
            if (!b->calibrated)
                continue;
            double most = -INFINITY; /* (its longest overlap with a device batch, ns) */
            for (int k = 0; k < spans && k < SPANS; k++) {
                double to = g_span[k][1] > 0 ? g_span[k][1] : INFINITY;
                double ov = fmin(to, b->to) - fmax(g_span[k][0], b->from);
                most = ov > most ? ov : most;
            }
            bool over = most > 50e3, near = most > -50e3;
            if (over && b->learned)
                fail_msg("a calibrated CPU worker's batch of %.1f us was learned from, %.1f us "
                         "of it beside a device batch",
                         (b->to - b->from) * 1e-3, most * 1e-3);
            overlapped += over;
            clear += !near;
            learned_clear += !near && b->learned;
        }
    }
    /* (skipped when no calibrated CPU batch ran beside a device batch, or none clear of them:
     * a device far faster than the threads would run the map, the threads beside its rungs) */
    if (overlapped == 0 || clear == 0)
        skip();
    assert_true(learned_clear > 0);
}

/* A map's key in the model (tdm__cm_map_key): the kernel's, and for a kernel with a work
 * function, ".w<k>" with 2^k the power of 2 nearest its result, k clamped to -64..64; none for
 * a result that is not finite and > 0, nor for a kernel without one. A buffer too short cuts
 * the key (and is still terminated). */
static void test_model_key_per_work_class(void **state)
{
    (void)state;
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "k";
    def.kernel_version = 3;
    char key[TDM__CM_KEY_LEN];
    double w = 400000;
    tdm__cm_map_key(key, sizeof key, &def, &w, sizeof w); /* no work function */
    assert_string_equal(key, "k.v3");
    def.work = work_of_params;
    const struct {
        double w;
        const char *key;
    } cases[] = {{400000, "k.v3.w19"}, {1000, "k.v3.w10"},  {1, "k.v3.w0"},        {3, "k.v3.w2"},
                 {0.25, "k.v3.w-2"},   {1e300, "k.v3.w64"}, {1e-300, "k.v3.w-64"}, {0, "k.v3"},
                 {-5, "k.v3"},         {NAN, "k.v3"},       {INFINITY, "k.v3"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tdm__cm_map_key(key, sizeof key, &def, &cases[i].w, sizeof cases[i].w);
        assert_string_equal(key, cases[i].key);
    }
    tdm__cm_map_key(key, sizeof key, &def, NULL, 0); /* (the function's own 0) */
    assert_string_equal(key, "k.v3");
    char small[7];
    w = 400000;
    tdm__cm_map_key(small, sizeof small, &def, &w, sizeof w);
    assert_string_equal(small, "k.v3.w");
    /* pi_leibniz's: its terms */
    tdm_runtime *rt = NULL;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.backends = "cpu";
    cfg.sched_model_dir = "off";
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    const tdm_kernel_def *pi = tdm__kernel_def(rt, "pi_leibniz");
    assert_non_null(pi);
    tdm_pi_params p = {PI_TERMS};
    tdm__cm_map_key(key, sizeof key, pi, &p, sizeof p);
    assert_string_equal(key, PI_KEY);
    p.terms = 0; /* (the terms input gives each item its own) */
    tdm__cm_map_key(key, sizeof key, pi, &p, sizeof p);
    assert_string_equal(key, "pi_leibniz.v2");
    assert_int_equal(tdm_runtime_close(rt), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate_forgets_smaller_batches),
        cmocka_unit_test(test_host_cpu_device_measured_by_its_largest_batch),
        cmocka_unit_test_teardown(test_threads_not_woken_while_a_device_explores, judge_again),
        cmocka_unit_test(test_model_merge_weighs_both_counts),
        cmocka_unit_test(test_close_call_from_few_batches_is_unsettled),
        cmocka_unit_test(test_settled_close_call_passed_over_is_measured_again),
        cmocka_unit_test(test_maps_without_a_lane_are_counted_and_kept),
        cmocka_unit_test(test_beside_judge_on_measured_rungs),
        cmocka_unit_test(test_close_call_measured_again_in_a_map),
        cmocka_unit_test(test_device_alone_map_teaches_the_model),
        cmocka_unit_test(test_auto_map_merges_into_the_entry_read),
        cmocka_unit_test(test_model_put_read_merges_into_the_entry_read),
        cmocka_unit_test(test_model_key_per_work_class),
        cmocka_unit_test(test_threads_figure_kept_while_a_device_explores_beside_them),
        cmocka_unit_test(test_cpu_batches_beside_a_device_batch_not_learned),
        cmocka_unit_test(test_model_two_maps_agreeing_settle_a_close_call),
    };
    return TDM_TEST_MAIN("sched", tests);
}
