/* SPDX-License-Identifier: MIT */
/* Map and parallel_for set-up: options, where a job's batches may run (policy, worker
 * processes, devices), where its bytes must be. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "sched/costmodel.h"
#include "sched/job.h"
#include "sched/job_sched.h"
#include "sched/map_internal.h"
#include "sched/sched_model.h"
#include "observe/progress_internal.h"
#include "core/core.h"

int tdm_map_opts_init(tdm_map_opts *o)
{
    if (!o)
        return tdm__err(NULL, TDM_EINVAL, "tdm_map_opts_init: opts is NULL");
    tdm_map_opts d = TDM_MAP_OPTS_INIT;
    *o = d;
    return 0;
}

int tdm__map_check_opts(tdm_runtime *rt, const char *fn, const tdm_map_opts *in, tdm_map_opts *o,
                        bool streaming)
{
    tdm_map_opts_init(o);
    if (!in)
        return 0;
    if (in->size < sizeof(tdm_map_opts) || in->version != TDM_MAP_OPTS_VERSION)
        return tdm__err(rt, TDM_EINVAL,
                        "%s: opts size %u / version %u not supported (start from "
                        "TDM_MAP_OPTS_INIT)",
                        fn, in->size, in->version);
    *o = *in;
    if ((int)o->policy < TDM_POLICY_AUTO || o->policy > TDM_POLICY_ROUND_ROBIN)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown policy %d", fn, (int)o->policy);
    if (o->batch_size < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: batch_size %lld is negative", fn,
                        (long long)o->batch_size);
    if ((int)o->on_error < TDM_ON_ERROR_STOP || o->on_error > TDM_ON_ERROR_CONTINUE)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown on_error %d", fn, (int)o->on_error);
    if ((int)o->progress < TDM_PROGRESS_AUTO || o->progress > TDM_PROGRESS_CALLBACK)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown progress mode %d", fn, (int)o->progress);
    if (o->progress == TDM_PROGRESS_CALLBACK && !o->progress_fn)
        return tdm__err(rt, TDM_EINVAL, "%s: progress mode CALLBACK needs progress_fn", fn);
    if (o->progress_interval_s < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: progress_interval_s is negative", fn);
    if ((int)o->order < TDM_ORDER_SUBMISSION || o->order > TDM_ORDER_COMPLETION)
        return tdm__err(rt, TDM_EINVAL, "%s: unknown order %d", fn, (int)o->order);
    if (o->max_in_flight < 0 || o->max_in_flight > 65536)
        return tdm__err(rt, TDM_EINVAL, "%s: max_in_flight %d not in 0..65536", fn,
                        o->max_in_flight);
    if (!(o->timeout_s >= 0) || o->timeout_s > 1e9)
        return tdm__err(rt, TDM_EINVAL, "%s: timeout_s must be in 0..1e9 seconds", fn);
    if (o->retries < 0 || o->retries > 1000)
        return tdm__err(rt, TDM_EINVAL, "%s: retries %d not in 0..1000", fn, o->retries);
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        if (!(o->share_cap[k] >= 0 && o->share_cap[k] <= 1))
            return tdm__err(rt, TDM_EINVAL, "%s: share_cap[%s] must be in 0..1", fn,
                            tdm_backend_kind_name((tdm_backend_kind)k));
    (void)streaming;
    return 0;
}

/* True when every tensor of the map lives in the shared arena, so a worker process sees it. */
bool tdm__map_all_in_arena(tdm_tensor *const *ts, int n)
{
    for (int i = 0; i < n; i++)
        if (!ts[i]->storage->in_arena)
            return false;
    return true;
}

/* Decides which kinds of worker may run the job's batches (job->on) under its policy.
 * `proc_safe`: the job's data is visible to worker processes (a map over arena tensors); a
 * parallel_for body may write anywhere, so only an explicit PROCS policy sends it there. */
int tdm__map_place(tdm__job *job, const char *fn, bool has_cpu, bool proc_safe,
                   const char *why_not_safe, const char *why_no_dev)
{
    tdm_runtime *rt = job->rt;
    const char *what = job->what;
    bool threads_ok = rt->backends[TDM_BACKEND_CPU_THREADS].enabled;
    bool procs_ok = rt->procs != NULL && rt->backends[TDM_BACKEND_CPU_PROCS].enabled;
    /* Worker processes that are gone (their fork server died or was stopped) take no part in
     * AUTO; a call that asks for them gets TDM_EWORKER and why. */
    bool procs_broken = procs_ok && tdm__procs_broken(rt->procs);
    if (procs_broken && job->opts.policy == TDM_POLICY_PROCS) {
        char why[256];
        int rc = tdm__procs_why_broken(rt->procs, why, sizeof why);
        return tdm__err(rt, rc, "%s(%s): policy PROCS: %s", fn, what, why);
    }
    procs_ok = procs_ok && !procs_broken;
    if (!has_cpu && job->opts.policy != TDM_POLICY_GPU)
        return tdm__err(rt, TDM_ENODEV,
                        "%s(%s): kernel has no CPU implementation (use policy GPU for its "
                        "device version)",
                        fn, what);
    /* Devices take part in AUTO when they are open, or may open while it runs (a lazy job,
     * asked for by the map's set-up: it keeps lanes for them), and the kernel runs there. */
    bool dev_ok = !why_no_dev && !job->streaming;
    job->lazy_devices = job->lazy_devices && dev_ok && job->opts.policy == TDM_POLICY_AUTO &&
                        !rt->devices && tdm__map_job_lazy_devices(job);
    job->lazy_open_now = job->lazy_open_now && job->lazy_devices;
    dev_ok = dev_ok && (tdm__devices_live(rt) > 0 || job->lazy_devices);
    switch (job->opts.policy) {
    case TDM_POLICY_AUTO:
    case TDM_POLICY_CPU:
    case TDM_POLICY_ROUND_ROBIN:
        job->on =
            (threads_ok ? TDM__ON_THREADS : 0u) | (procs_ok && proc_safe ? TDM__ON_PROCS : 0u);
        if (job->opts.policy != TDM_POLICY_CPU && dev_ok && has_cpu && job->on)
            job->on |= TDM__ON_DEVICES;
        if (!job->on)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): the cpu backend is disabled (TDM_BACKENDS / "
                            "config.backends) and no other enabled backend runs it%s%s",
                            fn, what, procs_ok ? "; worker processes: " : "",
                            procs_ok ? why_not_safe : "");
        break;
    case TDM_POLICY_THREADS:
        if (!threads_ok)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy THREADS but the cpu backend is disabled "
                            "(TDM_BACKENDS / config.backends)",
                            fn, what);
        job->on = TDM__ON_THREADS;
        break;
    case TDM_POLICY_PROCS:
        if (!procs_ok)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy PROCS but the runtime has no worker processes "
                            "(config.procs / TDM_NUM_PROCS = 0, or procs disabled)",
                            fn, what);
        if (!proc_safe)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): policy PROCS: %s", fn, what, why_not_safe);
        job->on = TDM__ON_PROCS;
        break;
    case TDM_POLICY_GPU:
    case TDM_POLICY_OPENCL:
    case TDM_POLICY_CUDA:
    default: {
        const char *pname = job->opts.policy == TDM_POLICY_OPENCL ? "OPENCL"
                            : job->opts.policy == TDM_POLICY_CUDA ? "CUDA"
                                                                  : "GPU";
        if (why_no_dev)
            return tdm__err(rt, TDM_ENODEV, "%s(%s): policy %s: %s", fn, what, pname, why_no_dev);
        if (job->opts.policy != TDM_POLICY_GPU)
            job->dev_kind =
                job->opts.policy == TDM_POLICY_OPENCL ? TDM_BACKEND_OPENCL : TDM_BACKEND_CUDA;
        if (tdm__devices_live_kind(rt, job->dev_kind) == 0)
            return tdm__err(rt, TDM_ENODEV,
                            "%s(%s): policy %s: no %s device is available (tandem info lists "
                            "what was found; a device lost to an error is not used again)",
                            fn, what, pname,
                            job->dev_kind < 0 ? "OpenCL or CUDA"
                                              : tdm_backend_kind_name(job->dev_kind));
        job->on = TDM__ON_DEVICES;
        break;
    }
    }
    job->n_eligible = ((job->on & TDM__ON_THREADS) ? job->n_threads : 0) +
                      ((job->on & TDM__ON_PROCS) ? job->n_procs : 0) +
                      ((job->on & TDM__ON_DEVICES) ? tdm__devices_live_kind(rt, job->dev_kind) : 0);
    /* Share caps must leave every item to some kind that may run it. */
    double allowed = 0;
    if (job->on & TDM__ON_THREADS)
        allowed += tdm__share_allowed(&job->opts, TDM_BACKEND_CPU_THREADS);
    if (job->on & TDM__ON_PROCS)
        allowed += tdm__share_allowed(&job->opts, TDM_BACKEND_CPU_PROCS);
    if (job->on & TDM__ON_DEVICES) {
        bool any[TDM_BACKEND_KIND_COUNT] = {false};
        for (int i = 0; rt->devices && i < rt->devices->n; i++)
            any[rt->devices->slots[i].info.kind] = !atomic_load(&rt->devices->slots[i].lost);
        for (int k = TDM_BACKEND_OPENCL; k <= TDM_BACKEND_CUDA; k++)
            if (any[k] && (job->dev_kind < 0 || job->dev_kind == k))
                allowed += tdm__share_allowed(&job->opts, k);
    }
    if (allowed < 1.0 - 1e-9)
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): share caps allow only %.0f%% of the items to the backends that "
                        "may run the map",
                        fn, what, 100 * allowed);
    return 0;
}

/* Where the bytes must be for the job to run. A device map runs on device copies of whole
 * tensors (residency) when it keeps its outputs there or finds an input there already; it then
 * runs on that one device. Every other map needs the host copies current: inputs are fetched
 * back from a device when newer there, and outputs' device copies are forgotten (the map is
 * about to write the host's). */
int tdm__map_place_data(tdm__job *job, tdm_tensor *const *inputs, int n_in,
                        tdm_tensor *const *outputs, int n_out)
{
    tdm_runtime *rt = job->rt;
    /* (no devices yet, a lazy job: no device copy can exist; dev_mu is not taken, as a
     * background open holds it) */
    if ((job->on & TDM__ON_DEVICES) && outputs && rt->devices) {
        bool whole = true, on_dev = false;
        tdm__devslot *where = NULL;
        pthread_mutex_lock(&rt->dev_mu);
        for (int i = 0; i < n_in + n_out; i++) {
            const tdm_tensor *t = i < n_in ? inputs[i] : outputs[i - n_in];
            if (t->offset != 0)
                whole = false;
            if (i < n_in && t->storage->mirror && t->storage->mirror->dev_valid) {
                on_dev = true;
                if (!where)
                    where = t->storage->mirror->dev;
            }
        }
        pthread_mutex_unlock(&rt->dev_mu);
        if (whole && (job->opts.keep_on_device || on_dev)) {
            job->resident = true;
            if (!where || atomic_load(&where->lost)) {
                where = NULL;
                for (int i = 0; i < rt->devices->n && !where; i++)
                    if (!atomic_load(&rt->devices->slots[i].lost))
                        where = &rt->devices->slots[i];
            }
            job->only_worker = where ? where->worker : rt->devices->slots[0].worker;
            job->n_eligible = 1;
            return 0;
        }
    }
    for (int i = 0; i < n_in + n_out; i++) {
        tdm_tensor *t = i < n_in ? inputs[i] : outputs ? outputs[i - n_in] : NULL;
        if (t && t->storage->mirror) {
            int rc = tdm__storage_sync_host(t->storage, i >= n_in);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* Whether address v lies in a private writable mapping of this process (heap, stack, globals),
 * from /proc/self/maps: memory a worker process has only its own copy of. */
static bool private_writable(uintptr_t v)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return false;
    char line[512];
    bool hit = false;
    while (!hit && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && v >= lo && v < hi)
            hit = perms[1] == 'w' && perms[3] == 'p';
    }
    fclose(f);
    return hit;
}

void tdm__map_check_params(tdm__job *job, const char *fn, const void *params, size_t size)
{
    tdm_runtime *rt = job->rt;
    if (!params || !(rt->debug & (TDM_DEBUG_MAP | TDM_DEBUG_POOL)))
        return;
    for (size_t off = 0; off + sizeof(uintptr_t) <= size; off += sizeof(uintptr_t)) {
        uintptr_t v;
        memcpy(&v, (const char *)params + off, sizeof v);
        if (v < 65536 || v % sizeof(int) != 0 || tdm__arena_contains(rt->arena, (void *)v) ||
            !private_writable(v))
            continue;
        tdm__log(rt, TDM_DEBUG_MAP | TDM_DEBUG_POOL,
                 "%s: warning: params byte %zu holds %p, a pointer into this process's own "
                 "memory (not a shared tensor): a worker process that writes through it "
                 "changes only its copy, and the caller sees nothing (pass the tensors to "
                 "tdm_parallel_for_tensors, or point into TDM_MEM_SHARED tensors)",
                 fn, off, (void *)v);
    }
}
