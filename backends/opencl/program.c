/* SPDX-License-Identifier: MIT */
/* OpenCL backend, programs and launches: programs built from source and cached per key (a
 * failed build with its log), kernels with their argument info, 1-D and 2-D launches. See the
 * comment at the top of device.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl_internal.h"

/* ---- programs and kernels ------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The build log as one line for `detail`: from the line of its first error (earlier warnings
 * are noise next to it), newlines as " | ", runs of blanks squeezed; "..." when cut. */
static void log_one_line(const char *log, char *out, size_t len)
{
    if (!len)
        return;
    const char *start = log, *err = strstr(log, "error");
    if (err) {
        while (err > log && err[-1] != '\n')
            err--;
        start = err;
    }
    size_t o = 0;
    int blank = 1; /* drops leading blanks */
    const char *p = start;
    for (; *p && o + 1 < len; p++) {
        char c = *p;
        if (c == '\n' || c == '\r') {
            if (o && !blank && o + 4 < len) {
                memcpy(out + o, " | ", 3);
                o += 3;
            }
            blank = 1;
            continue;
        }
        if (c == ' ' || c == '\t') {
            if (blank)
                continue;
            blank = 1;
            out[o++] = ' ';
            continue;
        }
        blank = 0;
        out[o++] = c;
    }
    while (o && (out[o - 1] == ' ' || out[o - 1] == '|'))
        o--;
    out[o] = '\0';
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    if (*p && len > 4) { /* cut: mark it */
        if (o > len - 4)
            o = len - 4;
        memcpy(out + o, "...", 4);
    }
}

#define OCL_BUILD_OPTIONS "-cl-std=CL1.2 -cl-kernel-arg-info"

/* The build options of d's programs: OCL_BUILD_OPTIONS, and its slot after the first. */
static void build_options(const tdm__dev *d, char *out, size_t len)
{
    if (d->slot > 0)
        snprintf(out, len, "%s -DTDM_OCL_SLOT=%d", OCL_BUILD_OPTIONS, d->slot);
    else
        snprintf(out, len, "%s", OCL_BUILD_OPTIONS);
}

/* Builds `source` under `key` (or finds it): 0 and *out, or an error (a failed build is cached
 * and reported again as it was). */
static int get_program(tdm__dev *d, const char *key, const char *source, ocl_prog **out,
                       char *detail, size_t len)
{
    ocl_prog *p;
    for (p = d->progs; p; p = p->next)
        if (!strcmp(p->key, key))
            break;
    if (p) {
        if (p->source != source) {
            if (fnv1a(source) != p->hash)
                return tdm__ocl_fail(
                    detail, len, TDM_EINVAL,
                    "opencl device %d: program key '%s' was built from another source "
                    "(a key must name one source: add a version to it)",
                    d->index, key);
            p->source = source;
        }
        if (!p->p) {
            if (detail && len)
                snprintf(detail, len, "%s", p->fail ? p->fail : "program did not build");
            return TDM_EKERNEL;
        }
        *out = p;
        return 0;
    }

    size_t klen = strlen(key);
    p = calloc(1, sizeof *p + klen + 1);
    if (!p)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM, "opencl: out of host memory for program '%s'",
                             key);
    memcpy(p->key, key, klen + 1);
    p->source = source;
    p->hash = fnv1a(source);

    uint64_t t0 = tdm__now_ns();
    cl_int e;
    cl_program prog = clCreateProgramWithSource(d->ctx, 1, &source, NULL, &e);
    if (!prog) {
        free(p);
        return tdm__ocl_cl_fail(d, detail, len, e, "clCreateProgramWithSource for '%s'", key);
    }
    char options[96];
    build_options(d, options, sizeof options);
    e = clBuildProgram(prog, 1, &d->dev, options, NULL, NULL);
    if (e == CL_SUCCESS) {
        p->p = prog;
        tdm__log(d->rt, TDM_DEBUG_RUNTIME, "opencl device %d (%s): built program '%s' in %.1f ms",
                 d->index, d->name, key, (double)(tdm__now_ns() - t0) * 1e-6);
    } else if (e == CL_BUILD_PROGRAM_FAILURE || e == CL_INVALID_BUILD_OPTIONS) {
        /* The source is at fault: cache the failure with its log. */
        size_t n = 0;
        char *log = NULL;
        if (clGetProgramBuildInfo(prog, d->dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS &&
            (log = calloc(n + 1, 1)) != NULL)
            clGetProgramBuildInfo(prog, d->dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        clReleaseProgram(prog);
        char head[320];
        snprintf(head, sizeof head,
                 "opencl device %d (%s): program '%.60s' did not build (%s): ", d->index, d->name,
                 key, tdm__cl_errname(e));
        size_t hl = strlen(head), cap = hl + 1024; /* the log's first kilobyte or so */
        p->fail = malloc(cap);
        if (p->fail) {
            memcpy(p->fail, head, hl);
            log_one_line(log && *log ? log : "(empty build log)", p->fail + hl, cap - hl);
        }
        free(log);
        if (detail && len)
            snprintf(detail, len, "%s", p->fail ? p->fail : head);
        p->next = d->progs;
        d->progs = p;
        tdm__log(d->rt, TDM_DEBUG_RUNTIME, "%s", p->fail ? p->fail : head);
        return TDM_EKERNEL;
    } else {
        /* The driver is at fault (no compiler, out of memory): not cached, may work later. */
        clReleaseProgram(prog);
        free(p);
        int rc = tdm__ocl_cl_fail(d, detail, len, e, "clBuildProgram of '%s'", key);
        return e == CL_COMPILER_NOT_AVAILABLE ? TDM_EKERNEL : rc;
    }
    p->next = d->progs;
    d->progs = p;
    *out = p;
    return 0;
}

/* Bytes of an OpenCL C scalar or vector type by name (the dialect's typedefs included), 0 when
 * unknown (a struct, or a typedef of the user's). */
static uint32_t type_size(const char *t)
{
    static const struct {
        const char *name;
        uint32_t size;
    } base[] = {
        {"char", 1},           {"uchar", 1},        {"short", 2},        {"ushort", 2},
        {"half", 2},           {"int", 4},          {"uint", 4},         {"float", 4},
        {"long", 8},           {"ulong", 8},        {"double", 8},       {"tdm_u8", 1},
        {"tdm_i32", 4},        {"tdm_i64", 8},      {"tdm_idx", 8},      {"unsigned char", 1},
        {"unsigned short", 2}, {"unsigned int", 4}, {"unsigned long", 8}};
    const size_t n_base = sizeof base / sizeof base[0];
    for (size_t i = 0; i < n_base; i++) /* exact names first: tdm_i32 is not 32 lanes */
        if (!strcmp(base[i].name, t))
            return base[i].size;
    size_t n = strlen(t), digits = 0;
    while (digits < n && t[n - 1 - digits] >= '0' && t[n - 1 - digits] <= '9')
        digits++;
    unsigned lanes = 1;
    if (digits && digits < n) {
        lanes = (unsigned)atoi(t + n - digits);
        if (lanes != 2 && lanes != 3 && lanes != 4 && lanes != 8 && lanes != 16)
            return 0;
        n -= digits;
    }
    if (lanes == 1)
        return 0;
    for (size_t i = 0; i < n_base; i++)
        if (strlen(base[i].name) == n && !strncmp(base[i].name, t, n))
            return base[i].size * (lanes == 3 ? 4 : lanes);
    return 0;
}

/* The parameters' kinds and sizes; NULL (no checks) when the driver has no argument info. */
static ocl_param *kernel_params(cl_kernel k, cl_uint n)
{
    if (n == 0)
        return NULL;
    ocl_param *ps = calloc(n, sizeof *ps);
    if (!ps)
        return NULL;
    for (cl_uint i = 0; i < n; i++) {
        cl_kernel_arg_address_qualifier aq = 0;
        if (clGetKernelArgInfo(k, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof aq, &aq, NULL) !=
            CL_SUCCESS) {
            free(ps);
            return NULL;
        }
        char t[64] = "";
        if (clGetKernelArgInfo(k, i, CL_KERNEL_ARG_TYPE_NAME, sizeof t - 1, t, NULL) != CL_SUCCESS)
            t[0] = '\0';
        snprintf(ps[i].type, sizeof ps[i].type, "%.*s", (int)sizeof ps[i].type - 1, t);
        switch (aq) {
        case CL_KERNEL_ARG_ADDRESS_GLOBAL:
        case CL_KERNEL_ARG_ADDRESS_CONSTANT:
            ps[i].kind = ARG_GLOBAL_PTR;
            break;
        case CL_KERNEL_ARG_ADDRESS_LOCAL:
            ps[i].kind = ARG_LOCAL_PTR;
            break;
        case CL_KERNEL_ARG_ADDRESS_PRIVATE:
            ps[i].kind = ARG_VALUE;
            ps[i].size = strchr(t, '*') ? 0 : type_size(t);
            break;
        default:
            ps[i].kind = ARG_UNKNOWN;
            break;
        }
    }
    return ps;
}

/* 0, or TDM_EINVAL when argument i cannot be what parameter i takes. */
static int check_arg(const tdm__dev *d, const ocl_kernel *k, int i, const tdm__karg *a,
                     char *detail, size_t len)
{
    if (!k->param)
        return 0;
    const ocl_param *p = &k->param[i];
    int want_buf = a->kind != TDM__KARG_VALUE;
    if (p->kind == ARG_LOCAL_PTR)
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: kernel %s parameter %d is a __local pointer (not "
                             "supported)",
                             d->index, k->name, i);
    if (p->kind == ARG_GLOBAL_PTR && !want_buf)
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: kernel %s argument %d: parameter is a buffer (%s), a "
            "value was given",
            d->index, k->name, i, p->type);
    if (p->kind == ARG_VALUE && want_buf)
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: kernel %s argument %d: parameter is a value (%s), a "
            "buffer was given",
            d->index, k->name, i, p->type);
    if (p->kind == ARG_VALUE && p->size && p->size != a->size)
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: kernel %s argument %d: parameter is %s (%u bytes), %u "
            "bytes given",
            d->index, k->name, i, p->type, p->size, a->size);
    return 0;
}

static int get_kernel(tdm__dev *d, ocl_prog *p, const char *entry, ocl_kernel **out, char *detail,
                      size_t len)
{
    ocl_kernel *k;
    for (k = p->kernels; k; k = k->next)
        if (!strcmp(k->name, entry)) {
            *out = k;
            return 0;
        }
    size_t nl = strlen(entry);
    k = calloc(1, sizeof *k + nl + 1);
    if (!k)
        return tdm__ocl_fail(detail, len, TDM_ENOMEM, "opencl: out of host memory for kernel '%s'",
                             entry);
    memcpy(k->name, entry, nl + 1);
    cl_int e;
    k->k = clCreateKernel(p->p, entry, &e);
    if (!k->k) {
        free(k);
        if (e == CL_INVALID_KERNEL_NAME)
            return tdm__ocl_fail(detail, len, TDM_ENOTFOUND,
                                 "opencl device %d (%s): program '%s' has no kernel entry '%s'",
                                 d->index, d->name, p->key, entry);
        return tdm__ocl_cl_fail(d, detail, len, e, "clCreateKernel(%s)", entry);
    }
    e = clGetKernelInfo(k->k, CL_KERNEL_NUM_ARGS, sizeof k->n_args, &k->n_args, NULL);
    if (e != CL_SUCCESS) {
        clReleaseKernel(k->k);
        free(k);
        return tdm__ocl_cl_fail(d, detail, len, e, "clGetKernelInfo(%s)", entry);
    }
    k->param = kernel_params(k->k, k->n_args);
    k->multiple = 1;
    size_t m = 0;
    if (clGetKernelWorkGroupInfo(k->k, d->dev, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                 sizeof m, &m, NULL) == CL_SUCCESS &&
        m > 0 && m <= 1024)
        k->multiple = m;
    if (clGetKernelWorkGroupInfo(k->k, d->dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof k->max_group,
                                 &k->max_group, NULL) != CL_SUCCESS)
        k->max_group = 0;
    if (clGetKernelWorkGroupInfo(k->k, d->dev, CL_KERNEL_COMPILE_WORK_GROUP_SIZE, sizeof k->reqd,
                                 k->reqd, NULL) != CL_SUCCESS)
        memset(k->reqd, 0, sizeof k->reqd);
    k->next = p->kernels;
    p->kernels = k;
    *out = k;
    return 0;
}

/* The kernel `entry` of program `source` (built and cached under key) with its arguments set:
 * what both launches do before enqueueing. */
static int ocl_bind(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                    const tdm__karg *args, int n_args, ocl_kernel **out, char *detail, size_t len)
{
    int rc = tdm__ocl_check_queue(d, q, "launch", detail, len);
    if (rc)
        return rc;
    if (!key || !source || !entry || n_args < 0 || (n_args > 0 && !args))
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: launch: NULL key, source, entry or args", d->index);
    if ((rc = tdm__devhealth_enter(&d->health, TDM__FAULT_LAUNCH, detail, len)) != 0)
        return rc;
    ocl_prog *p = NULL;
    if ((rc = get_program(d, key, source, &p, detail, len)) != 0)
        return rc;
    ocl_kernel *k = NULL;
    if ((rc = get_kernel(d, p, entry, &k, detail, len)) != 0)
        return rc;
    if ((cl_uint)n_args != k->n_args)
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: kernel %s takes %u arguments, %d given", d->index,
                             entry, k->n_args, n_args);
    for (int i = 0; i < n_args; i++) {
        const tdm__karg *a = &args[i];
        cl_int e;
        if ((a->kind == TDM__KARG_BUF || a->kind == TDM__KARG_NULL || a->kind == TDM__KARG_VALUE) &&
            (rc = check_arg(d, k, i, a, detail, len)) != 0)
            return rc;
        switch (a->kind) {
        case TDM__KARG_BUF:
            if (!a->buf)
                return tdm__ocl_fail(
                    detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s argument %d: buffer argument with no "
                    "buffer (use TDM__KARG_NULL)",
                    d->index, entry, i);
            e = a->buf->mem ? clSetKernelArg(k->k, (cl_uint)i, sizeof(cl_mem), &a->buf->mem)
                            : clSetKernelArg(k->k, (cl_uint)i, sizeof(cl_mem), NULL);
            break;
        case TDM__KARG_NULL:
            e = clSetKernelArg(k->k, (cl_uint)i, sizeof(cl_mem), NULL);
            break;
        case TDM__KARG_VALUE:
            if (a->size == 0 || a->size > sizeof a->value)
                return tdm__ocl_fail(
                    detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s argument %d: value of %u bytes (1 to "
                    "%zu)",
                    d->index, entry, i, a->size, sizeof a->value);
            e = clSetKernelArg(k->k, (cl_uint)i, a->size, a->value);
            break;
        default:
            return tdm__ocl_fail(detail, len, TDM_EINVAL,
                                 "opencl device %d: kernel %s argument %d: unknown kind %d",
                                 d->index, entry, i, (int)a->kind);
        }
        if (e != CL_SUCCESS) {
            tdm__ocl_cl_fail(d, detail, len, e, "kernel %s argument %d (%s, %u bytes)", entry, i,
                             a->kind == TDM__KARG_VALUE ? "value" : "buffer",
                             a->kind == TDM__KARG_VALUE ? a->size : (unsigned)sizeof(cl_mem));
            /* A rejected argument is the caller's mistake, unless the driver ran out. */
            return tdm__ocl_cl_code(e) == TDM_ENOMEM ? TDM_ENOMEM : TDM_EINVAL;
        }
    }
    *out = k;
    return 0;
}

/* Enqueues kernel k on queue q over `dims` dimensions and records it; on a driver failure,
 * the message names `what` and the device is marked lost.
 *
 * Launches of one entry run at once (on different queues) only when they have the same sizes;
 * a launch of other sizes waits for those still running. PoCL (3.1 on Debian 12, its CPU
 * device) needs this: it caches the loaded work-group functions by (kernel, local size, grid
 * width) but gives a finished launch's back by (kernel, local size) alone, the most recently
 * used first. Two launches of one entry and local size with different global sizes running at
 * once could then take two cache entries and give one of them back twice, and the process
 * aborted ("pocl_release_dlhandle_cache: Assertion found->ref_count > 0"; 3 runs in 10 of
 * device_elementwise_kernels_match_cpu, 10 in 10 of opencl_kernels_of_many_queues_with_growing_
 * sizes). Launches of the same sizes all take the one entry found first. The launches round
 * their group counts up to powers of two so that batches of about one size share their sizes
 * and still overlap: running one kernel at a time made AUTO's pi map on PoCL 20% slower (its
 * batches of a few dozen heavy items do not fill the cores alone). */
static int enqueue_kernel(tdm__dev *d, int q, ocl_kernel *k, cl_uint dims, const size_t *g,
                          const size_t *l, const char *what, char *detail, size_t len)
{
    int rc = tdm__ocl_reserve_op(d, q, detail, len);
    if (rc != 0)
        return rc;
    size_t sizes[5] = {dims, l[0], g[0], dims > 1 ? l[1] : 0, dims > 1 ? g[1] : 0};
    /* On another queue, a queue runs in order: of its launches that may still run, the latest
     * one of other sizes than ours is the one to wait for (what came before it there ends
     * before it starts). That is its last launch, or else the one before its run of launches
     * of our sizes. */
    cl_event wait[OCL_QUEUES];
    cl_uint n_wait = 0;
    for (int i = 0; i < OCL_QUEUES; i++) {
        if (i == q)
            continue;
        if (k->inflight[i].last && memcmp(k->inflight[i].sizes, sizes, sizeof sizes) != 0)
            wait[n_wait++] = k->inflight[i].last;
        else if (k->inflight[i].other)
            wait[n_wait++] = k->inflight[i].other;
    }
    cl_event ev = NULL;
    cl_int e = clEnqueueNDRangeKernel(d->q[q].q, k->k, dims, NULL, g, l, n_wait,
                                      n_wait ? wait : NULL, &ev);
    if (e != CL_SUCCESS)
        return tdm__ocl_lost_if_driver(
            d,
            tdm__ocl_cl_fail(d, detail, len, e, "clEnqueueNDRangeKernel(%s) on queue %d", what, q),
            detail, len);
    tdm__ocl_record_op(d, q, ev, "kernel %.40s", k->name);
    if (clRetainEvent(ev) != CL_SUCCESS) {
        /* Not tracked, it cannot be waited for: this queue's launches until the next one are
         * finished here and now, as a device that cannot retain an event may well be lost. */
        clFinish(d->q[q].q);
        ev = NULL;
    }
    if (k->inflight[q].last && memcmp(k->inflight[q].sizes, sizes, sizeof sizes) == 0) {
        clReleaseEvent(k->inflight[q].last); /* (same sizes: `other` stays what it was) */
    } else {
        if (k->inflight[q].other)
            clReleaseEvent(k->inflight[q].other);
        k->inflight[q].other = k->inflight[q].last;
        memcpy(k->inflight[q].sizes, sizes, sizeof sizes);
    }
    k->inflight[q].last = ev;
    return 0;
}

/* n rounded up to a power of two, at most cap (n >= 1). */
static size_t pow2_at_most(size_t n, size_t cap)
{
    size_t p = 1;
    while (p < n && p <= cap / 2)
        p *= 2;
    return p < n ? cap : p;
}

/* The work-group size of 1-D launches (at most), and the groups a launch is cut into at least
 * (while its groups are larger than the preferred multiple) so every compute unit of a
 * many-core host gets some; see tdm__ocl_launch. */
#define OCL_LOCAL_1D ((size_t)256)
#define OCL_GROUPS_1D ((size_t)16)

int tdm__ocl_prepare(tdm__dev *d, const char *key, const char *source, const char *entry,
                     char *detail, size_t len)
{
    if (!key || !source || !entry)
        return tdm__ocl_fail(detail, len, TDM_EINVAL,
                             "opencl device %d: prepare: NULL key, source or entry", d->index);
    if (tdm__devhealth_lost(&d->health))
        return tdm__ocl_fail(detail, len, TDM_EDEVLOST, "opencl device %d is lost", d->index);
    ocl_prog *p = NULL;
    ocl_kernel *k = NULL;
    int rc = get_program(d, key, source, &p, detail, len);
    return rc ? rc : get_kernel(d, p, entry, &k, detail, len);
}

int tdm__ocl_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                    const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    ocl_kernel *k = NULL;
    int rc = ocl_bind(d, q, key, source, entry, args, n_args, &k, detail, len);
    if (rc != 0)
        return rc;
    if (k->reqd[0])
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: kernel %s requires work-groups of %zux%zux%zu: it needs a "
            "2-D launch",
            d->index, entry, k->reqd[0], k->reqd[1], k->reqd[2]);
    if (global <= 0)
        return 0; /* no items: nothing to run */
    size_t g = (uint64_t)global > OCL_GLOBAL_CAP ? OCL_GLOBAL_CAP : (size_t)global;
    /* The work-group size is ours, one of a few: the preferred multiple times a power of two,
     * at most OCL_LOCAL_1D, the largest that still makes OCL_GROUPS_1D groups; the global size
     * is a multiple of it (the extra work items find no item in the grid-stride loop). Left to
     * the driver, the local size follows the global one, and PoCL compiles a new work-group
     * function for each (100-400 ms apiece): batches of changing sizes, as the scheduler's
     * exploration makes, would each pay a compile. */
    size_t l = k->multiple;
    while (l * 2 <= OCL_LOCAL_1D && (k->max_group == 0 || l * 2 <= k->max_group) &&
           g >= l * 2 * OCL_GROUPS_1D)
        l *= 2;
    /* (a power of two of groups: see enqueue_kernel; at most OCL_GLOBAL_CAP, a power of two) */
    g = pow2_at_most((g + l - 1) / l, OCL_GLOBAL_CAP / l) * l;
    char what[96];
    snprintf(what, sizeof what, "%.40s, %zu work items", entry, g);
    return enqueue_kernel(d, q, k, 1, &g, &l, what, detail, len);
}

/* A 2-D launch in work-groups of exactly r->local (clEnqueueNDRangeKernel with work_dim 2 and
 * local_work_size: OpenCL 1.2 requires the global size to be a multiple of it, hence the
 * rounding; the group count is capped per dimension). The group size is checked against the
 * entry's required size, the kernel's and the device's limits first, so a group the device
 * cannot run is TDM_EINVAL with the reason, not a driver error. */
int tdm__ocl_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                       const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                       size_t len)
{
    if (!r || r->local[0] < 1 || r->local[1] < 1 || r->size[0] < 0 || r->size[1] < 0)
        return tdm__ocl_fail(detail, len, TDM_EINVAL, "opencl device %d: launch_2d(%s): bad range",
                             d->index, entry ? entry : "?");
    ocl_kernel *k = NULL;
    int rc = ocl_bind(d, q, key, source, entry, args, n_args, &k, detail, len);
    if (rc != 0)
        return rc;
    size_t local[2] = {r->local[0], r->local[1]};
    if (k->reqd[0] && (k->reqd[0] != local[0] || k->reqd[1] != local[1] || k->reqd[2] != 1))
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d: kernel %s requires work-groups of %zux%zux%zu, %zux%zu "
            "asked for",
            d->index, entry, k->reqd[0], k->reqd[1], k->reqd[2], local[0], local[1]);
    if ((k->max_group && local[0] * local[1] > k->max_group) ||
        (d->max_items[0] && local[0] > d->max_items[0]) ||
        (d->max_items[1] && local[1] > d->max_items[1]))
        return tdm__ocl_fail(
            detail, len, TDM_EINVAL,
            "opencl device %d (%s): kernel %s needs work-groups of %zux%zu; the device "
            "runs at most %zu work items per group for it, %zux%zu per dimension",
            d->index, d->name, entry, local[0], local[1], k->max_group, d->max_items[0],
            d->max_items[1]);
    if (r->size[0] == 0 || r->size[1] == 0)
        return 0; /* no items: nothing to run */
    size_t g[2];
    for (int i = 0; i < 2; i++) {
        uint64_t groups = ((uint64_t)r->size[i] + local[i] - 1) / local[i];
        g[i] = pow2_at_most(groups > OCL_GROUPS_CAP ? OCL_GROUPS_CAP : (size_t)groups,
                            OCL_GROUPS_CAP) *
               local[i];
    }
    char what[128];
    snprintf(what, sizeof what, "%.40s, %zux%zu work items in groups of %zux%zu", entry, g[0], g[1],
             local[0], local[1]);
    return enqueue_kernel(d, q, k, 2, g, local, what, detail, len);
}

void tdm__ocl_programs_free(tdm__dev *d)
{
    for (ocl_prog *p = d->progs, *pn; p; p = pn) {
        pn = p->next;
        for (ocl_kernel *k = p->kernels, *kn; k; k = kn) {
            kn = k->next;
            for (int i = 0; i < OCL_QUEUES; i++) {
                if (k->inflight[i].last)
                    clReleaseEvent(k->inflight[i].last);
                if (k->inflight[i].other)
                    clReleaseEvent(k->inflight[i].other);
            }
            clReleaseKernel(k->k);
            free(k->param);
            free(k);
        }
        if (p->p)
            clReleaseProgram(p->p);
        free(p->fail);
        free(p);
    }
    d->progs = NULL;
}
