/* SPDX-License-Identifier: MIT */
/* The worker-process backend, parent side: a persistent pool of forked workers that run batches
 * from job descriptors in the shared arena.
 *
 * Processes:
 *   parent ── fork at open ──> fork server ── fork ──> worker 0 .. worker n-1
 * (the fork server and the workers' loop: procs_server.c; how a death is described:
 * procs_oom.c; who may write which state: procs_internal.h).
 *
 * Hand-off: one slot per worker in a MAP_SHARED page made before the fork. The pool thread
 * that drives worker k writes the batch (descriptor pointer, items) into slot k, moves its state
 * from IDLE to SUBMITTED with a compare-and-swap (which fails if the worker died meanwhile: the
 * fork server's death event changed the word) and wakes it with a futex; the worker runs the
 * batch straight from the descriptor (same addresses: the arena was mapped before the fork) and
 * sets DONE. Both sides spin for a few microseconds before sleeping, so back-to-back batches
 * never wait for a wake-up. No item crosses a pipe; nothing is serialised.
 *
 * Faults. A worker that dies is reported (batch, pid, signal), replaced, and its batch retried
 * as opts.retries allows (at least once: a retried batch re-runs items the dead attempt may
 * have run). A worker that overruns opts.timeout_s is killed through its pidfd (never kill()
 * with a pid that may have been reused). The fork server itself is watched through its pidfd
 * and /proc: once it is dead or stopped no worker can be replaced, so the pool is marked broken
 * (the server killed, its workers die with it) and every pending and later batch fails with
 * TDM_EWORKER saying why; no call waits for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "core/core.h"
#include "procs_internal.h"
#include "sched/spin.h"

/* How often a driver that waits looks at its worker and the fork server itself. */
#define SLICE_NS 50000000ull
/* How long a driver spins on a batch its worker has not picked up (await_batch). */
#define START_NS 3000ull
/* How long a (re)start may take before the fork server is deemed unresponsive. */
#define SPAWN_NS (10ull * 1000000000ull)

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_kill(int fd)
{
    return fd >= 0 ? (int)syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) : -1;
}

/* True once the process behind pidfd has ended. */
static bool pidfd_ended(int fd)
{
    struct pollfd pf = {fd, POLLIN, 0};
    return fd >= 0 && poll(&pf, 1, 0) > 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR));
}

static void set_state(tdm__pslot *s, unsigned st)
{
    unsigned w = atomic_load(&s->word);
    while (!atomic_compare_exchange_weak(&s->word, &w, (w & ~P_STATE_MASK) | st)) {
    }
    tdm__futex_wake(&s->word);
}

/* Marks the pool broken (once), kills the fork server (its workers die with it: PDEATHSIG) and
 * wakes every driver. */
static void set_broken(tdm__procs *p, const char *fmt, int arg)
{
    pthread_mutex_lock(&p->mu);
    if (!atomic_load(&p->broken)) {
        snprintf(p->why, sizeof p->why, fmt, arg);
        atomic_store(&p->broken, 1);
    }
    pthread_mutex_unlock(&p->mu);
    pidfd_kill(p->server_pidfd);
    for (int k = 0; k < p->n; k++)
        tdm__futex_wake(&p->slots[k].word);
}

static int broken_error(tdm__procs *p, char *detail, size_t len)
{
    pthread_mutex_lock(&p->mu);
    snprintf(detail, len, "no worker process can run it: %s", p->why);
    pthread_mutex_unlock(&p->mu);
    return TDM_EWORKER;
}

bool tdm__procs_broken(const tdm__procs *p)
{
    return p && atomic_load(&((tdm__procs *)p)->broken);
}

int tdm__procs_why_broken(tdm__procs *p, char *buf, size_t len)
{
    return broken_error(p, buf, len);
}

/* Whether the fork server can still serve; marks the pool broken when it has ended or is
 * stopped. */
static bool server_ok(tdm__procs *p)
{
    if (atomic_load(&p->broken))
        return false;
    if (pidfd_ended(p->server_pidfd)) {
        set_broken(p, "the fork server (pid %d) has died; reopen the runtime", (int)p->server);
        return false;
    }
    /* Not ended: its pid is still its own, so /proc/<pid> is the server. */
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)p->server);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char *rp = strrchr(buf, ')');
    if (rp && (rp[2] == 'T' || rp[2] == 't')) {
        set_broken(p,
                   "the fork server (pid %d) was stopped (SIGSTOP), so no worker could be "
                   "replaced; it was killed: reopen the runtime",
                   (int)p->server);
        return false;
    }
    return true;
}

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

/* Waits until worker k, asked for when the slot's death count was `deaths`, is ready; then
 * holds a pidfd to it. 0, or TDM_EWORKER with why in detail. */
static int await_ready(tdm__procs *p, int k, unsigned deaths, char *detail, size_t len)
{
    tdm__pslot *s = &p->slots[k];
    uint64_t t0 = tdm__now_ns(), last_check = t0;
    for (;;) {
        unsigned w = atomic_load_explicit(&s->word, memory_order_acquire);
        if (p_deaths(w) != deaths) {
            if (s->dead_pid == 0)
                snprintf(detail, len, "worker process %d could not be started (fork: %s)", k,
                         strerror(s->spawn_errno));
            else
                tdm__procs_describe_death(p, k, s->dead_pid, s->status, detail, len);
            p->deaths[k] = p_deaths(w);
            return TDM_EWORKER;
        }
        if (p_state(w) == P_IDLE)
            break;
        if (p_state(w) != P_SPAWNING) /* EXIT: closing */
            return broken_error(p, detail, len);
        uint64_t now = tdm__now_ns();
        if (now - last_check >= SLICE_NS) {
            last_check = now;
            if (!server_ok(p))
                return broken_error(p, detail, len);
            if (now - t0 >= SPAWN_NS) {
                set_broken(p, "the fork server (pid %d) did not start a worker within 10 s",
                           (int)p->server);
                return broken_error(p, detail, len);
            }
        }
        tdm__futex_wait(&s->word, w, SLICE_NS);
    }
    pid_t pid = atomic_load_explicit(&s->pid, memory_order_acquire);
    int fd = pid > 0 ? pidfd_open_(pid) : -1;
    if (fd < 0 && errno != ESRCH) {
        set_broken(p, "pidfd_open failed (errno %d): worker processes need Linux 5.3 or later",
                   errno);
        return broken_error(p, detail, len);
    }
    unsigned w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (fd < 0 || p_deaths(w) != deaths) {
        /* It died before we held it: its death event is there, or on its way. */
        if (fd >= 0)
            close(fd);
        snprintf(detail, len, "worker process %d (pid %d) died as it started", k, (int)pid);
        p->deaths[k] = deaths - 1u; /* differs from the count: the next use restarts it */
        return TDM_EWORKER;
    }
    p->pidfd[k] = fd;
    p->deaths[k] = deaths;
    return 0;
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
    p->server_pidfd = -1;
    atomic_init(&p->broken, 0);
    p->killed_by_us = calloc((size_t)n, sizeof *p->killed_by_us);
    p->last_ns = calloc((size_t)n, sizeof *p->last_ns);
    p->oom_base = calloc((size_t)n, sizeof *p->oom_base);
    p->deaths = calloc((size_t)n, sizeof *p->deaths);
    p->pidfd = malloc((size_t)n * sizeof *p->pidfd);
    if (p->pidfd)
        for (int k = 0; k < n; k++)
            p->pidfd[k] = -1;
    if (p->oom_base) {
        /* Before the fork: the first workers' baseline (read here, never on a batch's path). */
        char why[8];
        tdm__procs_cgroup_locate(p);
        long kills = tdm__procs_oom_read(p, why, sizeof why);
        for (int k = 0; k < n; k++)
            p->oom_base[k] = kills;
    }
    p->slots_bytes = ((size_t)n * sizeof(tdm__pslot) + 4095) & ~(size_t)4095;
    p->slots =
        mmap(NULL, p->slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int rc;
    if (!p->killed_by_us || !p->last_ns || !p->oom_base || !p->deaths || !p->pidfd ||
        p->slots == MAP_FAILED) {
        rc = tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (procs)");
        goto fail;
    }
    for (int k = 0; k < n; k++) {
        atomic_init(&p->slots[k].word, P_SPAWNING);
        atomic_init(&p->slots[k].pid, 0);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = tdm__err(rt, TDM_ESYS, "tdm_runtime_open: socketpair failed (%s)", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&p->mu, NULL);
    int threads_env = threads_env_setting();
    /* PR_SET_PDEATHSIG follows the thread that forks: only the main thread outlives the call. */
    bool deathsig = syscall(SYS_gettid) == getpid();
    /* What the program has buffered goes out now, not once per worker that exits. */
    fflush(NULL);
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
        tdm__procs_server_main(p, threads_env, deathsig);
    }
    close(sv[1]);
    p->sock = sv[0];
    p->server = server;
    p->server_pidfd = pidfd_open_(server);
    if (p->server_pidfd < 0) {
        int e = errno;
        tdm__procs_close(p);
        return tdm__err(rt, TDM_ESYS,
                        "tdm_runtime_open: pidfd_open of the fork server failed (%s): worker "
                        "processes need Linux 5.3 or later",
                        strerror(e));
    }
    /* Wait until every first worker is up, so open returns a pool that is ready: cold start
     * is measured here. */
    for (int k = 0; k < n; k++) {
        char detail[256];
        if (await_ready(p, k, 0, detail, sizeof detail) != 0) {
            tdm__procs_close(p);
            return tdm__err(rt, TDM_ESYS, "tdm_runtime_open: worker process %d did not start: %s",
                            k, detail);
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
    free(p->deaths);
    free(p->pidfd);
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
        /* A stopped (or wedged) server never reads the EOF: kill it after a grace period. */
        struct pollfd pf = {p->server_pidfd, POLLIN, 0};
        int r = 1;
        while (p->server_pidfd >= 0 && (r = poll(&pf, 1, 2000)) < 0 && errno == EINTR) {
        }
        if (r == 0)
            pidfd_kill(p->server_pidfd);
        int st;
        /* ECHILD when the program reaped it itself (SIGCHLD ignored, or a waitpid(-1) loop) */
        while (waitpid(p->server, &st, 0) < 0 && errno == EINTR) {
        }
    }
    if (p->server_pidfd >= 0)
        close(p->server_pidfd);
    for (int k = 0; k < p->n; k++)
        if (p->pidfd[k] >= 0)
            close(p->pidfd[k]);
    pthread_mutex_destroy(&p->mu);
    munmap(p->slots, p->slots_bytes);
    free(p->killed_by_us);
    free(p->last_ns);
    free(p->oom_base);
    free(p->deaths);
    free(p->pidfd);
    free(p);
}

/* Asks the fork server for a new worker k (the old one is known dead) and waits for it. */
static int respawn(tdm__procs *p, int k, char *detail, size_t len)
{
    tdm__pslot *s = &p->slots[k];
    if (p->pidfd[k] >= 0) {
        close(p->pidfd[k]);
        p->pidfd[k] = -1;
    }
    if (!server_ok(p))
        return broken_error(p, detail, len);
    /* The replacement's OOM baseline: a kill counted from here on may be its. */
    char why[8];
    p->oom_base[k] = tdm__procs_oom_read(p, why, sizeof why);
    /* Only we write the state now (the worker is dead); the server may still add a death. */
    unsigned w = atomic_load(&s->word);
    while (!atomic_compare_exchange_weak(&s->word, &w, (w & ~P_STATE_MASK) | P_SPAWNING)) {
    }
    unsigned deaths = p_deaths(w);
    pthread_mutex_lock(&p->mu);
    ssize_t sent;
    do
        sent = send(p->sock, &k, sizeof k, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    pthread_mutex_unlock(&p->mu);
    if (sent != (ssize_t)sizeof k) {
        set_broken(p,
                   "the fork server (pid %d) is gone (its socket is closed); reopen the "
                   "runtime",
                   (int)p->server);
        return broken_error(p, detail, len);
    }
    return await_ready(p, k, deaths, detail, len);
}

/* Waits for worker k's answer to the batch just submitted. Returns P_DONE, or 0 when the
 * worker died (timed_out says whether we killed it), or -1 when the pool broke. */
static int await_batch(tdm__job *job, tdm__procs *p, int k, uint64_t timeout_ns, bool *timed_out)
{
    tdm__pslot *s = &p->slots[k];
    unsigned deaths = p->deaths[k];
    uint64_t start = tdm__now_ns(), last_check = start, ended_at = 0;
    /* The driver spins as long as the last batch took (short batches answer within the spin),
     * then sleeps on the futex word; it does not spin when the last batch took longer than
     * TDM__SPIN_NS (the spin, at the start of a long batch, caught nothing and held a core the
     * worker processes may need), nor on a batch its worker has not picked up within START_NS:
     * that worker may be waiting for this very core, and a sleeping driver gives it at once.
     * Without that check, with a process per core and their drivers beside them, the round
     * trip of an empty batch was bimodal from run to run (bench_procs: 1 us or 17-30 us, the
     * spin keeping the worker off its driver's core, and growing with the answer's lateness);
     * with it, 6-7 us in every run. The spin does not yield: a driver thread that yielded to a
     * CPU thread on its core stayed runnable behind it, not woken by the answer, for the rest
     * of the kernel's time slice (4 ms, perf sched, the other core idle) while a 1-item
     * exploration batch had long been done; cold AUTO maps over threads + processes saw a
     * first batch over 1 ms in 11 of 40 maps, 3 of 40 without the yield. */
    uint64_t last = p->last_ns[k];
    uint64_t spin = last > TDM__SPIN_NS ? 0 : last;
    uint64_t spin_end = start + spin;
    (void)job;
    for (;;) {
        unsigned w = atomic_load_explicit(&s->word, memory_order_acquire);
        if (p_state(w) == P_DONE) {
            p->last_ns[k] = tdm__now_ns() - start;
            return P_DONE;
        }
        if (p_deaths(w) != deaths)
            return 0;
        uint64_t now = tdm__now_ns();
        if (timeout_ns && !*timed_out && now - start >= timeout_ns) {
            /* Only the stuck worker goes; the fork server reports its death. */
            p->killed_by_us[k] = true;
            *timed_out = true;
            pidfd_kill(p->pidfd[k]);
        }
        if (now < spin_end &&
            (now - start < START_NS || atomic_load_explicit(&s->started, memory_order_relaxed))) {
            tdm__cpu_relax();
            continue;
        }
        if (now - last_check >= SLICE_NS) {
            last_check = now;
            if (atomic_load(&p->broken))
                return -1;
            /* A worker that ended without a death event: the server must be checked. */
            if (pidfd_ended(p->pidfd[k])) {
                if (!ended_at)
                    ended_at = now;
                if (!server_ok(p))
                    return -1;
                if (now - ended_at >= SPAWN_NS) {
                    set_broken(p, "the fork server (pid %d) did not report a worker's death",
                               (int)p->server);
                    return -1;
                }
            }
        }
        uint64_t slice = SLICE_NS;
        if (timeout_ns && !*timed_out && timeout_ns - (now - start) < slice)
            slice = timeout_ns - (now - start) + 1;
        tdm__futex_wait(&s->word, w, slice);
    }
}

int tdm__procs_run_batch(tdm__job *job, int k, int64_t begin, int64_t end, tdm_task *task,
                         char *detail, size_t detail_len)
{
    tdm__procs *p = job->rt->procs;
    tdm__pslot *s = &p->slots[k];
    atomic_llong *progress = &job->d->ws[task->worker].progress;
    uint64_t timeout_ns = (uint64_t)(job->opts.timeout_s * 1e9);
    int last = 0, failures = 0, idle_deaths = 0;
    for (;;) {
        if (atomic_load_explicit(&job->d->stop, memory_order_relaxed) == 2)
            return last ? last : TDM_ECANCELED;
        if (atomic_load(&p->broken))
            return broken_error(p, detail, detail_len);
        unsigned w = atomic_load_explicit(&s->word, memory_order_acquire);
        if (p->pidfd[k] < 0 || p_deaths(w) != p->deaths[k]) {
            /* Worker k is dead (it died between batches, or a restart failed): a failed
             * restart uses up an attempt like a death in the batch does. */
            int rc = respawn(p, k, detail, detail_len);
            if (rc < 0) {
                last = rc;
                if (atomic_load(&p->broken) || failures++ >= job->opts.retries)
                    return rc;
            }
            continue;
        }
        long long progress_before = atomic_load(progress);
        p->killed_by_us[k] = false;
        s->d = job->d;
        s->begin = begin;
        s->end = end;
        s->batch = task->batch;
        s->worker = task->worker;
        s->slot = task->slot;
        s->reported = 0;
        atomic_store_explicit(&s->started, 0, memory_order_relaxed);
        unsigned idle = (w & ~P_STATE_MASK) | P_IDLE;
        if (!atomic_compare_exchange_strong_explicit(&s->word, &idle,
                                                     (idle & ~P_STATE_MASK) | P_SUBMITTED,
                                                     memory_order_release, memory_order_relaxed)) {
            /* It died before it saw the batch: not the batch's fault, but bounded. */
            if (++idle_deaths > 1000) {
                snprintf(detail, detail_len, "worker process %d died 1000 times between batches",
                         k);
                return TDM_EWORKER;
            }
            continue;
        }
        tdm__futex_wake(&s->word);
        bool timed_out = false;
        int got = await_batch(job, p, k, timeout_ns, &timed_out);
        if (got == P_DONE) {
            int rc = s->result;
            if (rc < 0 && s->detail[0])
                snprintf(detail, detail_len, "%s", s->detail);
            task->reported = s->reported;
            /* (if the worker died just after, the death count moved and this fails: the
             * answer stands, the next batch restarts the worker) */
            unsigned done = (w & ~P_STATE_MASK) | P_DONE;
            atomic_compare_exchange_strong(&s->word, &done, (done & ~P_STATE_MASK) | P_IDLE);
            return rc;
        }
        /* The batch's partial progress is void; count it again when it reruns. */
        atomic_store(progress, progress_before);
        if (got < 0)
            return broken_error(p, detail, detail_len);
        pid_t pid = s->dead_pid;
        if (timed_out) {
            snprintf(detail, detail_len,
                     "worker process %d (pid %d) overran the %.3f s deadline and was killed", k,
                     (int)pid, job->opts.timeout_s);
            last = TDM_ETIMEDOUT;
        } else {
            tdm__procs_describe_death(p, k, pid, s->status, detail, detail_len);
            last = TDM_EWORKER;
        }
        bool again = failures++ < job->opts.retries;
        tdm__log(job->rt, TDM_DEBUG_POOL, "procs: batch %lld (items %lld..%lld): %s%s",
                 (long long)task->batch, (long long)begin, (long long)end, detail,
                 again ? "; retrying" : "");
        if (!again)
            return last;
    }
}
