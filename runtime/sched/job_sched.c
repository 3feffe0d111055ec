/* SPDX-License-Identifier: MIT */
/* The scheduler inside a job (see job_sched.h). */
#include "sched/job_sched.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched/costmodel.h"
#include "sched/device.h"

/* Per-batch fixed costs and preferred batch durations by kind of lane. */
#define TDM__LAT_THREAD 200.0   /* ns: claiming and accounting a batch */
#define TDM__LAT_PROC 5000.0    /* ns: the hand-off to a worker process and back */
#define TDM__TARGET_THREAD 100000.0
#define TDM__TARGET_PROC 1000000.0

/* The CPU budget: the cores this process may run on (its affinity mask). */
static int cpu_budget(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static double since(const tdm__jsched *s)
{
    return (double)(tdm__now_ns() - s->t0);
}

void tdm__device_lane_key(char *key, size_t len, const tdm__devslot *ds)
{
    /* (a long device name is cut: the result is tested so GCC knows it is meant) */
    int kl =
        snprintf(key, len, "%s:%s", tdm_backend_kind_name(ds ? ds->info.kind : TDM_BACKEND_OPENCL),
                 ds ? ds->info.name : "?");
    if (len > 0 && (kl < 0 || (size_t)kl >= len))
        key[len - 1] = '\0';
}

/* Sets lane w up from its kind, its device (if it has one yet) and the stored model: calibrated
 * from the model when it knows the lane, else exploring. Its worker's presence is not touched. */
static void lane_init(tdm__job *job, tdm__jsched *s, tdm__costmodel *cm, int w,
                      const tdm__devslot *ds)
{
    tdm__jlane *l = &s->lanes[w];
    unsigned on = tdm__worker_kind(job, w);
    bool preparing = false;
    l->eligible = (job->on & on) != 0;
    l->fill = 1;
    if (on == TDM__ON_THREADS) {
        l->kind = TDM_BACKEND_CPU_THREADS;
        l->lat = TDM__LAT_THREAD;
        l->target_ns = TDM__TARGET_THREAD;
        snprintf(l->key, sizeof l->key, "cpu");
    } else if (on == TDM__ON_PROCS) {
        l->kind = TDM_BACKEND_CPU_PROCS;
        l->lat = TDM__LAT_PROC;
        l->target_ns = TDM__TARGET_PROC;
        snprintf(l->key, sizeof l->key, "procs");
    } else {
        l->kind = ds ? ds->info.kind : TDM_BACKEND_OPENCL;
        l->lat = TDM__LAT_DEVICE;
        l->target_ns = TDM__TARGET_DEVICE;
        tdm__device_lane_key(l->key, sizeof l->key, ds);
        if (!ds || atomic_load(&ds->lost) || (job->dev_kind >= 0 && (int)l->kind != job->dev_kind))
            l->eligible = false;
        l->host_cpu = ds && ds->info.host_cpu;
        /* a batch fills the device when each compute unit has a few dozen items */
        l->fill = ds && ds->info.compute_units > 0 ? 64 * (int64_t)ds->info.compute_units : 64;
        /* A device with a prepare step builds its program before it takes part: until then
         * nobody waits for it (the program build would otherwise count as its time, and a
         * device on the host's cores would keep the threads waiting through it). */
        preparing = l->eligible && ds->ops->prepare != NULL;
    }
    int samples = 0;
    double stored_lat = 0;
    double stored = cm ? tdm__cm_get(cm, s->kernel, l->key, &stored_lat, &samples) : 0;
    l->from_model = stored > 0;
    l->recheck_cls = -1;
    l->confirm = false;
    int threads = 0; /* (a host-CPU device's: the threads' lanes, set up before it) */
    for (int j = 0; l->host_cpu && l->eligible && j < s->n; j++)
        threads += s->lanes[j].eligible && s->lanes[j].kind == TDM_BACKEND_CPU_THREADS;
    if (stored > 0 && l->host_cpu && l->eligible) {
        /* A close loss to the threads, from a few batches or passed over by several maps,
         * or a far one from a few batches passed over by several maps: measured again in
         * this map (it would otherwise never run again, and never be measured again). */
        double cpu = tdm__cm_get(cm, s->kernel, "cpu", NULL, NULL);
        int passed = tdm__cm_passed(cm, s->kernel, l->key);
        if (tdm__cm_measure_again(stored, samples, passed, cpu, threads)) {
            l->confirm = samples < TDM__CM_SETTLED &&
                         tdm__cm_close_unsettled(stored, samples, passed, cpu, threads);
            if (job->rt->debug & TDM_DEBUG_SCHED)
                tdm__log(job->rt, TDM_DEBUG_SCHED,
                         "sched %s: %s (worker %d): its stored %.3g ns/item, from %d batches, "
                         "%d maps run without it since, loses to the %d CPU threads' %.3g "
                         "together (%.1fx): it is measured again",
                         job->what, l->key, w, stored, samples, passed, threads, cpu / threads,
                         stored * threads / cpu);
            if (passed >= TDM__CM_RECHECK) { /* (the count starts again, run or not) */
                int cls = tdm__cm_recheck(cm, s->kernel, l->key);
                if (samples >= TDM__CM_SETTLED) /* (what it measures now weighs in) */
                    l->recheck_cls = cls;
            }
            stored = 0;
        }
    }
    tdm__est_init(&l->est, l->lat);
    if (stored > 0) {
        /* (seeded at the size of what the lane will measure: a batch of its target, a group
         * of as many as its queues for a device) */
        double batch = fmax(1, floor(l->target_ns / stored));
        tdm__est_seed(&l->est, stored, stored_lat, 4, ds ? batch * tdm__device_queues(ds) : batch);
        l->lat = l->est.lat;
    }
    /* (stores, not atomic_init: a lane that joins late is set up while the job runs; no one
     * reads these before its `joined` is released) */
    atomic_store_explicit(&l->preparing, preparing, memory_order_relaxed);
    atomic_store_explicit(&l->tpi, l->est.tpi, memory_order_relaxed);
    atomic_store_explicit(&l->lat_fit, l->est.tpi > 0 ? l->est.lat : l->lat, memory_order_relaxed);
    atomic_store_explicit(&l->free_at, since(s), memory_order_relaxed);
    atomic_store_explicit(&l->started, 0, memory_order_relaxed);
    atomic_store_explicit(&l->drop_seed, 0, memory_order_relaxed);
    atomic_store_explicit(&l->gone, 0, memory_order_relaxed);
    atomic_store_explicit(&l->prep_t0, 0, memory_order_relaxed);
    /* Uncalibrated: one item first (then 4x more each batch, see tdm__explore_next). */
    atomic_store_explicit(&l->explore, stored > 0 ? 0 : 1, memory_order_relaxed);
    /* A host-CPU device explores beside the threads first (tdm__beside_judge). */
    atomic_store_explicit(
        &l->beside, l->host_cpu && l->eligible && !(stored > 0) && threads > 0 && !s->split_cpu,
        memory_order_relaxed);
    l->beside_min_ns = 0;
    l->beside_max_ns = 0;
    l->long_rungs = 0;
}

void tdm__jsched_join(tdm__job *job, int w)
{
    tdm__jsched *s = job->sched;
    if (!s || w >= s->n || atomic_load_explicit(&s->lanes[w].joined, memory_order_relaxed))
        return;
    tdm__jlane *l = &s->lanes[w];
    lane_init(job, s, s->kernel[0] ? tdm__runtime_costmodel(job->rt) : NULL, w,
              tdm__device_of_worker(job->rt, w));
    atomic_store_explicit(&l->joined, 1, memory_order_release);
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED, "sched %s: %s (worker %d) joins the map at %.1f ms%s",
                 job->what, l->key, w, since(s) * 1e-6, l->eligible ? "" : " (not eligible)");
}

/* A host-CPU device whose stored figure beats the CPU threads' stored one, together, by less
 * than TDM__CM_CLOSE: the threads start unseeded and are measured again (they calibrate first,
 * as in a cold map; the device keeps its figure), so the side that runs is chosen on what they
 * do now. Taken as stored, threads that stand down for the device never run in the map and
 * never correct their figure: one cold run stored them 1.84x slow (9.96e5 ns per item against
 * the 5.4e5 they ran at), and every warm pi map after it ran on PoCL, at 0.875 of the threads'
 * speed (bench_sched). It applies in every such map (nothing settles it: the threads' first
 * batches cost a pi map well under 1%), not to a device measured again itself
 * (tdm__cm_measure_again: the threads keep their figure then), not in a lazy job (its devices
 * join while the seeded threads run, whose batches correct their figure), and not with share
 * caps (no side stands down there: shared_cores). */
static void threads_measured_again(tdm__job *job, tdm__jsched *s)
{
    if (job->capped)
        return;
    int threads = 0;
    double thr_tpi = 0;
    for (int w = 0; w < s->n; w++) {
        const tdm__jlane *l = &s->lanes[w];
        if (l->eligible && l->kind == TDM_BACKEND_CPU_THREADS) {
            threads++;
            thr_tpi = l->from_model && l->est.tpi > 0 ? l->est.tpi : 0;
        }
    }
    if (threads == 0 || !(thr_tpi > 0))
        return;
    double host = (double)threads / thr_tpi; /* (items per ns, the threads together) */
    const tdm__jlane *close = NULL;
    for (int w = 0; w < s->n && !close; w++) {
        const tdm__jlane *l = &s->lanes[w];
        double dev = l->est.tpi > 0 ? 1.0 / l->est.tpi : 0;
        if (l->eligible && l->host_cpu && l->from_model && dev > host && dev < host * TDM__CM_CLOSE)
            close = l;
    }
    if (!close)
        return;
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: %s's stored %.3g ns/item beats the %d CPU threads' stored %.3g "
                 "together by %.2fx, a close call: the threads are measured again",
                 job->what, close->key, close->est.tpi, threads, thr_tpi / threads,
                 thr_tpi / threads / close->est.tpi);
    for (int w = 0; w < s->n; w++)
        if (s->lanes[w].eligible && s->lanes[w].kind == TDM_BACKEND_CPU_THREADS)
            lane_init(job, s, NULL, w, NULL); /* (no model: unseeded, exploring) */
}

int tdm__jsched_create(tdm__job *job)
{
    tdm_runtime *rt = job->rt;
    unsigned kinds = 0;
    for (unsigned k = job->on; k; k &= k - 1)
        kinds++;
    if (kinds < 2 && !tdm__share_capped(&job->opts))
        return 0;
    tdm__jsched *s = calloc(1, sizeof *s);
    tdm__jlane *lanes = aligned_alloc(TDM__CACHELINE, sizeof *lanes * (size_t)job->n_workers);
    if (!s || !lanes) {
        free(s);
        free(lanes);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory (scheduler)", job->what);
    }
    memset(lanes, 0, sizeof *lanes * (size_t)job->n_workers);
    s->n = job->n_workers;
    s->lanes = lanes;
    s->kernel = job->model_key; /* (set by prepare_map for a map; "" for other jobs) */
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++) {
        double c = job->opts.share_cap[k];
        s->cap[k] = c > 0 && c < 1 ? (int64_t)ceil(c * (double)job->n_items) : INT64_MAX;
        job->capped |= s->cap[k] != INT64_MAX;
        atomic_init(&s->used[k], 0);
    }
    tdm__costmodel *cm = s->kernel[0] ? tdm__runtime_costmodel(rt) : NULL;
    s->t0 = tdm__now_ns();
    for (int w = 0; w < s->n; w++) {
        tdm__jlane *l = &lanes[w];
        atomic_init(&l->in_job, 0);
        /* (the devices read once: a background open may publish them meanwhile) */
        bool dev = tdm__worker_kind(job, w) == TDM__ON_DEVICES;
        const tdm__devslot *ds = dev ? tdm__device_of_worker(rt, w) : NULL;
        lane_init(job, s, cm, w, ds);
        /* A lazy job's lane for a device not open yet: set up again when its driver joins. */
        bool waits = dev && job->lazy_devices && !ds;
        atomic_init(&l->joined, waits ? 0 : 1);
        s->lazy |= waits;
    }
    threads_measured_again(job, s);
    atomic_init(&s->lazy_asked, 0);
    atomic_init(&s->running, -1);
    /* One CPU budget: threads and worker processes that together are more workers than cores
     * take turns like a host-CPU device (shared_cores()). */
    int cpu_lanes[2] = {0, 0};
    for (int w = 0; w < s->n; w++)
        if (lanes[w].eligible && (lanes[w].kind == TDM_BACKEND_CPU_THREADS ||
                                  lanes[w].kind == TDM_BACKEND_CPU_PROCS))
            cpu_lanes[lanes[w].kind == TDM_BACKEND_CPU_PROCS]++;
    s->cores = cpu_budget();
    s->split_cpu = cpu_lanes[0] > 0 && cpu_lanes[1] > 0 && cpu_lanes[0] + cpu_lanes[1] > s->cores;
    for (int w = 0; s->split_cpu && w < s->n; w++) /* (a device explores alone there) */
        atomic_store_explicit(&lanes[w].beside, 0, memory_order_relaxed);
    /* A device opening or building its program computes on the host's cores too: while it
     * does, the last CPU thread leaves it one (see device_setup_runs) when the CPU workers
     * fill the cores and at least one thread stays. */
    s->yield_lane = -1;
    int cpu_workers = cpu_lanes[0] + (s->split_cpu ? 0 : cpu_lanes[1]);
    for (int w = 0; (job->on & TDM__ON_DEVICES) && cpu_lanes[0] >= 2 && cpu_workers >= s->cores &&
                    w < s->n;
         w++)
        if (lanes[w].eligible && lanes[w].kind == TDM_BACKEND_CPU_THREADS)
            s->yield_lane = w;
    if (s->split_cpu && (rt->debug & TDM_DEBUG_SCHED))
        tdm__log(rt, TDM_DEBUG_SCHED,
                 "sched %s: %d threads + %d worker processes > %d cores (one CPU budget): "
                 "they take turns, the faster side runs the map",
                 job->what, cpu_lanes[0], cpu_lanes[1], s->cores);
    job->declined_gen = malloc(sizeof *job->declined_gen * (size_t)job->n_workers);
    if (!job->declined_gen) {
        free(lanes);
        free(s);
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory (scheduler)", job->what);
    }
    for (int w = 0; w < job->n_workers; w++)
        job->declined_gen[w] = UINT_MAX;
    job->sched = s;
    return 0;
}

/* Whether lane v's estimate goes into the stored model at the job's end: it ran batches of the
 * job, measured, on its own kind of worker (not a device's driver running them on the host). */
static bool teaches_model(const tdm__job *job, const tdm__jsched *s, int v)
{
    return s->lanes[v].est.count > 0 && job->ws[v].batches > 0 && !s->lanes[v].on_host;
}

void tdm__jsched_destroy(tdm__job *job)
{
    tdm__jsched *s = job->sched;
    if (!s)
        return;
    if (atomic_load_explicit(&job->reoffers, memory_order_relaxed) > 0)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: its completions offered it again %d times to the workers that "
                 "stood down (at most every %.0f ms)",
                 job->what, atomic_load_explicit(&job->reoffers, memory_order_relaxed),
                 TDM__REOFFER_NS * 1e-6);
    tdm__costmodel *cm = s->kernel[0] ? tdm__runtime_costmodel(job->rt) : NULL;
    for (int w = 0; cm && w < s->n; w++) /* (their last batches fitted in: the workers are gone) */
        tdm__est_flush(&s->lanes[w].est);
    /* Stored figures this map found stale go first (the map's own are stored below). */
    for (int w = 0; cm && w < s->n; w++)
        if (s->lanes[w].seed_stale && !s->lanes[w].est.seeded)
            tdm__cm_drop_stale(cm, s->kernel, s->lanes[w].key, s->lanes[w].est.tpi);
    /* A host-CPU device that started from a stored figure and ran nothing in a map that
     * ended well and was long enough to fill it: one more map without it
     * (tdm__cm_measure_again measures its figure again after a few). */
    bool whole = tdm__job_whole(job);
    for (int w = 0; cm && whole && w < s->n; w++) {
        const tdm__jlane *l = &s->lanes[w];
        if (!l->host_cpu || !l->from_model || !l->eligible || job->n_items < l->fill ||
            !atomic_load_explicit(&l->joined, memory_order_acquire))
            continue;
        bool ran = false, first = true;
        for (int v = 0; v < s->n; v++)
            if (!strcmp(s->lanes[v].key, l->key)) {
                ran |= job->ws[v].batches > 0;
                first &= v >= w || !s->lanes[v].from_model || !s->lanes[v].eligible;
            }
        if (first && !ran)
            tdm__cm_pass(cm, s->kernel, l->key);
    }
    /* One value per kind of lane: the median of its lanes' estimates (for CPU threads, all
     * threads count as one model). */
    for (int w = 0; cm && w < s->n; w++) {
        const tdm__jlane *l = &s->lanes[w];
        if (!teaches_model(job, s, w))
            continue;
        bool first = true;
        for (int v = 0; v < w; v++)
            if (!strcmp(s->lanes[v].key, l->key) && teaches_model(job, s, v))
                first = false;
        if (!first)
            continue;
        double tpis[256], lats[256];
        int k = 0;
        int64_t batches = 0, items = 0;
        for (int v = w; v < s->n && k < 256; v++) {
            if (strcmp(s->lanes[v].key, l->key) || !teaches_model(job, s, v))
                continue;
            tpis[k] = s->lanes[v].est.tpi;
            lats[k++] = s->lanes[v].est.lat;
            batches += job->ws[v].batches;
            items += job->ws[v].items;
        }
        int cls = tdm__cm_size_class(batches ? items / batches : 1);
        int nb = batches > 1000000 ? 1000000 : (int)batches;
        if (l->recheck_cls >= 0) /* (a settled figure measured again) */
            tdm__cm_put_again(cm, s->kernel, l->key, l->recheck_cls, tdm__median(tpis, k),
                              tdm__median(lats, k), nb);
        else if (l->confirm) /* (a close call measured again: two maps may agree on it) */
            tdm__cm_put_confirm(cm, s->kernel, l->key, cls, tdm__median(tpis, k),
                                tdm__median(lats, k), nb);
        else /* (into the entry read: see tdm__cm_put_read) */
            tdm__cm_put_read(cm, s->kernel, l->key, cls, tdm__median(tpis, k), tdm__median(lats, k),
                             nb);
    }
    free(s->lanes);
    free(s);
    job->sched = NULL;
}

bool tdm__jsched_skip_devices(tdm_runtime *rt, const char *key)
{
    if (!rt->backends[TDM_BACKEND_CPU_THREADS].enabled || rt->threads < 1)
        return false;
    if (rt->devices) /* (atomic; no lock: a background open holds dev_mu while it works) */
        return false; /* opened already (the scheduler then keeps a slower one waiting) */
    char why[256];
    tdm__costmodel *cm = tdm__runtime_costmodel(rt);
    if (!tdm__cm_devices_slower(cm, key, rt->threads, why, sizeof why))
        return false;
    tdm__log(rt, TDM_DEBUG_SCHED,
             "sched %s: devices left closed: the stored model says none is more than 5%% faster "
             "than the CPU (%s)",
             key, why);
    return true;
}

/* A device lost during the run takes no more work. */
static bool lane_alive(tdm__job *job, int w)
{
    if (tdm__worker_kind(job, w) != TDM__ON_DEVICES)
        return true;
    if (atomic_load_explicit(&job->sched->lanes[w].gone, memory_order_acquire))
        return false;
    const tdm__devslot *ds = tdm__device_of_worker(job->rt, w);
    return ds && !atomic_load_explicit(&ds->lost, memory_order_relaxed);
}

/* A side's speed, items per ns: its calibrated lanes' mean (`sum` of their items per ns over
 * `calibrated` of them) times its `lanes` (a lane still calibrating counts at its calibrated
 * peers' mean). 0 when none is calibrated. */
static double side_rate(double sum, int lanes, int calibrated)
{
    return calibrated > 0 ? sum * (double)lanes / (double)calibrated : 0;
}

/* Sides that compute on the same CPU cores. */
enum { SIDE_THREADS, SIDE_PROCS, SIDE_DEVICE, SIDE_N };
static const char *const side_name[SIDE_N] = {"CPU threads", "worker processes",
                                              "host-CPU device"};

/* Lane l's side of the shared cores, -1 for a lane on cores of its own (a GPU). Worker
 * processes are a side of their own only when threads and processes together are more than
 * the cores (s->split_cpu); otherwise they add up with the threads and count as one side. */
static int side_of(const tdm__jsched *s, const tdm__jlane *l)
{
    if (l->kind == TDM_BACKEND_CPU_THREADS)
        return SIDE_THREADS;
    if (l->kind == TDM_BACKEND_CPU_PROCS)
        return s->split_cpu ? SIDE_PROCS : SIDE_THREADS;
    return l->host_cpu ? SIDE_DEVICE : -1;
}

/* What shared_cores() makes of the sides of the shared cores now. */
enum { TURN_NONE, TURN_ALONE, TURN_PAIRED, TURN_DECIDED };

/* The CPU threads and the worker processes measured side by side: how many lanes of each run
 * (the rest of both sides, and a host-CPU device, wait). Half the cores for the processes,
 * the rest for the threads, so each measured lane has a core of its own. With one core there
 * is no pair (0 processes): the sides are measured one after the other. */
static void pair_quota(const tdm__jsched *s, const int *lanes, int *quota)
{
    int half = s->cores / 2;
    quota[SIDE_PROCS] = lanes[SIDE_PROCS] < half ? lanes[SIDE_PROCS] : half;
    int rest = s->cores - quota[SIDE_PROCS];
    quota[SIDE_THREADS] = lanes[SIDE_THREADS] < rest ? lanes[SIDE_THREADS] : rest;
    quota[SIDE_DEVICE] = 0;
}

/* Marks in keep[] which lanes of side g run while the two CPU sides are measured side by side:
 * quota of them, first those that took a batch already (they keep going), then those inside
 * the job now, then by index. True if one of them is inside the job now. */
static bool pick_paired(const tdm__jsched *s, const tdm__lane_view *v, const bool *present,
                        int n, int g, int quota, bool *keep)
{
    bool inside = false;
    for (int pass = 0; pass < 3; pass++)
        for (int j = 0; j < n && quota > 0; j++) {
            if (keep[j] || !v[j].eligible || side_of(s, &s->lanes[j]) != g)
                continue;
            bool started = atomic_load_explicit(&s->lanes[j].started, memory_order_relaxed);
            if ((pass == 0 && !started) || (pass == 1 && !present[j]))
                continue;
            keep[j] = true;
            inside |= present[j];
            quota--;
        }
    return inside;
}

/* Whether the CPU threads of the job are all calibrated (and there is one). */
static bool threads_calibrated(const tdm__jsched *s, const tdm__lane_view *v, int n)
{
    int lanes = 0;
    for (int j = 0; j < n; j++) {
        if (!v[j].eligible || s->lanes[j].kind != TDM_BACKEND_CPU_THREADS)
            continue;
        if (!(v[j].tpi > 0) || v[j].explore != 0)
            return false;
        lanes++;
    }
    return lanes > 0;
}

/* One CPU budget. A device computing on the host's cores, the CPU threads and (when the two
 * together are more workers than cores) the worker processes share those cores: their
 * throughputs do not add up, and measured side by side on the same cores each would see the
 * others' load, not its own speed.
 *  - The threads and the processes are measured first, side by side, on half the cores each
 *    (pair_quota): a core each, no core idle, and both through the same first milliseconds of
 *    the map. Measured one after the other, threads first, the threads' figure took the map's
 *    start (a pool thread woken late, queued behind the other on one core, or the cores
 *    still slow from idling) and read 30-100% slower than their true speed, so processes
 *    measured later won maps they lose.
 *  - Then a host-CPU device alone (the CPU sides wait).
 *  - Then the fastest side runs the rest of the map and the others stand down (in that order
 *    the processes must be 5% faster than the threads to displace them, so the threads keep
 *    a tie; a host-CPU device 2% faster than the side chosen before it: at 5% the threads
 *    kept maps the device ran up to 5% faster, past the 3% AUTO may cost, as in a
 *    bench_sched run whose stored figures read 2.65e5 ns per item for the threads together
 *    and 2.62e5 for PoCL, OpenCL alone 6.6% faster than the threads alone, and AUTO's warm
 *    pi maps 0.922 of OpenCL's). Once a host-CPU device runs, it is left out of that order,
 *    and a CPU side must be 5% faster than it to take over (tdm__side_pick): handing the
 *    cores back and forth costs the device's queues and its threads' wake-ups, and the side
 *    that waits keeps the figure it had. Between the threads and the processes, measured
 *    side by side and quick to hand over, the order alone decides: there a side that held
 *    its place kept the processes, chosen on a cold map's unlucky first batches of the
 *    threads, for 43-66% of later warm pi maps (the threads 12% faster) in 3 runs of 5.
 *    When the threads or the processes win and have fewer workers than the budget, the
 *    other CPU side keeps as many workers as cores are left.
 * A side's speed is its calibrated lanes' mean times its lanes. With a stored model every side
 * is calibrated from the start and the choice is immediate.
 * Marks the lanes that must wait ineligible in v; true if it did; *run gets the side that
 * runs (-1 when the two CPU sides run side by side), *turn what the turn is, *run_inside
 * whether a lane that runs is inside the job now, and when the pick changed, picked_on[side]
 * the speed (items/ns) each side was picked on (0 for a side without lanes). */
static bool shared_cores(tdm__jsched *s, tdm__lane_view *v, const bool *present, bool sole, int n,
                         int *run_out, int *turn, bool *run_inside, double *picked_on)
{
    double rate[SIDE_N] = {0};
    bool any[SIDE_N] = {false}, here[SIDE_N] = {false}, inside[SIDE_N] = {false};
    int lanes[SIDE_N] = {0}, calibrated[SIDE_N] = {0};
    *run_out = -1;
    *turn = TURN_NONE;
    *run_inside = false;
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        if (s->cap[k] != INT64_MAX)
            return false; /* with share caps, every side has to take its part */
    /* A host-CPU device exploring beside the threads is no side yet, once the threads are
     * calibrated (until then it waits: it would slow their first batches). */
    bool threads_ready = threads_calibrated(s, v, n);
    for (int j = 0; j < n; j++) {
        int g = v[j].eligible ? side_of(s, &s->lanes[j]) : -1; /* (an unjoined lane: not read) */
        if (g < 0 || (g == SIDE_DEVICE && threads_ready && v[j].beside))
            continue;
        bool r = v[j].tpi > 0 && v[j].explore == 0;
        any[g] = true;
        lanes[g]++;
        calibrated[g] += r;
        rate[g] += r ? 1.0 / v[j].tpi : 0;
        here[g] |= present[j] || sole;
        inside[g] |= present[j];
    }
    if (any[SIDE_THREADS] + any[SIDE_PROCS] + any[SIDE_DEVICE] < 2)
        return false;
    /* Calibrated: every lane, or for the two CPU sides of a split budget, as many as ran side
     * by side (the others may never run). */
    int quota[SIDE_N];
    pair_quota(s, lanes, quota);
    bool paired = s->split_cpu && quota[SIDE_PROCS] > 0 && quota[SIDE_THREADS] > 0;
    bool ready[SIDE_N];
    for (int g = 0; g < SIDE_N; g++) {
        int need = paired && g != SIDE_DEVICE ? quota[g] : lanes[g];
        ready[g] = calibrated[g] >= need;
        rate[g] = side_rate(rate[g], lanes[g], calibrated[g]);
    }
    if (paired && (!ready[SIDE_THREADS] || !ready[SIDE_PROCS]) && here[SIDE_THREADS] &&
        here[SIDE_PROCS]) {
        bool keep[256] = {false};
        bool in = pick_paired(s, v, present, n, SIDE_THREADS, quota[SIDE_THREADS], keep);
        in |= pick_paired(s, v, present, n, SIDE_PROCS, quota[SIDE_PROCS], keep);
        *turn = TURN_PAIRED;
        *run_inside = in;
        bool waited = false;
        for (int j = 0; j < n; j++)
            if (v[j].eligible && side_of(s, &s->lanes[j]) >= 0 && !keep[j]) {
                v[j].eligible = false;
                waited = true;
            }
        return waited;
    }
    int run = -1;
    bool deciding = true;
    for (int g = 0; g < SIDE_N && run < 0; g++)
        if (any[g] && !ready[g]) { /* the first side not calibrated yet measures alone */
            run = g;
            deciding = false;
        }
    if (deciding) {
        /* (only a device holds its place: see the comment above) */
        int was = atomic_load_explicit(&s->running, memory_order_relaxed);
        static const double margin[SIDE_N] = {1.0, TDM__SIDE_MARGIN_PROCS,
                                              TDM__SIDE_MARGIN_DEVICE}; /* (threads: first) */
        run = tdm__side_pick(rate, any, margin, SIDE_N, was == SIDE_DEVICE ? was : -1);
        /* (workers deciding at once may store one after the other: a pick made just before
         * the device was chosen can drop its hold for a moment, no more) */
        if (run != was && atomic_compare_exchange_strong_explicit(
                              &s->running, &was, run, memory_order_relaxed, memory_order_relaxed))
            for (int g = 0; g < SIDE_N; g++) /* (for the log: what it was picked on, once) */
                picked_on[g] = any[g] ? rate[g] : 0;
    }
    *run_out = run;
    *turn = deciding ? TURN_DECIDED : TURN_ALONE;
    *run_inside = inside[run];
    /* A side waits only for the one that runs being inside the job now, or on its way (the
     * runtime's only job: its workers have nothing else to do; one that stood down is called
     * back by the caller): waiting for one busy in another job could leave this one with
     * nobody working on it. */
    if (!here[run])
        return false;
    /* Cores the running CPU side leaves free, for the other CPU side's first workers. */
    int spare = deciding && run != SIDE_DEVICE ? s->cores - lanes[run] : 0;
    bool waited = false;
    for (int j = 0; j < n; j++) {
        int g = v[j].eligible ? side_of(s, &s->lanes[j]) : -1;
        if (g < 0 || g == run || (g == SIDE_DEVICE && threads_ready && v[j].beside))
            continue;
        if (g != SIDE_DEVICE && spare > 0) {
            spare--;
            continue;
        }
        v[j].eligible = false;
        waited = true;
    }
    return waited;
}

static void offer_again(tdm__job *job);
static double threads_rate(const tdm__jsched *s);

void tdm__jsched_preparing(tdm__job *job, int w)
{
    if (job->sched && w < job->sched->n)
        atomic_store_explicit(&job->sched->lanes[w].prep_t0, tdm__now_ns(), memory_order_relaxed);
}

void tdm__jsched_prepared(tdm__job *job, int w)
{
    if (!job->sched || w >= job->sched->n)
        return;
    tdm__jlane *l = &job->sched->lanes[w];
    atomic_store_explicit(&l->preparing, 0, memory_order_relaxed);
    /* The thread that left the build a core comes back, unless a host-CPU device is about to
     * explore alone: the end of its exploration calls it back (tdm__jsched_device_explores). */
    bool explores =
        l->host_cpu && l->eligible && atomic_load_explicit(&l->explore, memory_order_relaxed) > 0 &&
        !atomic_load_explicit(&l->beside, memory_order_relaxed) && threads_rate(job->sched) > 0;
    if (job->sched->yield_lane >= 0 && !explores)
        offer_again(job);
}

void tdm__jsched_on_host(tdm__job *job, int w)
{
    if (job->sched && w < job->sched->n)
        job->sched->lanes[w].on_host = true;
}

void tdm__jsched_gone(tdm__job *job, int w)
{
    if (!job->sched || w >= job->sched->n)
        return;
    tdm__jlane *l = &job->sched->lanes[w];
    atomic_store_explicit(&l->gone, 1, memory_order_release);
    atomic_store_explicit(&l->preparing, 0, memory_order_relaxed);
    atomic_store_explicit(&l->in_job, 0, memory_order_relaxed);
    atomic_store_explicit(&l->beside, 0, memory_order_release);
    offer_again(job);
}

bool tdm__jsched_device_explores(tdm__job *job)
{
    const tdm__jsched *s = job->sched;
    if (!s || job->capped) /* (no side waits for another there: shared_cores) */
        return false;
    for (int w = 0; w < s->n; w++) {
        const tdm__jlane *l = &s->lanes[w];
        if (atomic_load_explicit(&l->joined, memory_order_acquire) && l->eligible && l->host_cpu &&
            atomic_load_explicit(&l->in_job, memory_order_relaxed) &&
            atomic_load_explicit(&l->started, memory_order_relaxed) &&
            !atomic_load_explicit(&l->preparing, memory_order_relaxed) &&
            atomic_load_explicit(&l->explore, memory_order_relaxed) > 0 &&
            !atomic_load_explicit(&l->beside, memory_order_relaxed) && lane_alive(job, w))
            return true; /* (one lost or gone explores no more) */
    }
    return false;
}

void tdm__jsched_device_busy(tdm__job *job, int w, bool busy)
{
    tdm__jsched *s = job->sched;
    if (!s || w >= s->n || !s->lanes[w].host_cpu)
        return;
    atomic_store_explicit(&s->lanes[w].dev_idle_at, busy ? UINT64_MAX : tdm__now_ns(),
                          memory_order_relaxed);
}

/* Whether a host-CPU device of the job had a batch in flight at some time in the last dur_ns:
 * a CPU worker's batch that took them, just ended, shared its cores with the device's batches
 * (and with PoCL's compiles of a work-group function for each new launch shape: a pi rung of
 * 16 items took 24 ms). Never with share caps: every side runs throughout there
 * (shared_cores), and none would learn. The clock is read only for a job with such a device. */
static bool host_device_busy_within(const tdm__job *job, const tdm__jsched *s, double dur_ns)
{
    if (job->capped)
        return false;
    uint64_t from = 0;
    for (int w = 0; w < s->n; w++) {
        const tdm__jlane *l = &s->lanes[w];
        if (!atomic_load_explicit(&l->joined, memory_order_acquire) || !l->host_cpu)
            continue;
        if (!from)
            from = tdm__now_ns() - (uint64_t)dur_ns;
        if (atomic_load_explicit(&l->dev_idle_at, memory_order_relaxed) > from)
            return true;
    }
    return false;
}

void tdm__jsched_presence(tdm__job *job, int w, int in)
{
    if (job->sched && w < job->sched->n)
        atomic_store_explicit(&job->sched->lanes[w].in_job, in, memory_order_relaxed);
}

bool tdm__jsched_exploring(tdm__job *job, int w)
{
    return atomic_load_explicit(&job->sched->lanes[w].explore, memory_order_relaxed) > 0;
}

/* Which side of the shared cores runs may change now (a lane is calibrated), or the side that
 * runs is not inside the job: the workers that stood down are offered the job again at once
 * (a completion offers it at most every TDM__REOFFER_NS: job.c). */
static void offer_again(tdm__job *job)
{
    if (atomic_load_explicit(&job->n_declined, memory_order_relaxed) == 0)
        return;
    atomic_fetch_add_explicit(&job->done_gen, 1, memory_order_acq_rel);
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    pthread_mutex_lock(mu);
    tdm__pool_kick(job->rt->pool);
    pthread_mutex_unlock(mu);
}

bool tdm__jsched_cap_left(const tdm__job *job, int w)
{
    const tdm__jsched *s = job->sched;
    if (!s || w >= s->n)
        return true;
    int k = s->lanes[w].kind;
    return s->cap[k] == INT64_MAX ||
           atomic_load_explicit(&s->used[k], memory_order_relaxed) < s->cap[k];
}

/* Takes up to n items from kind k's cap (s->cap[k] finite): how many it got (0: the cap is
 * used up). tdm__jsched_claimed() gives back what the claim did not get. */
static int64_t reserve_capped(tdm__jsched *s, int k, int64_t n)
{
    long long used = atomic_load_explicit(&s->used[k], memory_order_relaxed);
    for (;;) {
        int64_t left = s->cap[k] - (int64_t)used;
        int64_t take = n < left ? n : left;
        if (take <= 0)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&s->used[k], &used, used + take,
                                                  memory_order_relaxed, memory_order_relaxed))
            return take;
    }
}

/* The estimate's window is full of batches of about one size (none 1.5x another). */
static bool sizes_alike(const tdm__est *e)
{
    if (e->count < TDM__EST_WIN)
        return false;
    double lo = e->n[0], hi = e->n[0];
    for (int i = 1; i < e->count; i++) {
        lo = e->n[i] < lo ? e->n[i] : lo;
        hi = e->n[i] > hi ? e->n[i] : hi;
    }
    return hi < 1.5 * lo;
}

#define TDM__LAZY_MIN_BATCHES 8

/* What the CPU workers of the job need for the items left, in ns, from their calibrated lanes
 * (a lane still calibrating counts at the mean rate of its calibrated peers: leaving it out
 * read a 22 ms exp_sinh map on two threads as 24 to 91 ms, one thread calibrated after its 8
 * batches, the other not yet); INFINITY while none is calibrated. The threads and the worker
 * processes add up, unless they take turns on the cores (s->split_cpu): then the faster. */
static double cpu_ns_left(tdm__job *job)
{
    tdm__jsched *s = job->sched;
    double rate[2] = {0, 0};
    int lanes[2] = {0, 0}, calibrated[2] = {0, 0};
    for (int j = 0; j < s->n; j++) {
        const tdm__jlane *l = &s->lanes[j];
        if (l->kind != TDM_BACKEND_CPU_THREADS && l->kind != TDM_BACKEND_CPU_PROCS)
            continue;
        if (!l->eligible || !lane_alive(job, j))
            continue;
        int side = l->kind == TDM_BACKEND_CPU_PROCS;
        lanes[side]++;
        double tpi = atomic_load_explicit(&l->tpi, memory_order_relaxed);
        if (tpi > 0 && atomic_load_explicit(&l->explore, memory_order_relaxed) == 0) {
            rate[side] += 1.0 / tpi;
            calibrated[side]++;
        }
    }
    for (int side = 0; side < 2; side++)
        rate[side] = side_rate(rate[side], lanes[side], calibrated[side]);
    double r = s->split_cpu ? (rate[0] > rate[1] ? rate[0] : rate[1]) : rate[0] + rate[1];
    int64_t left = job->n_items - atomic_load_explicit(&job->cursor, memory_order_relaxed);
    return r > 0 ? (double)(left > 0 ? left : 0) / r : INFINITY;
}

/* A lazy job (devices closed when it was made) asks for them once its CPU lanes are
 * calibrated, when the items left would need the bar or more of the CPU (tdm__device_open_bar),
 * counting what the runtime's earlier maps needed while they left the devices closed: the
 * devices then open in the background and their drivers join (tdm__jsched_join). Their set-up
 * is CPU work on the host's cores, paid back only over a long enough run: without a GPU's
 * device node, where the devices (PoCL) share the cores, the bar is 1 s. PoCL's open took 38 ms of
 * a core and its pi build 32-110 ms more, and a first pi map of 0.5 s on two threads that opened it
 * (the bar was then 100 ms, one map's own) took 1.09-1.12x the time of the same map on the
 * threads alone, and 1.06x when the device, once open, was kept out of it. A map that leaves
 * them closed adds what it needs to the runtime's count, so that short maps, one after the
 * other, still open them once they come to the bar (a GPU can run them far faster). */
static void maybe_open_devices(tdm__job *job, int w)
{
    tdm__jsched *s = job->sched;
    if (!s->lazy || atomic_load_explicit(&s->lazy_asked, memory_order_relaxed) != 0)
        return;
    /* Decided by a CPU lane with a few batches measured: the first ones, a few items each,
     * carry their fixed cost in the time per item (under TSan on a busy core, ten times the
     * true one), which would open the devices for a map of milliseconds. */
    tdm_backend_kind mine = s->lanes[w].kind;
    if (mine != TDM_BACKEND_CPU_THREADS && mine != TDM_BACKEND_CPU_PROCS)
        return;
    if (job->lazy_open_now) { /* (decided by the map's set-up: "the map asks for the devices") */
        int none = 0;
        if (!atomic_compare_exchange_strong(&s->lazy_asked, &none, 1))
            return;
        if (job->rt->debug & TDM_DEBUG_SCHED)
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "sched %s: the devices open in the background as the map starts on the CPU",
                     job->what);
        tdm__devices_open_async(job->rt);
        return;
    }
    if (s->lanes[w].est.count < TDM__LAZY_MIN_BATCHES)
        return;
    double cpu_ns = cpu_ns_left(job);
    if (!isfinite(cpu_ns))
        return;
    int64_t left = job->n_items - atomic_load_explicit(&job->cursor, memory_order_relaxed);
    double before = (double)atomic_load_explicit(&job->rt->closed_cpu_ns, memory_order_relaxed);
    int expected = 0;
    double bar = tdm__device_open_bar(job->rt);
    int decision = cpu_ns + before >= bar ? 1 : 2;
    if (!atomic_compare_exchange_strong(&s->lazy_asked, &expected, decision))
        return;
    if (decision == 2) { /* (the whole map's, at the rate of the items left) */
        double whole = cpu_ns * (double)job->n_items / (double)(left > 0 ? left : 1);
        tdm__devices_bar_count(job->rt, job->what, whole, left > 0 ? left : 0);
        return;
    }
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: the CPU needs about %.1f ms for the %lld items left, the maps before "
                 "that left the devices closed %.1f ms: the devices open in the background",
                 job->what, cpu_ns * 1e-6, (long long)left, before * 1e-6);
    tdm__devices_open_async(job->rt);
}

void tdm__devices_bar_count(tdm_runtime *rt, const char *what, double ns, int64_t left)
{
    double bar = tdm__device_open_bar(rt);
    double add = ns > 0 ? (ns < bar ? ns : bar) : 0; /* (NaN: nothing) */
    long long before =
        atomic_fetch_add_explicit(&rt->closed_cpu_ns, (long long)add, memory_order_relaxed);
    if (rt->debug & TDM_DEBUG_SCHED) {
        char items[80] = "map (stored model)";
        if (left >= 0)
            snprintf(items, sizeof items, "map (from its first batches, %lld items left)",
                     (long long)left);
        tdm__log(rt, TDM_DEBUG_SCHED,
                 "sched %s: the CPU needs about %.1f ms for the %s, the maps before that left the "
                 "devices closed %.1f ms: the devices stay closed",
                 what, add * 1e-6, items, (double)before * 1e-6);
    }
}

/* A device's set-up runs now: the runtime's devices open in the background, or a device lane
 * of this job has been building its program for over a millisecond (a build already done
 * takes microseconds: the CPU threads do not stand down for every map's start). Both are CPU
 * work on the host's cores: PoCL's open took 50-60 ms and its pi build 66-108 ms beside two
 * busy threads, against 28 and 60 ms with a core to themselves, and the first pi map of a
 * fresh runtime ran at 0.95x of PoCL alone. The CPU work of the set-up is the same either
 * way; given a core, the device joins sooner. */
static bool device_setup_runs(const tdm__job *job, int n)
{
    if (atomic_load_explicit(&job->rt->dev_opening, memory_order_relaxed))
        return true;
    const tdm__jsched *s = job->sched;
    uint64_t now = 0;
    for (int j = 0; j < n; j++) {
        const tdm__jlane *l = &s->lanes[j];
        if (tdm__worker_kind(job, j) != TDM__ON_DEVICES ||
            !atomic_load_explicit(&l->joined, memory_order_acquire) ||
            !atomic_load_explicit(&l->preparing, memory_order_relaxed))
            continue;
        uint64_t t0 = atomic_load_explicit(&l->prep_t0, memory_order_relaxed);
        if (t0 && !now)
            now = tdm__now_ns();
        if (t0 && now > t0 + 1000000)
            return true;
    }
    return false;
}

/* Another lane of lane w's kind found the stored figure they both started from stale
 * (tdm__jsched_done): lane w, on its own worker, drops it too and explores afresh. A lane held
 * back by a figure far too slow would otherwise never take the batches that show it. */
static void drop_seed(tdm__job *job, int w)
{
    tdm__jlane *l = &job->sched->lanes[w];
    if (!atomic_load_explicit(&l->drop_seed, memory_order_relaxed) ||
        !atomic_exchange_explicit(&l->drop_seed, 0, memory_order_relaxed) || !l->est.seeded)
        return;
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: %s (worker %d): drops the stored model's %.3g ns/item, found stale "
                 "by another worker of its kind, and explores",
                 job->what, l->key, w, l->est.seed_tpi);
    tdm__est_init(&l->est, l->est.lat0);
    l->seed_stale = true;
    atomic_store_explicit(&l->tpi, 0.0, memory_order_relaxed);
    atomic_store_explicit(&l->lat_fit, l->lat, memory_order_relaxed);
    atomic_store_explicit(&l->explore, 1, memory_order_relaxed);
    l->long_rungs = 0;
    atomic_store_explicit(&l->free_at, since(job->sched), memory_order_relaxed);
}

int64_t tdm__jsched_want(tdm__job *job, int w, double *est_ns)
{
    tdm__jsched *s = job->sched;
    tdm__lane_view v[256];
    int n = s->n < 256 ? s->n : 256;
    if (w < s->n)
        drop_seed(job, w);
    double now = since(s);
    for (int j = 0; j < n; j++) {
        tdm__jlane *l = &s->lanes[j];
        if (!atomic_load_explicit(&l->joined, memory_order_acquire)) {
            v[j] = (tdm__lane_view){.eligible = false}; /* a device not open yet */
            continue;
        }
        int64_t used = atomic_load_explicit(&s->used[l->kind], memory_order_relaxed);
        /* (beside before explore: a device that leaves it stores its explore first) */
        bool beside = atomic_load_explicit(&l->beside, memory_order_acquire);
        v[j] = (tdm__lane_view){
            .tpi = atomic_load_explicit(&l->tpi, memory_order_relaxed),
            .free_at = atomic_load_explicit(&l->free_at, memory_order_relaxed),
            .lat = atomic_load_explicit(&l->lat_fit, memory_order_relaxed),
            .target_ns = l->target_ns,
            .cap_left = s->cap[l->kind] == INT64_MAX ? INT64_MAX : s->cap[l->kind] - used,
            .explore = atomic_load_explicit(&l->explore, memory_order_relaxed),
            .beside = beside,
            .eligible = l->eligible && lane_alive(job, j) &&
                        !atomic_load_explicit(&l->preparing, memory_order_relaxed),
        };
    }
    if (w >= n)
        return 0;
    maybe_open_devices(job, w);
    int yl = s->yield_lane;
    if (yl >= 0 && yl < n && v[yl].eligible && device_setup_runs(job, n)) {
        v[yl].eligible = false; /* (no lane counts on it meanwhile) */
        if (w == yl) {
            if (!s->lanes[w].declining && (job->rt->debug & TDM_DEBUG_SCHED))
                tdm__log(job->rt, TDM_DEBUG_SCHED,
                         "sched %s: %s (worker %d) waits: it leaves a core to a device opening "
                         "or building its program",
                         job->what, s->lanes[w].key, w);
            s->lanes[w].declining = true;
            return 0;
        }
    }
    /* Which side of shared cores runs is chosen from every lane of the job; then only the
     * lanes inside the job now are counted on (one busy in another job, or gone after
     * declining, might not come back in time). */
    bool present[256];
    for (int j = 0; j < n; j++)
        present[j] = j == w || atomic_load_explicit(&s->lanes[j].in_job, memory_order_relaxed);
    bool sole = atomic_load_explicit(&job->rt->jobs_in_flight, memory_order_relaxed) <= 1;
    int run = -1, turn = TURN_NONE;
    bool run_inside = false;
    double picked_on[SIDE_N] = {-1, -1, -1};
    bool lost_cores = shared_cores(s, v, present, sole, n, &run, &turn, &run_inside, picked_on);
    if (picked_on[0] >= 0 && run >= 0 && (job->rt->debug & TDM_DEBUG_SCHED))
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: the %s run on the shared CPU cores now (each side's speed: threads "
                 "%.4g, worker processes %.4g, host-CPU device %.4g items/ms; 0: none)",
                 job->what, side_name[run], picked_on[SIDE_THREADS] * 1e6,
                 picked_on[SIDE_PROCS] * 1e6, picked_on[SIDE_DEVICE] * 1e6);
    if (lost_cores && !v[w].eligible && !run_inside)
        offer_again(job); /* the side that runs stood down earlier: call it back */
    for (int j = 0; j < n; j++)
        if (!present[j])
            v[j].eligible = false;
    tdm__jlane *me = &s->lanes[w];
    if (!v[w].eligible) {
        if (lost_cores && !me->declining && (job->rt->debug & TDM_DEBUG_SCHED)) {
            if (turn == TURN_PAIRED)
                tdm__log(job->rt, TDM_DEBUG_SCHED,
                         "sched %s: %s (worker %d) waits: it shares the CPU cores (%d) with "
                         "the CPU threads and the worker processes, which are being measured "
                         "side by side first",
                         job->what, me->key, w, s->cores);
            else
                tdm__log(job->rt, TDM_DEBUG_SCHED,
                         "sched %s: %s (worker %d) waits: it shares the CPU cores (%d) with "
                         "the %s, which %s",
                         job->what, me->key, w, s->cores, run >= 0 ? side_name[run] : "others",
                         turn == TURN_DECIDED ? "are faster for this kernel"
                                              : "are being measured alone first");
        }
        me->declining = true;
        return 0;
    }
    int64_t remaining = job->n_items - atomic_load_explicit(&job->cursor, memory_order_relaxed);
    if (remaining <= 0)
        return 0;
    tdm__decision d;
    tdm__sched_decide(v, n, w, now, remaining, &d);
    bool cpu = me->kind == TDM_BACKEND_CPU_THREADS || me->kind == TDM_BACKEND_CPU_PROCS;
    if (d.items == 0 && cpu && me->est.seeded && me->est.real == 0 && !me->probed &&
        job->opts.batch_size <= 0 && s->cap[me->kind] == INT64_MAX) {
        /* A CPU lane whose stored figure says it is too slow to take any item takes one, once
         * per map, to check it: the threads and the processes run the same code, and a figure
         * stored for other parameters (or a run on a loaded machine) kept a worker process
         * idle beside a thread for every map (1e12 ns per item, stored, against 15 us). */
        me->probed = true;
        d.items = 1;
        d.est_ns = me->lat; /* (not the figure in doubt: the lane would look busy for hours) */
    }
    *est_ns = d.explore ? me->lat + (double)d.items * (v[w].tpi > 0 ? v[w].tpi : 0) : d.est_ns;
    if (d.items == 0) {
        if (!me->declining && (job->rt->debug & TDM_DEBUG_SCHED))
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "sched %s: %s (worker %d) declines: share %.2f items of %lld left, one "
                     "item would end at %.1f us, worker %d ends one at %.1f us; run ends at "
                     "%.1f us",
                     job->what, me->key, w, d.share, (long long)remaining, d.finish_w * 1e-3,
                     d.best_other, d.finish_other * 1e-3, d.t_end * 1e-3);
        me->declining = true;
        return 0;
    }
    if (!d.explore && job->opts.batch_size <= 0 && sizes_alike(&me->est) &&
        d.items <= remaining / (8 * (int64_t)n)) {
        /* Batches all of about one size cannot tell the fixed cost per batch from the time per
         * item: a hand-off slower than thought then reads as a slower item, the next batches
         * come out smaller, and the estimate runs away (seen under TSan on one busy core: 10
         * to 2,000 ns per item in 180 batches). One batch twice the size gives the fit its
         * slope back; only while much is left, so the end of the map stays balanced. */
        d.items *= 2;
        d.est_ns = v[w].lat + (double)d.items * v[w].tpi;
        *est_ns = d.est_ns;
    }
    if (!d.explore && me->est.seeded && job->opts.batch_size <= 0) {
        /* A stored model not yet borne out by this map's batches (tdm__est_add) takes at most
         * an eighth of a fair share: one stored for other parameters (pi_leibniz of a few
         * terms, 4.56 ns per item, against 1 ms items) handed a thread half a map in one
         * batch. Never below the items a batch needs to tell the model stale, or a map of a
         * few hundred items never could. */
        int64_t cap = remaining / (8 * (int64_t)n);
        cap = cap > TDM__STALE_MIN_ITEMS ? cap : TDM__STALE_MIN_ITEMS;
        if (d.items > cap) {
            d.items = cap;
            d.est_ns = v[w].lat + (double)d.items * v[w].tpi;
            *est_ns = d.est_ns;
        }
    }
    if (job->opts.batch_size > 0) { /* the caller fixed the size: only the placement is ours */
        d.items = job->opts.batch_size < remaining ? job->opts.batch_size : remaining;
        *est_ns = v[w].lat + (double)d.items * v[w].tpi;
    }
    if (s->cap[me->kind] != INT64_MAX) {
        /* A capped kind reserves its items here, atomically: lanes of that kind asking at the
         * same moment all saw the same cap_left above, and would overrun the cap together. */
        int64_t want = d.items;
        d.items = reserve_capped(s, me->kind, want);
        if (d.items == 0) {
            me->declining = true;
            return 0;
        }
        if (d.items < want)
            *est_ns = v[w].lat + (double)d.items * (v[w].tpi > 0 ? v[w].tpi : 0);
    }
    me->declining = false;
    if (!atomic_load_explicit(&me->started, memory_order_relaxed)) /* (see pick_paired) */
        atomic_store_explicit(&me->started, 1, memory_order_relaxed);
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: %s (worker %d) takes %lld of %lld items%s: est %.1f us at %.3g "
                 "ns/item; share %.0f items, run ends at %.1f us",
                 job->what, me->key, w, (long long)d.items, (long long)remaining,
                 d.explore ? " (exploring)" : "", *est_ns * 1e-3, v[w].tpi, d.share,
                 d.t_end * 1e-3);
    return d.items;
}

void tdm__jsched_claimed(tdm__job *job, int w, int64_t asked, int64_t n, double est_ns)
{
    tdm__jsched *s = job->sched;
    tdm__jlane *l = &s->lanes[w];
    if (s->cap[l->kind] != INT64_MAX) {
        if (asked > n) /* reserved by tdm__jsched_want(): give back what the claim did not get */
            atomic_fetch_sub_explicit(&s->used[l->kind], asked - n, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&s->used[l->kind], n, memory_order_relaxed);
    }
    if (n <= 0)
        return;
    if (n < asked && asked > 0)
        est_ns *= (double)n / (double)asked;
    double now = since(s);
    double f = atomic_load_explicit(&l->free_at, memory_order_relaxed);
    atomic_store_explicit(&l->free_at, (f > now ? f : now) + est_ns, memory_order_relaxed);
    l->est_sum_ns += est_ns;
    l->items_est += n;
}

/* Exploring a side of the shared cores runs it alone (the others wait): what its exploration
 * costs is capped at a share of what the calibrated CPU threads need for the whole map (a
 * batch that would pass it is not started), so a device much slower than the CPU costs a few
 * percent of a cold run. The cost is the items the threads would have done meanwhile beyond
 * those the lane does: a lane that looks half as fast as the threads may explore twice as
 * long (tdm__explore_budget), up to a cap on the share of their speed it is credited with; a
 * host-CPU device that reads close to the threads gets further (tdm__explore_budget_of).
 * A cold first pi map cut PoCL's exploration at 16 items, whose batches alone read 2.1-2.7e5 ns
 * per item against 1.3e5 with its queues full (perf sched: the kernel queued PoCL's two
 * threads on one core, the other idle, for milliseconds): the threads, 2.55e5 per item
 * together, won 4 maps in 11 and ran them at half PoCL's speed.
 * A lane stopped by the cap keeps the estimate it has (latency-heavy batches overstate its
 * time per item, which errs towards the CPU). The shares, and the further reach of a device
 * that reads near the threads' speed: tdm__explore_budget_of (sched_model.h), used in
 * tdm__jsched_done. (A stored figure measured again in a later map: tdm__cm_close_unsettled.) */

/* The CPU threads' items per ns together (0 while none is calibrated): their calibrated
 * lanes' mean times their lanes (while the threads and the processes are measured side by
 * side, only some threads have run). */
static double threads_rate(const tdm__jsched *s)
{
    double rate = 0;
    int lanes = 0, calibrated = 0;
    for (int j = 0; j < s->n; j++) {
        const tdm__jlane *l = &s->lanes[j];
        if (!atomic_load_explicit(&l->joined, memory_order_acquire) || !l->eligible ||
            side_of(s, l) != SIDE_THREADS)
            continue;
        lanes++;
        double tpi = atomic_load_explicit(&l->tpi, memory_order_relaxed);
        if (tpi > 0 && atomic_load_explicit(&l->explore, memory_order_relaxed) == 0) {
            rate += 1.0 / tpi;
            calibrated++;
        }
    }
    return side_rate(rate, lanes, calibrated);
}

/* A host-CPU device's exploration rung run beside the CPU threads (n items in dur_ns) is
 * judged (tdm__beside_judge): far too slow, it is calibrated on what it measured and waits
 * while the threads run the map (they never stood down); perhaps near, it explores on alone,
 * from its ladder's next rung (its readings beside the threads forgotten); too short to tell, its
 * ladder goes on while its rungs but the longest have taken less than twice the budget of an
 * exploration alone (a far one's: tdm__explore_budget_of) and the ladder has not ended; then
 * it explores alone, as it did before this phase. (Judged on its estimate there instead, a first
 * rung of one pi item that waited 4.4 ms for a core beside the busy threads ended PoCL's
 * exploration at 4.4e6 ns per item, and the threads ran a cold map PoCL alone ran 10% faster.) */
static void beside_done(tdm__job *job, int w, int64_t n, double dur_ns)
{
    tdm__jsched *s = job->sched;
    tdm__jlane *l = &s->lanes[w];
    double thr = threads_rate(s);
    int verdict = tdm__beside_judge(n, dur_ns, l->beside_min_ns, l->fill, thr);
    if (l->beside_min_ns == 0 || dur_ns < l->beside_min_ns)
        l->beside_min_ns = dur_ns;
    if (dur_ns > l->beside_max_ns)
        l->beside_max_ns = dur_ns;
    l->explored_ns += dur_ns;
    long long e = atomic_load_explicit(&l->explore, memory_order_relaxed);
    long long next = tdm__explore_next(e, n, dur_ns, l->target_ns, l->lat, l->fill, &l->long_rungs);
    if (verdict == TDM__BESIDE_UNSURE) {
        /* (beside the threads it takes at most its share of the cores: twice the time it
         * may take alone; its rungs' time so far, not reckoned ahead from the last one, and
         * without its longest: one of its threads woken on a busy core may wait milliseconds
         * for it, doing nothing, as a first pi item did for 4.4 ms and one of exp_sinh for
         * 3.9 ms, in about 1 map in 8) */
        double budget =
            TDM__BESIDE_SHARE * tdm__explore_budget_of(true, (double)job->n_items, thr, 0, NULL);
        if (next > 0 && l->explored_ns - l->beside_max_ns < budget) {
            atomic_store_explicit(&l->explore, next, memory_order_relaxed);
            return;
        }
        verdict = TDM__BESIDE_NEAR; /* (not told: it explores alone, as it did before) */
    }
    if (verdict == TDM__BESIDE_HOPELESS) {
        if (job->rt->debug & TDM_DEBUG_SCHED)
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "sched %s: %s (worker %d) ends its exploration beside the CPU threads at "
                     "%.3g ns/item (%lld items in %.1f us, its shortest batch %.1f us): too slow "
                     "to run this kernel, %.0fx the threads' %.3g "
                     "ns/item together or more",
                     job->what, l->key, w, l->est.tpi, (long long)n, dur_ns * 1e-3,
                     l->beside_min_ns * 1e-3, TDM__EXPLORE_HOPELESS, thr > 0 ? 1.0 / thr : 0);
        atomic_store_explicit(&l->explore, 0, memory_order_relaxed);
        atomic_store_explicit(&l->beside, 0, memory_order_release);
        offer_again(job);
        return;
    }
    if (job->rt->debug & TDM_DEBUG_SCHED)
        tdm__log(job->rt, TDM_DEBUG_SCHED,
                 "sched %s: %s (worker %d) may be near the CPU threads (%lld items in %.1f us "
                 "beside them, its shortest batch %.1f us): it explores alone from %lld items",
                 job->what, l->key, w, (long long)n, dur_ns * 1e-3, l->beside_min_ns * 1e-3,
                 next > 0 ? next : (long long)n);
    /* (from the ladder's next rung, its readings beside the threads forgotten: the rungs
     * before it ran already, and a pi map's first rungs alone cost 1-2 ms more of the threads
     * standing down) */
    tdm__est_init(&l->est, l->lat);
    l->explored_ns = 0; /* (l->long_rungs kept: a kernel whose few items lasted a target twice
                         * beside the threads needs no more few-item rungs alone) */
    atomic_store_explicit(&l->tpi, 0.0, memory_order_relaxed);
    atomic_store_explicit(&l->lat_fit, l->lat, memory_order_relaxed);
    atomic_store_explicit(&l->explore, next > 0 ? next : (long long)n, memory_order_relaxed);
    atomic_store_explicit(&l->beside, 0, memory_order_release);
}

void tdm__jsched_done(tdm__job *job, int w, int64_t n, double dur_ns, bool idle)
{
    tdm__jsched *s = job->sched;
    tdm__jlane *l = &s->lanes[w];
    long long e = atomic_load_explicit(&l->explore, memory_order_relaxed);
    /* A calibrated CPU worker's batch that ran while a host-CPU device had a batch in flight
     * teaches its estimate nothing: it measured the device's load on their shared cores.
     *  - Beside PoCL's first pi rungs (4 and 16 items in 8 and 24 ms, compiling), learned from,
     *    the threads' batches read the two threads at 1.85 items per ms together, against the
     *    4.2 they ran at alone, and PoCL, at 2.35 alone, ran the rest of the map: 0.596 s
     *    against the threads' 0.493. (Their figure is what the device is judged against
     *    meanwhile: tdm__beside_judge.)
     *  - The same after the device's beside rungs: a thread's batch of one pi item took 8.9 ms
     *    beside PoCL's last rung beside them and its first alone, and read 3.4e6 ns per item
     *    (5e5 before). The threads stood down while PoCL explored alone, and were then compared
     *    with it on that figure: 2.27 items per ms together against PoCL's 3.15, and PoCL ran
     *    the map (the threads alone: 4).
     *  - And at each hand-over of the cores: the first batches of the side that takes them run
     *    beside the last ones of the side that leaves them. */
    if (n > 0 && e == 0 &&
        (l->kind == TDM_BACKEND_CPU_THREADS || l->kind == TDM_BACKEND_CPU_PROCS) &&
        l->est.tpi > 0 && !l->est.seeded && host_device_busy_within(job, s, dur_ns))
        n = 0; /* (not while a stored figure is to be borne out: its checks go on) */
    if (n > 0) {
        /* A host-CPU device's exploration rungs run on as many of its cores as they have
         * work-groups: the rungs before a larger one measured fewer cores, not its speed, and
         * are forgotten (PoCL, pi on two cores: 1, 4 and 16 items at about 5e5 ns per item,
         * one core's speed, then 64 items at 2.6e5; fitted together, 3.8e5, slower than the
         * two threads together, 3.6e5, which then ran the map at 0.7 of PoCL's speed). */
        int dropped = e > 0 && l->host_cpu ? tdm__est_drop_smaller(&l->est, (double)n / 2) : 0;
        double stored = l->est.seed_tpi;
        bool stale = tdm__est_add(&l->est, (double)n, dur_ns);
        if (dropped > 0 && (job->rt->debug & TDM_DEBUG_SCHED))
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "sched %s: %s (worker %d) explores with %lld items in %.1f us: %.4g ns/item "
                     "(fixed cost %.4g ns), from this batch alone (its %d smaller ones ran on "
                     "part of its cores)",
                     job->what, l->key, w, (long long)n, dur_ns * 1e-3, l->est.tpi, l->est.lat,
                     dropped);
        l->seed_stale |= stale;
        if (stale) /* (its claimed work was reckoned at the stale figure) */
            atomic_store_explicit(&l->free_at, since(s), memory_order_relaxed);
        for (int j = 0; stale && j < s->n; j++) /* they started from the same stored figure */
            if (j != w && atomic_load_explicit(&s->lanes[j].joined, memory_order_acquire) &&
                !strcmp(s->lanes[j].key, l->key))
                atomic_store_explicit(&s->lanes[j].drop_seed, 1, memory_order_relaxed);
        if (stale && (job->rt->debug & TDM_DEBUG_SCHED))
            tdm__log(job->rt, TDM_DEBUG_SCHED,
                     "sched %s: %s (worker %d): the stored model's %.3g ns/item is stale (8x "
                     "or more off it, the last batch %lld items in %.1f us): measured afresh, "
                     "%.3g ns/item",
                     job->what, l->key, w, stored, (long long)n, dur_ns * 1e-3, l->est.tpi);
        atomic_store_explicit(&l->tpi, l->est.tpi, memory_order_relaxed);
        atomic_store_explicit(&l->lat_fit, l->est.lat, memory_order_relaxed);
    }
    if (e > 0 && n > 0 && atomic_load_explicit(&l->beside, memory_order_relaxed)) {
        beside_done(job, w, n, dur_ns);
    } else if (e > 0 && n > 0) {
        long long next =
            tdm__explore_next(e, n, dur_ns, l->target_ns, l->lat, l->fill, &l->long_rungs);
        l->explored_ns += dur_ns;
        /* Exploration ends before a batch that would overrun the budget, not after it:
         * exploring exp_sinh on PoCL overran it by its last batch, 1024 items and 0.4 ms of a
         * 22 ms map, with the two CPU threads waiting. */
        /* (only a side other than the threads explores alone, with a budget: the threads
         * explore first, side by side; a GPU explores alongside. The lane's estimate is its
         * own worker's, which runs this.) */
        int side = side_of(s, l);
        double thr = next > 0 && (side == SIDE_DEVICE || side == SIDE_PROCS) ? threads_rate(s) : 0;
        double share = 0;
        double budget = tdm__explore_budget_of(
            side == SIDE_DEVICE, (double)job->n_items, thr,
            tdm__explore_reach_tpi(l->host_cpu, l->fill, n, l->est.tpi), &share);
        if (side != SIDE_DEVICE)
            thr = 0; /* (the hopeless rule: host-CPU devices only) */
        if (tdm__explore_hopeless(n, l->est.tpi, thr, budget,
                                  tdm__explore_enough_ns(l->lat, l->target_ns))) {
            /* (a host-CPU device far slower than the threads, whose budget could not buy one
             * clean batch: not worth the rest of its ladder, the threads waiting; only a
             * device, whose kernels hold no interpreter lock and run no start-up hook that
             * could slow its first batches) */
            if (job->rt->debug & TDM_DEBUG_SCHED)
                tdm__log(job->rt, TDM_DEBUG_SCHED,
                         "sched %s: %s (worker %d) ends its exploration at %.3g ns/item, %.0fx "
                         "the CPU threads' %.3g ns/item together: too slow to run this kernel",
                         job->what, l->key, w, l->est.tpi, l->est.tpi * thr, 1.0 / thr);
            next = 0;
        } else if (tdm__explore_stops(l->explored_ns, n, dur_ns, next, budget)) {
            if (job->rt->debug & TDM_DEBUG_SCHED)
                tdm__log(
                    job->rt, TDM_DEBUG_SCHED,
                    "sched %s: %s (worker %d) ends its exploration at %.3g ns/item: its "
                    "batches alone took %.1f us, and a next one of %lld items would take "
                    "them past %.1f us, its budget (%.0f%% of what the CPU needs for the whole "
                    "map, over the share of the CPU's speed it lacks)",
                    job->what, l->key, w, l->est.tpi, l->explored_ns * 1e-3, next, budget * 1e-3,
                    100 * share);
            next = 0;
        }
        atomic_store_explicit(&l->explore, next, memory_order_relaxed);
        if (next == 0)
            offer_again(job);
    }
    if (idle)
        atomic_store_explicit(&l->free_at, since(s), memory_order_relaxed);
}
