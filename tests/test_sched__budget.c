/* SPDX-License-Identifier: MIT */
/* The scheduler's one CPU budget and its stored-model shortcuts (issue 16): CPU threads and
 * worker processes that together are more workers than the cores take turns, the faster side
 * (by the stored model) running the map; and an AUTO map leaves the devices closed when the
 * stored model already says none beats the CPU. The CPU budget is the process's affinity mask:
 * the tests pin themselves to one core for real, so the rule holds on any machine. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TDM_SCHED_DIR_PREFIX "tdm-budget"
#include "sched_test_util.h"
#include "sched/device.h"
#include "sched/sched_model.h"

typedef struct {
    int budget, waits, left_closed, explore_cut, bg_asked, bg_closed;
    int bg_opened; /* devices the background open found ("devices opened in the background: N") */
    int beside_cut;   /* a host-CPU device ended its exploration beside the threads */
    int thread_waits; /* a CPU thread stood down for a host-CPU device measured alone */
    bool stall;       /* the background open's "opened" line waits in the log for `release` */
    atomic_bool release; /* (or 60 s) */
    int yields;      /* thread 1 left a core to a device's set-up */
    bool open_over;  /* the background open said it is over */
    bool yielding;   /* thread 1 left the open a core, and the open is not over yet */
    int yield_takes; /* batches thread 1 took meanwhile */
    atomic_bool stalled_out; /* the stalled "opened" line is done sleeping */
    int reoffers;            /* "offered it again N times to the workers that stood down" */
    int threads_again; /* a host-CPU device won a close call: "the threads are measured again" */
    int thread_explores; /* CPU threads' exploring batches ("cpu (worker N) takes ... (exploring)")
                          */
} budget_log;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_log(void *user, unsigned flag, const char *line)
{
    budget_log *l = user;
    if (flag != TDM_DEBUG_SCHED)
        return;
    pthread_mutex_lock(&log_mu);
    if (getenv("TDM_TEST_SHOWLOG")) /* the scheduler's log on stderr, to see a failure */
        fprintf(stderr, "%s\n", line);
    l->budget += strstr(line, "(one CPU budget)") != NULL;
    l->waits += strstr(line, "waits: it shares the CPU cores") != NULL;
    l->left_closed += strstr(line, "devices left closed") != NULL;
    l->explore_cut += strstr(line, "ends its exploration") != NULL;
    l->beside_cut += strstr(line, "ends its exploration beside the CPU threads") != NULL;
    l->thread_waits += strstr(line, "sched exp_sinh: cpu (worker") != NULL &&
                       strstr(line, "host-CPU device, which are being measured alone") != NULL;
    l->bg_asked += strstr(line, "the devices open in the background") != NULL;
    l->bg_closed += strstr(line, "the devices stay closed") != NULL;
    l->threads_again += strstr(line, "the threads are measured again") != NULL;
    l->thread_explores += strstr(line, ": cpu (worker") && strstr(line, "(exploring)");
    const char *again = strstr(line, "offered it again ");
    if (again)
        l->reoffers += atoi(again + strlen("offered it again "));
    const char *opened = strstr(line, "devices opened in the background: ");
    if (opened)
        l->bg_opened += atoi(opened + strlen("devices opened in the background: "));
    bool stall = l->stall && strstr(line, "devices opened in the background");
    /* (Only the open is followed: thread 1's line can reach the log after the line that ends
     * what it left the core to, if it waited for this mutex meanwhile; a line that comes after
     * the open's end is not counted as leaving the open a core. The build that follows has no
     * line saying it began.) */
    if (strstr(line, "(worker 1) waits: it leaves a core to a device")) {
        l->yields++;
        l->yielding = !l->open_over;
    } else if (strstr(line, "devices opened in the background") ||
               strstr(line, "devices not opened in the background")) {
        l->open_over = true;
        l->yielding = false;
    } else if (l->yielding && strstr(line, "cpu (worker 1) takes")) {
        l->yield_takes++;
    }
    pthread_mutex_unlock(&log_mu);
    if (stall) {
        for (int ms = 0; ms < 60000 && !atomic_load(&l->release); ms++)
            usleep(1000);
        atomic_store(&l->stalled_out, true);
    }
}

static tdm_runtime *open_rt(const char *dir, budget_log *log, const char *backends, int threads,
                            int procs)
{
    return sched_open(dir, backends, threads, procs, on_log, log);
}

/* An exp_sinh map over n items in `mem` storage; checks the result; fills r. */
static void run_exp_sinh(tdm_runtime *rt, int64_t n, unsigned mem, tdm_report *r)
{
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, mem, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, mem, &y), 0);
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)(i % 1000) * 1e-3;
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, r), 0);
    const double *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < n; i += 997) {
        double want = exp(xd[i]) * sinh(xd[i]);
        assert_true(fabs(yd[i] - want) <= 1e-12 * (1 + fabs(want)));
    }
    tdm_tensor_release(x);
    tdm_tensor_release(y);
}

static bool workers_of(const tdm_report *r, tdm_backend_kind k)
{
    for (int w = 0; w < r->n_workers; w++)
        if (r->workers[w].kind == k)
            return true;
    return false;
}

/* Pins this process (and the worker processes it forks next) to one core: a CPU budget of 1.
 * *old gets the mask to restore. */
static void pin_one_core(cpu_set_t *old)
{
    assert_int_equal(sched_getaffinity(0, sizeof *old, old), 0);
    int first = 0;
    while (!CPU_ISSET(first, old))
        first++;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
}

/* One core, one thread and one worker process: two CPU workers on one core. With the stored
 * model saying which side is faster (by far more than any real measurement could move it:
 * the side that runs keeps learning its true speed, the waiting side keeps the stored one;
 * 500 us per item, because under TSan on one loaded core a worker process's hand-offs took
 * milliseconds, and its small batches at the end of the map once read as 5 us per item),
 * that side runs the map and the other waits: the runtime's only job, so the faster side is on
 * its way even before it enters, and the slower one takes no batch at all. */
static void check_budget_winner(const char *lines, tdm_backend_kind winner, tdm_backend_kind loser)
{
    char *d = model_dir();
    seed_model(d, lines);
    cpu_set_t old;
    pin_one_core(&old);
    budget_log log = {0};
    tdm_runtime *rt = open_rt(d, &log, "cpu,procs", 1, 1);
    int64_t n = 1 << 21;
    tdm_report r = TDM_REPORT_INIT;
    run_exp_sinh(rt, n, TDM_MEM_SHARED, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
    assert_true(log.budget >= 1);
    assert_true(log.waits >= 1);
    assert_int_equal(items_of(&r, winner), n);
    assert_int_equal(items_of(&r, loser), 0);
    rm_dir(d);
}

static void test_cpu_budget_threads_win_over_slower_processes(void **state)
{
    check_budget_winner("exp_sinh.v1\tcpu\t6\t10\t200\t100\n"
                        "exp_sinh.v1\tprocs\t8\t500000\t5000\t100\n",
                        TDM_BACKEND_CPU_THREADS, TDM_BACKEND_CPU_PROCS);
}

static void test_cpu_budget_faster_processes_run_the_map(void **state)
{
    check_budget_winner("exp_sinh.v1\tcpu\t6\t500000\t200\t100\n"
                        "exp_sinh.v1\tprocs\t8\t10\t5000\t100\n",
                        TDM_BACKEND_CPU_PROCS, TDM_BACKEND_CPU_THREADS);
}

/* Threads and processes that fit the cores together add up: no turns, no budget log line. */
static void test_cpu_budget_threads_and_processes_within_cores_add_up(void **state)
{
    cpu_set_t cur;
    assert_int_equal(sched_getaffinity(0, sizeof cur, &cur), 0);
    if (CPU_COUNT(&cur) < 2)
        skip();
    budget_log log = {0};
    tdm_runtime *rt = open_rt("off", &log, "cpu,procs", 1, 1);
    tdm_report r = TDM_REPORT_INIT;
    run_exp_sinh(rt, 1 << 16, TDM_MEM_SHARED, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(log.budget, 0);
}

/* The order in which CPU lanes were first given batches, from the scheduler's log. */
typedef struct {
    int n;
    char kind[4096]; /* 't' CPU thread, 'p' worker process */
    int worker[4096];
} takes_log;

static void on_takes(void *user, unsigned flag, const char *line)
{
    takes_log *l = user;
    int w;
    const char *at;
    if (flag != TDM_DEBUG_SCHED)
        return;
    if (getenv("TDM_TEST_SHOWLOG"))
        fprintf(stderr, "%s\n", line);
    char kind = (at = strstr(line, ": cpu (worker ")) ? 't'
                : (at = strstr(line, ": procs (worker ")) ? 'p'
                                                            : 0;
    if (!kind || !strstr(line, ") takes ") || sscanf(strstr(at, "(worker "), "(worker %d)", &w) != 1)
        return;
    pthread_mutex_lock(&log_mu);
    if (l->n < 4096) {
        l->kind[l->n] = kind;
        l->worker[l->n++] = w;
    }
    pthread_mutex_unlock(&log_mu);
}

/* Pins this process (and the worker processes it forks next) to its first two cores: a CPU
 * budget of 2. False (nothing changed) when it has fewer. *old gets the mask to restore. */
static bool pin_two_cores(cpu_set_t *old)
{
    assert_int_equal(sched_getaffinity(0, sizeof *old, old), 0);
    if (CPU_COUNT(old) < 2)
        return false;
    cpu_set_t two;
    CPU_ZERO(&two);
    for (int c = 0, got = 0; got < 2; c++)
        if (CPU_ISSET(c, old)) {
            CPU_SET(c, &two);
            got++;
        }
    assert_int_equal(sched_setaffinity(0, sizeof two, &two), 0);
    return true;
}

/* Two threads and two worker processes on two cores, nothing stored: the two sides are measured
 * side by side, a thread and a process at once, before either runs the map with both its
 * workers. Measured one after the other (threads first), the threads' figure took the map's
 * cold start; and a core idled while a side of one lane was measured. So a process is given a
 * batch before both threads have had two; under the old turns both threads ran their
 * exploration ladder (1, 4, 16, 64... items) before any process was given a batch. */
static void test_cpu_budget_sides_measured_side_by_side(void **state)
{
    (void)state;
    cpu_set_t old;
    if (!pin_two_cores(&old))
        skip();
    char *d = model_dir();
    takes_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    tdm_runtime *rt = sched_open(d, "cpu,procs", 2, 2, on_takes, log);
    tdm_report r = TDM_REPORT_INIT;
    run_exp_sinh(rt, 1 << 22, TDM_MEM_SHARED, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
    /* Before the first process batch, not both threads had two batches or more (the lower
     * thread's second rung can be logged before a process's driver wakes; under the old turns
     * both ran their whole ladder, 1, 4, 16, 64... items, first) */
    int first_thread = -1, batches[2] = {0, 0};
    bool procs_seen = false;
    for (int i = 0; i < log->n && !procs_seen; i++) {
        if (log->kind[i] == 'p') {
            procs_seen = true;
            continue;
        }
        if (first_thread < 0)
            first_thread = log->worker[i];
        batches[log->worker[i] != first_thread]++;
    }
    assert_true(log->n > 0);
    assert_true(procs_seen);
    if (batches[0] >= 2 && batches[1] >= 2)
        fail_msg("both threads ran %d and %d batches before a process had one", batches[0],
                 batches[1]);
    free(log);
    rm_dir(d);
}

/* Exploration does not end on a batch of a few items just for lasting long: a first exp_sinh
 * item on a cold CPU thread took 21 us (2 ns once warm) and, read as 20000 ns per item, lost
 * the map to the worker processes; another took 121 us, a whole target. A few items end the
 * ladder only when they and the rung before them each last a target batch (a kernel that slow
 * needs no more ladder); 64 or more items when they last 16 latencies. */
static void test_exploration_ladder_not_ended_by_a_slow_first_item(void **state)
{
    (void)state;
    int r = 0; /* (explore, items, took ns, target ns, latency ns, fill, long rungs in a row) */
    assert_int_equal(tdm__explore_next(1, 1, 21e3, 100e3, 200, 1, &r), 4); /* slowed, not long */
    assert_int_equal(r, 0);
    assert_int_equal(tdm__explore_next(16, 16, 21e3, 100e3, 200, 1, &r), 64);   /* still a few */
    assert_int_equal(tdm__explore_next(64, 64, 3.2e3, 100e3, 200, 1, &r), 0);   /* enough of both */
    assert_int_equal(tdm__explore_next(64, 64, 3.1e3, 100e3, 200, 1, &r), 256); /* too short */
    /* one long item: once may be a cold start (the same rung runs again), twice in a row is
     * not */
    assert_int_equal(tdm__explore_next(1, 1, 121e3, 100e3, 200, 1, &r), 1);
    assert_int_equal(r, 1);
    assert_int_equal(tdm__explore_next(1, 1, 2e3, 100e3, 200, 1, &r), 4); /* it was */
    assert_int_equal(r, 0);
    assert_int_equal(tdm__explore_next(1, 1, 500e3, 100e3, 200, 1, &r), 1);
    assert_int_equal(tdm__explore_next(1, 1, 500e3, 100e3, 200, 1, &r), 0); /* slow items */
    assert_int_equal(r, 2);
    assert_int_equal(tdm__explore_next(16, 16, 2e6, 100e3, 200, 1, NULL), 0); /* (no count) */
    r = 0; /* (a device that fills with 128 items: its few items' rungs go on as they did) */
    assert_int_equal(tdm__explore_next(16, 16, 5e6, 4e6, 5e4, 128, &r), 64);
    r = 0;
    assert_int_equal(tdm__explore_next(1024, 100, 1e3, 100e3, 200, 1, &r), 0); /* cut by the end */
    assert_int_equal(tdm__explore_next(4096, 4096, 60e3, 4e6, 50e3, 8192, &r), 16384); /* fill */
}

/* The largest batch a CPU thread was given, and whether a stored figure was found stale. */
typedef struct {
    int64_t cpu_max;
    int stale;
} stale_log;

static void on_stale(void *user, unsigned flag, const char *line)
{
    stale_log *l = user;
    long long n;
    const char *at = strstr(line, ": cpu (worker ");
    if (flag != TDM_DEBUG_SCHED)
        return;
    if (getenv("TDM_TEST_SHOWLOG"))
        fprintf(stderr, "%s\n", line);
    pthread_mutex_lock(&log_mu);
    if (at && (at = strstr(at, ") takes ")) && sscanf(at, ") takes %lld", &n) == 1 &&
        n > l->cpu_max)
        l->cpu_max = n;
    l->stale += strstr(line, "is stale") != NULL;
    pthread_mutex_unlock(&log_mu);
}

/* An AUTO pi map (pi_map_check) on a runtime of one thread and one worker process over the
 * model in dir. */
static void pi_map_1t1p(const char *dir, stale_log *log, int64_t n, int64_t terms, tdm_report *r)
{
    tdm_runtime *rt = sched_open(dir, "cpu,procs", 1, 1, on_stale, log);
    pi_map_check(rt, TDM_POLICY_AUTO, n, terms, 1e-3, TDM_MEM_SHARED, r);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

/* Whether the stored model in dir holds `text`. */
static bool model_holds(const char *dir, const char *text)
{
    char path[600];
    model_file(dir, path, sizeof path);
    size_t len;
    unsigned char *all = read_bytes(path, &len);
    all[len] = 0;
    bool holds = strstr((char *)all, text) != NULL;
    free(all);
    return holds;
}

/* A stored figure far off what the map measures (4.56 ns per item, the entry a user's model
 * really held for pi_leibniz of a few terms per item before its figures were kept per power of
 * 2 of its terms, stored here under the key of these items' 20000 terms): the threads' batches stay
 * small while the stored figure is not borne out (at most an eighth of a fair share: 1024 items, 2
 * lanes, 64), two batches show it stale, the map measures afresh, and the entry is forgotten at
 * close. Trusted, the stored figure gave a thread half its share (256 items) in its first batch,
 * and kept seeding later maps. */
static void test_stale_stored_model_measured_afresh_and_forgotten(void **state)
{
    (void)state;
    char *d = model_dir();
    seed_model(d, "pi_leibniz.v2.w14\tcpu\t7\t4.56392\t31.3627\t16024\n");
    stale_log log = {0};
    pi_map_1t1p(d, &log, 1024, 20000, NULL);
    assert_true(log.stale >= 1);
    assert_true(log.cpu_max > 0 && log.cpu_max <= 64);
    assert_false(model_holds(d, "\t4.56392\t"));
    assert_true(model_holds(d, "pi_leibniz.v2.w14\tcpu\t")); /* what it measured */
    rm_dir(d);
}

/* A stored figure far too slow for a CPU lane (1e12 ns per item for the worker processes,
 * against about 15 us): the lane would decline every batch and never show it wrong, leaving
 * a core idle in every map. It takes one item once per map to check it; that item, 8x or more
 * faster than the figure, shows it stale at once, and the process takes its part of the map.
 * One thread and one process on two cores (they add up); five maps of 12,000 items (not
 * 3,000: more room for the process's second batch after its first, one item timed with its
 * hand-off, which can take milliseconds under a sanitizer), the figure stored afresh before
 * each: without the check the process got an item only when it asked before the thread did. */
static void test_cpu_lane_held_back_by_a_stale_figure_checks_it(void **state)
{
    (void)state;
    cpu_set_t old;
    if (!pin_two_cores(&old))
        skip();
    char *d = model_dir();
    for (int rep = 0; rep < 5; rep++) {
        seed_model(d, "pi_leibniz.v2.w13\tprocs\t3\t1e12\t39\t1000\n");
        stale_log log = {0};
        tdm_report r = TDM_REPORT_INIT;
        pi_map_1t1p(d, &log, 12000, 10000, &r);
        assert_true(log.stale >= 1);
        assert_true(items_of(&r, TDM_BACKEND_CPU_PROCS) > 1);
        assert_false(model_holds(d, "e+12"));
    }
    assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
    rm_dir(d);
}

/* An AUTO exp_sinh map of n items on a runtime with 2 threads and every device backend, over a
 * model dir seeded with `lines` (NULL: an empty model); r gets its report, log (may be NULL)
 * the scheduler's log lines. */
static void map_n_on_model(const char *lines, int64_t n, budget_log *log, tdm_report *r)
{
    char *d = model_dir();
    if (lines)
        seed_model(d, lines);
    tdm_runtime *rt = open_rt(d, log, NULL, 2, 0);
    run_exp_sinh(rt, n, TDM_MEM_HOST, r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

/* ... of 2^21 items (32 MiB moved). */
static void map_on_model(const char *lines, budget_log *log, tdm_report *r)
{
    map_n_on_model(lines, 1 << 21, log, r);
}

/* A map the stored model opened the devices for, which started on the CPU as they opened in
 * the background ("the devices open in the background as the map starts"): the open found
 * them (its log line, the close having waited for it), or this machine has none. The map,
 * far shorter than the stored figures say, may end before a device joins it. */
static void devices_opened_in_the_background(const budget_log *log)
{
    assert_int_equal(log->bg_asked, 1);
    if (log->bg_opened == 0)
        no_device_here();
}

/* A stored model that says the device is slower than the CPU threads: an AUTO map large
 * enough to open the devices leaves them closed (no device worker in the job at all). */
static void test_devices_left_closed_when_model_says_slower(void **state)
{
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    /* (the stored CPU figure says the map takes 1 s: long enough to open devices for) */
    map_on_model("exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t3000\t50000\t100\n",
                 &log, &r);
    assert_true(log.left_closed >= 1);
    assert_false(workers_of(&r, TDM_BACKEND_OPENCL));
    assert_false(workers_of(&r, TDM_BACKEND_CUDA));
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS), 1 << 21);
}

/* ... unless the device's figure is a close call not yet settled: slower than the threads
 * together by less than 3x, from fewer than 32 batches (one exploration, measured while the
 * host's cores may have run at half speed). The devices open, and the map measures it again. */
static void test_devices_opened_for_a_close_call_not_settled(void **state)
{
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    /* (two threads of 1000 ns per item: 500 together; the device 800, from 13 batches) */
    map_on_model("exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t800\t50000\t13\n",
                 &log, &r);
    assert_int_equal(log.left_closed, 0);
    assert_int_equal(r.items, 1 << 21);
    devices_opened_in_the_background(&log);
}

/* A settled close call (100 batches) leaves the devices closed too, and each such map that
 * runs counts as one without the device (the model's seventh column), until TDM__CM_RECHECK of
 * them have run: then the devices open and the map measures it again (a figure measured on a slow
 * minute would otherwise keep every later map off the device for good). */
static void test_settled_close_call_opened_again_after_maps_without_it(void **state)
{
    (void)state;
    char *d = model_dir();
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    seed_model(d, "exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                  "exp_sinh.v1\topencl:any\t9\t800\t50000\t100\t6\n");
    tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
    /* a map refused (its options checked before the devices are thought of) says nothing and
     * counts for nothing; the map after it does */
    int64_t n = 1 << 21;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    o.retries = -1;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL), TDM_EINVAL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    run_exp_sinh(rt, 1 << 21, TDM_MEM_HOST, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(log.left_closed, 1);
    assert_false(workers_of(&r, TDM_BACKEND_OPENCL));
    assert_true(model_holds(d, "\t800\t50000\t100\t7\n")); /* one more map without it */
    log = (budget_log){0};
    r = (tdm_report)TDM_REPORT_INIT;
    seed_model(d, "exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                  "exp_sinh.v1\topencl:any\t9\t800\t50000\t100\t8\n");
    rt = open_rt(d, &log, NULL, 2, 0);
    run_exp_sinh(rt, 1 << 21, TDM_MEM_HOST, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_int_equal(log.left_closed, 0);
    assert_int_equal(r.items, 1 << 21);
    rm_dir(d);
    devices_opened_in_the_background(&log);
}

/* A far figure (6x the threads together) from a few batches (an exploration cut short on a
 * slow minute) leaves the devices closed, until TDM__CM_RECHECK maps ran without it: then
 * they open and the map measures it again. From 32 batches or more, never again. */
static void test_far_figure_from_few_batches_opened_again(void **state)
{
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    map_on_model("exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t3000\t50000\t5\t7\n",
                 &log, &r);
    assert_true(log.left_closed >= 1);
    log = (budget_log){0};
    r = (tdm_report)TDM_REPORT_INIT;
    map_on_model("exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t3000\t50000\t5\t8\n",
                 &log, &r);
    assert_int_equal(log.left_closed, 0);
    assert_int_equal(r.items, 1 << 21);
    log = (budget_log){0};
    r = (tdm_report)TDM_REPORT_INIT;
    map_on_model("exp_sinh.v1\tcpu\t6\t1000\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t3000\t50000\t32\t1000\n",
                 &log, &r);
    assert_true(log.left_closed >= 1);
}

/* A map of 32 MiB whose CPU time nothing says is long leaves the devices closed: with no
 * stored model (under 1 GiB moved, the CPU may well need milliseconds: exp_sinh does), and
 * with one that says the CPU threads need 3 ns an item (6 ms for this map). */
static void test_devices_left_closed_for_a_short_map(void **state)
{
    static const char *const models[2] = {NULL, "exp_sinh.v1\tcpu\t6\t3\t200\t100\n"};
    /* (with nothing stored the CPU threads measure themselves: 2^18 items stay far below 100
     * ms even under TSan, where 2^21 took about that long) */
    static const int64_t items[2] = {1 << 18, 1 << 21};
    for (int m = 0; m < 2; m++) {
        budget_log log = {0};
        tdm_report r = TDM_REPORT_INIT;
        map_n_on_model(models[m], items[m], &log, &r);
        assert_false(workers_of(&r, TDM_BACKEND_OPENCL));
        assert_false(workers_of(&r, TDM_BACKEND_CUDA));
        assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS), items[m]);
        assert_int_equal(log.bg_asked, 0);
    }
}

/* ... but a stored device that beats the CPU is opened (PoCL in CI; skipped without one). */
static void test_devices_opened_when_model_says_faster(void **state)
{
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    map_on_model("exp_sinh.v1\tcpu\t6\t40\t200\t100\n"
                 "exp_sinh.v1\topencl:any\t9\t1\t50000\t100\n",
                 &log, &r);
    assert_int_equal(log.left_closed, 0);
    devices_opened_in_the_background(&log);
}

/* A map streamed under AUTO (tdm_map_async) runs on the CPU workers only: the devices are not
 * opened for it, even where the stored model says a device is faster and the same tdm_map
 * then opens them, and it does not count toward the bar for opening them. (Skipped without a
 * device.) */
static void test_streamed_map_leaves_the_devices_closed(void **state)
{
    char *d = model_dir();
    seed_model(d, "exp_sinh.v1\tcpu\t6\t40\t200\t100\n"
                  "exp_sinh.v1\topencl:any\t9\t1\t50000\t100\n");
    budget_log log = {0};
    tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
    int64_t n = 1 << 21;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    tdm_job *job;
    assert_int_equal(tdm_map_async(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &job), 0);
    tdm_batch_result b;
    int64_t seen = 0;
    while (tdm_job_next(job, &b) == 0)
        seen += b.end - b.begin;
    tdm_report r = TDM_REPORT_INIT;
    assert_int_equal(tdm_job_wait(job, &r), 0);
    tdm_job_free(job);
    assert_int_equal(seen, n);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS), n);
    assert_null(atomic_load(&rt->devices));
    assert_int_equal(atomic_load(&rt->closed_cpu_ns), 0);
    assert_int_equal(log.bg_asked, 0);
    /* the same map, not streamed: the devices open */
    r = (tdm_report)TDM_REPORT_INIT;
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, &r), 0);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    devices_opened_in_the_background(&log);
}

/* An AUTO pi map over 64 items moves 512 bytes, far below what opens the devices; but when the
 * stored model says the CPU threads need long for it (50 ms an item here, 1.6 s), the devices open
 * all the same: a map that computes long is worth a driver's start-up. Without the model, the
 * same map leaves them closed. (Skipped without a device.) */
static void pi_map_on_model(const char *lines, budget_log *log)
{
    char *d = model_dir();
    if (lines)
        seed_model(d, lines);
    tdm_runtime *rt = open_rt(d, log, NULL, 2, 0);
    tdm_report r = TDM_REPORT_INIT;
    pi_map_check(rt, TDM_POLICY_AUTO, 64, 1000, 2e-3, TDM_MEM_SHARED, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

/* The stored model is read under the map's key, with its work class (pi_leibniz: its terms):
 * figures stored for pi over 1000 terms (the CPU 1.6 s for the 64 items, a device 20x slower
 * from 100 batches) leave the devices closed for a map of 1000 terms; stored for 400000
 * terms, they say nothing about it (nothing stored: the map starts on the CPU, and the
 * devices are not opened for 64 short items). */
static void test_devices_left_closed_by_the_figures_of_these_terms(void **state)
{
    (void)state;
    budget_log log = {0};
    pi_map_on_model("pi_leibniz.v2.w10\tcpu\t0\t50000000\t200\t100\n"
                    "pi_leibniz.v2.w10\topencl:any\t0\t1e9\t50000\t100\n",
                    &log);
    assert_true(log.left_closed >= 1);
    assert_int_equal(log.bg_asked, 0);
    log = (budget_log){0};
    pi_map_on_model("pi_leibniz.v2.w19\tcpu\t0\t50000000\t200\t100\n"
                    "pi_leibniz.v2.w19\topencl:any\t0\t1e9\t50000\t100\n",
                    &log);
    assert_int_equal(log.left_closed, 0);
    assert_int_equal(log.bg_asked, 0);
}

static void test_devices_opened_for_a_map_that_computes_long(void **state)
{
    (void)state;
    budget_log log = {0};
    pi_map_on_model(NULL, &log);
    assert_int_equal(log.bg_asked, 0);
    assert_int_equal(log.bg_opened, 0);
    log = (budget_log){0};
    pi_map_on_model("pi_leibniz.v2.w10\tcpu\t0\t50000000\t200\t100\n", &log);
    devices_opened_in_the_background(&log);
}

/* The stored-model key of the first open OpenCL device on the host's cores ("opencl:<name>"),
 * after opening the devices with a small GPU map; false when there is none. */
static bool host_cpu_device(tdm_runtime *rt, char *key, size_t len)
{
    int64_t n = 1000;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    tdm_map_opts o = opts(TDM_POLICY_OPENCL);
    int rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    if (rc == TDM_ENODEV)
        return false;
    assert_int_equal(rc, 0);
    for (int i = 0; i < tdm_runtime_device_count(rt); i++) {
        tdm_device_info di;
        if (tdm_runtime_device(rt, i, &di) == 0 && di.kind == TDM_BACKEND_OPENCL && di.host_cpu) {
            snprintf(key, len, "opencl:%s", di.name);
            return true;
        }
    }
    return false;
}

/* A runtime on model dir d, which is seeded first with `lines` (a format whose %s is the
 * stored-model key of the host-CPU device), its devices open, the log in `log` (may be NULL).
 * Skips the test (d removed) where there is no OpenCL device on the host's cores. */
static tdm_runtime *open_on_a_host_device_model(char *d, const char *lines, budget_log *log)
{
    tdm_runtime *rt = open_rt(d, NULL, NULL, 2, 0);
    char key[200];
    bool dev = host_cpu_device(rt, key, sizeof key);
    assert_int_equal(tdm_runtime_close(rt), 0);
    if (!dev) {
        rm_dir(d);
        skip();
    }
    char text[512];
    snprintf(text, sizeof text, lines, key);
    seed_model(d, text);
    rt = open_rt(d, log, NULL, 2, 0);
    assert_true(host_cpu_device(rt, key, sizeof key));
    return rt;
}

/* Devices already open and a stored model that says the host-CPU device is slower: AUTO hands
 * it no batch at all (issue 16: "none once its model says slower"). */
static void test_slower_device_gets_no_batch(void **state)
{
    char *d = model_dir();
    tdm_runtime *rt = open_on_a_host_device_model(
        d, "exp_sinh.v1\tcpu\t6\t1\t200\t100\nexp_sinh.v1\t%s\t9\t5000\t50000\t100\n", NULL);
    tdm_report r = TDM_REPORT_INIT;
    run_exp_sinh(rt, 1 << 21, TDM_MEM_HOST, &r);
    assert_int_equal(tdm_runtime_close(rt), 0);
    assert_true(workers_of(&r, TDM_BACKEND_OPENCL));
    assert_int_equal(items_of(&r, TDM_BACKEND_OPENCL), 0);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS), 1 << 21);
    rm_dir(d);
}

/* A host-CPU device standing down for a whole map (open, stored 10x slower per item than one
 * thread, from 100 batches) is offered the map again by the map's completions at most every
 * 5 ms (TDM__REOFFER_NS; the scheduler's own offers and the job's end are not counted here):
 * a pi map of 2000 items of 400000 terms on two threads, about one item a batch, 0.1-0.3 s.
 * Without the limit, every completion offered it (1828 times in a 235 ms map); every 8 of
 * them, before, each offer taking a core from the threads (a 0.5 s pi map ran at 0.96-0.98
 * of the speed of policy CPU on the same runtime). */
static void test_standing_down_device_offered_the_map_at_most_every_5_ms(void **state)
{
    char *d = model_dir();
    budget_log log = {0};
    tdm_runtime *rt = open_on_a_host_device_model(d,
                                                  "pi_leibniz.v2.w19\tcpu\t0\t1.5e5\t200\t100\n"
                                                  "pi_leibniz.v2.w19\t%s\t0\t1.5e6\t50000\t100\n",
                                                  &log);
    tdm_report r = TDM_REPORT_INIT;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pi_map_check(rt, TDM_POLICY_AUTO, 2000, 400000, 2e-5, TDM_MEM_HOST, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
    assert_int_equal(items_of(&r, TDM_BACKEND_OPENCL), 0);
    assert_true(r.batches > 200); /* (completions enough to offer it far more often) */
    if (log.reoffers > ms / 5.0 + 1)
        fail_msg("offered again %d times in a map of %.1f ms", log.reoffers, ms);
    assert_true(log.reoffers >= 1);
}

/* A host-CPU device stored faster than the CPU threads together by less than 3x (a close
 * call: 1e5 ns per item against two threads of 3e5 each) has the threads measured again at
 * the map's start: they run its first batches, unseeded, and the side that runs is chosen on
 * what they measure (taken as stored, threads standing down for the device never ran again to
 * correct a figure a cold run had stored 1.84x slow). A device stored 10x faster is taken as
 * stored, and so are the threads. */
static void test_threads_measured_again_against_a_close_device(void **state)
{
    static const char *const models[2] = {
        "pi_leibniz.v2.w19\tcpu\t0\t3e5\t200\t100\npi_leibniz.v2.w19\t%s\t0\t1e5\t50000\t100\n",
        "pi_leibniz.v2.w19\tcpu\t0\t3e5\t200\t100\npi_leibniz.v2.w19\t%s\t0\t1.5e4\t50000\t100\n"};
    for (int m = 0; m < 2; m++) {
        char *d = model_dir();
        budget_log log = {0};
        tdm_runtime *rt = open_on_a_host_device_model(d, models[m], &log);
        tdm_report r = TDM_REPORT_INIT;
        pi_map_check(rt, TDM_POLICY_AUTO, 1000, 400000, 2e-5, TDM_MEM_HOST, &r);
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
        assert_int_equal(log.threads_again, m == 0 ? 1 : 0);
        /* (unseeded, they calibrate first, whichever side runs the rest; seeded, they explore
         * nothing) */
        if (m == 0)
            assert_true(log.thread_explores >= 1);
        else
            assert_int_equal(log.thread_explores, 0);
    }
}

/* A cold host-CPU device explores beside the threads first (tdm__beside_judge): one far
 * slower than them is judged there, and the threads never stand down for it (they did, for
 * its exploration alone: about 1 ms of a cold 40 ms map with both cores given to a device
 * hundreds of times slower, and the wake-ups after). The exploration ends once, before the
 * ladder's end (without a judge, a rung of 128 items or more lasting 0.8 ms: PoCL ran
 * exp_sinh beside the threads at 100-600 ns per item in some runs, 36 in others, where its
 * ladder ends at 65536 items, 87382 in all), and the device takes no more of the map. A cold map of
 * 8M items (about 20 ms on two threads: its budget beside them, twice 2% of that, holds the 1 to
 * 256-item rungs that judge PoCL; a map too short for them has the device explore alone, as
 * before). A run counts only when the device was judged beside the threads (its driver can
 * come in after the map's last batch, and the machine's load can leave it untold, when it
 * explores alone as before); up to 6 runs. Under a sanitizer the threads run many times
 * slower and PoCL (not instrumented) may read as near: only that the device did not take the
 * map is checked there. */
static void test_far_device_explores_beside_the_threads(void **state)
{
    budget_log log;
    tdm_report r;
    for (int attempt = 0; attempt < 6; attempt++) {
        char *d = model_dir();
        log = (budget_log){0};
        tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
        char key[200];
        if (!host_cpu_device(rt, key, sizeof key)) {
            tdm_runtime_close(rt);
            rm_dir(d);
            skip();
        }
        r = (tdm_report)TDM_REPORT_INIT;
        run_exp_sinh(rt, 1 << 23, TDM_MEM_HOST, &r);
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
        /* (a run where the device was not told beside the threads, its rungs slowed by the
         * machine's load, explored alone as before: run again) */
        if (log.beside_cut > 0 || (TDM_TEST_SANITIZED && log.explore_cut > 0))
            break;
    }
    assert_true(log.explore_cut >= 1);
    assert_true(items_of(&r, TDM_BACKEND_OPENCL) < (1 << 23) / 100);
    if (TDM_TEST_SANITIZED)
        return;
    assert_int_equal(log.explore_cut, 1);
    assert_int_equal(log.beside_cut, 1);
    assert_int_equal(log.thread_waits, 0);
    assert_true(items_of(&r, TDM_BACKEND_OPENCL) < 87382);
}

/* The cap is met before a batch would pass it, not after: the next batch is reckoned at the
 * last one's time per item. The ladder of exp_sinh on PoCL in a 22 ms map (a 440 us cap):
 * after 1, 4, 16, 64 and 256 items (about 130 us in all, the 256 taking 75 us), the next 1024
 * would take about 300 us more: it runs (the old rule, "stop once past the cap", ran it too);
 * after it (450 us in all) the cap is past. With a 300 us cap it does not run. */
static void test_exploration_stops_before_passing_its_cap(void **state)
{
    (void)state;
    assert_false(tdm__explore_stops(130e3, 256, 75e3, 1024, 440e3)); /* 130 + 300 < 440 */
    assert_true(tdm__explore_stops(130e3, 256, 75e3, 1024, 300e3));  /* 130 + 300 >= 300 */
    assert_true(tdm__explore_stops(450e3, 1024, 320e3, 4096, 440e3)); /* past it already */
    assert_false(tdm__explore_stops(450e3, 1024, 320e3, 0, 440e3));   /* calibrated: no next */
    assert_false(tdm__explore_stops(0, 1, 50e3, 4, INFINITY));        /* no cap (threads, GPUs) */
    assert_false(tdm__explore_stops(0, 0, 0, 4, 1.0));                /* nothing measured */
}

/* A host-CPU device 8x slower per item than the CPU threads together, or more, after a batch of
 * 64 items or more, ends its exploration at once when its budget is shorter than one batch
 * long enough to measure it (tdm__explore_hopeless): exp_sinh on PoCL in a 20 ms map read 80
 * ns per item after its 64-item batch, the two threads 1.35 together (59x), with a 0.4 ms
 * budget against 0.8 ms (16 fixed costs of 50 us); the ladder's 256 and 1024 would have run
 * with the threads waiting. Fewer items, a nearer figure, rates not known yet, or a budget
 * that can buy a clean batch (a long map: a cheap kernel's first batches are all launch
 * latency, and may read many times slower than the device runs): it goes on. */
static void test_exploration_ends_for_a_hopeless_device(void **state)
{
    (void)state;
    const double enough = tdm__explore_enough_ns(50e3, 4e6); /* a device: 800 us */
    assert_true(enough == 800e3);
    assert_true(tdm__explore_enough_ns(50e3, 100e3) == 100e3); /* at most a target */
    assert_true(tdm__explore_hopeless(64, 79.8, 1 / 1.35, 400e3, enough));
    assert_true(tdm__explore_hopeless(1024, 8.0, 1.0, 400e3, enough));  /* exactly 8x */
    assert_false(tdm__explore_hopeless(1024, 7.9, 1.0, 400e3, enough)); /* within 8x */
    assert_false(tdm__explore_hopeless(64, 79.8, 1 / 1.35, 800e3, enough)); /* budget enough */
    assert_false(tdm__explore_hopeless(64, 79.8, 1 / 1.35, INFINITY, enough)); /* no cap */
    assert_false(tdm__explore_hopeless(63, 1e4, 1.0, 400e3, enough)); /* too few items */
    assert_false(tdm__explore_hopeless(64, 0, 1.0, 400e3, enough));   /* no estimate yet */
    assert_false(tdm__explore_hopeless(64, 1e4, 0, 400e3, enough));   /* threads not calibrated */
    assert_false(tdm__explore_hopeless(64, INFINITY, 1.0, 400e3, enough));
    assert_false(tdm__explore_hopeless(64, 1e4, INFINITY, 400e3, enough));
    assert_false(tdm__explore_hopeless(64, NAN, 1.0, 400e3, enough));
}

/* LONG_ITEMS items of LONG_TERMS terms, a map the CPU threads need 1 s or more for (about 2.3 s
 * here), so that a runtime's first map of them opens the devices (tdm__device_open_bar). */
#define LONG_ITEMS 32000
#define LONG_TERMS 400000

/* An AUTO pi map of n items of `terms` terms on a fresh runtime (2 threads, every device
 * backend, nothing stored in dir); checks the result, fills r. Returns the devices the runtime
 * has (probed after the map). */
static int first_pi_map(const char *dir, budget_log *log, int64_t n, int64_t terms, tdm_report *r)
{
    tdm_runtime *rt = open_rt(dir, log, NULL, 2, 0);
    pi_map_check(rt, TDM_POLICY_AUTO, n, terms, 2.0 / (double)terms, TDM_MEM_HOST, r);
    int devices = tdm_runtime_device_count(rt);
    assert_int_equal(tdm_runtime_close(rt), 0);
    return devices;
}

/* A runtime's first map of a long kernel, nothing stored: it starts on the CPU threads, whose
 * first batches show they need 1 s or more for it (2.3 s here); the devices then open
 * in the background and the device joins this same map (PoCL in CI; without a device the open
 * finds none and the test is skipped). */
static void test_devices_join_a_long_first_map(void **state)
{
    budget_log log;
    tdm_report r;
    int devices = 0;
    /* (with a cold PoCL cache, the program's build outlasted the map and the device came in
     * after its last batch: the first run in a fresh ASan build did so; then it runs again) */
    for (int attempt = 0; attempt < 3; attempt++) {
        char *d = model_dir();
        log = (budget_log){0};
        r = (tdm_report)TDM_REPORT_INIT;
        devices = first_pi_map(d, &log, LONG_ITEMS, LONG_TERMS, &r);
        rm_dir(d);
        if (devices == 0 || items_of(&r, TDM_BACKEND_OPENCL) + items_of(&r, TDM_BACKEND_CUDA) > 0)
            break;
    }
    assert_int_equal(log.bg_asked, 1);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS) + items_of(&r, TDM_BACKEND_OPENCL) +
                         items_of(&r, TDM_BACKEND_CUDA),
                     LONG_ITEMS);
    if (devices == 0)
        skip();
    assert_true(items_of(&r, TDM_BACKEND_OPENCL) + items_of(&r, TDM_BACKEND_CUDA) > 0);
}

/* A long map the stored model opens the devices for (the CPU's figure says the threads need
 * the bar or more: 16000 items at 1.5e5 ns each on two threads, 1.2 s, about what they take
 * here) starts on the CPU threads, the devices open in the background, and a device joins that
 * same map (PoCL in CI), as in a first map with nothing stored. Before, such a map waited for
 * the open (70 ms for PoCL). */
static void test_devices_join_a_map_the_model_opened_them_for(void **state)
{
    (void)state;
    budget_log log;
    tdm_report r;
    enum { ITEMS = 16000 };
    /* (a cold PoCL cache can make the build outlast the map: then it runs again) */
    for (int attempt = 0; attempt < 3; attempt++) {
        char *d = model_dir();
        seed_model(d, "pi_leibniz.v2.w19\tcpu\t0\t1.5e5\t200\t100\n");
        log = (budget_log){0};
        r = (tdm_report)TDM_REPORT_INIT;
        tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
        pi_map_check(rt, TDM_POLICY_AUTO, ITEMS, LONG_TERMS, 2e-5, TDM_MEM_HOST, &r);
        assert_int_equal(tdm_runtime_close(rt), 0);
        rm_dir(d);
        if (log.bg_opened == 0 ||
            items_of(&r, TDM_BACKEND_OPENCL) + items_of(&r, TDM_BACKEND_CUDA) > 0)
            break;
    }
    assert_int_equal(log.bg_asked, 1);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS) + items_of(&r, TDM_BACKEND_OPENCL) +
                         items_of(&r, TDM_BACKEND_CUDA),
                     ITEMS);
    devices_opened_in_the_background(&log);
    assert_true(items_of(&r, TDM_BACKEND_OPENCL) + items_of(&r, TDM_BACKEND_CUDA) > 0);
}

/* Maps too short to pay for the devices' set-up leave them closed, and count toward it: on a
 * fresh runtime, AUTO pi maps of about 0.15 s each on two threads (nothing stored) leave the
 * devices closed, the first by its own first batches, the next ones by the CPU's figure the
 * first stored; once they come to the bar together (1 s of the CPU's work without a GPU's
 * device node, 100 ms with one), a map opens them, and a device takes part in it (PoCL in
 * CI). Before, a map of 0.1 s or more opened them, and a first pi map of 0.5 s took
 * 1.09-1.12x the time of the same map on the threads alone. */
static void test_short_maps_add_up_to_open_the_devices(void **state)
{
    (void)state;
    if (tdm__gpu_nodes("/dev"))
        skip(); /* (the bar is then 100 ms: the first map opens them) */
    char *d = model_dir();
    budget_log log = {0};
    tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
    int opened_at = -1, closed_before = 0;
    for (int m = 0; m < 40 && opened_at < 0; m++) {
        tdm_report r = TDM_REPORT_INIT;
        int closed = log.bg_closed;
        pi_map_check(rt, TDM_POLICY_AUTO, 2000, LONG_TERMS, 2e-5, TDM_MEM_HOST, &r);
        if (log.bg_asked > 0 || workers_of(&r, TDM_BACKEND_OPENCL) ||
            workers_of(&r, TDM_BACKEND_CUDA))
            opened_at = m;
        else
            closed_before += log.bg_closed > closed; /* (it said so) */
    }
    int devices = tdm_runtime_device_count(rt);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    if (devices == 0)
        skip();                  /* (nothing to open: the maps cannot show when they would have) */
    assert_true(opened_at >= 1); /* (one map, 0.15 s here: closed even 6x slower) */
    assert_int_equal(closed_before, opened_at); /* (each said so, then one opened them) */
}

/* A map refused for its options or arguments runs nothing, adds nothing to the runtime's count
 * toward the bar and opens no device: with the CPU's pi figure stored (a first short map), an
 * AUTO map with a negative batch size is refused, says nothing of the devices and leaves the
 * count as it was; so are maps long enough to open the devices at once (several seconds of
 * the CPU's work), refused for their batch size, their params_size or share caps that leave
 * items to no kind; the short map, valid,
 * leaves them closed and counts. Before, a map was counted, and the devices opened for it,
 * before its options and arguments were checked (an outside test: a refused map loaded PoCL). */
static void test_refused_map_adds_nothing_to_the_bar(void **state)
{
    (void)state;
    if (tdm__gpu_nodes("/dev"))
        skip(); /* (the bar is then 100 ms: the maps below might open the devices) */
    char *d = model_dir();
    budget_log log = {0};
    tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
    pi_map_check(rt, TDM_POLICY_AUTO, 200, LONG_TERMS, 2e-5, TDM_MEM_HOST, NULL);
    assert_int_equal(log.bg_asked, 0);
    int closed = log.bg_closed;
    long long count = atomic_load(&rt->closed_cpu_ns);
    int64_t n = 200;
    tdm_tensor *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    tdm_pi_params p = {LONG_TERMS};
    tdm_map_opts o = opts(TDM_POLICY_AUTO);
    o.batch_size = -5;
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &p, sizeof p, &o, NULL), TDM_EINVAL);
    assert_int_equal(log.bg_closed, closed);
    assert_true(atomic_load(&rt->closed_cpu_ns) == count);
    int64_t big = 400000; /* (about 40x the short map's 200 items' 0.1 s) */
    tdm_tensor *yb;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &big, TDM_MEM_HOST, &yb), 0);
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &yb, 1, &p, sizeof p, &o, NULL),
                     TDM_EINVAL);
    o.batch_size = 0;
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &yb, 1, &p, sizeof p - 1, &o, NULL),
                     TDM_EINVAL);
    tdm_map_opts oc = o; /* (caps that leave 40% to no kind, whatever devices there are) */
    oc.share_cap[TDM_BACKEND_CPU_THREADS] = 0.2;
    oc.share_cap[TDM_BACKEND_OPENCL] = 0.2;
    oc.share_cap[TDM_BACKEND_CUDA] = 0.2;
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &yb, 1, &p, sizeof p, &oc, NULL),
                     TDM_EINVAL);
    assert_null(atomic_load(&rt->devices));
    assert_int_equal(log.bg_closed, closed);
    assert_int_equal(log.bg_asked, 0);
    assert_true(atomic_load(&rt->closed_cpu_ns) == count);
    tdm_tensor_release(yb);
    assert_int_equal(tdm_map(rt, "pi_leibniz", NULL, 0, &y, 1, &p, sizeof p, &o, NULL), 0);
    assert_int_equal(log.bg_closed, closed + 1); /* (the stored model told, before the map) */
    assert_true(atomic_load(&rt->closed_cpu_ns) > count);
    assert_int_equal(log.bg_asked, 0);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
}

/* A GPU is told by its device node (tdm__gpu_nodes), read from a directory laid out as /dev:
 * none in an empty one, nor a card without a render node; NVIDIA's control node, AMD's compute
 * node, or a render node each say a GPU may be there. */
static void test_gpu_told_by_its_device_node(void **state)
{
    (void)state;
    char *d = model_dir();
    char p[512], dri[256];
    assert_false(tdm__gpu_nodes(d));
    snprintf(dri, sizeof dri, "%s/dri", d);
    assert_int_equal(mkdir(dri, 0700), 0);
    snprintf(p, sizeof p, "%s/card0", dri);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    assert_false(tdm__gpu_nodes(d));
    snprintf(p, sizeof p, "%s/renderD128", dri);
    assert_non_null(f = fopen(p, "w"));
    fclose(f);
    assert_true(tdm__gpu_nodes(d));
    unlink(p);
    snprintf(p, sizeof p, "%s/card0", dri);
    unlink(p);
    rmdir(dri);
    assert_false(tdm__gpu_nodes(d));
    static const char *const nodes[] = {"kfd", "nvidiactl", "nvidia0"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", d, nodes[i]);
        assert_non_null(f = fopen(p, "w"));
        fclose(f);
        assert_true(tdm__gpu_nodes(d));
        unlink(p);
    }
    assert_false(tdm__gpu_nodes("/nonexistent-tandem-dev"));
    rm_dir(d);
}

/* A device opening or building its program computes on the host's cores: while it does, the
 * last of the two CPU threads leaves it a core (the other goes on), so the set-up ends sooner.
 * Followed through the open, which runs whether or not it finds a device: from the thread's
 * "leaves a core" line to the line that ends the open, it takes no batch. The map's result is
 * whole either way. */
static void test_thread_leaves_a_core_to_a_device_set_up(void **state)
{
    (void)state;
    char *d = model_dir();
    budget_log log = {0};
    tdm_report r = TDM_REPORT_INIT;
    first_pi_map(d, &log, LONG_ITEMS, LONG_TERMS, &r);
    rm_dir(d);
    assert_int_equal(log.bg_asked, 1);
    assert_true(log.yields >= 1);
    assert_int_equal(log.yield_takes, 0);
    assert_int_equal(items_of(&r, TDM_BACKEND_CPU_THREADS) + items_of(&r, TDM_BACKEND_OPENCL) +
                         items_of(&r, TDM_BACKEND_CUDA),
                     LONG_ITEMS);
}

/* The runtime closes while the devices a map asked for are still opening in the background
 * (held up in the log line it writes when they are open, here, until 0.3 s after the close
 * began): the close waits for the open to end before it stops the pool the open hands its
 * drivers to (ASan would see the pool used after it was freed; nothing may hang). Then a second
 * runtime does the same map with its devices opening normally. */
static void *release_later(void *arg)
{
    usleep(300000);
    atomic_store(&((budget_log *)arg)->release, true);
    return NULL;
}

static void test_close_waits_for_a_background_open(void **state)
{
    char *d = model_dir();
    budget_log log = {.stall = true};
    tdm_report r = TDM_REPORT_INIT;
    /* (about 2.3 s of CPU on two threads: asks for the devices, and ends while the open is
     * held up, though one thread leaves the open a core all along) */
    tdm_runtime *rt = open_rt(d, &log, NULL, 2, 0);
    pi_map_check(rt, TDM_POLICY_AUTO, LONG_ITEMS, LONG_TERMS, 2e-5, TDM_MEM_HOST, &r);
    assert_int_equal(log.bg_asked, 1);
    assert_int_equal(r.items, LONG_ITEMS);
    assert_false(atomic_load(&log.stalled_out));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_later, &log), 0);
    assert_int_equal(tdm_runtime_close(rt), 0);
    bool waited = atomic_load(&log.stalled_out);
    pthread_join(t, NULL);
    assert_true(waited); /* (the close returned after the open's held-up line, not before) */
    budget_log again = {0};
    first_pi_map(d, &again, LONG_ITEMS, LONG_TERMS, &r);
    assert_int_equal(r.items, LONG_ITEMS);
    rm_dir(d);
}

/* Options shorter than tdm_map_opts (an older caller's) are refused with TDM_EINVAL, and
 * nothing reads past them first: here they end right before a page the process may not read,
 * so a read of a field they do not have (the share caps, keep_on_device, which the device
 * decision of an AUTO map on an empty model looks at) is a SIGSEGV, not a wrong value. */
static void test_short_opts_not_read_past(void **state)
{
    long page = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
    size_t short_size = offsetof(tdm_map_opts, batch_size); /* size, version and policy */
    tdm_map_opts *o = (tdm_map_opts *)(mem + page - short_size);
    o->size = (uint32_t)short_size;
    o->version = TDM_MAP_OPTS_VERSION;
    o->policy = TDM_POLICY_AUTO;
    char *d = model_dir();
    tdm_runtime *rt = open_rt(d, NULL, NULL, 2, 0);
    int64_t n = 1 << 16;
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y), 0);
    assert_int_equal(tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, o, NULL), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "opts size"));
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    assert_int_equal(tdm_runtime_close(rt), 0);
    rm_dir(d);
    munmap(mem, (size_t)page * 2);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_budget_threads_win_over_slower_processes),
        cmocka_unit_test(test_cpu_budget_faster_processes_run_the_map),
        cmocka_unit_test(test_cpu_budget_threads_and_processes_within_cores_add_up),
        cmocka_unit_test(test_cpu_budget_sides_measured_side_by_side),
        cmocka_unit_test(test_exploration_ladder_not_ended_by_a_slow_first_item),
        cmocka_unit_test(test_stale_stored_model_measured_afresh_and_forgotten),
        cmocka_unit_test(test_cpu_lane_held_back_by_a_stale_figure_checks_it),
        cmocka_unit_test(test_devices_left_closed_when_model_says_slower),
        cmocka_unit_test(test_devices_left_closed_by_the_figures_of_these_terms),
        cmocka_unit_test(test_devices_opened_for_a_close_call_not_settled),
        cmocka_unit_test(test_settled_close_call_opened_again_after_maps_without_it),
        cmocka_unit_test(test_far_figure_from_few_batches_opened_again),
        cmocka_unit_test(test_devices_left_closed_for_a_short_map),
        cmocka_unit_test(test_devices_opened_when_model_says_faster),
        cmocka_unit_test(test_devices_opened_for_a_map_that_computes_long),
        cmocka_unit_test(test_devices_join_a_map_the_model_opened_them_for),
        cmocka_unit_test(test_streamed_map_leaves_the_devices_closed),
        cmocka_unit_test(test_slower_device_gets_no_batch),
        cmocka_unit_test(test_standing_down_device_offered_the_map_at_most_every_5_ms),
        cmocka_unit_test(test_threads_measured_again_against_a_close_device),
        cmocka_unit_test(test_far_device_explores_beside_the_threads),
        cmocka_unit_test(test_exploration_stops_before_passing_its_cap),
        cmocka_unit_test(test_exploration_ends_for_a_hopeless_device),
        cmocka_unit_test(test_devices_join_a_long_first_map),
        cmocka_unit_test(test_thread_leaves_a_core_to_a_device_set_up),
        cmocka_unit_test(test_close_waits_for_a_background_open),
        cmocka_unit_test(test_short_maps_add_up_to_open_the_devices),
        cmocka_unit_test(test_refused_map_adds_nothing_to_the_bar),
        cmocka_unit_test(test_gpu_told_by_its_device_node),
        cmocka_unit_test(test_short_opts_not_read_past),
    };
    return TDM_TEST_MAIN("sched", tests);
}
