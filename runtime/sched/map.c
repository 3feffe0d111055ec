/* SPDX-License-Identifier: MIT */
/* tdm_map / tdm_parallel_for and their asynchronous forms: validation, job set-up, teardown. */
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

static bool same_desc(const tdm_tensor *t, const tdm_tensor_desc *d)
{
    if (tdm_tensor_ndim(t) != d->ndim)
        return false;
    for (int i = 0; i < d->ndim; i++)
        if (tdm_tensor_dim(t, i) != d->shape[i])
            return false;
    return true;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

/* Validates a map's arguments, before the map has a job (and before the devices open: a map
 * refused here opens nothing): *k_out gets the kernel, *rows_out the map's rows, descs what
 * the outputs must be (a kernel with an infer function). Nothing is written to any tensor.
 * `outputs` NULL (streaming only) asks for ring buffers. */
static int check_map(tdm_runtime *rt, const char *fn, const char *kernel, tdm_tensor *const *inputs,
                     int n_in, tdm_tensor *const *outputs, int n_out, const void *params,
                     size_t params_size, int64_t n_rows, tdm_tensor_desc *descs,
                     const tdm__kernel **k_out, int64_t *rows_out)
{
    if (!kernel)
        return tdm__err(rt, TDM_EINVAL, "%s: kernel name is NULL", fn);
    const tdm__kernel *k = tdm__kernel_find(rt, kernel);
    if (!k)
        return tdm__err(rt, TDM_ENOTFOUND, "%s: no kernel named '%s' is registered", fn, kernel);
    const tdm_kernel_def *d = &k->def;
    if (n_in < d->n_in_min || n_in > d->n_in_max)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): %d input(s) given, the kernel takes %d..%d", fn,
                        d->name, n_in, d->n_in_min, d->n_in_max);
    if (n_out != d->n_out)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): %d output(s) given, the kernel has %d", fn,
                        d->name, n_out, d->n_out);
    if (n_in > 0 && !inputs)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): inputs is NULL", fn, d->name);
    if (params_size != d->params_size)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): params_size %zu, the kernel expects %zu", fn,
                        d->name, params_size, d->params_size);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s(%s): params is NULL", fn, d->name);
    int rc;
    int64_t rows = -1;
    for (int i = 0; i < n_in + n_out; i++) {
        bool is_in = i < n_in;
        if (!is_in && !outputs)
            break;
        tdm_tensor *t = is_in ? inputs[i] : outputs[i - n_in];
        if (is_in && t && ((d->whole_inputs >> i) & 1u)) { /* given whole: any row count */
            if (tdm_tensor_runtime(t) != rt)
                return tdm__err(rt, TDM_EINVAL, "%s(%s): input %d belongs to another runtime", fn,
                                d->name, i);
            if (!tdm_tensor_is_contiguous(t))
                return tdm__err(rt, TDM_ELAYOUT, "%s(%s): input %d is not contiguous", fn, d->name,
                                i);
            continue;
        }
        const char *role = is_in ? "input" : "output";
        int idx = is_in ? i : i - n_in;
        if (!t)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): %s %d is NULL", fn, d->name, role, idx);
        if (tdm_tensor_runtime(t) != rt)
            return tdm__err(rt, TDM_EINVAL, "%s(%s): %s %d belongs to another runtime", fn, d->name,
                            role, idx);
        if (tdm_tensor_ndim(t) < 1)
            return tdm__err(rt, TDM_ESHAPE,
                            "%s(%s): %s %d is 0-dimensional; a map runs over "
                            "rows (dim 0)",
                            fn, d->name, role, idx);
        if (!tdm_tensor_is_contiguous(t))
            return tdm__err(rt, TDM_ELAYOUT, "%s(%s): %s %d is not contiguous", fn, d->name, role,
                            idx);
        int64_t r = tdm_tensor_dim(t, 0);
        if (rows < 0)
            rows = r;
        else if (r != rows)
            return tdm__err(rt, TDM_ESHAPE, "%s(%s): %s %d has %lld rows, the first tensor %lld",
                            fn, d->name, role, idx, (long long)r, (long long)rows);
    }
    if (n_rows >= 0 && rows >= 0 && rows != n_rows) /* (n_rows < 0: not given) */
        return tdm__err(rt, TDM_ESHAPE, "%s(%s): the tensors have %lld rows, n_rows is %lld", fn,
                        d->name, (long long)rows, (long long)n_rows);
    if (rows < 0)
        rows = n_rows;
    if (rows < 0)
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): no tensor gives the number of rows (a kernel without inputs "
                        "needs its outputs, or tdm_map_async_rows())",
                        fn, d->name);

    for (int i = 0; i < n_in; i++) /* (NULL whole inputs were passed over above) */
        if (!inputs[i])
            return tdm__err(rt, TDM_EINVAL, "%s(%s): input %d is NULL", fn, d->name, i);
    if (d->infer) {
        char msg[256] = "";
        memset(descs, 0, (size_t)n_out * sizeof *descs);
        rc = d->infer((const tdm_tensor *const *)inputs, n_in, params, params_size, descs, n_out,
                      msg, sizeof msg);
        if (rc < 0)
            return tdm__err(rt, rc, "%s(%s): %s", fn, d->name, msg[0] ? msg : tdm_strerror(rc));
        /* Dim 0 of every output is the map's row count (already checked above); an infer
         * function of a kernel without inputs cannot know it. One whose inputs are all given
         * whole can: the rows it gives must be the map's, or every batch past them reads past
         * its inputs (colsum of x[64, 1000] into y[1005] did, under ASan). */
        bool all_whole =
            n_in > 0 && n_in < 32 && (d->whole_inputs & ((1u << n_in) - 1)) == ((1u << n_in) - 1);
        for (int o = 0; o < n_out; o++) {
            if (descs[o].ndim < 1)
                continue;
            if (all_whole && descs[o].shape[0] > 0 && descs[o].shape[0] != rows)
                return tdm__err(rt, TDM_ESHAPE,
                                "%s(%s): the map has %lld rows, the kernel makes %lld from its "
                                "inputs (output %d)",
                                fn, d->name, (long long)rows, (long long)descs[o].shape[0], o);
            descs[o].shape[0] = rows;
        }
        for (int o = 0; outputs && o < n_out; o++) {
            const tdm_tensor *t = outputs[o];
            if (tdm_tensor_dtype(t) != descs[o].dtype)
                return tdm__err(rt, TDM_EDTYPE, "%s(%s): output %d has dtype %s, expected %s", fn,
                                d->name, o, tdm_dtype_name(tdm_tensor_dtype(t)),
                                tdm_dtype_name(descs[o].dtype));
            if (!same_desc(t, &descs[o])) {
                char got[128], want[128];
                shape_str(tdm_tensor_ndim(t), tdm_tensor_shape(t), got, sizeof got);
                shape_str(descs[o].ndim, descs[o].shape, want, sizeof want);
                return tdm__err(rt, TDM_ESHAPE, "%s(%s): output %d has shape %s, expected %s", fn,
                                d->name, o, got, want);
            }
        }
    } else if (!outputs && n_out > 0) {
        return tdm__err(rt, TDM_EINVAL,
                        "%s(%s): outputs NULL needs a kernel with an infer "
                        "function",
                        fn, d->name);
    }
    *k_out = k;
    *rows_out = rows;
    return 0;
}

/* Fills the job's view of a map's tensors (checked by check_map: kernel k, `rows` rows) and
 * places it on its workers. */
static int setup_map(tdm__job *job, const char *fn, const tdm__kernel *k, int64_t rows,
                     tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                     const void *params, size_t params_size)
{
    tdm_runtime *rt = job->rt;
    const tdm_kernel_def *d = &k->def;
    job->kernel = k;
    snprintf(job->what, sizeof job->what, "%s", d->name);
    int rc;
    bool in_arena =
        tdm__map_all_in_arena(inputs, n_in) && (!outputs || tdm__map_all_in_arena(outputs, n_out));
    const char *no_dev = NULL;
    if (!d->dev || !d->source)
        no_dev = "the kernel has no device version (source + dev launch)";
    for (int i = 0; i < n_in && !no_dev; i++)
        if (((d->whole_inputs >> i) & 1u) &&
            (inputs[i]->offset != 0 || tdm_tensor_nbytes(inputs[i]) != inputs[i]->storage->bytes))
            no_dev = "an input given whole is a view, not a whole tensor";
        else if (!outputs)
            no_dev = "streaming into ring buffers does not run on devices yet";
    rc = tdm__map_place(job, fn, d->cpu != NULL, in_arena,
                        "a tensor is not in shared memory: create it with TDM_MEM_SHARED or call "
                        "tdm_tensor_share() on it first",
                        no_dev);
    if (rc < 0)
        return rc;
    if (job->on & TDM__ON_DEVICES) {
        char msg[256] = "";
        memset(&job->launch, 0, sizeof job->launch);
        rc = d->dev((const tdm_tensor *const *)inputs, n_in, params, params_size, &job->launch, msg,
                    sizeof msg);
        if (rc < 0)
            return tdm__err(rt, rc, "%s(%s): %s", fn, d->name, msg[0] ? msg : tdm_strerror(rc));
        const tdm_dev_launch *l = &job->launch;
        if (l->n_args > TDM_DEV_MAX_ARGS || l->items_per_row < 1 || l->dims < 0 || l->dims > 2 ||
            (l->dims == 2 &&
             (l->local[0] < 1 || l->local[1] < 1 || (int64_t)l->local[0] * l->local[1] > 1024)))
            return tdm__err(rt, TDM_EINVAL, "%s(%s): the kernel's device launch is malformed", fn,
                            d->name);
        if (k->builtin)
            snprintf(job->dev_key, sizeof job->dev_key, "builtin");
        else
            snprintf(job->dev_key, sizeof job->dev_key, "%s.v%u", d->name, d->kernel_version);
        job->dev_source = d->source;
    }
    tdm__jdesc *dl = &job->dl;
    dl->kind = TDM__JOB_MAP;
    dl->kcpu = d->cpu;
    dl->whole = d->whole_inputs;
    dl->n_in = n_in;
    dl->n_out = n_out;
    dl->n_workers = job->n_workers;
    job->n_items = rows;
    for (int i = 0; i < n_in; i++) {
        tdm_tensor *t = inputs[i];
        job->tin[i] = tdm_tensor_retain(t);
        dl->tin[i] = t;
        dl->in_base[i] = tdm__tensor_ptr(t);
        int64_t r = !((d->whole_inputs >> i) & 1u) ? rows
                    : tdm_tensor_ndim(t) >= 1      ? tdm_tensor_dim(t, 0)
                                                   : 1;
        dl->in_row_elems[i] = r ? tdm_tensor_numel(t) / r : 0;
        dl->in_row_bytes[i] = dl->in_row_elems[i] * (int64_t)tdm_dtype_size(tdm_tensor_dtype(t));
    }
    for (int o = 0; outputs && o < n_out; o++) {
        tdm_tensor *t = outputs[o];
        job->tout[o] = tdm_tensor_retain(t);
        dl->tout[o] = t;
        dl->out_base[o] = tdm__tensor_ptr(t);
        dl->out_row_elems[o] = rows ? tdm_tensor_numel(t) / rows : 0;
        dl->out_row_bytes[o] = dl->out_row_elems[o] * (int64_t)tdm_dtype_size(tdm_tensor_dtype(t));
        if (tdm_tensor_mem(t) & TDM_MEM_SHARED)
            dl->shared_out |= 1u << o;
    }
    return tdm__map_place_data(job, inputs, n_in, outputs, n_out);
}

/* The common end of a map's and a parallel_for's set-up: publish the job and start it, or, if
 * a step failed (rc), free it. */
typedef struct {
    void (*fn)(void *);
    void *arg;
} tdm__hook;

static int launch(tdm__job *job, const char *fn, const void *params, size_t params_size, int rc,
                  const tdm__hook *hook, tdm__job **out)
{
    if (hook) {
        job->on_finish = hook->fn;
        job->on_finish_arg = hook->arg;
    }
    if (rc == 0)
        rc = tdm__map_finalize(job, fn, params, params_size);
    /* (a map neither streamed nor hooked is a blocking one: its caller waits from the start and
     * draws its progress, no thread needed) */
    job->progress_inline = !job->streaming && !hook;
    if (rc == 0)
        rc = tdm__map_start(job);
    if (rc < 0) {
        tdm__job_destroy(job);
        return rc;
    }
    *out = job;
    return 0;
}

/* Whether a map should open the devices first: a device policy always; AUTO and round-robin
 * when the kernel has a device version and opening is likely to pay (opening a driver and
 * building a program cost tens of milliseconds: ~25-40 + 30-110 ms for PoCL here):
 *  - the stored model says a device beats the CPU threads for this kernel, and the map moves
 *    at least TDM__AUTO_DEVICE_BYTES;
 *  - or it says the CPU threads need at least the bar for this map (tdm__device_open_bar: 1 s
 *    without a GPU's device node, 100 ms with one), counting
 *    what the runtime's maps before it needed while they left the devices closed (a map that
 *    moves little but computes long, pi over a few thousand items say; shorter maps add up
 *    to it, and a map that opens nothing adds its own);
 *  - or it knows nothing of the kernel's CPU speed and the map moves at least
 *    TDM__AUTO_DEVICE_BYTES_COLD: even at memory speed (~10 GB/s) the CPU then needs 100 ms,
 *    and most kernels that move so much compute far longer.
 * And never when the model says every device is slower. A map that opens nothing runs on the
 * CPU, which teaches the model its CPU speed for the next one.
 *
 * An AUTO map that knows nothing of the kernel's CPU speed and opens nothing (DEV_LAZY) starts
 * on the CPU with lanes kept for the devices: when its first batches show that the CPU needs
 * the bar or more for the rest, the devices open in the background and join
 * the map as they come (runtime/sched/job_sched.c). So a runtime's very first map of a long
 * kernel does not run on the CPU alone, and a short one pays nothing for devices. */
#define TDM__AUTO_DEVICE_BYTES ((uint64_t)16 << 20)
#define TDM__AUTO_DEVICE_BYTES_COLD ((uint64_t)1 << 30)

/* (skipped: closed, as the model says; lazy now: the map starts on the CPU, its first decision
 * opens the devices in the background) */
enum { DEV_NO, DEV_OPEN, DEV_LAZY, DEV_LAZY_NOW, DEV_SKIPPED };

/* Called once the map is found valid (check_map; o: its checked options, k: its kernel).
 * *closed_ns gets what the map adds to the runtime's count toward the bar when it leaves the
 * devices closed (0: nothing), added by the caller (tdm__devices_bar_count). */
static int wants_devices(tdm_runtime *rt, const tdm_map_opts *o, bool streaming,
                         const tdm__kernel *k, tdm_tensor *const *inputs, int n_in,
                         tdm_tensor *const *outputs, int n_out, const char *key, double *closed_ns)
{
    *closed_ns = 0;
    tdm_policy p = o->policy;
    if (p == TDM_POLICY_GPU || p == TDM_POLICY_OPENCL || p == TDM_POLICY_CUDA)
        return DEV_OPEN;
    /* (a streamed map runs on the CPU workers under AUTO and ROUND_ROBIN, see map_place.c:
     * nothing to open the devices for, nor to count toward opening them) */
    if ((p != TDM_POLICY_AUTO && p != TDM_POLICY_ROUND_ROBIN) || !outputs || streaming ||
        (!rt->backends[TDM_BACKEND_OPENCL].enabled && !rt->backends[TDM_BACKEND_CUDA].enabled))
        return DEV_NO;
    if (!k->def.dev || !k->def.source || !k->def.cpu)
        return DEV_NO;
    /* Share caps are checked against the kinds that may run the map, devices included: caps
     * that name a device, or that leave the CPU's kinds less than all the items, need the
     * devices open (on a fresh runtime CPU 0.5 + OpenCL 0.5 was refused: "share caps allow
     * only 50%", the devices not being open yet). A cap on the worker processes alone does
     * not open them. Caps that leave some items to no kind even with every device backend
     * there are refused by tdm__map_place whatever opens: nothing is opened for them. */
    if (p == TDM_POLICY_AUTO && tdm__share_capped(o)) {
        double cpu = 0, most;
        if (rt->threads > 0 && rt->backends[TDM_BACKEND_CPU_THREADS].enabled)
            cpu += tdm__share_allowed(o, TDM_BACKEND_CPU_THREADS);
        if (rt->procs && rt->backends[TDM_BACKEND_CPU_PROCS].enabled)
            cpu += tdm__share_allowed(o, TDM_BACKEND_CPU_PROCS);
        most = cpu;
        for (int kk = TDM_BACKEND_OPENCL; kk <= TDM_BACKEND_CUDA; kk++)
            if (rt->backends[kk].enabled)
                most += tdm__share_allowed(o, (tdm_backend_kind)kk);
        if (most < 1.0 - 1e-9)
            return DEV_NO;
        for (int kk = TDM_BACKEND_OPENCL; kk <= TDM_BACKEND_CUDA; kk++)
            if (o->share_cap[kk] > 0 && rt->backends[kk].enabled)
                return DEV_OPEN;
        if (cpu < 1.0 - 1e-9)
            return DEV_OPEN;
    }
    /* A lazy job (the map starts on the CPU; devices join it as they open) needs the devices
     * still closed, a job the devices may run (not streamed, not kept on a device) and no share
     * caps (those open the devices first, above). */
    bool lazy_ok = !streaming && !(tdm__share_capped(o) || o->keep_on_device) && rt->threads > 0 &&
                   !rt->devices;
    uint64_t bytes = 0;
    for (int i = 0; i < n_in + n_out; i++) {
        const tdm_tensor *t = i < n_in ? (inputs ? inputs[i] : NULL) : outputs[i - n_in];
        if (t)
            bytes += tdm_tensor_nbytes(t);
    }
    if (p == TDM_POLICY_ROUND_ROBIN)
        return bytes >= TDM__AUTO_DEVICE_BYTES ? DEV_OPEN : DEV_NO;
    tdm__costmodel *cm = tdm__runtime_costmodel(rt);
    double lat = 0;
    int samples = 0;
    double tpi = cm && rt->threads > 0 ? tdm__cm_get(cm, key, "cpu", &lat, &samples) : 0;
    /* (items: the first output's first dimension, which a map's items are at least) */
    const tdm_tensor *o0 = outputs[0];
    int64_t items = o0 && tdm_tensor_ndim(o0) > 0 ? tdm_tensor_shape(o0)[0] : 0;
    int want;
    char why[160] = "";
    bool say = (rt->debug & TDM_DEBUG_SCHED) != 0;
    if (tpi > 0) {
        double cpu_ns = tpi * (double)items / rt->threads;
        double before = (double)atomic_load_explicit(&rt->closed_cpu_ns, memory_order_relaxed);
        bool bar = cpu_ns + before >= tdm__device_open_bar(rt);
        want =
            bar || (bytes >= TDM__AUTO_DEVICE_BYTES && tdm__cm_device_faster(cm, key, rt->threads))
                ? DEV_OPEN
                : DEV_NO;
        /* (why, only under TDM_DEBUG=sched: a small map's whole call costs about 1 us) */
        if (say && bar)
            snprintf(why, sizeof why,
                     "the CPU needs about %.1f ms for the map (stored model), the maps before that "
                     "left the devices closed %.1f ms",
                     cpu_ns * 1e-6, before * 1e-6);
        else if (say)
            snprintf(why, sizeof why,
                     "the stored model says a device is more than 5%% faster than the CPU, and the "
                     "map moves %.1f MiB",
                     (double)bytes / (1 << 20));
        /* (counted toward opening them, unless the model says they lose on this kernel) */
        if (want == DEV_NO && !rt->devices && !tdm__jsched_skip_devices(rt, key))
            *closed_ns = cpu_ns; /* (< the bar) */
    } else if (bytes >= TDM__AUTO_DEVICE_BYTES_COLD) {
        want = DEV_OPEN;
        if (say)
            snprintf(why, sizeof why,
                     "nothing stored of the CPU's speed, and the map moves %.1f MiB",
                     (double)bytes / (1 << 20));
    } else {
        want = lazy_ok ? DEV_LAZY : DEV_NO;
    }
    if (want != DEV_NO && tdm__jsched_skip_devices(rt, key))
        return DEV_SKIPPED;
    /* Opened for the stored model's reason (or a map of 1 GiB with nothing stored), they open
     * in the background as the map starts on the CPU (opened before it, PoCL's open kept a
     * 0.5 s pi map from starting for 70 ms): a lazy job, which the devices join as they come.
     * Share caps and keep_on_device still open them first (lazy_ok). */
    if (want == DEV_OPEN && lazy_ok)
        want = DEV_LAZY_NOW;
    if (want == DEV_OPEN && !rt->devices && say)
        tdm__log(rt, TDM_DEBUG_SCHED, "sched %s: %s: the devices open", k->def.name, why);
    if (want == DEV_LAZY_NOW && say) /* (its first CPU decision asks: tdm__jsched) */
        tdm__log(rt, TDM_DEBUG_SCHED, "sched %s: %s: the map asks for the devices as it starts",
                 k->def.name, why);
    return want;
}

static int prepare_map(tdm_runtime *rt, const char *fn, bool streaming, const char *kernel,
                       tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                       const void *params, size_t params_size, const tdm_map_opts *opts,
                       const tdm__hook *hook, tdm__job **out, int64_t n_rows)
{
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", fn);
    int frc = tdm__check_fork(rt, fn);
    if (frc < 0)
        return frc;
    if (n_in < 0 || n_out < 0 || n_in > 16 || n_out > 16)
        return tdm__err(rt, TDM_EINVAL, "%s: tensor counts in %d / out %d not in 0..16", fn, n_in,
                        n_out);
    if (!outputs && n_out > 0 && !streaming)
        return tdm__err(rt, TDM_EINVAL, "%s: outputs is NULL", fn);
    tdm_map_opts checked;
    tdm_tensor_desc descs[16];
    memset(descs, 0, sizeof descs);
    const tdm__kernel *k = NULL;
    int64_t rows = 0;
    int rc = tdm__map_check_opts(rt, fn, opts, &checked, streaming);
    if (rc == 0)
        rc = check_map(rt, fn, kernel, inputs, n_in, outputs, n_out, params, params_size, n_rows,
                       descs, &k, &rows);
    if (rc < 0)
        return rc;
    /* Devices open on first use, before the job counts its workers. */
    /* (the map's key in the stored model: its kernel's work function runs once, here) */
    char model_key[TDM__CM_KEY_LEN];
    tdm__cm_map_key(model_key, sizeof model_key, &k->def, params, params_size);
    double closed_ns;
    int dev = wants_devices(rt, &checked, streaming, k, inputs, n_in, outputs, n_out, model_key,
                            &closed_ns);
    if (dev == DEV_OPEN) {
        rc = tdm__devices_ensure(rt);
        if (rc < 0)
            return rc;
    }
    tdm__job *job = tdm__map_job_alloc(rt, fn);
    if (!job)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", fn);
    /* (asked for; tdm__map_place decides) */
    job->lazy_devices = dev == DEV_LAZY || dev == DEV_LAZY_NOW;
    job->lazy_open_now = dev == DEV_LAZY_NOW;
    job->devices_skipped = dev == DEV_SKIPPED;
    job->streaming = streaming;
    job->opts = checked;
    snprintf(job->model_key, sizeof job->model_key, "%s", model_key);
    rc = setup_map(job, fn, k, rows, inputs, n_in, outputs, n_out, params, params_size);
    if (rc == 0 && streaming)
        rc = tdm__map_setup_streaming(job, fn);
    if (rc == 0 && streaming && !outputs && n_out > 0)
        rc = tdm__map_setup_ring(job, fn, descs);
    if (rc == 0 && job->opts.policy == TDM_POLICY_ROUND_ROBIN && !job->opts.batch_size) {
        int64_t bs = job->n_items / (16 * (int64_t)(job->n_eligible > 0 ? job->n_eligible : 1));
        job->opts.batch_size = bs > 0 ? bs : 1;
    }
    if (rc == 0 && !streaming && job->only_worker < 0 && job->opts.policy != TDM_POLICY_ROUND_ROBIN)
        rc = tdm__jsched_create(job);
    if (rc == 0 && closed_ns > 0)
        tdm__devices_bar_count(rt, job->what, closed_ns, -1);
    return launch(job, fn, params, params_size, rc, hook, out);
}

static int prepare_pfor(tdm_runtime *rt, const char *fn, bool streaming, int64_t n_items,
                        tdm_range_fn body, tdm_tensor *const *tensors, int n_tensors,
                        const void *params, size_t params_size, const tdm_map_opts *opts,
                        const tdm__hook *hook, tdm__job **out)
{
    *out = NULL;
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "%s: runtime is NULL", fn);
    int frc = tdm__check_fork(rt, fn);
    if (frc < 0)
        return frc;
    if (!body)
        return tdm__err(rt, TDM_EINVAL, "%s: fn is NULL", fn);
    if (n_items < 0)
        return tdm__err(rt, TDM_EINVAL, "%s: n_items %lld is negative", fn, (long long)n_items);
    if (params_size > 0 && !params)
        return tdm__err(rt, TDM_EINVAL, "%s: params is NULL with params_size %zu", fn, params_size);
    if (n_tensors < 0 || n_tensors > 16 || (n_tensors > 0 && !tensors))
        return tdm__err(rt, TDM_EINVAL, "%s: %d tensors (0..16, tensors not NULL)", fn, n_tensors);
    for (int i = 0; i < n_tensors; i++) {
        if (!tensors[i])
            return tdm__err(rt, TDM_EINVAL, "%s: tensor %d is NULL", fn, i);
        if (tdm_tensor_runtime(tensors[i]) != rt)
            return tdm__err(rt, TDM_EINVAL, "%s: tensor %d belongs to another runtime", fn, i);
    }
    tdm__job *job = tdm__map_job_alloc(rt, fn);
    if (!job)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", fn);
    job->dl.kind = TDM__JOB_PFOR;
    job->dl.fn = body;
    job->dl.n_workers = job->n_workers;
    job->dl.n_in = n_tensors;
    for (int i = 0; i < n_tensors; i++) {
        job->tin[i] = tdm_tensor_retain(tensors[i]);
        job->dl.tin[i] = tensors[i];
        job->dl.in_base[i] = tdm__tensor_ptr(tensors[i]);
    }
    job->n_items = n_items;
    snprintf(job->what, sizeof job->what, "parallel_for");
    int rc = tdm__map_check_opts(rt, fn, opts, &job->opts, streaming);
    /* A body may write to memory worker processes do not share, which would be lost
     * silently: only an explicit PROCS policy, or the tensor form with every tensor shared,
     * sends it there. */
    bool shared = n_tensors > 0 && tdm__map_all_in_arena(tensors, n_tensors);
    if (rc == 0 && job->opts.policy == TDM_POLICY_PROCS && n_tensors > 0 && !shared)
        rc = tdm__err(rt, TDM_EINVAL,
                      "%s: policy PROCS: a tensor is not in shared memory: create it with "
                      "TDM_MEM_SHARED or call tdm_tensor_share() on it first",
                      fn);
    if (rc == 0)
        rc = tdm__map_place(
            job, fn, true, job->opts.policy == TDM_POLICY_PROCS || shared, "",
            "a parallel_for body is a host function: it runs on threads or processes");
    if (rc == 0 && n_tensors > 0) /* the body may write them: host copies current */
        rc = tdm__map_place_data(job, NULL, 0, tensors, n_tensors);
    if (rc == 0 && (job->on & TDM__ON_PROCS))
        tdm__map_check_params(job, fn, params, params_size);
    if (rc == 0 && streaming)
        rc = tdm__map_setup_streaming(job, fn);
    return launch(job, fn, params, params_size, rc, hook, out);
}

static int finish_sync(tdm__job *job, tdm_report *report)
{
    int rc = tdm__job_wait(job, report);
    job->wait_status_valid = true;
    tdm__job_destroy(job);
    return rc;
}

static int check_report(tdm_runtime *rt, const char *fn, const tdm_report *report)
{
    if (report && report->size < sizeof(tdm_report))
        return tdm__err(rt, TDM_EINVAL, "%s: report size %u is too small (use TDM_REPORT_INIT)", fn,
                        report->size);
    return 0;
}

int tdm_map(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs, int n_in,
            tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
            const tdm_map_opts *opts, tdm_report *report)
{
    int rc = check_report(rt, "tdm_map", report);
    tdm__job *job;
    if (rc == 0)
        rc = prepare_map(rt, "tdm_map", false, kernel, inputs, n_in, outputs, n_out, params,
                         params_size, opts, NULL, &job, -1);
    return rc < 0 ? rc : finish_sync(job, report);
}

int tdm_parallel_for(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn, const void *params,
                     size_t params_size, const tdm_map_opts *opts, tdm_report *report)
{
    int rc = check_report(rt, "tdm_parallel_for", report);
    tdm__job *job;
    if (rc == 0)
        rc = prepare_pfor(rt, "tdm_parallel_for", false, n_items, fn, NULL, 0, params, params_size, opts,
                          NULL, &job);
    return rc < 0 ? rc : finish_sync(job, report);
}

int tdm_map_async(tdm_runtime *rt, const char *kernel, tdm_tensor *const *inputs, int n_in,
                  tdm_tensor *const *outputs, int n_out, const void *params, size_t params_size,
                  const tdm_map_opts *opts, tdm_job **job)
{
    if (!job)
        return tdm__err(rt, TDM_EINVAL, "tdm_map_async: job is NULL");
    tdm__job *j;
    int rc = prepare_map(rt, "tdm_map_async", true, kernel, inputs, n_in, outputs, n_out, params,
                         params_size, opts, NULL, &j, -1);
    *job = rc < 0 ? NULL : (tdm_job *)j;
    return rc;
}

int tdm_map_async_rows(tdm_runtime *rt, const char *kernel, int64_t n_rows,
                       tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                       const void *params, size_t params_size, const tdm_map_opts *opts,
                       tdm_job **job)
{
    if (!job)
        return tdm__err(rt, TDM_EINVAL, "tdm_map_async_rows: job is NULL");
    *job = NULL;
    if (n_rows < 0)
        return tdm__err(rt, TDM_EINVAL, "tdm_map_async_rows: n_rows %lld is negative",
                        (long long)n_rows);
    tdm__job *j;
    int rc = prepare_map(rt, "tdm_map_async_rows", true, kernel, inputs, n_in, outputs, n_out,
                         params, params_size, opts, NULL, &j, n_rows);
    *job = rc < 0 ? NULL : (tdm_job *)j;
    return rc;
}

int tdm_parallel_for_async(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn, const void *params,
                           size_t params_size, const tdm_map_opts *opts, tdm_job **job)
{
    if (!job)
        return tdm__err(rt, TDM_EINVAL, "tdm_parallel_for_async: job is NULL");
    tdm__job *j;
    int rc = prepare_pfor(rt, "tdm_parallel_for_async", true, n_items, fn, NULL, 0, params,
                          params_size,
                          opts, NULL, &j);
    *job = rc < 0 ? NULL : (tdm_job *)j;
    return rc;
}

int tdm__map_async_hook(tdm_runtime *rt, const char *fn, const char *kernel,
                        tdm_tensor *const *inputs, int n_in, tdm_tensor *const *outputs, int n_out,
                        const void *params, size_t params_size, const tdm_map_opts *opts,
                        void (*hook)(void *), void *hook_arg, tdm__job **job)
{
    tdm__hook h = {hook, hook_arg};
    return prepare_map(rt, fn, false, kernel, inputs, n_in, outputs, n_out, params, params_size,
                       opts, &h, job, -1);
}

int tdm__pfor_async_hook(tdm_runtime *rt, const char *name, int64_t n_items, tdm_range_fn fn,
                         const void *params, size_t params_size, const tdm_map_opts *opts,
                         void (*hook)(void *), void *hook_arg, tdm__job **job)
{
    tdm__hook h = {hook, hook_arg};
    return prepare_pfor(rt, name, false, n_items, fn, NULL, 0, params, params_size, opts, &h,
                        job);
}

int tdm_parallel_for_tensors(tdm_runtime *rt, int64_t n_items, tdm_range_fn fn,
                             tdm_tensor *const *tensors, int n_tensors, const void *params,
                             size_t params_size, const tdm_map_opts *opts, tdm_report *report)
{
    int rc = check_report(rt, "tdm_parallel_for_tensors", report);
    tdm__job *job;
    if (rc == 0)
        rc = prepare_pfor(rt, "tdm_parallel_for_tensors", false, n_items, fn, tensors, n_tensors,
                          params, params_size, opts, NULL, &job);
    return rc < 0 ? rc : finish_sync(job, report);
}
