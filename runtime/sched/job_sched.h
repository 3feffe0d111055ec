/* SPDX-License-Identifier: MIT */
/* tandem — the per-batch scheduler inside a job: one lane per worker (thread, process driver,
 * device driver), each learning its time per item; every batch of a job that mixes backends
 * is placed by tdm__sched_decide() (runtime/sched/sched_model.c). Not API. */
#ifndef TANDEM_JOB_SCHED_H
#define TANDEM_JOB_SCHED_H

#include "sched/costmodel.h"
#include "sched/job.h"
#include "sched/sched_model.h"

/* A device lane's fixed cost per batch and preferred batch duration (ns). */
#define TDM__LAT_DEVICE 50000.0 /* a launch and its synchronisation */
#define TDM__TARGET_DEVICE 4000000.0

typedef struct tdm__jlane {
    _Alignas(TDM__CACHELINE) _Atomic double tpi; /* published estimate, ns per item */
    _Atomic double free_at;                      /* ns since the job started */
    _Atomic double lat_fit;                      /* published fixed cost per batch, ns */
    atomic_int in_job; /* its worker is inside the job now: only such lanes are counted on
                        * (one busy in another job, or gone after declining, is not) */
    atomic_llong explore;                        /* exploration ladder (0: calibrated) */
    atomic_int preparing; /* a device building its program for the job: counted on by no one
                           * until tdm__jsched_prepared() (the CPU workers go on meanwhile) */
    atomic_int joined;    /* 0: a lazy job's lane for a device not open yet; no one reads its
                           * other fields until its driver joins (tdm__jsched_join, release) */
    atomic_int started;   /* it was given a batch in this job (tdm__jsched_want) */
    atomic_int drop_seed; /* another lane of its key found their stored figure stale */
    atomic_int gone;      /* a device lane out of the job for good: its program did not build
                           * (tdm__jsched_gone); counted on by no one, like a lost device's */
    _Atomic uint64_t prep_t0; /* a device lane: when its program build began (0: not yet) */
    atomic_int beside;        /* a host-CPU device exploring beside the CPU threads, not alone: no
                               * side of the shared cores once the threads are calibrated (until
                               * then it waits for them); set to 0 with release after `explore` */
    /* A host-CPU device lane: when its last batch in flight completed (tdm__now_ns; 0: none),
     * UINT64_MAX while one is in flight (its driver's tdm__jsched_device_busy). */
    _Atomic uint64_t dev_idle_at;
    double lat, target_ns;
    int64_t fill; /* items a batch needs to fill the lane (a device's compute units) */
    bool eligible;
    bool host_cpu; /* a device computing on the host's cores (shares them with the threads) */
    bool from_model; /* it started from a stored figure (set up with one, measured again or not;
                      * not CPU threads measured again: threads_measured_again) */
    bool confirm;    /* a close call from fewer than TDM__CM_SETTLED batches, measured again in
                      * this map: agreeing, it settles (tdm__cm_put_confirm) */
    int recheck_cls; /* a settled figure measured again: its entry's size class (else -1) */
    tdm_backend_kind kind;
    char key[96]; /* lane name in the stored model: "cpu", "procs", "opencl:<device>" */
    /* written by the lane's own worker only */
    tdm__est est;
    double est_sum_ns;  /* the estimates of the batches it took */
    int64_t items_est;  /* items of those batches */
    bool declining;     /* for logging transitions only */
    double explored_ns; /* time its exploration batches took */
    int long_rungs;     /* its rungs of a few items in a row that lasted a target */
    double beside_min_ns; /* its shortest exploration batch beside the threads (0: none yet) */
    double beside_max_ns; /* ... and its longest */
    bool seed_stale;    /* this map showed the stored model it started from stale */
    bool probed;        /* it took one item to check a stored figure that kept it idle */
    bool on_host;       /* a device lane whose driver runs its batches on the host: what it
                         * learns is the CPU's, never stored as the device's */
    uint64_t last_done; /* device lanes: when its previous batch completed */
} tdm__jlane;

typedef struct tdm__jsched {
    int n;
    tdm__jlane *lanes;
    uint64_t t0;
    int64_t cap[TDM_BACKEND_KIND_COUNT]; /* items a kind may take; INT64_MAX: no cap */
    atomic_llong used[TDM_BACKEND_KIND_COUNT];
    const char *kernel;    /* the map's key in the stored model: job->model_key ("": none) */
    int cores;             /* the CPU budget: cores this process may run on */
    bool split_cpu;        /* threads + worker processes are more than the cores: they take turns */
    bool lazy;             /* some lanes wait for devices still closed (a lazy job) */
    atomic_int lazy_asked; /* 0: not yet decided whether to open them; 1: asked; 2: not worth */
    int yield_lane; /* the CPU thread that leaves a core to a device's set-up (-1: none) */
    atomic_int running; /* sides taking turns: the side last chosen to run (-1: none yet) */
} tdm__jsched;

/* Whether the options cap some backend kind's share of the items (a share_cap in (0, 1)). */
static inline bool tdm__share_capped(const tdm_map_opts *o)
{
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        if (o->share_cap[k] > 0 && o->share_cap[k] < 1)
            return true;
    return false;
}

/* The share of the items backend kind k may run under the options' caps: its cap, or all of
 * them (1) when it has none. */
static inline double tdm__share_allowed(const tdm_map_opts *o, int k)
{
    return o->share_cap[k] > 0 ? o->share_cap[k] : 1;
}

/* CPU work (ns) worth opening the devices for: a map's, with what the maps before it on the
 * runtime needed while they left the devices closed. 100 ms where a GPU may be there (its
 * device node is: tdm__gpu_nodes); 1 s where every device the runtime can open computes on the
 * host's cores, whose set-up costs the CPU what such a device could gain (job_sched.c). */
#define TDM__AUTO_DEVICE_CPU_NS 1e8
#define TDM__AUTO_HOST_DEVICE_CPU_NS 1e9
static inline double tdm__device_open_bar(const tdm_runtime *rt)
{
    return rt->gpu_nodes ? TDM__AUTO_DEVICE_CPU_NS : TDM__AUTO_HOST_DEVICE_CPU_NS;
}

/* Adds ns (at most the bar; NaN or less than 0: nothing), the CPU's work of a map that leaves
 * the devices closed, to the runtime's count toward the bar (rt->closed_cpu_ns), and says so
 * under TDM_DEBUG=sched ("the devices stay closed"). left: the items left when the map's first
 * batches told (job_sched.c), -1 when the stored model told before the map (map.c). Called for
 * a map found valid, once. Thread-safe. */
void tdm__devices_bar_count(tdm_runtime *rt, const char *what, double ns, int64_t left);

/* The stored model's name of device ds's lane, "<backend kind>:<device name>" (cut to len). */
struct tdm__devslot;
void tdm__device_lane_key(char *key, size_t len, const struct tdm__devslot *ds);
/* Gives the job a scheduler when it mixes kinds of worker or caps a kind's share; lanes start
 * from the stored model (calibrated) or explore. 0 or TDM_ENOMEM. */
int tdm__jsched_create(tdm__job *job);
/* Device driver w enters the job: a lane kept for a device that was closed when the job was
 * made (a lazy job) takes the device's figures now, then counts like any other. Called by the
 * driver itself, before its presence; a no-op for a lane set up at creation. */
void tdm__jsched_join(tdm__job *job, int w);
/* Merges what the lanes learned into the runtime's model and frees the scheduler. */
void tdm__jsched_destroy(tdm__job *job);

/* Lane w asks for work: how many items to claim (0: decline; the worker then leaves the job
 * until one of its batches completes, tdm__job_decline()). *est_ns gets the batch's
 * estimated duration. */
int64_t tdm__jsched_want(tdm__job *job, int w, double *est_ns);
/* Lane w asked for `asked` items (what tdm__jsched_want() returned, estimated at est_ns) and
 * claimed n of them (0: the claim failed, the job is done). Call it either way: a kind with a
 * share cap reserved `asked` items of its cap in tdm__jsched_want(). */
void tdm__jsched_claimed(tdm__job *job, int w, int64_t asked, int64_t n, double est_ns);
/* Lane w finished a batch of n items that took dur_ns (for a device, since the later of its
 * submission and the previous completion), just before this call; `idle` says the lane has
 * nothing else in flight. A calibrated CPU worker's batch during which a host-CPU device of the
 * job had a batch in flight (tdm__jsched_device_busy) leaves its estimate as it was. */
void tdm__jsched_done(tdm__job *job, int w, int64_t n, double dur_ns, bool idle);

/* Whether lane w is still exploring (a device then keeps one batch in flight, so each
 * exploration batch is measured before the next is sized). */
bool tdm__jsched_exploring(tdm__job *job, int w);

/* Whether an AUTO map whose key in the stored model is `key` (tdm__cm_map_key) should leave the
 * devices closed: the stored model already says none of them beats the runtime's CPU threads
 * for it (logged under TDM_DEBUG=sched). Opens the stored model if needed. Thread-safe. */
bool tdm__jsched_skip_devices(tdm_runtime *rt, const char *key);

/* Whether a device on the host's cores is exploring alone now (its driver inside the job, its
 * ladder not done, no share caps): the CPU workers that declined wait for the end of its
 * exploration (which offers them the job again), so waking them sooner changes nothing, and
 * their wake-ups land on the cores the device's own threads are starting on (see job.c). */
bool tdm__jsched_device_explores(tdm__job *job);

/* Device lane w begins building its program for the job (tdm__jsched_prepared ends it). */
void tdm__jsched_preparing(tdm__job *job, int w);
/* Device lane w has its program for the job built (or its build failed: the launch says so):
 * from now on it takes part in the job's scheduling. */
void tdm__jsched_prepared(tdm__job *job, int w);
/* Device lane w's driver runs its batches on the host (its program did not build, its whole
 * inputs are not on the device): they teach its estimate (tdm__jsched_done), not the stored
 * model. Called by the lane's own driver. */
void tdm__jsched_on_host(tdm__job *job, int w);
/* Device lane w leaves the job for good (its program did not build, under AUTO): no side waits
 * for it and no estimate counts it; the workers that stood down for it are called back. */
void tdm__jsched_gone(tdm__job *job, int w);

/* Device lane w's driver has a batch in flight (busy), or its last one in flight completed (not
 * busy): a host-CPU device's batches share the cores with the CPU workers', whose batches run
 * meanwhile then teach their estimates nothing (tdm__jsched_done). Called by the lane's own
 * driver; a no-op for a device on cores of its own. */
void tdm__jsched_device_busy(tdm__job *job, int w, bool busy);

/* Lane w's worker enters (1) or leaves (0) the job. */
void tdm__jsched_presence(tdm__job *job, int w, int in);

#endif
