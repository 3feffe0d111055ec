/* The worker-process backend: a persistent pool of forked workers that run batches from job
 * descriptors in the shared arena.
 *
 * Processes:
 *   parent ── fork at open ──> fork server ── fork ──> worker 0 .. worker n-1
 * The fork server is forked while the runtime has no thread yet and stays single-threaded, so
 * every worker — the first ones and each replacement after a crash — is a clean fork of the
 * program as it was at open, whatever threads the parent has started since. It reaps the
 * workers and writes how each one ended into its slot. It exits (killing its workers) when the
 * parent closes the runtime or dies: both close its request socket.
 *
 * Hand-off: one slot per worker in a MAP_SHARED page made before the fork. The pool thread
 * that drives worker k writes the batch (descriptor pointer, items) into slot k, sets its state
 * to SUBMITTED and wakes it with a futex; the worker runs the batch straight from the
 * descriptor (same addresses: the arena was mapped before the fork) and sets DONE. Both sides
 * spin for a few microseconds before sleeping, so back-to-back batches never wait for a
 * wake-up (each state change still makes one FUTEX_WAKE call).
 * No item crosses a pipe; nothing is serialised.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sched/job.h"
#include "sched/spin.h"
#include "core/core.h"

enum {
    P_IDLE = 0,      /* a live worker waits for a batch */
    P_SUBMITTED = 1, /* a batch is in the slot */
    P_DONE = 2,      /* the worker finished it; result is set */
    P_DEAD = 3,      /* the fork server reaped the worker; status is set */
    P_SPAWNING = 4,  /* a replacement was asked for */
    P_EXIT = 5       /* the runtime is closing: exit */
};

typedef struct {
    _Alignas(TDM__CACHELINE) atomic_uint state; /* the futex word */
    atomic_int pid;
    int status; /* waitpid status, valid in P_DEAD */
    /* the batch */
    const tdm__jdesc *d;
    int64_t begin, end, batch;
    int worker, slot;
    /* the answer */
    int result;
    int64_t reported;
    char detail[192]; /* why, when the worker itself could not run the batch */
} tdm__pslot;

struct tdm__procs {
    tdm_runtime *rt;
    int n;
    tdm__pslot *slots; /* shared with the fork server and the workers */
    size_t slots_bytes;
    pid_t server;
    int sock;           /* requests to the fork server; closing it stops the server */
    bool *killed_by_us; /* [n]: the last death was our timeout kill */
    uint64_t *last_ns;  /* [n]: how long worker k's last batch took (for the driver's spin) */
    /* [n]: the cgroup's OOM-kill count when worker k was spawned (-1: unreadable then) */
    long *oom_base;
    /* OOM evidence (see oom_read): this process's cgroup v2 path from /proc/self/cgroup, its
     * memory.events ("" when it could not be located) and, then, why not. */
    char cg_path[256];
    char cg_events[PATH_MAX];
    char cg_why[160];
    pthread_mutex_t mu; /* serialises writes to sock */
};

/* ---- futex ------------------------------------------------------------------------------ */

static void futex_wake(atomic_uint *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Waits while *w == val, at most timeout_ns (0 = forever). Shared (not PRIVATE): the word
 * lives in memory shared between processes. */
static void futex_wait(atomic_uint *w, unsigned val, uint64_t timeout_ns)
{
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    syscall(SYS_futex, w, FUTEX_WAIT, val, timeout_ns ? &ts : NULL, NULL, 0);
}

static void set_state(tdm__pslot *s, unsigned st)
{
    atomic_store_explicit(&s->state, st, memory_order_release);
    futex_wake(&s->state);
}

/* ---- the worker process ------------------------------------------------------------------ */

static _Noreturn void worker_main(tdm__pslot *s, tdm__arena *arena)
{
    for (;;) {
        unsigned st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == P_SUBMITTED) {
            tdm_task task = {s->d, s->worker, s->slot, s->batch, 0};
            /* Files the parent mapped into the arena since our last batch: map them too. */
            s->detail[0] = '\0';
            int rc = tdm__arena_worker_sync(arena, s->detail, sizeof s->detail);
            if (rc == 0)
                rc = tdm__run_batch(s->d, s->begin, s->end, &task);
            s->result = rc > 0 ? TDM_EKERNEL : rc;
            s->reported = task.reported;
            set_state(s, P_DONE);
            continue;
        }
        if (st == P_EXIT)
            _exit(0);
        /* Spin a little (the next batch usually follows at once), yielding so the parent's
         * driver thread gets the core when they share one; then sleep. */
        tdm__spin_while_equal(&s->state, st, TDM__SPIN_NS);
        if (atomic_load_explicit(&s->state, memory_order_relaxed) == st)
            futex_wait(&s->state, st, 0);
    }
}

/* ---- the fork server --------------------------------------------------------------------- */

static pid_t spawn(tdm__procs *p, int k)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* If the fork server goes, so do we (it is single-threaded: no thread-exit surprise). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(0);
        close(p->sock);
        /* Fatal signals end the worker, whatever handler the program installed (a test
         * framework's, a crash reporter's): the parent reports the death and goes on. */
        static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
            signal(fatal[i], SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        worker_main(&p->slots[k], p->rt->arena);
    }
    if (pid > 0) {
        atomic_store(&p->slots[k].pid, pid);
        set_state(&p->slots[k], P_IDLE);
    }
    return pid;
}

static void reap(tdm__procs *p)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int k = 0; k < p->n; k++) {
            if (atomic_load(&p->slots[k].pid) == pid) {
                p->slots[k].status = status;
                atomic_store(&p->slots[k].pid, 0);
                set_state(&p->slots[k], P_DEAD);
                break;
            }
        }
    }
}

static _Noreturn void server_main(tdm__procs *p, int threads_env)
{
    /* The CPU budget: a worker is one core; libraries that start their own thread pools
     * (OpenMP, BLAS) should not multiply it. Set once here, inherited by every worker. */
    if (threads_env >= 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", threads_env > 0 ? threads_env : 1);
        static const char *const vars[] = {"OMP_NUM_THREADS",        "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS",        "BLIS_NUM_THREADS",
                                           "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"};
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
            setenv(vars[i], v, 1);
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
    for (int k = 0; k < p->n; k++)
        if (spawn(p, k) < 0)
            set_state(&p->slots[k], P_DEAD);
    for (;;) {
        struct pollfd fds[2] = {{p->sock, POLLIN, 0}, {sfd, POLLIN, 0}};
        int r = poll(fds, sfd >= 0 ? 2 : 1, sfd >= 0 ? -1 : 10);
        if (r < 0 && errno != EINTR)
            break;
        if (sfd >= 0 && (fds[1].revents & POLLIN)) {
            struct signalfd_siginfo si;
            ssize_t got = read(sfd, &si, sizeof si);
            (void)got;
        }
        reap(p);
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int k;
            ssize_t got = read(p->sock, &k, sizeof k);
            if (got <= 0)
                break; /* the runtime closed, or its process died */
            if (got == (ssize_t)sizeof k && k >= 0 && k < p->n &&
                atomic_load(&p->slots[k].pid) == 0 && spawn(p, k) < 0)
                set_state(&p->slots[k], P_DEAD);
        }
    }
    for (int k = 0; k < p->n; k++) {
        pid_t pid = atomic_load(&p->slots[k].pid);
        if (pid > 0)
            kill(pid, SIGKILL);
    }
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    _exit(0);
}

/* ---- the parent side --------------------------------------------------------------------- */

static void cgroup_locate(tdm__procs *p);
static long oom_read(const tdm__procs *p, char *why, size_t len);

int tdm__procs_count(const tdm__procs *p)
{
    return p ? p->n : 0;
}

static int threads_env_setting(void)
{
    /* TDM_PROC_THREADS: threads per worker for OpenMP/BLAS (default 1; "keep" leaves the
     * environment as it is). */
    const char *v = getenv("TDM_PROC_THREADS");
    if (!v || !*v)
        return 1;
    if (strcmp(v, "keep") == 0)
        return -1;
    int n = atoi(v);
    return n > 0 ? n : 1;
}

int tdm__procs_open(tdm_runtime *rt, int n, tdm__procs **out)
{
    *out = NULL;
    tdm__procs *p = calloc(1, sizeof *p);
    if (!p)
        return tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (procs)");
    p->rt = rt;
    p->n = n;
    p->sock = -1;
    p->server = -1;
    p->killed_by_us = calloc((size_t)n, sizeof *p->killed_by_us);
    p->last_ns = calloc((size_t)n, sizeof *p->last_ns);
    p->oom_base = calloc((size_t)n, sizeof *p->oom_base);
    if (p->oom_base) {
        /* Before the fork: the first workers' baseline (read here, never on a batch's path). */
        char why[8];
        cgroup_locate(p);
        long kills = oom_read(p, why, sizeof why);
        for (int k = 0; k < n; k++)
            p->oom_base[k] = kills;
    }
    p->slots_bytes = ((size_t)n * sizeof(tdm__pslot) + 4095) & ~(size_t)4095;
    p->slots =
        mmap(NULL, p->slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int rc;
    if (!p->killed_by_us || !p->last_ns || !p->oom_base || p->slots == MAP_FAILED) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (procs)");
        goto fail;
    }
    for (int k = 0; k < n; k++) {
        atomic_init(&p->slots[k].state, P_SPAWNING);
        atomic_init(&p->slots[k].pid, 0);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = tdm__err(rt, TDM_ESYS, "tdm_runtime_open: socketpair failed (%s)", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&p->mu, NULL);
    int threads_env = threads_env_setting();
    pid_t server = fork();
    if (server < 0) {
        close(sv[0]);
        close(sv[1]);
        rc = tdm__err(rt, TDM_ESYS, "tdm_runtime_open: fork failed (%s)", strerror(errno));
        goto fail_mu;
    }
    if (server == 0) {
        close(sv[0]);
        p->sock = sv[1];
        server_main(p, threads_env);
    }
    close(sv[1]);
    p->sock = sv[0];
    p->server = server;
    /* Wait until every first worker is up (or failed to start), so open returns a pool that
     * is ready: cold start is measured here. */
    uint64_t deadline = tdm__now_ns() + 10ull * 1000000000ull;
    for (int k = 0; k < n; k++) {
        unsigned st;
        while ((st = atomic_load(&p->slots[k].state)) == P_SPAWNING && tdm__now_ns() < deadline)
            futex_wait(&p->slots[k].state, P_SPAWNING, 10000000);
        if (st != P_IDLE) {
            tdm__procs_close(p);
            return tdm__err(rt, TDM_ESYS, "tdm_runtime_open: worker process %d did not start", k);
        }
    }
    tdm__log(rt, TDM_DEBUG_POOL, "procs: fork server %d, %d worker process(es)", (int)server, n);
    *out = p;
    return 0;

fail_mu:
    pthread_mutex_destroy(&p->mu);
fail:
    if (p->slots && p->slots != MAP_FAILED)
        munmap(p->slots, p->slots_bytes);
    free(p->killed_by_us);
    free(p->last_ns);
    free(p->oom_base);
    free(p);
    return rc;
}

void tdm__procs_close(tdm__procs *p)
{
    if (!p)
        return;
    for (int k = 0; k < p->n; k++)
        set_state(&p->slots[k], P_EXIT);
    if (p->sock >= 0)
        close(p->sock); /* the fork server sees EOF, kills what is left, reaps, exits */
    if (p->server > 0) {
        int st;
        while (waitpid(p->server, &st, 0) < 0 && errno == EINTR) {
        }
    }
    pthread_mutex_destroy(&p->mu);
    munmap(p->slots, p->slots_bytes);
    free(p->killed_by_us);
    free(p->last_ns);
    free(p->oom_base);
    free(p);
}

/* Asks the fork server for a new worker k and waits for it. */
static int respawn(tdm__procs *p, int k, char *detail, size_t len)
{
    tdm__pslot *s = &p->slots[k];
    /* The replacement's OOM baseline: a kill counted from here on may be its. */
    char why[8];
    p->oom_base[k] = oom_read(p, why, sizeof why);
    atomic_store(&s->state, P_SPAWNING);
    pthread_mutex_lock(&p->mu);
    ssize_t w = write(p->sock, &k, sizeof k);
    pthread_mutex_unlock(&p->mu);
    if (w != (ssize_t)sizeof k) {
        snprintf(detail, len, "the fork server is gone: no replacement for worker %d", k);
        atomic_store(&s->state, P_DEAD);
        return TDM_EWORKER;
    }
    uint64_t deadline = tdm__now_ns() + 10ull * 1000000000ull;
    unsigned st;
    while ((st = atomic_load(&s->state)) == P_SPAWNING && tdm__now_ns() < deadline)
        futex_wait(&s->state, P_SPAWNING, 10000000);
    if (st != P_IDLE) {
        snprintf(detail, len, "worker %d could not be restarted", k);
        return TDM_EWORKER;
    }
    return 0;
}

/* ---- OOM evidence ------------------------------------------------------------------------
 * A worker killed by a SIGKILL that tandem did not send is said to be "likely killed for
 * memory" only when the OOM-kill count of this process's memory cgroup rose since the worker
 * was spawned. The count is the oom_kill line of <root><path>/memory.events (cgroup v2), where
 * <path> is the "0::<path>" line of /proc/self/cgroup (the workers are forked from us and stay
 * in our cgroup) and <root> is the cgroup2 mount, /sys/fs/cgroup. For a path of "/" (the
 * cgroup root, or inside a container's cgroup namespace) <root>/memory.events is read.
 *
 * Environment (read once at runtime open, only when the config's use_env is on):
 *   TDM_CGROUP_ROOT  the cgroup2 mount to read under instead of /sys/fs/cgroup (tests point
 *                    it at a fake tree holding <path>/memory.events).
 */
static void cgroup_locate(tdm__procs *p)
{
    const char *root = "/sys/fs/cgroup";
    if (p->rt->cfg.use_env) {
        const char *e = getenv("TDM_CGROUP_ROOT");
        if (e && *e)
            root = e;
    }
    p->cg_events[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) {
        snprintf(p->cg_why, sizeof p->cg_why, "cannot read /proc/self/cgroup (%s)",
                 strerror(errno));
        return;
    }
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        found = snprintf(p->cg_path, sizeof p->cg_path, "%s", line + 3) <
                (int)sizeof p->cg_path;
    }
    fclose(f);
    if (!found || p->cg_path[0] != '/') {
        snprintf(p->cg_why, sizeof p->cg_why, "no cgroup v2 entry in /proc/self/cgroup");
        return;
    }
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/')
        rl--;
    const char *path = strcmp(p->cg_path, "/") == 0 ? "" : p->cg_path;
    if (snprintf(p->cg_events, sizeof p->cg_events, "%.*s%s/memory.events", (int)rl, root,
                 path) >= (int)sizeof p->cg_events) {
        p->cg_events[0] = '\0';
        snprintf(p->cg_why, sizeof p->cg_why, "the cgroup's path is too long");
    }
}

/* The cgroup's count of OOM kills, or -1 with why it could not be read. */
static long oom_read(const tdm__procs *p, char *why, size_t len)
{
    if (!p->cg_events[0]) {
        snprintf(why, len, "%s", p->cg_why);
        return -1;
    }
    FILE *f = fopen(p->cg_events, "re");
    if (!f) {
        snprintf(why, len, "cannot read %.120s (%s)", p->cg_events, strerror(errno));
        return -1;
    }
    char key[64];
    long v, kills = -1;
    while (fscanf(f, "%63s %ld", key, &v) == 2)
        if (strcmp(key, "oom_kill") == 0)
            kills = v;
    fclose(f);
    if (kills < 0)
        snprintf(why, len, "no oom_kill count in %.120s", p->cg_events);
    return kills;
}

static void describe_death(tdm__procs *p, int k, pid_t pid, int status, char *detail, size_t len)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !p->killed_by_us[k]) {
        /* Read only now, at a death: never on the path of a batch. */
        char why[192];
        long kills = oom_read(p, why, sizeof why);
        if (kills >= 0 && p->oom_base[k] < 0) {
            snprintf(why, sizeof why, "the OOM-kill count could not be read when the worker "
                                      "started");
            kills = -1;
        }
        if (kills > p->oom_base[k])
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL: likely killed for memory (the "
                     "cgroup %s recorded an OOM kill)",
                     k, (int)pid, p->cg_path);
        else if (kills >= 0)
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL, not sent by tandem (no OOM "
                     "kill recorded in its memory cgroup)",
                     k, (int)pid);
        else
            snprintf(detail, len,
                     "worker process %d (pid %d) killed by SIGKILL, not sent by tandem (OOM "
                     "evidence unavailable: %s)",
                     k, (int)pid, why);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(detail, len, "worker process %d (pid %d) killed by signal %d (%s)", k, (int)pid,
                 sig, strsignal(sig));
    } else if (WIFEXITED(status)) {
        snprintf(detail, len, "worker process %d (pid %d) exited with status %d inside the batch",
                 k, (int)pid, WEXITSTATUS(status));
    } else {
        snprintf(detail, len, "worker process %d (pid %d) ended (wait status 0x%x)", k, (int)pid,
                 (unsigned)status);
    }
}

int tdm__procs_run_batch(tdm__job *job, int k, int64_t begin, int64_t end, tdm_task *task,
                         char *detail, size_t detail_len)
{
    tdm__procs *p = job->rt->procs;
    tdm__pslot *s = &p->slots[k];
    atomic_llong *progress = &job->d->ws[task->worker].progress;
    uint64_t timeout_ns = (uint64_t)(job->opts.timeout_s * 1e9);
    int last = 0;
    for (int attempt = 0; attempt <= job->opts.retries; attempt++) {
        if (atomic_load_explicit(&job->d->stop, memory_order_relaxed) == 2)
            return last ? last : TDM_ECANCELED;
        unsigned st = atomic_load(&s->state);
        if (st == P_DEAD || st == P_SPAWNING) {
            int rc = respawn(p, k, detail, detail_len);
            if (rc < 0)
                return rc;
        }
        long long progress_before = atomic_load(progress);
        pid_t pid = atomic_load(&s->pid);
        p->killed_by_us[k] = false;
        s->d = job->d;
        s->begin = begin;
        s->end = end;
        s->batch = task->batch;
        s->worker = task->worker;
        s->slot = task->slot;
        s->reported = 0;
        set_state(s, P_SUBMITTED);

        uint64_t start = tdm__now_ns();
        /* Spin only as long as the last batch took (short batches answer within the spin;
         * long ones would only take the core from the worker processes), then sleep. */
        uint64_t spin = p->last_ns[k] < TDM__SPIN_NS ? p->last_ns[k] : TDM__SPIN_NS;
        uint64_t spin_end = start + spin;
        bool timed_out = false;
        for (;;) {
            st = atomic_load_explicit(&s->state, memory_order_acquire);
            if (st != P_SUBMITTED)
                break;
            uint64_t now = tdm__now_ns();
            if (timeout_ns && !timed_out && now - start >= timeout_ns) {
                /* Only the stuck worker goes; the fork server reports its death. */
                p->killed_by_us[k] = true;
                timed_out = true;
                kill(pid, SIGKILL);
            }
            if (now < spin_end) {
                tdm__cpu_relax();
                sched_yield();
                continue;
            }
            uint64_t slice = 100000000; /* 100 ms: re-check the deadline */
            if (timeout_ns && !timed_out && timeout_ns - (now - start) < slice)
                slice = timeout_ns - (now - start) + 1;
            futex_wait(&s->state, P_SUBMITTED, slice);
        }
        if (st == P_DONE) {
            p->last_ns[k] = tdm__now_ns() - start;
            int rc = s->result;
            if (rc < 0 && s->detail[0])
                snprintf(detail, detail_len, "%s", s->detail);
            task->reported = s->reported;
            atomic_store_explicit(&s->state, P_IDLE, memory_order_relaxed);
            return rc;
        }
        /* P_DEAD: the batch's partial progress is void; count it again when it reruns. */
        atomic_store(progress, progress_before);
        if (timed_out) {
            snprintf(detail, detail_len,
                     "worker process %d (pid %d) overran the %.3f s deadline and was killed", k,
                     (int)pid, job->opts.timeout_s);
            last = TDM_ETIMEDOUT;
        } else {
            describe_death(p, k, pid, s->status, detail, detail_len);
            last = TDM_EWORKER;
        }
        tdm__log(job->rt, TDM_DEBUG_POOL, "procs: batch %lld (items %lld..%lld): %s%s",
                 (long long)task->batch, (long long)begin, (long long)end, detail,
                 attempt < job->opts.retries ? "; retrying" : "");
    }
    return last;
}
