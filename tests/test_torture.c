/* SPDX-License-Identifier: MIT */
/* The torture suite for worker processes (CTest label "torture"): faults from outside, counted.
 *
 * Storms. Each case runs in a child that leads its own session, beside a canary process in
 * that session: the child opens a runtime with worker processes and runs parallel_fors while
 * a killer thread sends SIGKILL or SIGSTOP to workers or to the fork server every 1 ms and up
 * (so at every phase: before a submit, during a batch, after its completion, during a
 * restart), with batch size 1 or auto, retries 0 or many, deadlines on or off, and host
 * dispositions (SIGCHLD or SIGPIPE ignored). A pool whose fork server was lost is reopened.
 * Every call is checked item by item: lost (a call or report claims an item that is not
 * there), wrong (a value no attempt writes), duplicated (report.items above the call's size),
 * unexpected return codes. The test process is the watchdog (a case that overruns is a hang,
 * its session killed) and counts what the case left: processes in its session, descriptors and
 * memfds in the child after close, and the canary, which must neither die nor stop (nothing
 * outside the runtime's own processes was signalled; a kill(0) would take it).
 *
 * Injection. The test is linked with --wrap for fork, mmap, memfd_create, fallocate, sendmsg,
 * send, write and pwrite: for each, an operation runs again and again with the Nth call failing, for
 * N = 0, 1, 2, ... until a run makes fewer than N+1 calls (SQLite's fault-injection style).
 * Every outcome must be a success or a clean status code, with nothing leaked.
 *
 * Sizes: TDM_TORTURE_SCALE (a factor, default 1; 0.25 under sanitizers) scales the storms'
 * durations. Each case prints one line "torture <case>: faults ... lost 0 wrong 0 ..." that
 * scripts/torture.sh sums.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procs_util.h"
#include "tdm_test.h"

/* ---- syscall failure injection (--wrap) ---------------------------------------------------- */

enum { W_FORK, W_MMAP, W_MEMFD, W_FALLOCATE, W_SENDMSG, W_SEND, W_WRITE, W_N };
static const char *const w_names[W_N] = {"fork",    "mmap", "memfd_create", "fallocate",
                                         "sendmsg", "send", "write+pwrite"};

typedef struct {
    atomic_int armed[W_N];
    atomic_long seen[W_N], fail_at[W_N], fired[W_N];
    pid_t owner; /* only fork fails in other processes (the fork server's restarts) */
} tt_inject;

static tt_inject *g_inj;

pid_t __real_fork(void);
void *__real_mmap(void *a, size_t l, int p, int f, int fd, off_t o);
int __real_memfd_create(const char *n, unsigned f);
int __real_fallocate(int fd, int mode, off_t o, off_t l);
ssize_t __real_sendmsg(int s, const struct msghdr *m, int f);
ssize_t __real_send(int s, const void *b, size_t n, int f);
ssize_t __real_write(int fd, const void *b, size_t n);
ssize_t __real_pwrite(int fd, const void *b, size_t n, off_t o);

static bool inj_fail(int w)
{
    if (!g_inj || !atomic_load(&g_inj->armed[w]) || (w != W_FORK && getpid() != g_inj->owner))
        return false;
    if (atomic_fetch_add(&g_inj->seen[w], 1) != atomic_load(&g_inj->fail_at[w]))
        return false;
    atomic_fetch_add(&g_inj->fired[w], 1);
    return true;
}

pid_t __wrap_fork(void)
{
    if (inj_fail(W_FORK)) {
        errno = EAGAIN;
        return -1;
    }
    return __real_fork();
}
void *__wrap_mmap(void *a, size_t l, int p, int f, int fd, off_t o)
{
    if (inj_fail(W_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(a, l, p, f, fd, o);
}
int __wrap_memfd_create(const char *n, unsigned f)
{
    if (inj_fail(W_MEMFD)) {
        errno = EMFILE;
        return -1;
    }
    return __real_memfd_create(n, f);
}
int __wrap_fallocate(int fd, int mode, off_t o, off_t l)
{
    if (inj_fail(W_FALLOCATE)) {
        errno = ENOSPC;
        return -1;
    }
    return __real_fallocate(fd, mode, o, l);
}
ssize_t __wrap_sendmsg(int s, const struct msghdr *m, int f)
{
    if (inj_fail(W_SENDMSG)) {
        errno = ENOBUFS;
        return -1;
    }
    return __real_sendmsg(s, m, f);
}
ssize_t __wrap_send(int s, const void *b, size_t n, int f)
{
    if (inj_fail(W_SEND)) {
        errno = EPIPE;
        return -1;
    }
    return __real_send(s, b, n, f);
}
ssize_t __wrap_write(int fd, const void *b, size_t n)
{
    if (inj_fail(W_WRITE)) {
        errno = EIO;
        return -1;
    }
    return __real_write(fd, b, n);
}
ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t o)
{
    if (inj_fail(W_WRITE)) {
        errno = EIO;
        return -1;
    }
    return __real_pwrite(fd, b, n, o);
}

static void arm(int w, long n)
{
    atomic_store(&g_inj->seen[w], 0);
    atomic_store(&g_inj->fired[w], 0);
    atomic_store(&g_inj->fail_at[w], n);
    atomic_store(&g_inj->armed[w], 1);
}

static long disarm(int w)
{
    atomic_store(&g_inj->armed[w], 0);
    return atomic_load(&g_inj->fired[w]);
}

/* ---- scale ----------------------------------------------------------------------------------- */

static double scale(void)
{
    const char *v = getenv("TDM_TORTURE_SCALE");
    double s = v && *v ? atof(v) : 0;
    return s > 0 ? s : TDM_TEST_SANITIZED ? 0.25 : 1.0;
}

/* ---- what a case counts (shared with its child) -------------------------------------------- */

typedef struct {
    atomic_long calls, ok, failed, unexpected, lost, wrong, dup;
    atomic_long kills, stops, reopens;
    atomic_long leak_fds, leak_memfds, leak_procs, canary, caller_killed, hangs;
    char note[200];
} tt_counts;

/* ---- the body -------------------------------------------------------------------------------- */

typedef struct {
    int64_t *out;
    atomic_llong *runs; /* executions per item */
    int64_t round;
    int stall_us; /* a first attempt at some items stalls this long (deadlines) */
    int spin_us;  /* every batch works this long (kills land during batches) */
    int64_t crash_at; /* the first attempt at this item kills its worker (-1: none) */
} tt_params;

static int64_t tt_value(int64_t i, int64_t round)
{
    return (round << 32) + i + 1;
}

static int tt_body(const void *pv, int64_t begin, int64_t end, tdm_task *task)
{
    const tt_params *p = pv;
    for (int64_t i = begin; i < end; i++) {
        long long r = atomic_fetch_add(&p->runs[i], 1);
        if (i == p->crash_at && r == 0)
            raise(SIGKILL);
        if (p->stall_us && r == 0 && (i * 2654435761u + (uint64_t)p->round) % 97 == 0)
            usleep((useconds_t)p->stall_us);
        p->out[i] = tt_value(i, p->round);
    }
    if (p->spin_us) {
        double end_t = pu_now() + 1e-6 * p->spin_us;
        while (pu_now() < end_t) {
        }
    }
    (void)task;
    return 0;
}

/* Checks one call's outcome against its items. */
enum { MUST_SUCCEED, WORKER_FAILURE_OK, CLEAN_ERROR_OK };

static bool clean_code(int rc)
{
    return rc == 0 || rc == TDM_ESYS || rc == TDM_ENOMEM || rc == TDM_ENOSPC || rc == TDM_EIO ||
           rc == TDM_EWORKER;
}

static void tt_check(tt_counts *c, int rc, const tdm_report *r, const tt_params *p, int64_t n,
                     int mode, double timeout_s)
{
    atomic_fetch_add(&c->calls, 1);
    int64_t correct = 0, wrong = 0;
    for (int64_t i = 0; i < n; i++) {
        if (p->out[i] == tt_value(i, p->round))
            correct++;
        else if (p->out[i] != 0)
            wrong++;
    }
    atomic_fetch_add(&c->wrong, wrong);
    if (r->items > n)
        atomic_fetch_add(&c->dup, r->items - n);
    if (rc == 0) {
        atomic_fetch_add(&c->ok, 1);
        atomic_fetch_add(&c->lost, n - correct);
        if (r->items != n && r->items < n)
            atomic_fetch_add(&c->lost, n - r->items);
        return;
    }
    atomic_fetch_add(&c->failed, 1);
    if (r->items > correct)
        atomic_fetch_add(&c->lost, r->items - correct);
    bool expected = mode == CLEAN_ERROR_OK
                        ? clean_code(rc)
                        : mode == WORKER_FAILURE_OK &&
                              (rc == TDM_EWORKER || (timeout_s > 0 && rc == TDM_ETIMEDOUT));
    if (!expected) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "%s", tdm_status_name(rc));
    }
}

/* ---- storms ---------------------------------------------------------------------------------- */

enum { T_WORKERS, T_SERVER, T_NEW_WORKERS, T_MIXED };
enum { D_NONE, D_SIGCHLD_IGN, D_SIGPIPE_IGN };

typedef struct {
    const char *name;
    int procs;
    int64_t batch;    /* 0 auto */
    int retries;
    double timeout_s; /* 0 off */
    int target;       /* T_* */
    int sig;          /* SIGKILL or SIGSTOP */
    bool cont;        /* SIGCONT a stopped worker after 1-5 ms */
    int min_us, max_us;
    int disposition; /* D_* */
    double seconds;
} tt_case;

typedef struct {
    const tt_case *tc;
    tt_counts *c;
    pthread_mutex_t mu; /* held while reading server and signalling */
    pid_t server;       /* -1 while (re)opening or closing */
    atomic_int stop;
    unsigned seed;
} tt_killer;

static void *killer_main(void *arg)
{
    tt_killer *k = arg;
    const tt_case *tc = k->tc;
    pid_t seen[64] = {0};
    int n_seen = 0;
    while (!atomic_load(&k->stop)) {
        pthread_mutex_lock(&k->mu);
        pid_t server = k->server, w[16];
        int n = server > 0 ? pu_children(server, w, NULL, 16) : 0;
        pid_t victim = -1;
        if ((tc->target == T_SERVER || (tc->target == T_MIXED && rand_r(&k->seed) % 16 == 0)) &&
            server > 0) {
            victim = server; /* (mixed: now and then, while workers die and restart) */
        } else if (tc->target == T_NEW_WORKERS) {
            /* a worker seen for the first time (just restarted), or now and then any */
            for (int i = 0; i < n && victim < 0; i++) {
                bool old = false;
                for (int j = 0; j < n_seen && j < 64; j++)
                    old = old || seen[j] == w[i];
                if (!old) {
                    seen[n_seen++ % 64] = w[i];
                    if (rand_r(&k->seed) % 2)
                        victim = w[i];
                }
            }
            if (victim < 0 && n > 0 && rand_r(&k->seed) % 4 == 0)
                victim = w[rand_r(&k->seed) % n];
        } else if (n > 0) {
            victim = w[rand_r(&k->seed) % n];
        }
        if (victim > 0 && kill(victim, tc->sig) == 0)
            atomic_fetch_add(tc->sig == SIGSTOP ? &k->c->stops : &k->c->kills, 1);
        pthread_mutex_unlock(&k->mu);
        if (victim > 0 && tc->sig == SIGSTOP && tc->cont && victim != server) {
            usleep(1000 + (useconds_t)(rand_r(&k->seed) % 4000));
            kill(victim, SIGCONT);
        }
        int span = tc->max_us - tc->min_us;
        usleep((useconds_t)(tc->min_us + (span > 0 ? rand_r(&k->seed) % span : 0)));
    }
    return NULL;
}

static tdm_runtime *case_open(const tt_case *tc, tt_killer *k, pid_t canary)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.procs = tc->procs;
    tdm_runtime *rt = NULL;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return NULL;
    pid_t kids[8];
    int n = pu_children(getpid(), kids, NULL, 8);
    pthread_mutex_lock(&k->mu);
    for (int i = 0; i < n; i++)
        if (kids[i] != canary && pu_state(kids[i]) != 'Z')
            k->server = kids[i];
    pthread_mutex_unlock(&k->mu);
    return rt;
}

static void case_close(tdm_runtime *rt, tt_killer *k, tt_counts *c)
{
    pthread_mutex_lock(&k->mu);
    pid_t server = k->server;
    k->server = -1;
    pthread_mutex_unlock(&k->mu);
    /* a stopped worker holds no batch now; let the close see it go quickly */
    pid_t w[16];
    int n = server > 0 ? pu_children(server, w, NULL, 16) : 0;
    for (int i = 0; i < n; i++)
        kill(w[i], SIGCONT);
    if (tdm_runtime_close(rt) != 0) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "close: %s", tdm_errmsg(rt));
    }
}

/* The case's child: returns its exit code (counts are in c). */
static int case_main(const tt_case *tc, tt_counts *c)
{
    pid_t canary = fork();
    if (canary == 0) {
        for (;;)
            pause();
    }
    if (tc->disposition == D_SIGCHLD_IGN)
        signal(SIGCHLD, SIG_IGN);
    if (tc->disposition == D_SIGPIPE_IGN)
        signal(SIGPIPE, SIG_IGN);
    int fds0 = pu_fds(""), memfds0 = pu_fds("/memfd:");
    tt_killer k = {tc, c, PTHREAD_MUTEX_INITIALIZER, -1, 0, 1234u + (unsigned)getpid()};
    tdm_runtime *rt = case_open(tc, &k, canary);
    if (!rt)
        return 10;
    pthread_t th;
    if (pthread_create(&th, NULL, killer_main, &k) != 0)
        return 11;
    int64_t cap = 4096;
    unsigned seed = 99u + (unsigned)getpid();
    double end = pu_now() + tc->seconds * scale();
    for (int64_t round = 1; pu_now() < end; round++) {
        tdm_tensor *out = NULL, *runs = NULL;
        if (tdm_tensor_zeros(rt, TDM_I64, 1, &cap, TDM_MEM_SHARED, &out) != 0 ||
            tdm_tensor_zeros(rt, TDM_I64, 1, &cap, TDM_MEM_SHARED, &runs) != 0) {
            atomic_fetch_add(&c->unexpected, 1);
            snprintf(c->note, sizeof c->note, "tensor: %s", tdm_errmsg(rt));
            tdm_tensor_release(out);
            break;
        }
        int64_t n = 64 + (int64_t)(rand_r(&seed) % (unsigned)(cap - 64));
        tt_params p = {tdm_tensor_data(out), tdm_tensor_data(runs), round,
                       tc->timeout_s > 0 ? (int)(tc->timeout_s * 2e6) : 0, 20, -1};
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.policy = TDM_POLICY_PROCS;
        o.batch_size = tc->batch;
        o.retries = tc->retries;
        o.timeout_s = tc->timeout_s;
        o.on_error = round % 2 ? TDM_ON_ERROR_CONTINUE : TDM_ON_ERROR_STOP;
        tdm_report r = TDM_REPORT_INIT;
        int rc = tdm_parallel_for(rt, n, tt_body, &p, sizeof p, &o, &r);
        bool lost_pool = rc == TDM_EWORKER && strstr(tdm_errmsg(rt), "fork server");
        bool may_fail = tc->retries == 0 || tc->target == T_SERVER || lost_pool;
        tt_check(c, rc, &r, &p, n, may_fail ? WORKER_FAILURE_OK : MUST_SUCCEED, tc->timeout_s);
        tdm_tensor_release(out);
        tdm_tensor_release(runs);
        if (lost_pool) {
            case_close(rt, &k, c);
            atomic_fetch_add(&c->reopens, 1);
            if (!(rt = case_open(tc, &k, canary)))
                return 12;
        }
    }
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);
    case_close(rt, &k, c);
    /* what the runtime left in this process */
    int leftover = 0;
    for (int i = 0; i < 2000; i++) {
        pid_t kids[8];
        char st[8];
        int n = pu_children(getpid(), kids, st, 8);
        leftover = 0;
        for (int j = 0; j < n; j++)
            leftover += kids[j] != canary;
        if (!leftover)
            break;
        usleep(1000);
    }
    atomic_fetch_add(&c->leak_procs, leftover);
    atomic_fetch_add(&c->leak_fds, pu_fds("") != fds0);
    atomic_fetch_add(&c->leak_memfds, pu_fds("/memfd:") - memfds0);
    char cs = pu_state(canary);
    if (cs != 'S' && cs != 'R')
        atomic_fetch_add(&c->canary, 1);
    kill(canary, SIGKILL);
    waitpid(canary, NULL, 0);
    return 0;
}

/* Processes of session sid that are not zombies. */
static int session_procs(pid_t sid, bool kill_them)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        char *rp = strrchr(buf, ')');
        char st;
        int ppid, pgrp, session;
        if (rp && sscanf(rp + 1, " %c %d %d %d", &st, &ppid, &pgrp, &session) == 4 &&
            session == sid && st != 'Z' && st != 'X') {
            n++;
            if (kill_them)
                kill(atoi(e->d_name), SIGKILL);
        }
    }
    if (d)
        closedir(d);
    return n;
}

static void report_case(const char *name, const tt_counts *c, long injected)
{
    long faults = atomic_load(&c->kills) + atomic_load(&c->stops) + injected;
    printf("torture %s: faults %ld (kills %ld, stops %ld, injected %ld), calls %ld (ok %ld, "
           "failed %ld, reopened %ld), lost %ld wrong %ld dup %ld unexpected %ld hangs %ld "
           "leaks %ld/%ld/%ld canary %ld caller_killed %ld%s%s\n",
           name, faults, atomic_load(&c->kills), atomic_load(&c->stops), injected,
           atomic_load(&c->calls), atomic_load(&c->ok), atomic_load(&c->failed),
           atomic_load(&c->reopens), atomic_load(&c->lost), atomic_load(&c->wrong),
           atomic_load(&c->dup), atomic_load(&c->unexpected), atomic_load(&c->hangs),
           atomic_load(&c->leak_procs), atomic_load(&c->leak_fds), atomic_load(&c->leak_memfds),
           atomic_load(&c->canary), atomic_load(&c->caller_killed), c->note[0] ? ": " : "",
           c->note);
    fflush(stdout);
}

static void assert_clean(const tt_counts *c)
{
    assert_int_equal(atomic_load(&c->lost), 0);
    assert_int_equal(atomic_load(&c->wrong), 0);
    assert_int_equal(atomic_load(&c->dup), 0);
    assert_int_equal(atomic_load(&c->unexpected), 0);
    assert_int_equal(atomic_load(&c->hangs), 0);
    assert_int_equal(atomic_load(&c->leak_procs), 0);
    assert_int_equal(atomic_load(&c->leak_fds), 0);
    assert_int_equal(atomic_load(&c->leak_memfds), 0);
    assert_int_equal(atomic_load(&c->canary), 0);
    assert_int_equal(atomic_load(&c->caller_killed), 0);
}

static void run_case(const tt_case *tc)
{
    tt_counts *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(c != MAP_FAILED);
    memset(c, 0, sizeof *c);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setsid();
        _exit(case_main(tc, c));
    }
    /* the watchdog: the case's storm, plus time to close and check */
    double limit = pu_now() + tc->seconds * scale() + 60;
    int st = 0;
    pid_t got;
    while ((got = waitpid(child, &st, WNOHANG)) == 0 && pu_now() < limit)
        usleep(5000);
    if (got == 0) {
        atomic_fetch_add(&c->hangs, 1);
        kill(-child, SIGKILL);
        waitpid(child, &st, 0);
    } else if (WIFSIGNALED(st)) {
        atomic_fetch_add(&c->caller_killed, 1);
    } else if (WEXITSTATUS(st) != 0) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "case exited %d", WEXITSTATUS(st));
    }
    /* nothing of the session may outlive it (workers of a killed server die with it) */
    int left = 0;
    for (int i = 0; i < 200 && (left = session_procs(child, false)) > 0; i++)
        usleep(10000);
    if (left)
        session_procs(child, true);
    atomic_fetch_add(&c->leak_procs, left);
    report_case(tc->name, c, 0);
    tt_counts copy;
    memcpy(&copy, c, sizeof copy);
    munmap(c, sizeof *c);
    assert_clean(&copy);
}

#define CASE(fn, ...)                                                                              \
    static void test_##fn(void **state)                                                            \
    {                                                                                              \
        static const tt_case tc = {#fn, __VA_ARGS__};                                              \
        run_case(&tc);                                                                             \
    }

/*   name                          procs batch retries timeout target     sig   cont  min max   disp      s */
CASE(workers_sigkill_bs1_retries,     4, 1, 1000, 0,    T_WORKERS, SIGKILL, false, 1000, 3000, D_NONE, 3.0)
CASE(workers_sigkill_auto_deadline,   3, 0, 1000, 0.5,  T_WORKERS, SIGKILL, false, 1000, 5000, D_NONE, 3.0)
CASE(workers_sigkill_bs1_no_retries,  2, 1, 0,    0,    T_WORKERS, SIGKILL, false, 2000, 8000, D_NONE, 1.5)
CASE(workers_sigstop_cont,            3, 1, 1000, 0,    T_WORKERS, SIGSTOP, true,  1000, 4000, D_NONE, 1.5)
CASE(workers_sigstop_deadline,        2, 1, 1000, 0.05, T_WORKERS, SIGSTOP, false, 5000, 20000, D_NONE, 1.5)
CASE(new_workers_sigkill_in_restart,  3, 1, 1000, 0,    T_NEW_WORKERS, SIGKILL, false, 1000, 2000, D_NONE, 2.0)
CASE(server_sigkill,                  2, 1, 3,    0,    T_SERVER,  SIGKILL, false, 20000, 150000, D_NONE, 2.0)
CASE(server_sigstop,                  2, 0, 3,    0.5,  T_SERVER,  SIGSTOP, false, 20000, 150000, D_NONE, 2.0)
CASE(sigchld_ignored_workers_sigkill, 3, 1, 1000, 0,    T_WORKERS, SIGKILL, false, 1000, 3000, D_SIGCHLD_IGN, 1.5)
CASE(mixed_workers_and_server_sigkill, 3, 1, 1000, 0,    T_MIXED,   SIGKILL, false, 1000, 4000, D_NONE, 2.0)
CASE(sigpipe_ignored_server_sigkill,  2, 0, 3,    0.5,  T_SERVER,  SIGKILL, false, 10000, 80000, D_SIGPIPE_IGN, 1.5)

/* ---- injection ------------------------------------------------------------------------------ */

static tdm_runtime *inj_open(int procs, int *rc)
{
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.use_env = 0;
    cfg.threads = 1;
    cfg.procs = procs;
    tdm_runtime *rt = NULL;
    *rc = tdm_runtime_open(&rt, &cfg);
    return rt;
}

/* One run of the operation for syscall w with its Nth call failing: open, shared tensors, a
 * map in worker processes whose first attempt at one item kills its worker (so a restart
 * happens), an export and import, a save and load; every step's result checked. */
static void inj_operation(int w, tt_counts *c, unsigned seed)
{
    int rc;
    tdm_runtime *rt = inj_open(2, &rc);
    if (!clean_code(rc) || (rc != 0) != (rt == NULL)) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "%s: open gave %s", w_names[w], tdm_status_name(rc));
    }
    if (!rt)
        return;
    int64_t n = 256;
    tdm_tensor *out = NULL, *runs = NULL;
    rc = tdm_tensor_zeros(rt, TDM_I64, 1, &n, TDM_MEM_SHARED, &out);
    if (rc == 0)
        rc = tdm_tensor_zeros(rt, TDM_I64, 1, &n, TDM_MEM_SHARED, &runs);
    if (rc == 0) {
        /* item 100's first attempt kills its worker: a restart (fork in the server, send
         * here), which the retries must absorb whatever fails on the way */
        tt_params p = {tdm_tensor_data(out), tdm_tensor_data(runs), 1, 0, 0, 100};
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.progress = TDM_PROGRESS_OFF;
        o.policy = TDM_POLICY_PROCS;
        o.batch_size = 1 + (int64_t)(seed % 16);
        o.retries = 3;
        tdm_report r = TDM_REPORT_INIT;
        /* a fork that fails in the server is a failed restart: retries absorb it */
        int mode = w == W_FORK ? MUST_SUCCEED : CLEAN_ERROR_OK;
        rc = tdm_parallel_for(rt, n, tt_body, &p, sizeof p, &o, &r);
        tt_check(c, rc, &r, &p, n, mode, 0);
        r = (tdm_report)TDM_REPORT_INIT; /* (a call refused up front leaves it as it is) */
        /* after a failure the pool may be gone; the next call says so, or works */
        memset(p.out, 0, (size_t)n * sizeof(int64_t));
        p.round = 2;
        rc = tdm_parallel_for(rt, n, tt_body, &p, sizeof p, &o, &r);
        tt_check(c, rc, &r, &p, n, mode, 0);
        /* export, import, release on either side */
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
            tdm_tensor *imp = NULL;
            rc = tdm_tensor_export(out, sv[0]);
            if (rc == 0)
                rc = tdm_tensor_import(rt, sv[1], &imp);
            if (!clean_code(rc)) {
                atomic_fetch_add(&c->unexpected, 1);
                snprintf(c->note, sizeof c->note, "%s: export/import %s", w_names[w],
                         tdm_status_name(rc));
            }
            if (imp) {
                if (seed % 2) {
                    tdm_tensor_release(out);
                    out = NULL;
                }
                const int64_t *d = tdm_tensor_data(imp);
                const int64_t *o2 = out ? tdm_tensor_data(out) : NULL;
                for (int64_t i = 0; i < n; i++)
                    if (d[i] != (o2 ? o2[i] : d[i]))
                        atomic_fetch_add(&c->wrong, 1);
                tdm_tensor_release(imp);
            }
            close(sv[0]);
            close(sv[1]);
        }
        /* save and load through write() */
        char path[64];
        snprintf(path, sizeof path, "/tmp/tdm_torture_%d.npy", (int)getpid());
        if (out && (rc = tdm_save(out, path, NULL)) == 0) {
            tdm_tensor *back = NULL;
            if (tdm_load(rt, path, NULL, &back) == 0) {
                if (memcmp(tdm_tensor_data(back), tdm_tensor_data(out),
                           (size_t)n * sizeof(int64_t)) != 0)
                    atomic_fetch_add(&c->wrong, 1);
                tdm_tensor_release(back);
            }
        } else if (out && !clean_code(rc)) {
            atomic_fetch_add(&c->unexpected, 1);
            snprintf(c->note, sizeof c->note, "%s: save %s", w_names[w], tdm_status_name(rc));
        }
        unlink(path);
    } else if (!clean_code(rc)) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "%s: tensor %s", w_names[w], tdm_status_name(rc));
    }
    tdm_tensor_release(out);
    tdm_tensor_release(runs);
    rc = tdm_runtime_close(rt);
    if (rc != 0) {
        atomic_fetch_add(&c->unexpected, 1);
        snprintf(c->note, sizeof c->note, "%s: close %s", w_names[w], tdm_status_name(rc));
    }
}

/* Fails the Nth call of w for N = 0, 1, ... until a run makes fewer calls than N + 1. */
static void run_injection(int w)
{
    alarm(240);
    tt_counts c;
    memset(&c, 0, sizeof c);
    int kids = pu_children(getpid(), NULL, NULL, 64), fds = pu_fds(""), memfds = pu_fds("/memfd:");
    long injected = 0;
    for (long nth = 0; nth < 100000; nth++) {
        arm(w, nth);
        inj_operation(w, &c, (unsigned)nth);
        long fired = disarm(w);
        injected += fired;
        int k = 0;
        for (int i = 0; i < 2000 && (k = pu_children(getpid(), NULL, NULL, 64)) != kids; i++)
            usleep(1000);
        if (k != kids)
            c.leak_procs += k - kids;
        if (pu_fds("") != fds)
            c.leak_fds++;
        if (pu_fds("/memfd:") != memfds)
            c.leak_memfds++;
        if (!fired || c.leak_procs || c.leak_fds || c.leak_memfds || c.unexpected)
            break;
    }
    char name[64];
    snprintf(name, sizeof name, "inject_%s", w_names[w]);
    report_case(name, &c, injected);
    assert_true(injected > 0);
    assert_clean(&c);
    alarm(0);
}

static void test_inject_fork(void **state)
{
    run_injection(W_FORK);
}
static void test_inject_mmap(void **state)
{
    run_injection(W_MMAP);
}
static void test_inject_memfd_create(void **state)
{
    run_injection(W_MEMFD);
}
static void test_inject_fallocate(void **state)
{
    run_injection(W_FALLOCATE);
}
static void test_inject_sendmsg(void **state)
{
    run_injection(W_SENDMSG);
}
static void test_inject_send(void **state)
{
    run_injection(W_SEND);
}
static void test_inject_write(void **state)
{
    run_injection(W_WRITE);
}

int main(int argc, char **argv)
{
    g_inj = __real_mmap(NULL, sizeof *g_inj, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
    if (g_inj == MAP_FAILED)
        return 1;
    memset(g_inj, 0, sizeof *g_inj);
    g_inj->owner = getpid();
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_sigkill_bs1_retries),
        cmocka_unit_test(test_workers_sigkill_auto_deadline),
        cmocka_unit_test(test_workers_sigkill_bs1_no_retries),
        cmocka_unit_test(test_workers_sigstop_cont),
        cmocka_unit_test(test_workers_sigstop_deadline),
        cmocka_unit_test(test_new_workers_sigkill_in_restart),
        cmocka_unit_test(test_server_sigkill),
        cmocka_unit_test(test_server_sigstop),
        cmocka_unit_test(test_sigchld_ignored_workers_sigkill),
        cmocka_unit_test(test_mixed_workers_and_server_sigkill),
        cmocka_unit_test(test_sigpipe_ignored_server_sigkill),
        cmocka_unit_test(test_inject_fork),
        cmocka_unit_test(test_inject_mmap),
        cmocka_unit_test(test_inject_memfd_create),
        cmocka_unit_test(test_inject_fallocate),
        cmocka_unit_test(test_inject_sendmsg),
        cmocka_unit_test(test_inject_send),
        cmocka_unit_test(test_inject_write),
    };
    /* clang-format on */
    return TDM_TEST_MAIN("torture", tests);
}
