/* SPDX-License-Identifier: MIT */
/* tandem — OpenCL backend, shared between its files (device.c: open/close, queues, copies,
 * finish; memory.c: buffers and registered host memory; program.c: programs, kernels,
 * launches; errors.c: status names). Not API. */
#ifndef TANDEM_OCL_INTERNAL_H
#define TANDEM_OCL_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>

#include <CL/cl.h>

#include "sched/device.h"

/* The symbolic name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or "CL_ERROR" for a code
 * outside the table (the caller prints the number next to it). Static string; thread-safe. */
const char *tdm__cl_errname(cl_int code);

/* NULL once the ICD loader is loaded (backends/opencl/cl_dlopen.c: libOpenCL.so.1, or env
 * TDM_OPENCL_LIBRARY, loaded on first use), else why it could not be. Thread-safe. */
const char *tdm__cl_load_error(void);

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
    /* Per queue, its launches that may still run there: the last one (its event, retained,
     * NULL for none, and its sizes: dims, local and global sizes) and the last one before it
     * with other sizes than those (or NULL). A launch waits for every other queue's latest
     * launch of other sizes than its own: see enqueue_kernel in program.c for why. */
    struct {
        cl_event last, other;
        size_t sizes[5];
    } inflight[OCL_QUEUES];
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
    /* Which of the process's open OpenCL devices this is (0 for the first; numbers are reused
     * after a close), -1 for none: programs of the devices after the first are built with
     * -DTDM_OCL_SLOT=<slot>, so that two open at once never share a driver's cached kernels
     * (see enqueue_kernel in program.c). */
    int slot;
    tdm__devhealth health; /* lost once for good; TDM_DEVICE_FAULT injection */
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

/* ---- messages (device.c) ----------------------------------------------------------------------
 */
/* Formats detail (when given) and returns code. */
int TDM__PRINTF(4, 5) tdm__ocl_fail(char *detail, size_t len, int code, const char *fmt, ...);
/* The tandem code for a driver error: the allocation failures are TDM_ENOMEM, the rest ESYS. */
int tdm__ocl_cl_code(cl_int e);
/* "opencl device 0 (name): <what>: CL_NAME (-n)" and the tandem code for it. */
int TDM__PRINTF(5, 6)
    tdm__ocl_cl_fail(const tdm__dev *d, char *detail, size_t len, cl_int e, const char *fmt, ...);
/* rc, or, when rc is TDM_ESYS (a driver failure that is not the call's fault), the device marked
 * lost and TDM_EDEVLOST. */
int tdm__ocl_lost_if_driver(tdm__dev *d, int rc, char *detail, size_t len);
/* "12.0 MiB" */
void tdm__ocl_fmt_bytes(char *out, size_t len, uint64_t b);

/* ---- queues (device.c) ----------------------------------------------------------------------- */
int tdm__ocl_check_queue(const tdm__dev *d, int q, const char *who, char *detail, size_t len);
/* Room for one more event on queue q, so that recording it after a successful enqueue cannot
 * fail. */
int tdm__ocl_reserve_op(tdm__dev *d, int q, char *detail, size_t len);
void TDM__PRINTF(4, 5) tdm__ocl_record_op(tdm__dev *d, int q, cl_event ev, const char *fmt, ...);
/* Unmaps and releases registered range i (its queues already finished). */
void tdm__ocl_release_pinned(tdm__dev *d, int i);

/* ---- memory (memory.c) ----------------------------------------------------------------------- */
int tdm__ocl_alloc(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len);
void tdm__ocl_free(tdm__dev *d, tdm__dbuf *b);
int tdm__ocl_host_register(tdm__dev *d, void *p, size_t n, char *detail, size_t len);
void tdm__ocl_host_unregister(tdm__dev *d, void *p);

/* ---- programs and launches (program.c) ------------------------------------------------------- */
/* Releases every program and kernel of d (at close). */
void tdm__ocl_programs_free(tdm__dev *d);
int tdm__ocl_launch(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                    const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len);
/* tdm__dev_ops.prepare: builds (or finds) the program and its kernel `entry`. */
int tdm__ocl_prepare(tdm__dev *d, const char *key, const char *source, const char *entry,
                     char *detail, size_t len);
int tdm__ocl_launch_2d(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                       const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                       size_t len);

#endif
