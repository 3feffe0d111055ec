/* SPDX-License-Identifier: MIT */
/* tandem — the scheduler's stored cost models: time per item and fixed cost per batch for each (kernel,
 * backend lane, size class), kept between runs in $XDG_CACHE_HOME/tandem/costmodel-<machine>.tsv so a
 * second run starts calibrated. Not API. */
#ifndef TANDEM_COSTMODEL_H
#define TANDEM_COSTMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct tdm_runtime tdm_runtime;
typedef struct tdm__costmodel tdm__costmodel;

/* A kernel's key in the model: "<name>.v<version>" (a new version starts afresh). */
static inline void tdm__cm_kernel_key(char *key, size_t len, const char *name, unsigned version)
{
    snprintf(key, len, "%s.v%u", name, version);
}

/* Opens the model of this machine under `dir` (NULL: $XDG_CACHE_HOME/tandem, else
 * ~/.cache/tandem; "" or "off": in memory only, nothing read or written). A missing or
 * unreadable file is an empty model; malformed lines are skipped. Returns 0 or TDM_ENOMEM. */
int tdm__cm_open(tdm_runtime *rt, const char *dir, tdm__costmodel **out);
/* Writes the model back if it changed (atomically: temp file + rename; directory 0700), then
 * frees it. NULL is a no-op. Returns 0, TDM_EIO or TDM_ENOMEM (the model stays unsaved;
 * nothing else). */
int tdm__cm_close(tdm__costmodel *cm);
/* Writes the model if it changed. 0, TDM_EIO or TDM_ENOMEM. Thread-safe. */
int tdm__cm_save(tdm__costmodel *cm);

/* The stored ns per item of `kernel` on `lane` (e.g. "cpu", "procs", "opencl:<device>"), from
 * the entry with the most samples; 0 when none. *lat_ns gets its fixed cost per batch and
 * *samples its count (either may be NULL).
 * Thread-safe. */
double tdm__cm_get(tdm__costmodel *cm, const char *kernel, const char *lane, double *lat_ns,
                   int *samples);
/* Merges a run's estimate into the model: a value within 2x of the stored one is averaged in
 * by sample count (each counted up to 64); a value further off is averaged in geometrically,
 * weighted the same way, and the count becomes half the larger of the two, so one odd run
 * moves a calibrated model little while a figure from an exploration's few batches gives way
 * to a whole map's (PoCL, pi: stored at 4.5e5 ns per item from 5 exploration batches, then
 * measured at 1.9e5 over 94 batches of a map: the old rule, halfway and half the stored
 * count, kept 2.9e5 "from 2 batches"; now 2.0e5 from 47). Thread-safe. */
void tdm__cm_put(tdm__costmodel *cm, const char *kernel, const char *lane, int size_class,
                 double ns_per_item, double lat_ns, int samples);
/* Forgets every entry of `kernel` on `lane` whose time per item is 8x or more off `ns_per_item`,
 * what a map has just measured after finding the stored figure stale (tdm__est_add): kept, it
 * would seed every later map with it again. Thread-safe. */
void tdm__cm_drop_stale(tdm__costmodel *cm, const char *kernel, const char *lane,
                        double ns_per_item);
/* A device's stored figure is settled once it comes from this many batches or more. */
#define TDM__CM_SETTLED 32
/* A close call loses to the CPU threads by less than this factor. */
#define TDM__CM_CLOSE 3.0
/* Whether a device's stored time per item (dev_tpi, from dev_samples batches) is a close call
 * not yet settled: it loses to `cpu_lanes` CPU threads of cpu_tpi ns per item each (it is not
 * 5% faster than them together) by less than TDM__CM_CLOSE, and comes from fewer than
 * TDM__CM_SETTLED batches. One exploration gives a device a few batches, measured in a few
 * milliseconds, and the host's cores can run at half speed for a second or more (a shared
 * 2-vCPU VM: PoCL's 64-item pi batch took 16 to 32 ms with both its threads running
 * throughout): such a figure is measured again (a map explores the device, and the devices
 * open) rather than trusted for good. 3x, not 2x: a host-CPU device's rung that ran on one of
 * two cores reads 2x slow, and noise puts it either side of 2x (PoCL, pi, cold maps: stored
 * at 4.68e5 and 4.84e5 ns per item from 4 batches, the two threads 2.27e5 and 2.35e5
 * together: 2.06x, never measured again, and every later map ran on the threads, in 2 runs of
 * 6; PoCL alone ran at 1.8-2.0e5). Any argument not positive: false. Pure. */
bool tdm__cm_close_unsettled(double dev_tpi, int dev_samples, double cpu_tpi, int cpu_lanes);
/* Whether the model says no device beats the CPU for `kernel`: it holds a "cpu" entry and at
 * least one device entry ("opencl:..." or "cuda:...") for it, no device's time per item (from
 * each lane's entry with the most samples) is 5% faster than `cpu_lanes` CPU threads
 * together, and none is a close call not yet settled (tdm__cm_close_unsettled). On true, `why`
 * (len bytes, may be NULL) says which device and by how much. Thread-safe. */
bool tdm__cm_devices_slower(tdm__costmodel *cm, const char *kernel, int cpu_lanes, char *why,
                            size_t len);
/* Whether the model holds a "cpu" entry for `kernel` and a device entry that is more than 5%
 * faster than `cpu_lanes` CPU threads together (the reverse of tdm__cm_devices_slower()).
 * Thread-safe. */
bool tdm__cm_device_faster(tdm__costmodel *cm, const char *kernel, int cpu_lanes);
/* The file it reads and writes ("" when in memory only). */
const char *tdm__cm_path(const tdm__costmodel *cm);

/* Size class of a batch of n items: floor(log4(n)), so classes are 1, 4, 16, 64... items. */
int tdm__cm_size_class(long long n);

#endif
