/* SPDX-License-Identifier: MIT */
/* Runtime open/close, configuration and environment overrides, backend and device listing. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sched/costmodel.h"
#include "internal.h"
#include "core/core.h"
#include "observe/trace.h"
#include "sched/device.h"

/* The smallest config a caller may pass: version 1 ends with use_env. */
#define TDM__CONFIG_V1_SIZE (offsetof(tdm_config, use_env) + sizeof(int))

int tdm_config_init(tdm_config *cfg)
{
    if (!cfg)
        return tdm__err(NULL, TDM_EINVAL, "tdm_config_init: cfg is NULL");
    tdm_config d = TDM_CONFIG_INIT;
    *cfg = d;
    return 0;
}

static int usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Parses a non-negative int of at most 4096 from the environment variable `name`. */
static int env_count(const char *name, int *out, bool *found)
{
    const char *v = getenv(name);
    *found = false;
    if (!v || !*v)
        return 0;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end != '\0' || n < 0 || n > 4096)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_open: %s='%s' is not a count in 0..4096",
                        name, v);
    *out = (int)n;
    *found = true;
    return 0;
}

static int parse_debug(const char *v, unsigned *flags)
{
    static const struct {
        const char *name;
        unsigned flag;
    } names[] = {{"all", TDM_DEBUG_ALL},
                 {"1", TDM_DEBUG_ALL},
                 {"runtime", TDM_DEBUG_RUNTIME},
                 {"pool", TDM_DEBUG_POOL},
                 {"map", TDM_DEBUG_MAP},
                 {"sched", TDM_DEBUG_SCHED},
                 {"0", 0}};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcasecmp(tok, names[i].name) == 0)
                break;
        if (i == sizeof names / sizeof names[0])
            return tdm__err(NULL, TDM_EINVAL,
                            "tdm_runtime_open: TDM_DEBUG has unknown flag '%s' (known: all, "
                            "runtime, pool, map, sched)",
                            tok);
        *flags |= names[i].flag;
    }
    return 0;
}

/* Parses "cpu,procs,opencl,cuda,sim" into enabled flags per kind. */
static int parse_backends(const char *list, bool enabled[TDM_BACKEND_KIND_COUNT])
{
    char buf[256];
    if (strlen(list) >= sizeof buf)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_open: backend list too long");
    strcpy(buf, list);
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        enabled[k] = false;
    char *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int k;
        for (k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
            if (strcasecmp(tok, tdm_backend_kind_name((tdm_backend_kind)k)) == 0)
                break;
        if (k == TDM_BACKEND_KIND_COUNT && strcasecmp(tok, "threads") == 0)
            k = TDM_BACKEND_CPU_THREADS;
        if (k == TDM_BACKEND_KIND_COUNT)
            return tdm__err(NULL, TDM_EINVAL,
                            "tdm_runtime_open: unknown backend '%s' (known: cpu, procs, "
                            "opencl, cuda, sim)",
                            tok);
        enabled[k] = true;
        n++;
    }
    if (n == 0)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_open: backend list '%s' is empty", list);
    return 0;
}

/* Copies the caller's config (which may be an older, shorter version) over the defaults and
 * applies environment overrides. */
static int resolve_config(const tdm_config *user, tdm_config *cfg, bool enabled[])
{
    tdm_config_init(cfg);
    if (user) {
        if (user->size < TDM__CONFIG_V1_SIZE || user->version == 0 ||
            user->version > TDM_CONFIG_VERSION)
            return tdm__err(NULL, TDM_EINVAL,
                            "tdm_runtime_open: config size %u / version %u not supported "
                            "(start from TDM_CONFIG_INIT)",
                            user->size, user->version);
        memcpy(cfg, user, user->size < sizeof *cfg ? user->size : sizeof *cfg);
        cfg->size = sizeof *cfg;
        cfg->version = TDM_CONFIG_VERSION;
    }
    if (cfg->threads < 0 || cfg->procs < 0)
        return tdm__err(NULL, TDM_EINVAL,
                        "tdm_runtime_open: threads (%d) and procs (%d) must "
                        "be >= 0",
                        cfg->threads, cfg->procs);
    if (cfg->use_env) {
        bool found;
        int n, rc;
        if ((rc = env_count("TDM_NUM_THREADS", &n, &found)) < 0)
            return rc;
        if (found)
            cfg->threads = n;
        if ((rc = env_count("TDM_NUM_PROCS", &n, &found)) < 0)
            return rc;
        if (found)
            cfg->procs = n;
        const char *b = getenv("TDM_BACKENDS");
        if (b && *b)
            cfg->backends = b;
        const char *tr = getenv("TDM_TRACE");
        if (tr && *tr)
            cfg->trace_path = tr;
        const char *sm = getenv("TDM_SCHED_MODEL");
        if (sm && *sm)
            cfg->sched_model_dir = sm;
        const char *d = getenv("TDM_DEBUG");
        if (d && *d && (rc = parse_debug(d, &cfg->debug)) < 0)
            return rc;
    }
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        enabled[k] = true;
    if (cfg->backends) {
        int rc = parse_backends(cfg->backends, enabled);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int probe_one(tdm_runtime *rt, tdm__backend_state *st)
{
    if (!st->ops->probe)
        return 0;
    int rc = st->ops->probe(rt, &st->devices, &st->n_devices, st->note, sizeof st->note);
    if (rc < 0) { /* a broken installation counts as no device, with the reason kept */
        st->devices = NULL;
        st->n_devices = 0;
    }
    tdm__log(rt, TDM_DEBUG_RUNTIME, "backend %s: %d device(s)%s%s", st->ops->name, st->n_devices,
             st->note[0] ? ": " : "", st->note);
    return rc;
}

/* The CPU backends are probed at open. Device backends are probed on the first listing call or
 * the first map that asks for devices: loading an OpenCL driver costs tens of milliseconds
 * (PoCL) that a runtime which never uses a device should not pay. */
static int setup_backends(tdm_runtime *rt, const bool enabled[])
{
    for (int i = 0; tdm__backend_table[i]; i++) {
        const tdm__backend_ops *ops = tdm__backend_table[i];
        tdm__backend_state *st = &rt->backends[ops->kind];
        st->ops = ops;
        st->enabled = enabled[ops->kind];
        if (!st->enabled) {
            snprintf(st->note, sizeof st->note, "disabled by configuration");
        } else if (ops->kind == TDM_BACKEND_CPU_THREADS || ops->kind == TDM_BACKEND_CPU_PROCS) {
            /* CPU backends are probed now (cheap). Out of memory here is not "no device": the
             * runtime cannot work. */
            st->probed = true;
            int rc = probe_one(rt, st);
            if (rc == TDM_ENOMEM)
                return rc;
        }
    }
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++) {
        tdm__backend_state *st = &rt->backends[k];
        if (!st->ops)
            snprintf(st->note, sizeof st->note, "not part of this build");
    }
    return 0;
}

/* Probes the discovery-only backends once, on first use. Thread-safe. */
static void ensure_probed(const tdm_runtime *crt)
{
    tdm_runtime *rt = (tdm_runtime *)crt; /* probing fills a cache, not the logical state */
    if (atomic_load_explicit(&rt->probed, memory_order_acquire))
        return;
    pthread_mutex_lock(&rt->probe_mu);
    if (!atomic_load_explicit(&rt->probed, memory_order_relaxed)) {
        for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++) {
            tdm__backend_state *st = &rt->backends[k];
            if (st->ops && st->enabled && !st->probed) {
                st->probed = true;
                (void)probe_one(rt, st); /* a failed probe is zero devices, its note says why */
            }
        }
        atomic_store_explicit(&rt->probed, 1, memory_order_release);
    }
    pthread_mutex_unlock(&rt->probe_mu);
}

static void free_backends(tdm_runtime *rt)
{
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++) {
        free(rt->backends[k].devices);
        rt->backends[k].devices = NULL;
        rt->backends[k].n_devices = 0;
    }
}

/* The shared-memory check at open: shared tensors come from memory (memfd pages), so say early
 * when the configured cap cannot be met; creation beyond what is available then fails with
 * TDM_ENOSPC, never with SIGBUS or the OOM killer later. */
static void check_shm_limit(tdm_runtime *rt)
{
    uint64_t avail;
    const char *src;
    if (!tdm__memory_available(&avail, &src))
        return;
    if (rt->shm_limit && rt->shm_limit > avail)
        tdm__log(rt, TDM_DEBUG_RUNTIME,
                 "shm_limit %llu bytes is more than the %llu bytes available (%s): shared "
                 "tensors beyond what is available fail with TDM_ENOSPC at creation",
                 (unsigned long long)rt->shm_limit, (unsigned long long)avail, src);
    else
        tdm__log(rt, TDM_DEBUG_RUNTIME, "shared memory: limit %s%llu bytes, %llu available (%s)",
                 rt->shm_limit ? "" : "none; ", (unsigned long long)rt->shm_limit,
                 (unsigned long long)avail, src);
}

/* ---- fork after open ---------------------------------------------------------------------- */

static atomic_uint fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void fork_watch(void)
{
    (void)pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned tdm__fork_gen(void)
{
    pthread_once(&fork_once, fork_watch);
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

int tdm__check_fork(tdm_runtime *rt, const char *fn)
{
    if (rt && atomic_load_explicit(&fork_gen, memory_order_relaxed) != rt->fork_gen)
        return tdm__err(NULL, TDM_EFORKED,
                        "%s: this process was forked after tdm_runtime_open: the runtime belongs "
                        "to the parent (open a new one in the child, or exec)",
                        fn);
    return 0;
}

/* What open builds before the pool (so what a failed open and a close both give back). */
static void free_runtime(tdm_runtime *rt)
{
    (void)tdm__cm_close(rt->costmodel); /* a model that cannot be saved is only not kept */
    tdm__procs_close(rt->procs);
    tdm__kernel_registry_free(rt);
    free_backends(rt);
    tdm__arena_close(rt->arena);
    tdm__rings_destroy(rt);
    pthread_mutex_destroy(&rt->probe_mu);
    pthread_mutex_destroy(&rt->dev_mu);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

int tdm_runtime_open(tdm_runtime **out, const tdm_config *user_cfg)
{
    if (!out)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_open: out is NULL");
    *out = NULL;
    tdm_config cfg;
    bool enabled[TDM_BACKEND_KIND_COUNT];
    int rc = resolve_config(user_cfg, &cfg, enabled);
    if (rc < 0)
        return rc;

    tdm_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return tdm__err(NULL, TDM_ENOMEM, "tdm_runtime_open: out of memory");
    rt->cfg = cfg;
    if (cfg.backends) {
        snprintf(rt->backends_buf, sizeof rt->backends_buf, "%s", cfg.backends);
        rt->cfg.backends = rt->backends_buf;
    }
    rt->debug = cfg.debug;
    if (cfg.sched_model_dir) {
        if (strlen(cfg.sched_model_dir) >= sizeof rt->sched_model_dir) {
            free(rt);
            return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_open: sched_model_dir is too long");
        }
        snprintf(rt->sched_model_dir, sizeof rt->sched_model_dir, "%s", cfg.sched_model_dir);
        rt->sched_model_set = true;
    }
    rt->cfg.sched_model_dir = NULL; /* the caller's string: rt keeps its copy */
    /* One CPU budget: by default threads and worker processes together use every core. */
    if (cfg.threads > 0) {
        rt->threads = cfg.threads;
    } else {
        int cores = usable_cores();
        rt->threads = cores - cfg.procs > 1 ? cores - cfg.procs : 1;
    }
    rt->shm_limit = cfg.shm_limit;
    rt->fork_gen = tdm__fork_gen();
    atomic_init(&rt->live_tensors, 0);
    atomic_init(&rt->jobs_in_flight, 0);
    atomic_init(&rt->shm_bytes, 0);
    if (pthread_mutex_init(&rt->mu, NULL) != 0) {
        free(rt);
        return tdm__err(NULL, TDM_ESYS, "tdm_runtime_open: pthread_mutex_init failed");
    }

    pthread_mutex_init(&rt->probe_mu, NULL);
    pthread_mutex_init(&rt->dev_mu, NULL);
    tdm__rings_init(rt);
    atomic_init(&rt->probed, 0);
    atomic_init(&rt->closed_cpu_ns, 0);
    rt->gpu_nodes = tdm__gpu_nodes("/dev");
    bool with_procs = cfg.procs > 0 && enabled[TDM_BACKEND_CPU_PROCS];
    if ((rc = tdm__arena_open(rt, rt->shm_limit, !with_procs, &rt->arena)) < 0)
        goto fail;
    check_shm_limit(rt);
    if ((rc = setup_backends(rt, enabled)) < 0)
        goto fail;
    if ((rc = tdm__register_builtin_kernels(rt)) < 0)
        goto fail;
    /* Worker processes are forked before any thread of the runtime exists and before any
     * device backend initialises (CUDA cannot be used across fork). */
    if (cfg.procs > 0 && enabled[TDM_BACKEND_CPU_PROCS] &&
        (rc = tdm__procs_open(rt, cfg.procs, &rt->procs)) < 0)
        goto fail;
    if ((rc = tdm__pool_create(rt, rt->threads + tdm__procs_count(rt->procs), &rt->pool)) < 0)
        goto fail;
    if ((rc = tdm__trace_open(rt, cfg.trace_path)) < 0) {
        tdm__pool_destroy(rt->pool);
        goto fail;
    }
    rt->cfg.trace_path = NULL; /* the caller's string: the trace keeps its own copy */
    tdm__log(rt, TDM_DEBUG_RUNTIME, "runtime open: %d thread(s), debug 0x%x", rt->threads,
             rt->debug);
    *out = rt;
    return 0;

fail : {
    /* Keep the message of the failing step: it was recorded against rt, re-record it for the
     * caller, who has no runtime to ask. */
    char msg[TDM__ERRMSG_LEN];
    snprintf(msg, sizeof msg, "%s", tdm_errmsg(rt));
    free_runtime(rt);
    return tdm__err(NULL, rc, "%s", msg);
}
}

int tdm_runtime_close(tdm_runtime *rt)
{
    if (!rt)
        return 0;
    int frc = tdm__check_fork(rt, "tdm_runtime_close");
    if (frc < 0)
        return frc; /* the child's copy goes when it exits or execs */
    long jobs = atomic_load(&rt->jobs_in_flight);
    if (jobs > 0)
        return tdm__err(rt, TDM_EBUSY,
                        "tdm_runtime_close: %ld job(s) still in flight (wait for "
                        "or free them first)",
                        jobs);
    tdm__rings_drop(rt); /* (the slots it kept are no caller's tensors) */
    long tensors = atomic_load(&rt->live_tensors);
    if (tensors > 0)
        return tdm__err(rt, TDM_EBUSY,
                        "tdm_runtime_close: %ld tensor(s) still alive (release "
                        "them first)",
                        tensors);
    tdm__devices_join_async(rt); /* a map may have started opening the devices */
    tdm__pool_destroy(rt->pool);
    tdm__trace_close(rt); /* names device lanes: before the devices close */
    tdm__devices_close(rt);
    free_runtime(rt);
    return 0;
}

struct tdm__costmodel *tdm__runtime_costmodel(tdm_runtime *rt)
{
    pthread_mutex_lock(&rt->mu);
    if (!rt->costmodel)
        (void)tdm__cm_open(rt, rt->sched_model_set ? rt->sched_model_dir : NULL, &rt->costmodel);
    struct tdm__costmodel *cm = rt->costmodel;
    pthread_mutex_unlock(&rt->mu);
    return cm;
}

int tdm_runtime_threads(const tdm_runtime *rt)
{
    return rt ? rt->threads : 0;
}

unsigned tdm_runtime_debug(const tdm_runtime *rt)
{
    return rt ? rt->debug : 0u;
}

int tdm_runtime_backend(const tdm_runtime *rt, int index, tdm_backend_info *info)
{
    if (!rt || !info)
        return tdm__err(rt, TDM_EINVAL, "tdm_runtime_backend: NULL argument");
    if (index < 0 || index >= TDM_BACKEND_KIND_COUNT)
        return tdm__err(rt, TDM_ENOTFOUND, "tdm_runtime_backend: index %d not in 0..%d", index,
                        TDM_BACKEND_KIND_COUNT - 1);
    ensure_probed(rt);
    const tdm__backend_state *st = &rt->backends[index];
    memset(info, 0, sizeof *info);
    info->kind = (tdm_backend_kind)index;
    info->name = tdm_backend_kind_name(info->kind);
    info->built = st->ops != NULL;
    info->enabled = st->ops != NULL && st->enabled;
    info->runs_kernels = st->ops != NULL && st->ops->runs_kernels;
    info->n_devices = info->enabled ? st->n_devices : 0;
    snprintf(info->note, sizeof info->note, "%s", st->note);
    return 0;
}

int tdm_runtime_device_count(const tdm_runtime *rt)
{
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "tdm_runtime_device_count: runtime is NULL");
    ensure_probed(rt);
    int n = 0;
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT; k++)
        if (rt->backends[k].enabled)
            n += rt->backends[k].n_devices;
    return n;
}

int tdm_runtime_device(const tdm_runtime *rt, int index, tdm_device_info *info)
{
    if (!rt || !info)
        return tdm__err(rt, TDM_EINVAL, "tdm_runtime_device: NULL argument");
    ensure_probed(rt);
    int i = index;
    for (int k = 0; k < TDM_BACKEND_KIND_COUNT && i >= 0; k++) {
        const tdm__backend_state *st = &rt->backends[k];
        if (!st->enabled)
            continue;
        if (i < st->n_devices) {
            *info = st->devices[i];
            return 0;
        }
        i -= st->n_devices;
    }
    return tdm__err(rt, TDM_ENOTFOUND, "tdm_runtime_device: no device %d (%d found)", index,
                    tdm_runtime_device_count(rt));
}

int tdm__shm_reserve(tdm_runtime *rt, size_t bytes)
{
    unsigned long long cur = atomic_load(&rt->shm_bytes);
    for (;;) {
        unsigned long long next = cur + bytes;
        if (next < cur || (rt->shm_limit && next > rt->shm_limit))
            return tdm__err(rt, TDM_ENOSPC,
                            "shared memory: %zu more bytes would exceed the runtime's limit "
                            "(%llu of %llu bytes in use)",
                            bytes, cur, (unsigned long long)rt->shm_limit);
        if (atomic_compare_exchange_weak(&rt->shm_bytes, &cur, next))
            return 0;
    }
}

void tdm__shm_unreserve(tdm_runtime *rt, size_t bytes)
{
    atomic_fetch_sub(&rt->shm_bytes, (unsigned long long)bytes);
}
