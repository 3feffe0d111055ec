/* OpenCL backend, execution part: the device layer of runtime/device.h on the ICD loader.
 *
 * One tdm__dev per opened device: one context, OCL_QUEUES in-order command queues (the depth of
 * the pipeline: batch k+1 copies in while batch k computes and batch k-1 copies out), a cache of
 * built programs keyed by the caller's key, and per program the kernels created so far. Every
 * enqueued command gets an event, kept until finish() of its queue, which then reports the
 * first command that failed, by name ("kernel tdm_exp_sinh_f64: CL_OUT_OF_RESOURCES (-5)").
 *
 * Device memory is accounted per device against, in this order, CL_DEVICE_MAX_MEM_ALLOC_SIZE
 * (one buffer), the cap from the environment variable TDM_DEVICE_MEM_CAP ("64M", "2G", "1048576";
 * K/M/G/T are powers of 1024; 0 or unset: no cap) and CL_DEVICE_GLOBAL_MEM_SIZE (all buffers);
 * all three are TDM_ENOMEM, like a driver's own allocation failure, so the core can run the
 * batch elsewhere.
 *
 * Programs are built with "-cl-std=CL1.2" only. The dialect (kernels/tdm_dialect.h) decides
 * TDM_HAVE_FP64 by itself from the cl_khr_fp64 macro, which an OpenCL C compiler defines exactly
 * when the device has the extension; a -DTDM_HAVE_FP64 on the command line would add nothing on
 * such a device and would clash with the dialect's own "#define TDM_HAVE_FP64 0" on a device
 * without it. A build failure is cached with its log (building again gives the same log), so a
 * map over a bad user kernel fails every batch quickly instead of recompiling per batch.
 *
 * Thread-safety: as device.h says, one driver thread uses a device at a time (cl_kernel objects
 * are not safe for concurrent clSetKernelArg); different devices are independent. Nothing here
 * prints or aborts: every message goes into `detail`.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"
#include "ocl_internal.h"

#define OCL_QUEUES 3
/* Most work items per launch: the entries loop over their items with a grid-stride loop, so
 * any global size is correct; 2^20 fills any current GPU and keeps per-item overhead away. */
#define OCL_GLOBAL_CAP ((size_t)1 << 20)
/* Most work-groups per dimension of a 2-D launch: the tiled entries loop over their tiles by
 * group index, so any count is correct; 65535 is also CUDA's limit along y. */
#define OCL_GROUPS_CAP ((size_t)65535)

/* What a kernel parameter takes, from clGetKernelArgInfo (the program is built with
 * -cl-kernel-arg-info): drivers do not all check clSetKernelArg's size (PoCL takes 4 bytes for
 * a long), so the layer checks it and refuses what would run on garbage. */
enum { ARG_UNKNOWN = 0, ARG_GLOBAL_PTR, ARG_LOCAL_PTR, ARG_VALUE };
typedef struct ocl_param {
    uint8_t kind;  /* ARG_* */
    uint32_t size; /* bytes of a value parameter of a known scalar/vector type, else 0 */
    char type[24]; /* the declared type name, for messages */
} ocl_param;

typedef struct ocl_kernel {
    struct ocl_kernel *next;
    cl_kernel k;
    cl_uint n_args;
    size_t multiple;  /* CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE (>= 1) */
    size_t max_group; /* CL_KERNEL_WORK_GROUP_SIZE: most work items per group (0 = unknown) */
    size_t reqd[3];   /* CL_KERNEL_COMPILE_WORK_GROUP_SIZE: the entry's required group, or 0s */
    ocl_param *param; /* n_args entries, or NULL when the driver gives no argument info */
    char name[];
} ocl_kernel;

typedef struct ocl_prog {
    struct ocl_prog *next;
    cl_program p;       /* NULL: the build failed, see fail */
    char *fail;         /* the cached failure message (malloc'd), or NULL */
    const char *source; /* the source pointer last seen under this key (hash checked otherwise) */
    uint64_t hash;      /* FNV-1a of the source */
    ocl_kernel *kernels;
    char key[];
} ocl_prog;

typedef struct ocl_op {
    cl_event ev;
    char what[56];
} ocl_op;

typedef struct ocl_queue {
    cl_command_queue q;
    ocl_op *ops; /* commands enqueued since the last finish(), in order */
    int n, cap;
} ocl_queue;

struct tdm__dbuf {
    cl_mem mem; /* NULL for an empty buffer */
    size_t bytes;
    tdm__dbuf *prev, *next; /* the device's live buffers (released by close) */
};

struct tdm__dev {
    tdm_runtime *rt;
    int index;
    cl_device_id dev;
    cl_context ctx;
    ocl_queue q[OCL_QUEUES];
    char name[128];
    int fp64;
    cl_ulong max_alloc;  /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    cl_ulong global_mem; /* CL_DEVICE_GLOBAL_MEM_SIZE */
    size_t max_items[3]; /* CL_DEVICE_MAX_WORK_ITEM_SIZES (0 = unknown) */
    uint64_t cap;        /* TDM_DEVICE_MEM_CAP, 0 = none */
    uint64_t used;       /* bytes in live buffers */
    tdm__dbuf live;      /* sentinel of the live-buffer ring */
    ocl_prog *progs;
    /* Page-locked host ranges registered with the device (see "registered host memory"
     * below): a CL_MEM_USE_HOST_PTR buffer over each, mapped for the host from registration to
     * unregistration; copies from and to the range are clEnqueueWriteBuffer/ReadBuffer with
     * the host pointer. */
    struct {
        char *p;
        size_t n;
        cl_mem mem;
        void *mapped; /* what clEnqueueMapBuffer returned (== p), for the unmap */
    } pinned[32];
    int n_pinned;
};

/* The registered range holding [p, p+n), or -1. */
static int pinned_range(const tdm__dev *d, const void *p, size_t n)
{
    const char *c = p;
    for (int i = 0; i < d->n_pinned; i++)
        if (c >= d->pinned[i].p && n <= d->pinned[i].n &&
            c - d->pinned[i].p <= (ptrdiff_t)(d->pinned[i].n - n))
            return i;
    return -1;
}

/* ---- messages ------------------------------------------------------------------------------- */

static void vmsg(char *detail, size_t len, const char *fmt, va_list ap)
{
    if (detail && len)
        vsnprintf(detail, len, fmt, ap);
}

static int TDM__PRINTF(4, 5) fail(char *detail, size_t len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(detail, len, fmt, ap);
    va_end(ap);
    return code;
}

/* The tandem code for a driver error: the allocation failures are TDM_ENOMEM, the rest ESYS. */
static int cl_code(cl_int e)
{
    switch (e) {
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_RESOURCES:
    case CL_OUT_OF_HOST_MEMORY:
        return TDM_ENOMEM;
    default:
        return TDM_ESYS;
    }
}

/* "opencl device 0 (name): <what>: CL_NAME (-n)" and the tandem code for it. */
static int TDM__PRINTF(5, 6)
    cl_fail(const tdm__dev *d, char *detail, size_t len, cl_int e, const char *fmt, ...)
{
    if (detail && len) {
        int n = snprintf(detail, len, "opencl device %d (%s): ", d->index, d->name);
        if (n >= 0 && (size_t)n < len) {
            va_list ap;
            va_start(ap, fmt);
            int m = vsnprintf(detail + n, len - (size_t)n, fmt, ap);
            va_end(ap);
            if (m >= 0 && (size_t)(n + m) < len)
                snprintf(detail + n + m, len - (size_t)(n + m), ": %s (%d)", tdm__cl_errname(e),
                         (int)e);
        }
    }
    return cl_code(e);
}

static void fmt_bytes(char *out, size_t len, uint64_t b)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%llu B", (unsigned long long)b);
    else
        snprintf(out, len, "%.1f %s", v, unit[u]);
}

/* ---- the memory cap from the environment ---------------------------------------------------- */

/* "123", "64M", "64MiB", "2g", "512 KB": bytes, powers of 1024. 0 and *out, or -1 if malformed
 * or over 2^64. */
static int parse_size(const char *s, uint64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift) {
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
    }
    if (toupper((unsigned char)*end) == 'B')
        end++;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

/* The index-th device in probe.c's order (all platforms, CL_DEVICE_TYPE_ALL). */
static int find_device(int index, cl_device_id *out, cl_platform_id *plat_out, char *detail,
                       size_t len)
{
    cl_uint n_plat = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &n_plat);
    if (e != CL_SUCCESS || n_plat == 0)
        return fail(detail, len, TDM_ENOTFOUND,
                    "opencl: no device %d: no OpenCL platform (clGetPlatformIDs: %s, %d)", index,
                    tdm__cl_errname(e), (int)e);
    cl_platform_id *plats = calloc(n_plat, sizeof *plats);
    if (!plats)
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory listing platforms");
    e = clGetPlatformIDs(n_plat, plats, NULL);
    if (e != CL_SUCCESS) {
        free(plats);
        return fail(detail, len, TDM_ESYS, "opencl: clGetPlatformIDs: %s (%d)", tdm__cl_errname(e),
                    (int)e);
    }
    int seen = 0, rc = TDM_ENOTFOUND;
    for (cl_uint p = 0; p < n_plat && rc == TDM_ENOTFOUND; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || !nd)
            continue;
        if (index < seen + (int)nd) {
            cl_device_id *ids = calloc(nd, sizeof *ids);
            if (!ids) {
                rc = fail(detail, len, TDM_ENOMEM, "opencl: out of host memory listing devices");
                break;
            }
            e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL);
            if (e == CL_SUCCESS) {
                *out = ids[index - seen];
                *plat_out = plats[p];
                rc = 0;
            } else {
                rc = fail(detail, len, TDM_ESYS, "opencl: clGetDeviceIDs: %s (%d)",
                          tdm__cl_errname(e), (int)e);
            }
            free(ids);
        }
        seen += (int)nd;
    }
    free(plats);
    if (rc == TDM_ENOTFOUND)
        fail(detail, len, rc, "opencl: no device %d (%d device(s) on %u platform(s))", index, seen,
             n_plat);
    return rc;
}

static int has_extension(cl_device_id dev, const char *ext)
{
    size_t n = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS || n == 0)
        return 0;
    char *s = malloc(n + 1);
    if (!s)
        return 0;
    int found = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, s, NULL) == CL_SUCCESS) {
        s[n] = '\0';
        size_t el = strlen(ext);
        for (const char *p = s; (p = strstr(p, ext)) != NULL; p += el)
            if ((p == s || p[-1] == ' ') && (p[el] == ' ' || p[el] == '\0')) {
                found = 1;
                break;
            }
    }
    free(s);
    return found;
}

static void release_ops(ocl_queue *q)
{
    for (int i = 0; i < q->n; i++)
        clReleaseEvent(q->ops[i].ev);
    q->n = 0;
}

/* Unmaps and releases registered range i (its queues already finished). */
static void release_pinned(tdm__dev *d, int i)
{
    if (d->pinned[i].mapped &&
        clEnqueueUnmapMemObject(d->q[0].q, d->pinned[i].mem, d->pinned[i].mapped, 0, NULL, NULL) ==
            CL_SUCCESS)
        clFinish(d->q[0].q);
    clReleaseMemObject(d->pinned[i].mem);
}

static void ocl_close(tdm__dev *d)
{
    if (!d)
        return;
    for (int i = 0; i < OCL_QUEUES; i++) {
        if (d->q[i].q)
            clFinish(d->q[i].q);
        release_ops(&d->q[i]);
        free(d->q[i].ops);
    }
    for (int i = 0; i < d->n_pinned; i++)
        release_pinned(d, i);
    d->n_pinned = 0;
    /* Buffers the core did not free: released here, their handles become invalid. */
    while (d->live.next != &d->live) {
        tdm__dbuf *b = d->live.next;
        b->next->prev = b->prev;
        b->prev->next = b->next;
        if (b->mem)
            clReleaseMemObject(b->mem);
        free(b);
    }
    for (ocl_prog *p = d->progs, *pn; p; p = pn) {
        pn = p->next;
        for (ocl_kernel *k = p->kernels, *kn; k; k = kn) {
            kn = k->next;
            clReleaseKernel(k->k);
            free(k->param);
            free(k);
        }
        if (p->p)
            clReleaseProgram(p->p);
        free(p->fail);
        free(p);
    }
    for (int i = 0; i < OCL_QUEUES; i++)
        if (d->q[i].q)
            clReleaseCommandQueue(d->q[i].q);
    if (d->ctx)
        clReleaseContext(d->ctx);
    free(d);
}

static int ocl_open(tdm_runtime *rt, int index, tdm__dev **out, char *detail, size_t len)
{
    if (!out)
        return fail(detail, len, TDM_EINVAL, "opencl: open: out is NULL");
    *out = NULL;
    if (index < 0)
        return fail(detail, len, TDM_EINVAL, "opencl: open: device index %d is negative", index);

    /* The cap first: a malformed value is the user's mistake, reported before any driver work. */
    uint64_t cap = rt ? rt->cfg.device_mem_cap : 0;
    const char *cap_env = !rt || rt->cfg.use_env ? getenv("TDM_DEVICE_MEM_CAP") : NULL;
    if (cap_env && *cap_env && parse_size(cap_env, &cap) != 0)
        return fail(detail, len, TDM_EINVAL,
                    "opencl: TDM_DEVICE_MEM_CAP='%.40s' is not a size (bytes, or a number with "
                    "K, M, G or T)",
                    cap_env);

    cl_device_id dev = NULL;
    cl_platform_id plat = NULL;
    int rc = find_device(index, &dev, &plat, detail, len);
    if (rc != 0)
        return rc;

    tdm__dev *d = calloc(1, sizeof *d);
    if (!d)
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory opening device %d", index);
    d->rt = rt;
    d->index = index;
    d->dev = dev;
    d->cap = cap;
    d->live.next = d->live.prev = &d->live;
    if (clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof d->name - 1, d->name, NULL) != CL_SUCCESS)
        snprintf(d->name, sizeof d->name, "?");
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->global_mem, &d->global_mem, NULL);
    cl_uint dims = 0;
    size_t items[16] = {0};
    if (clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS, sizeof dims, &dims, NULL) ==
            CL_SUCCESS &&
        dims >= 2 && dims <= 16 &&
        clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_ITEM_SIZES, dims * sizeof items[0], items, NULL) ==
            CL_SUCCESS)
        memcpy(d->max_items, items, sizeof d->max_items);
    d->fp64 = has_extension(dev, "cl_khr_fp64");

    cl_int e;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
    d->ctx = clCreateContext(props, 1, &dev, NULL, NULL, &e);
    if (!d->ctx) {
        rc = cl_fail(d, detail, len, e, "clCreateContext");
        ocl_close(d);
        return rc;
    }
    for (int i = 0; i < OCL_QUEUES; i++) {
        d->q[i].q = clCreateCommandQueue(d->ctx, dev, 0, &e);
        if (!d->q[i].q) {
            rc = cl_fail(d, detail, len, e, "clCreateCommandQueue %d", i);
            ocl_close(d);
            return rc;
        }
    }
    char mem[32], amax[32], capb[32];
    fmt_bytes(mem, sizeof mem, d->global_mem);
    fmt_bytes(amax, sizeof amax, d->max_alloc);
    fmt_bytes(capb, sizeof capb, d->cap);
    tdm__log(
        rt, TDM_DEBUG_RUNTIME,
        "opencl device %d (%s): open, %d queues, fp64 %s, memory %s, largest buffer %s, cap %s",
        index, d->name, OCL_QUEUES, d->fp64 ? "yes" : "no", mem, amax, d->cap ? capb : "none");
    *out = d;
    return 0;
}

static int ocl_n_queues(const tdm__dev *d)
{
    (void)d;
    return OCL_QUEUES;
}

/* ---- memory --------------------------------------------------------------------------------- */

static int ocl_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len)
{
    if (!d || !out)
        return fail(detail, len, TDM_EINVAL, "opencl: alloc: NULL device or out");
    *out = NULL;
    char want[32], lim[32], used[32];
    fmt_bytes(want, sizeof want, bytes);
    fmt_bytes(used, sizeof used, d->used);
    if (bytes > d->max_alloc) {
        fmt_bytes(lim, sizeof lim, d->max_alloc);
        return fail(detail, len, TDM_ENOMEM,
                    "opencl device %d (%s): a buffer of %s is over the device's largest single "
                    "allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE %s)",
                    d->index, d->name, want, lim);
    }
    if (d->cap && (bytes > d->cap || d->used > d->cap - bytes)) {
        fmt_bytes(lim, sizeof lim, d->cap);
        return fail(detail, len, TDM_ENOMEM,
                    "opencl device %d (%s): %s more would exceed the device memory cap "
                    "TDM_DEVICE_MEM_CAP=%s (%s in use)",
                    d->index, d->name, want, lim, used);
    }
    if (bytes > d->global_mem || d->used > d->global_mem - bytes) {
        fmt_bytes(lim, sizeof lim, d->global_mem);
        return fail(detail, len, TDM_ENOMEM,
                    "opencl device %d (%s): %s more would exceed the device's memory "
                    "(CL_DEVICE_GLOBAL_MEM_SIZE %s, %s in use)",
                    d->index, d->name, want, lim, used);
    }
    tdm__dbuf *b = calloc(1, sizeof *b);
    if (!b)
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory for a buffer handle");
    if (bytes) {
        cl_int e;
        b->mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
        if (!b->mem) {
            free(b);
            return cl_fail(d, detail, len, e, "clCreateBuffer of %s (%s in use)", want, used);
        }
    }
    b->bytes = bytes;
    b->next = &d->live;
    b->prev = d->live.prev;
    d->live.prev->next = b;
    d->live.prev = b;
    d->used += bytes;
    *out = b;
    return 0;
}

static void ocl_free(tdm__dev *d, tdm__dbuf *b)
{
    if (!d || !b)
        return;
    b->next->prev = b->prev;
    b->prev->next = b->next;
    d->used -= b->bytes;
    if (b->mem)
        clReleaseMemObject(b->mem);
    free(b);
}

/* ---- queues and commands -------------------------------------------------------------------- */

static int check_queue(const tdm__dev *d, int q, const char *who, char *detail, size_t len)
{
    if (!d)
        return fail(detail, len, TDM_EINVAL, "opencl: %s: NULL device", who);
    if (q < 0 || q >= OCL_QUEUES)
        return fail(detail, len, TDM_EINVAL, "opencl device %d: %s: queue %d is not in [0, %d)",
                    d->index, who, q, OCL_QUEUES);
    return 0;
}

/* Room for one more event on queue q, so that recording it after a successful enqueue cannot
 * fail. */
static int reserve_op(tdm__dev *d, int q, char *detail, size_t len)
{
    ocl_queue *oq = &d->q[q];
    if (oq->n < oq->cap)
        return 0;
    int ncap = oq->cap ? oq->cap * 2 : 16;
    ocl_op *grown = realloc(oq->ops, (size_t)ncap * sizeof *grown);
    if (!grown)
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory recording a command");
    oq->ops = grown;
    oq->cap = ncap;
    return 0;
}

static void TDM__PRINTF(4, 5) record_op(tdm__dev *d, int q, cl_event ev, const char *fmt, ...)
{
    ocl_op *op = &d->q[q].ops[d->q[q].n++];
    op->ev = ev;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->what, sizeof op->what, fmt, ap);
    va_end(ap);
}

static int check_range(const tdm__dev *d, const tdm__dbuf *b, size_t off, size_t n,
                       const void *host, const char *who, char *detail, size_t len)
{
    if (!b)
        return fail(detail, len, TDM_EINVAL, "opencl device %d: %s: NULL buffer", d->index, who);
    if (off > b->bytes || n > b->bytes - off)
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: %s: bytes [%zu, %zu + %zu) are outside a buffer of %zu",
                    d->index, who, off, off, n, b->bytes);
    if (n && !host)
        return fail(detail, len, TDM_EINVAL, "opencl device %d: %s: NULL host pointer", d->index,
                    who);
    return 0;
}

static int ocl_write(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                     char *detail, size_t len)
{
    int rc = check_queue(d, q, "write", detail, len);
    if (!rc)
        rc = check_range(d, dst, dst_off, n, src, "write", detail, len);
    if (rc || n == 0)
        return rc;
    if ((rc = reserve_op(d, q, detail, len)) != 0)
        return rc;
    /* From pageable or registered host memory alike: see "registered host memory" below. */
    cl_event ev = NULL;
    cl_int e = clEnqueueWriteBuffer(d->q[q].q, dst->mem, CL_FALSE, dst_off, n, src, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return cl_fail(d, detail, len, e, "clEnqueueWriteBuffer of %zu bytes on queue %d", n, q);
    record_op(d, q, ev, "write of %zu bytes", n);
    return 0;
}

static int ocl_read(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                    char *detail, size_t len)
{
    int rc = check_queue(d, q, "read", detail, len);
    if (!rc)
        rc = check_range(d, src, src_off, n, dst, "read", detail, len);
    if (rc || n == 0)
        return rc;
    if ((rc = reserve_op(d, q, detail, len)) != 0)
        return rc;
    cl_event ev = NULL;
    cl_int e = clEnqueueReadBuffer(d->q[q].q, src->mem, CL_FALSE, src_off, n, dst, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return cl_fail(d, detail, len, e, "clEnqueueReadBuffer of %zu bytes on queue %d", n, q);
    record_op(d, q, ev, "read of %zu bytes", n);
    return 0;
}

static int ocl_finish(tdm__dev *d, int q, char *detail, size_t len)
{
    int rc = check_queue(d, q, "finish", detail, len);
    if (rc)
        return rc;
    ocl_queue *oq = &d->q[q];
    cl_int fe = clFinish(oq->q);
    /* The first command that failed names the error better than clFinish's own code. */
    for (int i = 0; i < oq->n && rc == 0; i++) {
        cl_int st = CL_COMPLETE;
        cl_int e =
            clGetEventInfo(oq->ops[i].ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st, NULL);
        if (e != CL_SUCCESS)
            rc = cl_fail(d, detail, len, e, "queue %d: status of %s", q, oq->ops[i].what);
        else if (st < 0)
            rc = cl_fail(d, detail, len, st, "queue %d: %s failed", q, oq->ops[i].what);
        else if (st != CL_COMPLETE && fe == CL_SUCCESS)
            rc = fail(detail, len, TDM_ESYS,
                      "opencl device %d (%s): queue %d: %s not complete after clFinish", d->index,
                      d->name, q, oq->ops[i].what);
    }
    if (rc == 0 && fe != CL_SUCCESS)
        rc = cl_fail(d, detail, len, fe, "clFinish on queue %d", q);
    release_ops(oq);
    return rc;
}

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
                return fail(detail, len, TDM_EINVAL,
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
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory for program '%s'", key);
    memcpy(p->key, key, klen + 1);
    p->source = source;
    p->hash = fnv1a(source);

    uint64_t t0 = tdm__now_ns();
    cl_int e;
    cl_program prog = clCreateProgramWithSource(d->ctx, 1, &source, NULL, &e);
    if (!prog) {
        free(p);
        return cl_fail(d, detail, len, e, "clCreateProgramWithSource for '%s'", key);
    }
    e = clBuildProgram(prog, 1, &d->dev, OCL_BUILD_OPTIONS, NULL, NULL);
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
        int rc = cl_fail(d, detail, len, e, "clBuildProgram of '%s'", key);
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
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s parameter %d is a __local pointer (not "
                    "supported)",
                    d->index, k->name, i);
    if (p->kind == ARG_GLOBAL_PTR && !want_buf)
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s argument %d: parameter is a buffer (%s), a "
                    "value was given",
                    d->index, k->name, i, p->type);
    if (p->kind == ARG_VALUE && want_buf)
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s argument %d: parameter is a value (%s), a "
                    "buffer was given",
                    d->index, k->name, i, p->type);
    if (p->kind == ARG_VALUE && p->size && p->size != a->size)
        return fail(detail, len, TDM_EINVAL,
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
        return fail(detail, len, TDM_ENOMEM, "opencl: out of host memory for kernel '%s'", entry);
    memcpy(k->name, entry, nl + 1);
    cl_int e;
    k->k = clCreateKernel(p->p, entry, &e);
    if (!k->k) {
        free(k);
        if (e == CL_INVALID_KERNEL_NAME)
            return fail(detail, len, TDM_ENOTFOUND,
                        "opencl device %d (%s): program '%s' has no kernel entry '%s'", d->index,
                        d->name, p->key, entry);
        return cl_fail(d, detail, len, e, "clCreateKernel(%s)", entry);
    }
    e = clGetKernelInfo(k->k, CL_KERNEL_NUM_ARGS, sizeof k->n_args, &k->n_args, NULL);
    if (e != CL_SUCCESS) {
        clReleaseKernel(k->k);
        free(k);
        return cl_fail(d, detail, len, e, "clGetKernelInfo(%s)", entry);
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
    int rc = check_queue(d, q, "launch", detail, len);
    if (rc)
        return rc;
    if (!key || !source || !entry || n_args < 0 || (n_args > 0 && !args))
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: launch: NULL key, source, entry or args", d->index);
    ocl_prog *p = NULL;
    if ((rc = get_program(d, key, source, &p, detail, len)) != 0)
        return rc;
    ocl_kernel *k = NULL;
    if ((rc = get_kernel(d, p, entry, &k, detail, len)) != 0)
        return rc;
    if ((cl_uint)n_args != k->n_args)
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s takes %u arguments, %d given", d->index, entry,
                    k->n_args, n_args);
    for (int i = 0; i < n_args; i++) {
        const tdm__karg *a = &args[i];
        cl_int e;
        if ((a->kind == TDM__KARG_BUF || a->kind == TDM__KARG_NULL || a->kind == TDM__KARG_VALUE) &&
            (rc = check_arg(d, k, i, a, detail, len)) != 0)
            return rc;
        switch (a->kind) {
        case TDM__KARG_BUF:
            if (!a->buf)
                return fail(detail, len, TDM_EINVAL,
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
                return fail(detail, len, TDM_EINVAL,
                            "opencl device %d: kernel %s argument %d: value of %u bytes (1 to "
                            "%zu)",
                            d->index, entry, i, a->size, sizeof a->value);
            e = clSetKernelArg(k->k, (cl_uint)i, a->size, a->value);
            break;
        default:
            return fail(detail, len, TDM_EINVAL,
                        "opencl device %d: kernel %s argument %d: unknown kind %d", d->index, entry,
                        i, (int)a->kind);
        }
        if (e != CL_SUCCESS) {
            cl_fail(d, detail, len, e, "kernel %s argument %d (%s, %u bytes)", entry, i,
                    a->kind == TDM__KARG_VALUE ? "value" : "buffer",
                    a->kind == TDM__KARG_VALUE ? a->size : (unsigned)sizeof(cl_mem));
            /* A rejected argument is the caller's mistake, unless the driver ran out. */
            return cl_code(e) == TDM_ENOMEM ? TDM_ENOMEM : TDM_EINVAL;
        }
    }
    *out = k;
    return 0;
}

static int ocl_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                      const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len)
{
    ocl_kernel *k = NULL;
    int rc = ocl_bind(d, q, key, source, entry, args, n_args, &k, detail, len);
    if (rc != 0)
        return rc;
    if (k->reqd[0])
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s requires work-groups of %zux%zux%zu: it needs a "
                    "2-D launch",
                    d->index, entry, k->reqd[0], k->reqd[1], k->reqd[2]);
    if (global <= 0)
        return 0; /* no items: nothing to run */
    size_t g = (uint64_t)global > OCL_GLOBAL_CAP ? OCL_GLOBAL_CAP : (size_t)global;
    /* A multiple of the preferred work-group multiple, so the driver can pick a good local size
     * (the extra work items find no item in the grid-stride loop). */
    g = (g + k->multiple - 1) / k->multiple * k->multiple;
    if ((rc = reserve_op(d, q, detail, len)) != 0)
        return rc;
    cl_event ev = NULL;
    cl_int e = clEnqueueNDRangeKernel(d->q[q].q, k->k, 1, NULL, &g, NULL, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return cl_fail(d, detail, len, e, "clEnqueueNDRangeKernel(%s, %zu work items) on queue %d",
                       entry, g, q);
    record_op(d, q, ev, "kernel %.40s", entry);
    return 0;
}

/* A 2-D launch in work-groups of exactly r->local (clEnqueueNDRangeKernel with work_dim 2 and
 * local_work_size: OpenCL 1.2 requires the global size to be a multiple of it, hence the
 * rounding; the group count is capped per dimension). The group size is checked against the
 * entry's required size, the kernel's and the device's limits first, so a group the device
 * cannot run is TDM_EINVAL with the reason, not a driver error. */
static int ocl_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                         const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                         size_t len)
{
    if (!r || r->local[0] < 1 || r->local[1] < 1 || r->size[0] < 0 || r->size[1] < 0)
        return fail(detail, len, TDM_EINVAL, "opencl device %d: launch_2d(%s): bad range", d->index,
                    entry ? entry : "?");
    ocl_kernel *k = NULL;
    int rc = ocl_bind(d, q, key, source, entry, args, n_args, &k, detail, len);
    if (rc != 0)
        return rc;
    size_t local[2] = {r->local[0], r->local[1]};
    if (k->reqd[0] && (k->reqd[0] != local[0] || k->reqd[1] != local[1] || k->reqd[2] != 1))
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: kernel %s requires work-groups of %zux%zux%zu, %zux%zu "
                    "asked for",
                    d->index, entry, k->reqd[0], k->reqd[1], k->reqd[2], local[0], local[1]);
    if ((k->max_group && local[0] * local[1] > k->max_group) ||
        (d->max_items[0] && local[0] > d->max_items[0]) ||
        (d->max_items[1] && local[1] > d->max_items[1]))
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d (%s): kernel %s needs work-groups of %zux%zu; the device "
                    "runs at most %zu work items per group for it, %zux%zu per dimension",
                    d->index, d->name, entry, local[0], local[1], k->max_group, d->max_items[0],
                    d->max_items[1]);
    if (r->size[0] == 0 || r->size[1] == 0)
        return 0; /* no items: nothing to run */
    size_t g[2];
    for (int i = 0; i < 2; i++) {
        uint64_t groups = ((uint64_t)r->size[i] + local[i] - 1) / local[i];
        g[i] = (groups > OCL_GROUPS_CAP ? OCL_GROUPS_CAP : (size_t)groups) * local[i];
    }
    if ((rc = reserve_op(d, q, detail, len)) != 0)
        return rc;
    cl_event ev = NULL;
    cl_int e = clEnqueueNDRangeKernel(d->q[q].q, k->k, 2, NULL, g, local, 0, NULL, &ev);
    if (e != CL_SUCCESS)
        return cl_fail(d, detail, len, e,
                       "clEnqueueNDRangeKernel(%s, %zux%zu work items in groups of %zux%zu) on "
                       "queue %d",
                       entry, g[0], g[1], local[0], local[1], q);
    record_op(d, q, ev, "kernel %.40s", entry);
    return 0;
}

/* ---- registered host memory ------------------------------------------------------------------
 *
 * Pinned tensors (TDM_MEM_PINNED), and shared + pinned ones that worker processes fill, are
 * registered here once per device. What OpenCL 1.2 allows with such a range decides the design:
 *
 * - A CL_MEM_USE_HOST_PTR buffer over the range may be cached by the implementation in device
 *   memory (clCreateBuffer); host_ptr holds the latest bits only once a clEnqueueMapBuffer of
 *   the region has completed, and host writes reach the buffer only at the unmap. A region
 *   mapped for writing must be unmapped before any command that reads or writes the memory
 *   object (or a sub-buffer of it) begins. So copying batches with clEnqueueCopyBuffer from/to
 *   the USE_HOST_PTR buffer while the host, and forked workers, read and write the memory
 *   directly is undefined: PoCL copes, a discrete-GPU driver may copy stale device-side data.
 * - Making that copy legal needs the whole buffer unmapped around each copy (a map covers the
 *   object, not only the copied range). That cannot be done here: up to OCL_QUEUES queues copy
 *   different ranges of one registered range at once, and host threads and worker processes
 *   write other ranges meanwhile, outside any map, and a caching driver's re-map would copy
 *   the whole device-side copy back over their writes (besides moving the whole range per
 *   batch).
 * - clEnqueueWriteBuffer / clEnqueueReadBuffer with a host pointer are defined for any host
 *   memory, per range, whatever other queues and the host do with other ranges. That is the
 *   path used for every copy, pageable or registered: one transfer either way, so no extra
 *   copy against the CopyBuffer path, and a download is in host memory (for the host and for
 *   the processes sharing it) once its queue's finish() returns.
 *
 * The registration itself is the USE_HOST_PTR buffer, never the operand of a command, mapped
 * for the host from registration to unregistration (clEnqueueMapBuffer returns host_ptr for
 * such a buffer), so every host access in between is to mapped memory. It tells the driver the
 * range is page-locked: drivers that pin USE_HOST_PTR memory at creation can then DMA
 * Write/ReadBuffer commands straight from/to it (AMD documents this as "pre-pinned" buffers);
 * others stage them as they stage pageable memory, correct either way. The trade-off: on a
 * driver that stages, a registered range copies no faster than pageable memory (the CopyBuffer
 * path avoided staging only where the driver does not cache, PoCL or an integrated GPU, and
 * was wrong where it does), and a discrete driver may reserve device memory for the never-used
 * buffer. The map is CL_MAP_WRITE_INVALIDATE_REGION: the implementation need not bring a
 * device-side copy back into host_ptr (the pointer it returns), so it has no cause to write
 * over what host threads or workers store into the range while it is being registered; the
 * unmap, at unregistration, goes host to device only.
 * A range must start at CL_DEVICE_MEM_BASE_ADDR_ALIGN (a driver may shadow a misaligned
 * host_ptr with a copy) and must not partly overlap a registered one (commands on buffers over
 * overlapping host regions are undefined): the runtime's ranges are whole pages of distinct
 * storages, and a refusal only leaves the pageable path. */
static int ocl_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len)
{
    if (!d)
        return fail(detail, len, TDM_EINVAL, "opencl: register: NULL device");
    if (!p || n == 0)
        return fail(detail, len, TDM_EINVAL, "opencl: register: empty range");
    if (pinned_range(d, p, n) >= 0)
        return 0;
    const char *c = p;
    for (int i = 0; i < d->n_pinned; i++)
        if (c < d->pinned[i].p + d->pinned[i].n && d->pinned[i].p < c + n)
            return fail(detail, len, TDM_EINVAL,
                        "opencl device %d: register: %zu bytes at %p overlap the registered %zu "
                        "at %p",
                        d->index, n, p, d->pinned[i].n, (void *)d->pinned[i].p);
    cl_uint align_bits = 0;
    if (clGetDeviceInfo(d->dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                        NULL) == CL_SUCCESS &&
        align_bits >= 16 && (uintptr_t)p % (align_bits / 8) != 0)
        return fail(detail, len, TDM_EINVAL,
                    "opencl device %d: register: %p is not aligned to %u bytes "
                    "(CL_DEVICE_MEM_BASE_ADDR_ALIGN)",
                    d->index, p, align_bits / 8);
    if (d->n_pinned == (int)(sizeof d->pinned / sizeof d->pinned[0]))
        return fail(detail, len, TDM_ENOMEM, "opencl: register: too many registered ranges");
    cl_int e;
    cl_mem m = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, n, p, &e);
    if (!m)
        return cl_fail(d, detail, len, e, "clCreateBuffer(USE_HOST_PTR) over %zu bytes", n);
    void *mapped = clEnqueueMapBuffer(d->q[0].q, m, CL_TRUE, CL_MAP_WRITE_INVALIDATE_REGION, 0, n,
                                      0, NULL, NULL, &e);
    if (!mapped) {
        clReleaseMemObject(m);
        return cl_fail(d, detail, len, e, "clEnqueueMapBuffer of the registered %zu bytes", n);
    }
    /* The spec says it is host_ptr; a driver that differs gets no registration. Released
     * without the unmap: unmapping an invalidated copy elsewhere could write it over p. */
    if (mapped != p) {
        clReleaseMemObject(m);
        return fail(detail, len, TDM_ESYS,
                    "opencl device %d (%s): register: the map of a USE_HOST_PTR buffer over %p "
                    "returned %p",
                    d->index, d->name, p, mapped);
    }
    d->pinned[d->n_pinned].p = p;
    d->pinned[d->n_pinned].n = n;
    d->pinned[d->n_pinned].mem = m;
    d->pinned[d->n_pinned].mapped = mapped;
    d->n_pinned++;
    return 0;
}

static void ocl_host_unregister(tdm__dev *d, void *p)
{
    if (!d)
        return;
    for (int i = 0; i < d->n_pinned; i++) {
        if (d->pinned[i].p == p) {
            /* Queued copies may still read or write the range: wait for every queue first. */
            for (int q = 0; q < OCL_QUEUES; q++)
                clFinish(d->q[q].q);
            release_pinned(d, i);
            d->pinned[i] = d->pinned[--d->n_pinned];
            return;
        }
    }
}

const tdm__dev_ops tdm__opencl_dev_ops = {
    .host_register = ocl_host_register,
    .host_unregister = ocl_host_unregister,
    .kind = TDM_BACKEND_OPENCL,
    .open = ocl_open,
    .close = ocl_close,
    .n_queues = ocl_n_queues,
    .alloc = ocl_alloc,
    .free = ocl_free,
    .write = ocl_write,
    .read = ocl_read,
    .launch = ocl_launch,
    .launch_2d = ocl_launch_2d,
    .finish = ocl_finish,
};
