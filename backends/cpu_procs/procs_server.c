/* SPDX-License-Identifier: MIT */
/* The fork server and the worker processes' main loop.
 *
 * The fork server is forked by tdm_runtime_open while the runtime has no thread yet and stays
 * single-threaded, so every worker — the first ones and each replacement — is a clean fork of
 * the program as it was at open. It forks workers when asked, reaps them, and reports each
 * death as an event in the worker's slot (procs_internal.h). It exits, killing its workers,
 * when the parent closes the runtime or dies (both close its request socket).
 *
 * Signals. Neither the server nor the workers inherit the host program's signal handling: every
 * disposition is reset to its default and the signal mask emptied, except
 *   SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU  ignored: a Ctrl-C or Ctrl-Z at the terminal is
 *       the program's to handle (it cancels, or dies, and its death ends the workers);
 *   SIGPIPE  ignored in the server (it writes to no pipe), default in workers;
 *   SIGCHLD  default (never ignored: an ignored SIGCHLD would make the kernel reap workers
 *       before the server can see how they died), blocked in the server, read via signalfd.
 * A worker's exit() — from a batch's body — runs none of the program's atexit handlers: the
 * worker flushes its own stdio buffers (which held nothing at fork: the parent flushed its
 * buffers before forking the server) and ends with the status given.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include "core/core.h"
#include "procs_internal.h"
#include "sched/spin.h"

static bool ignored_signal(int sig)
{
    return sig == SIGINT || sig == SIGQUIT || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Resets every disposition the host may have set: see the file comment. */
static void reset_signals(bool server)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        sa.sa_handler = ignored_signal(sig) || (server && sig == SIGPIPE) ? SIG_IGN : SIG_DFL;
        (void)sigaction(sig, &sa, NULL); /* (the C library's reserved signals refuse: fine) */
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* ---- the worker process ------------------------------------------------------------------ */

static void worker_on_exit(int status, void *arg)
{
    (void)arg;
    fflush(NULL);
    _exit(status);
}

static void worker_done(tdm__pslot *s)
{
    unsigned w = atomic_load_explicit(&s->word, memory_order_relaxed);
    while (p_state(w) == P_SUBMITTED &&
           !atomic_compare_exchange_weak_explicit(&s->word, &w, (w & ~P_STATE_MASK) | P_DONE,
                                                  memory_order_release, memory_order_relaxed)) {
    }
    tdm__futex_wake(&s->word);
}

static _Noreturn void worker_main(tdm__pslot *s, tdm__arena *arena)
{
    for (;;) {
        unsigned w = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned st = p_state(w);
        if (st == P_SUBMITTED) {
            atomic_store_explicit(&s->started, 1, memory_order_relaxed);
            tdm_task task = {s->d, s->worker, s->slot, s->batch, 0};
            /* Files the parent mapped into the arena since our last batch: map them too. */
            s->detail[0] = '\0';
            int rc = tdm__arena_worker_sync(arena, s->detail, sizeof s->detail);
            if (rc == 0)
                rc = tdm__run_batch(s->d, s->begin, s->end, &task);
            s->result = rc > 0 ? TDM_EKERNEL : rc;
            s->reported = task.reported;
            worker_done(s);
            continue;
        }
        if (st == P_EXIT)
            _exit(0);
        /* Spin a little (the next batch usually follows at once), yielding so the parent's
         * driver thread gets the core when they share one; then sleep. */
        tdm__spin_while_equal(&s->word, w, TDM__SPIN_NS);
        if (atomic_load_explicit(&s->word, memory_order_relaxed) == w)
            tdm__futex_wait(&s->word, w, 0);
    }
}

/* ---- the fork server --------------------------------------------------------------------- */

static void death_event(tdm__pslot *s)
{
    atomic_fetch_add_explicit(&s->word, P_DEATH_ONE, memory_order_release);
    tdm__futex_wake(&s->word);
}

static void spawn(tdm__procs *p, int k, pid_t server)
{
    tdm__pslot *s = &p->slots[k];
    pid_t pid = fork();
    if (pid == 0) {
        /* If the fork server goes, so do we (it is single-threaded: no thread-exit surprise). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != server)
            _exit(0);
        close(p->sock);
        if (p->server_pidfd >= 0)
            close(p->server_pidfd);
        reset_signals(false);
        on_exit(worker_on_exit, NULL); /* registered last: runs first, skips the program's */
        if (p->rt->cfg.worker_start) /* tdm_config.worker_start: see runtime.h */
            p->rt->cfg.worker_start(p->rt->cfg.worker_start_arg, k);
        worker_main(s, p->rt->arena);
    }
    if (pid < 0) {
        s->spawn_errno = errno;
        s->dead_pid = 0;
        s->status = 0;
        death_event(s);
        return;
    }
    atomic_store_explicit(&s->pid, pid, memory_order_release);
    unsigned w = atomic_load_explicit(&s->word, memory_order_relaxed);
    while (p_state(w) == P_SPAWNING &&
           !atomic_compare_exchange_weak_explicit(&s->word, &w, (w & ~P_STATE_MASK) | P_IDLE,
                                                  memory_order_release, memory_order_relaxed)) {
    }
    tdm__futex_wake(&s->word);
}

static void reap(tdm__procs *p)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int k = 0; k < p->n; k++) {
            tdm__pslot *s = &p->slots[k];
            if (atomic_load_explicit(&s->pid, memory_order_relaxed) == pid) {
                s->status = status;
                s->dead_pid = pid;
                atomic_store_explicit(&s->pid, 0, memory_order_relaxed);
                death_event(s);
                break;
            }
        }
    }
}

_Noreturn void tdm__procs_server_main(tdm__procs *p, int threads_env, bool deathsig)
{
    pid_t parent = getppid();
    if (deathsig) {
        /* A stopped server would never read the socket's end-of-file: die with the parent. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
    }
    reset_signals(true);
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
    pid_t me = getpid();
    for (int k = 0; k < p->n; k++)
        spawn(p, k, me);
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
            if (got <= 0 && (got == 0 || errno != EINTR))
                break; /* the runtime closed, or its process died */
            /* A worker is (re)started only where none lives. */
            if (got == (ssize_t)sizeof k && k >= 0 && k < p->n &&
                atomic_load(&p->slots[k].pid) == 0)
                spawn(p, k, me);
        }
    }
    for (int k = 0; k < p->n; k++) {
        pid_t pid = atomic_load(&p->slots[k].pid);
        if (pid > 0) /* our own unreaped child: the pid cannot have been reused */
            kill(pid, SIGKILL);
    }
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    _exit(0);
}
