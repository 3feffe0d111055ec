/* SPDX-License-Identifier: MIT */
/* tandem — the device-backend interface (OpenCL, CUDA). Not API.
 *
 * The core drives a device through this table of functions: one driver thread per device
 * claims batches of a map, and for each one enqueues the copy-in, the kernel and the copy-out
 * on one of the device's queues (OpenCL in-order command queues, CUDA streams), round-robin,
 * so that batch k+1 copies in while batch k computes and batch k-1 copies out. Before a queue
 * is reused, tdm__dev_ops.finish() waits for what was enqueued on it: that batch is then done.
 *
 * Ownership: the core owns tdm__dev (open/close) and every tdm__dbuf (alloc/free). Host
 * pointers passed to write/read must stay valid until finish() of that queue returns.
 * Thread-safety: one driver thread uses a device at a time; different devices in parallel.
 * Errors: 0 or a negative TDM_E* code, with a one-line explanation in `detail` where given
 * (TDM_ENOMEM: device memory exhausted or over the configured cap; TDM_EKERNEL: the program
 * did not build — the build log is in detail; TDM_EINVAL: the call's own fault, e.g. a launch
 * the kernel cannot take; TDM_EDEVLOST: the device is lost — see "device health" below).
 *
 * Device loss: a driver error that is not the call's own fault (a dead context after a kernel
 * fault, a device gone, an allocation, copy, launch or finish failing for the driver's reasons)
 * marks the device lost, once; from then on every entry returns TDM_EDEVLOST at once, except
 * that finish() still waits for what its queue has in flight (so no copy lands in host memory
 * later) and close() releases everything. The core then runs the device's batches elsewhere.
 */
#ifndef TANDEM_DEVICE_H
#define TANDEM_DEVICE_H

#include "internal.h"

typedef struct tdm__dev tdm__dev;   /* one open device: context, queues, program cache */

/* ---- device health, shared by the device backends (runtime/sched/device_health.c) ----------
 * Fault injection for tests, TDM_DEVICE_FAULT=<point>:<n> (read at each device's open):
 *   alloc, write, read, launch, finish: the device's nth call of that entry fails as a driver
 *     error would (the device is lost there);
 *   sticky: the nth launch "faults on the device": it returns 0, and the context is dead from
 *     then on, as after cudaErrorIllegalAddress: the next entry, whichever, finds it so;
 *   lost: the device is gone at its nth entry of any kind. */
typedef enum {
    TDM__FAULT_NONE,
    TDM__FAULT_ALLOC,
    TDM__FAULT_WRITE,
    TDM__FAULT_READ,
    TDM__FAULT_LAUNCH,
    TDM__FAULT_FINISH,
    TDM__FAULT_STICKY, /* (counted on launches) */
    TDM__FAULT_LOST,   /* (counted on every entry) */
    TDM__FAULT_N
} tdm__fault_point;

/* Embedded in each backend's tdm__dev; used under the device's one-caller rule, except
 * tdm__devhealth_lost(), which any thread may call. */
typedef struct tdm__devhealth {
    atomic_int state; /* 0 live, 1 being marked lost, 2 lost (why is set) */
    char why[256];
    char name[64]; /* "opencl device 0" (for messages) */
    int point;     /* TDM_DEVICE_FAULT: tdm__fault_point, or TDM__FAULT_NONE */
    int at;        /* ... its n */
    int seen;      /* calls of that point so far */
    bool sticky;   /* an injected device fault waits to be found */
} tdm__devhealth;

/* Sets up h for a device named `name`, with TDM_DEVICE_FAULT from the environment. TDM_EINVAL
 * with detail when that variable is malformed. */
int tdm__devhealth_init(tdm__devhealth *h, const char *name, char *detail, size_t len);
/* At the start of every entry of a device: TDM_EDEVLOST (detail: since when and why) when the
 * device is lost, or is found lost now by an injected fault; else 0. */
int tdm__devhealth_enter(tdm__devhealth *h, tdm__fault_point p, char *detail, size_t len);
/* Marks the device lost (the first caller's reason is kept: `detail`, which says what failed) and
 * returns TDM_EDEVLOST; detail gets " (device lost)" appended. */
int tdm__devhealth_lose(tdm__devhealth *h, char *detail, size_t len);
/* Whether the device is lost. Thread-safe. */
bool tdm__devhealth_lost(const tdm__devhealth *h);

/* Bytes from "123", "64M", "64MiB", "2g", "512 KB" (K/M/G/T: powers of 1024): 0 and *out, or -1
 * when malformed or over 2^64. */
int tdm__parse_bytes(const char *s, uint64_t *out);
/* The device-memory cap for a device opened on rt (NULL: no runtime): config.device_mem_cap,
 * replaced by TDM_DEVICE_MEM_CAP when the environment counts (no runtime, or config.use_env).
 * 0 and *cap (0 = none), or TDM_EINVAL with detail when the variable is not a size. */
int tdm__device_mem_cap(const tdm_runtime *rt, const char *who, uint64_t *cap, char *detail,
                        size_t len);
typedef struct tdm__dbuf tdm__dbuf; /* a device buffer */

typedef enum { TDM__KARG_BUF, TDM__KARG_NULL, TDM__KARG_VALUE } tdm__karg_kind;

/* One kernel argument, in order: a device buffer, a NULL global pointer, or a value of `size`
 * bytes (a scalar or a by-value struct, at most 64 bytes). */
typedef struct tdm__karg {
    tdm__karg_kind kind;
    tdm__dbuf *buf;
    uint32_t size;
    _Alignas(16) unsigned char value[64];
} tdm__karg;

/* The shape of a 2-D launch (tdm_dev_launch.dims == 2): size[0] x size[1] work items wanted
 * (dimension 0 the fastest: an output row's elements; dimension 1: the batch's rows), in
 * work-groups of exactly local[0] x local[1]. */
typedef struct tdm__range2 {
    int64_t size[2];
    uint32_t local[2];
} tdm__range2;

typedef struct tdm__dev_ops {
    tdm_backend_kind kind;
    /* Opens device `index` of this backend (index as in its probe's list). */
    int (*open)(tdm_runtime *rt, int index, tdm__dev **out, char *detail, size_t len);
    void (*close)(tdm__dev *d);
    /* Number of queues (>= 2): the depth of the pipeline. */
    int (*n_queues)(const tdm__dev *d);
    /* Device memory. TDM_ENOMEM when the device (or its cap) has no room. */
    int (*alloc)(tdm__dev *d, size_t bytes, tdm__dbuf **out, char *detail, size_t len);
    void (*free)(tdm__dev *d, tdm__dbuf *b);
    /* Asynchronous copies on queue q (host memory may be pageable: the backend stages it
     * through pinned memory when it must). */
    int (*write)(tdm__dev *d, int q, tdm__dbuf *dst, size_t dst_off, const void *src, size_t n,
                 char *detail, size_t len);
    int (*read)(tdm__dev *d, int q, void *dst, const tdm__dbuf *src, size_t src_off, size_t n,
                char *detail, size_t len);
    /* Enqueues kernel `entry` of program `source` (built once per device and cached under
     * `key`, e.g. "builtin" or a user kernel's name + version) with `global` work items. */
    int (*launch)(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                  const tdm__karg *args, int n_args, int64_t global, char *detail, size_t len);
    /* As launch, over a 2-D range in work-groups of r->local[0] x r->local[1] (OpenCL's
     * local_work_size, CUDA's blockDim): each dimension is rounded up to whole groups, and the
     * group count may be capped (the entries loop over their tiles by group index). TDM_EINVAL
     * when the device or the entry cannot run groups of that size (the entry's required size,
     * the device's limits), with both in detail. NULL: the backend has no 2-D launches. */
    int (*launch_2d)(tdm__dev *d, int q, const char *key, const char *source, const char *entry,
                     const tdm__karg *args, int n_args, const tdm__range2 *r, char *detail,
                     size_t len);
    /* Optional (NULL: the program is built at its first launch): builds program `source` under
     * `key` and finds its kernel `entry`, as a launch would, without launching anything; a
     * program built already costs a lookup. The scheduler calls it before a device's first
     * batch of a map, so that a program build does not count as the device's time (and the CPU
     * workers go on meanwhile). Errors as launch's; a failed build is reported again by the
     * launch. */
    int (*prepare)(tdm__dev *d, const char *key, const char *source, const char *entry,
                   char *detail, size_t len);
    /* Waits for everything enqueued on q; returns the first error of those operations
     * (TDM_EDEVLOST when the device is lost, after waiting all the same). */
    int (*finish)(tdm__dev *d, int q, char *detail, size_t len);
    /* Optional (NULL: not needed or not possible): page-locked host memory registered with the
     * device, so copies from and to it are DMA with no staging (cudaHostRegister). TDM_EEXIST:
     * the range is registered already by someone else — DMA-able, but not to be unregistered.
     * host_unregister waits for the device's queues first. */
    int (*host_register)(tdm__dev *d, void *p, size_t n, char *detail, size_t len);
    void (*host_unregister)(tdm__dev *d, void *p);
    /* Optional: the driver thread has nothing in flight on the device (a job left it): the
     * backend may give back cached memory, where doing so would stall a running pipeline. */
    void (*idle)(tdm__dev *d);
} tdm__dev_ops;

/* The backends' tables (NULL-free only for those compiled in). */
extern const tdm__dev_ops tdm__opencl_dev_ops;
extern const tdm__dev_ops tdm__cuda_dev_ops;

/* ---- the runtime's opened devices (runtime/sched/devices.c) -------------------------------------- */

typedef struct tdm__devslot {
    const tdm__dev_ops *ops;
    tdm__dev *dev;
    tdm_device_info info;
    int worker;         /* index of its driver in the pool */
    pthread_mutex_t mu; /* one caller at a time: the driver, or a thread fetching a tensor */
    atomic_int lost;    /* a device error that is not the kernel's fault: no more batches */
    int batches;        /* batches it ran (for fail_after) */
    int fail_after;     /* TDM_DEVICE_FAIL_AFTER: simulate a device loss after N batches (tests) */
    int completions;    /* batch completions seen (for enomem_at) */
    int enomem_at;      /* TDM_DEVICE_ENOMEM_AT_FINISH: the Nth batch completion reports
                         * TDM_ENOMEM, as a lazy device allocation failing there would (tests) */
    /* Kernels it launched in an earlier map (hashes of their model keys, the last 16; under
     * mu): a map of one of them teaches the stored model its time (job_device.c), a first
     * one does not (its launches can hold compiles: PoCL's work-group functions). */
    uint64_t launched[16];
    int n_launched, next_launched;
} tdm__devslot;

/* A storage's copy in device memory (runtime/sched/residency.c); guarded by rt->dev_mu. */
struct tdm__mirror {
    tdm__devslot *dev;
    tdm__dbuf *buf;
    size_t bytes;
    bool dev_valid; /* the device copy holds the storage's current bytes */
};

/* For a batch run on `ds` straight from device-resident storage: the storage's device buffer,
 * uploading the whole storage first when the device copy is not current (adds the bytes moved
 * to *moved). For an output, `whole` says the map writes every byte, so nothing need go up.
 * 0, TDM_ENOMEM (no device memory: run without residency) or a device error. */
int tdm__mirror_acquire(tdm__devslot *ds, tdm__storage *s, bool is_output, bool whole,
                        tdm__dbuf **buf, int64_t *moved, char *detail, size_t len);
/* Registers a page-locked storage with the device once (pinned and shared+pinned tensors:
 * their batches then go by DMA). Best effort: a refusal leaves the pageable path. */
void tdm__storage_register_pinned(tdm__devslot *ds, tdm__storage *s);

/* After a resident map wrote `s` on the device: the device copy is current; the host's is
 * stale unless the batches were also read back (`host_current`). */
void tdm__mirror_written(tdm__storage *s, bool host_current);

struct tdm__devices {
    int n;
    int first_worker; /* drivers are workers first_worker .. first_worker + n - 1 */
    tdm__devslot slots[TDM__MAX_DEVICES];
};

/* The device driven by pool worker w, or NULL. */
static inline tdm__devslot *tdm__device_of_worker(tdm_runtime *rt, int w)
{
    struct tdm__devices *ds = rt->devices;
    if (!ds || w < ds->first_worker || w >= ds->first_worker + ds->n)
        return NULL;
    return &ds->slots[w - ds->first_worker];
}
/* ---- devices (runtime/sched/devices.c) ----------------------------------------------------------- */

/* Opens every device of the enabled device backends once (lazily: the first map that may run
 * on a device), each with a driver thread in the pool. Returns the number of devices (0 is
 * fine) or an error. Thread-safe. */
int tdm__devices_ensure(tdm_runtime *rt);
/* Starts tdm__devices_ensure() on a thread of its own, once per runtime, and returns at once;
 * when it is done the pool's workers look at the jobs again, so a map already running on the
 * CPU takes the new drivers in (its lazy device lanes, runtime/sched/job_sched.c). A no-op
 * once the devices are open or being opened. Thread-safe. */
void tdm__devices_open_async(tdm_runtime *rt);
/* Whether the machine may have a device off the host's cores: a GPU's device node under `dev`
 * ("/dev": nvidiactl or nvidia0 for NVIDIA's driver, kfd for AMD's compute driver, a render
 * node dri/renderD* for any other). Without one, the devices the runtime can open (PoCL, say)
 * compute on the host's cores, and AUTO asks more of a map before it opens them
 * (tdm__device_open_bar): their set-up costs the CPU what it could gain. */
bool tdm__gpu_nodes(const char *dev);
/* Waits for a background open to end (the runtime's close, before it stops the pool). */
void tdm__devices_join_async(tdm_runtime *rt);
/* Closes them (the pool must be stopped first). */
void tdm__devices_close(tdm_runtime *rt);
/* Number of devices opened so far, and the pool worker index of the first driver. */
int tdm__devices_count(const tdm_runtime *rt);
/* Devices not lost to a device error. */
int tdm__devices_live(const tdm_runtime *rt);
/* ... of one backend kind (kind < 0: any). */
int tdm__devices_live_kind(const tdm_runtime *rt, int kind);

#endif
