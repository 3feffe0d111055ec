/* SPDX-License-Identifier: MIT */
/* Worker processes: the worker-start hook (tdm_config.worker_start) runs once in every worker
 * process, the first ones and each replacement, before its first batch, in the process that
 * then runs the batches; a config built before the hook existed opens without one. */
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include "procs_util.h"
#include "tdm_test.h"

enum { MAX_WORKERS = 4, MAX_CALLS = 16 };

/* Written by the hook in the workers: anonymous shared memory mapped before open, so the fork
 * server and every worker (forked from it) write into the test's own pages. */
typedef struct {
    atomic_int calls;
    atomic_int written; /* calls whose fields below are written */
    pid_t pid[MAX_CALLS];  /* the process of call i */
    int worker[MAX_CALLS]; /* the index it was given */
    unsigned long arg[MAX_CALLS];
    atomic_int batches_before; /* batches that ran in a process whose hook had not run */
} hook_log;

static hook_log *g_log;
static pid_t g_hooked_pid; /* in a worker: its own pid once the hook ran (its private copy) */

static void start_hook(void *arg, int worker)
{
    int i = atomic_fetch_add(&g_log->calls, 1);
    if (i < MAX_CALLS) {
        g_log->pid[i] = getpid();
        g_log->worker[i] = worker;
        g_log->arg[i] = (unsigned long)(uintptr_t)arg;
        atomic_fetch_add(&g_log->written, 1);
    }
    g_hooked_pid = getpid();
}

static hook_log *log_map(void)
{
    void *m =
        mmap(NULL, sizeof(hook_log), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    memset(m, 0, sizeof(hook_log));
    return m;
}

typedef struct {
    int64_t *pid_of_item; /* in a shared tensor */
    int64_t *worker_of_item;
    int kill_item; /* -1: none; else the first attempt at this item kills its worker */
    atomic_int *tries;
} body_params;

static int body(const void *pv, int64_t begin, int64_t end, tdm_task *task)
{
    const body_params *p = pv;
    if (g_hooked_pid != getpid())
        atomic_fetch_add(&g_log->batches_before, 1);
    for (int64_t i = begin; i < end; i++) {
        if (i == p->kill_item && atomic_fetch_add(p->tries, 1) == 0)
            raise(SIGKILL);
        p->pid_of_item[i] = getpid();
        p->worker_of_item[i] = tdm_task_worker(task);
    }
    return 0;
}

static tdm_runtime *open_hooked(int procs, uint32_t size, void *arg)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.procs = procs;
    cfg.worker_start = start_hook;
    cfg.worker_start_arg = arg;
    if (size)
        cfg.size = size;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    return rt;
}

/* Runs n items one per batch in the processes; returns the status. */
static int run_items(tdm_runtime *rt, int64_t n, tdm_tensor *pids, tdm_tensor *workers,
                     int kill_item, atomic_int *tries, int retries)
{
    body_params p = {tdm_tensor_data(pids), tdm_tensor_data(workers), kill_item, tries};
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = TDM_POLICY_PROCS;
    o.batch_size = 1;
    o.retries = retries;
    return tdm_parallel_for(rt, n, body, &p, sizeof p, &o, NULL);
}

/* Waits up to 10 s for n calls of the hook to be logged; returns how many were. The hook runs
 * in each worker after its fork whether or not the worker is handed a batch, but open does not
 * wait for it: a worker the scheduler left idle (on a loaded machine its driver can wake after
 * the other worker ran all 64 one-item batches: seen once in CI under ASan) calls it later. */
static int await_calls(int n)
{
    for (int ms = 0; ms < 10000 && atomic_load(&g_log->written) < n; ms++)
        usleep(1000);
    return atomic_load(&g_log->written);
}

/* The index the hook got for the process `pid`, or -1 if the hook never ran there. */
static int hooked_worker(pid_t pid)
{
    int n = atomic_load(&g_log->written);
    for (int i = 0; i < n && i < MAX_CALLS; i++)
        if (g_log->pid[i] == pid)
            return g_log->worker[i];
    return -1;
}

static void test_worker_start_runs_in_each_worker(void **state)
{
    (void)state;
    g_log = log_map();
    tdm_runtime *rt = open_hooked(2, 0, (void *)(uintptr_t)0x5eed);
    int threads = tdm_runtime_threads(rt);
    tdm_tensor *pids, *workers;
    const int64_t n = 64;
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){n}, TDM_MEM_SHARED, &pids), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){n}, TDM_MEM_SHARED, &workers), 0);
    assert_int_equal(run_items(rt, n, pids, workers, -1, NULL, 0), 0);
    /* once per worker, never in this process */
    assert_int_equal(await_calls(2), 2);
    usleep(20000); /* (a third call, were there one, would have time to show) */
    assert_int_equal(atomic_load(&g_log->calls), 2);
    assert_int_not_equal(g_log->pid[0], g_log->pid[1]);
    assert_int_not_equal(g_log->worker[0], g_log->worker[1]);
    for (int i = 0; i < 2; i++) {
        assert_int_not_equal(g_log->pid[i], getpid());
        assert_int_equal(g_log->arg[i], 0x5eed);
    }
    /* each batch ran in a process whose hook had run, under the index the hook was given */
    const int64_t *pid = tdm_tensor_data(pids), *wk = tdm_tensor_data(workers);
    for (int64_t i = 0; i < n; i++) {
        int k = hooked_worker((pid_t)pid[i]);
        assert_int_not_equal(k, -1);
        assert_int_equal(wk[i], threads + k);
    }
    assert_int_equal(atomic_load(&g_log->batches_before), 0);
    tdm_tensor_release(pids);
    tdm_tensor_release(workers);
    tdm_test_close(rt);
    munmap(g_log, sizeof *g_log);
}

/* A worker killed in a batch is replaced; the replacement runs the hook before the retried
 * batch. */
static void test_worker_start_runs_in_replacement(void **state)
{
    (void)state;
    g_log = log_map();
    atomic_int *tries =
        mmap(NULL, sizeof(atomic_int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(tries != MAP_FAILED);
    atomic_init(tries, 0);
    tdm_runtime *rt = open_hooked(1, 0, NULL);
    tdm_tensor *pids, *workers;
    const int64_t n = 8;
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){n}, TDM_MEM_SHARED, &pids), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){n}, TDM_MEM_SHARED, &workers), 0);
    assert_int_equal(run_items(rt, n, pids, workers, 3, tries, 1), 0);
    assert_int_equal(atomic_load(tries), 2);
    assert_int_equal(await_calls(2), 2); /* the first worker, its replacement */
    assert_int_equal(atomic_load(&g_log->calls), 2);
    assert_int_not_equal(g_log->pid[0], g_log->pid[1]);
    assert_int_equal(g_log->worker[0], 0);
    assert_int_equal(g_log->worker[1], 0);
    const int64_t *pid = tdm_tensor_data(pids);
    assert_int_equal(pid[3], g_log->pid[1]); /* the retried item ran in the replacement */
    assert_int_equal(atomic_load(&g_log->batches_before), 0);
    tdm_tensor_release(pids);
    tdm_tensor_release(workers);
    tdm_test_close(rt);
    munmap(tries, sizeof *tries);
    munmap(g_log, sizeof *g_log);
}

/* A caller compiled before the hook was appended passes a smaller size: the fields past it
 * are not read, whatever the memory there holds. */
static void test_worker_start_absent_in_older_config(void **state)
{
    (void)state;
    g_log = log_map();
    tdm_runtime *rt = open_hooked(1, (uint32_t)offsetof(tdm_config, worker_start), NULL);
    tdm_tensor *pids, *workers;
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){4}, TDM_MEM_SHARED, &pids), 0);
    assert_int_equal(tdm_tensor_empty(rt, TDM_I64, 1, (int64_t[]){4}, TDM_MEM_SHARED, &workers), 0);
    assert_int_equal(run_items(rt, 4, pids, workers, -1, NULL, 0), 0);
    assert_int_equal(atomic_load(&g_log->calls), 0);
    tdm_tensor_release(pids);
    tdm_tensor_release(workers);
    tdm_test_close(rt);
    munmap(g_log, sizeof *g_log);
}

/* A hook that kills its worker: the worker is lost as if it crashed. Depending on when the
 * death is seen, open fails (TDM_ESYS, naming the worker) or the batches that need the worker
 * fail with TDM_EWORKER, retries included; nothing hangs and no process is left behind. */
static void crash_hook(void *arg, int worker)
{
    (void)arg;
    (void)worker;
    raise(SIGKILL);
}

static int children(void)
{
    pid_t kids[64];
    return pu_children(getpid(), kids, NULL, 64);
}

static int nop_body(const void *p, int64_t begin, int64_t end, tdm_task *task)
{
    (void)p;
    (void)begin;
    (void)end;
    (void)task;
    return 0;
}

static void test_worker_start_crash_loses_worker(void **state)
{
    (void)state;
    int before = children();
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.procs = 1;
    cfg.worker_start = crash_hook;
    tdm_runtime *rt = NULL;
    int rc = tdm_runtime_open(&rt, &cfg);
    if (rc < 0) {
        if (rc != TDM_ESYS || rt || !strstr(tdm_errmsg(NULL), "worker"))
            fail_msg("open: %s (%d): %s", tdm_status_name(rc), rc, tdm_errmsg(NULL));
    } else {
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.policy = TDM_POLICY_PROCS;
        o.retries = 2;
        int prc = tdm_parallel_for(rt, 4, nop_body, NULL, 0, &o, NULL);
        const char *msg = tdm_errmsg(rt);
        /* The death is named (SIGKILL), or, when a replacement died before it was seen
         * ready, the worker that could not be restarted: either way the worker. */
        if (prc != TDM_EWORKER || !strstr(msg, "worker"))
            fail_msg("parallel_for: %s (%d): %s", tdm_status_name(prc), prc, msg);
        tdm_test_close(rt);
    }
    for (int i = 0; i < 200 && children() != before; i++)
        usleep(10000); /* only waits for /proc to show the reaped processes gone */
    assert_int_equal(children(), before);
}

int main(int argc, char **argv)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_start_runs_in_each_worker),
        cmocka_unit_test(test_worker_start_runs_in_replacement),
        cmocka_unit_test(test_worker_start_absent_in_older_config),
        cmocka_unit_test(test_worker_start_crash_loses_worker),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("procs", tests);
}
