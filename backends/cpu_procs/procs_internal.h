/* SPDX-License-Identifier: MIT */
/* tandem — the worker-process backend's private interface: the slot shared by the parent, the
 * fork server and one worker, and the pool object. Not API.
 *
 * Who writes what (one owner per transition):
 *   slot word = state (low 4 bits) | death count (the bits above)
 *   parent  : IDLE -> SUBMITTED (CAS: fails if the worker died meanwhile), DONE -> IDLE,
 *             any -> SPAWNING (only once the worker is known dead), any -> EXIT (close)
 *   worker  : SUBMITTED -> DONE (CAS)
 *   server  : SPAWNING -> IDLE (CAS) once a replacement is forked; the death count += 1 when it
 *             reaps the slot's worker or cannot fork one (an atomic add: it never writes the
 *             state bits, so a death can never be overwritten, nor overwrite a state)
 * Deaths are events: the parent compares the count with the one it saw when the worker
 * started. The parent signals workers only through pidfds, never kill() with a pid. */
#ifndef TANDEM_PROCS_INTERNAL_H
#define TANDEM_PROCS_INTERNAL_H

#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sched/job.h"

enum {
    P_IDLE = 0,      /* a live worker waits for a batch */
    P_SUBMITTED = 1, /* a batch is in the slot */
    P_DONE = 2,      /* the worker finished it; result is set */
    P_SPAWNING = 3,  /* a (re)start was asked for */
    P_EXIT = 4       /* the runtime is closing: exit */
};
#define P_STATE_MASK 0xFu
#define P_DEATH_ONE 0x10u

static inline unsigned p_state(unsigned w)
{
    return w & P_STATE_MASK;
}

static inline unsigned p_deaths(unsigned w)
{
    return w >> 4;
}

typedef struct {
    _Alignas(TDM__CACHELINE) atomic_uint word; /* the futex word */
    /* 1 once the worker has picked up the submitted batch (the driver stores 0 before it
     * submits): a driver waiting on a batch not yet picked up sleeps rather than spins, since
     * the worker may need the driver's core */
    atomic_uint started;
    atomic_int pid;  /* the live worker (server writes it before SPAWNING -> IDLE), 0 if none */
    int status;      /* wait status of the last death (written before the count moves) */
    int dead_pid;    /* who died (0: the fork for a replacement failed) */
    int spawn_errno; /* why the fork failed, when dead_pid is 0 */
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
    int server_pidfd;
    int sock;           /* requests to the fork server; closing it stops the server */
    unsigned *deaths;   /* [n]: the death count when worker k was seen ready */
    int *pidfd;         /* [n]: worker k's pidfd (-1: none alive) */
    bool *killed_by_us; /* [n]: the last death was our timeout kill */
    uint64_t *last_ns;  /* [n]: how long worker k's last batch took (for the driver's spin) */
    /* [n]: the cgroup's OOM-kill count when worker k was spawned (-1: unreadable then) */
    long *oom_base;
    /* Once the fork server is gone or stopped, no batch can run in a process any more: every
     * pending and later batch fails with TDM_EWORKER and `why`. Set once (CAS on broken). */
    atomic_int broken;
    char why[200];
    /* OOM evidence (procs_oom.c) */
    char cg_path[256];
    char cg_events[PATH_MAX];
    char cg_why[160];
    pthread_mutex_t mu; /* serialises writes to sock */
};

static inline void tdm__futex_wake(atomic_uint *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Waits while *w == val, at most timeout_ns (0 = forever). Shared (not PRIVATE): the word
 * lives in memory shared between processes. */
static inline void tdm__futex_wait(atomic_uint *w, unsigned val, uint64_t timeout_ns)
{
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    syscall(SYS_futex, w, FUTEX_WAIT, val, timeout_ns ? &ts : NULL, NULL, 0);
}

/* The fork server's body (procs_server.c): never returns. `deathsig`: die with the parent
 * (only when the parent's opening thread is its main thread: PR_SET_PDEATHSIG follows the
 * thread). */
_Noreturn void tdm__procs_server_main(tdm__procs *p, int threads_env, bool deathsig);

/* OOM evidence (procs_oom.c). */
void tdm__procs_cgroup_locate(tdm__procs *p);
long tdm__procs_oom_read(const tdm__procs *p, char *why, size_t len);
void tdm__procs_describe_death(tdm__procs *p, int k, pid_t pid, int status, char *detail,
                               size_t len);

#endif
