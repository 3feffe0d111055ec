/* SPDX-License-Identifier: MIT */
/* tandem — the scheduler's stored cost models: time per item and fixed cost per batch for each (kernel,
 * backend lane, size class), kept between runs in $XDG_CACHE_HOME/tandem/costmodel-<machine>.tsv so a
 * second run starts calibrated. Not API. */
#ifndef TANDEM_COSTMODEL_H
#define TANDEM_COSTMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "tandem/kernel.h"

typedef struct tdm_runtime tdm_runtime;
typedef struct tdm__costmodel tdm__costmodel;

/* Room for a key in the model (a name of 63 characters, its version and its work class). */
#define TDM__CM_KEY_LEN 96

/* A kernel's key in the model: "<name>.v<version>" (a new version starts afresh). */
static inline void tdm__cm_kernel_key(char *key, size_t len, const char *name, unsigned version)
{
    snprintf(key, len, "%s.v%u", name, version);
}

/* A map's key in the model: its kernel's (tdm__cm_kernel_key), and for a kernel that says how
 * much work an item does (def->work: pi_leibniz, its terms) ".w<k>", 2^k the power of 2
 * nearest that work (k in -64..64; none for a result that is not finite and > 0). A pi map of
 * 10^6 terms per item and one of 10^4 keep their own figures: before, both were kept as one
 * kernel's, and one read the other's time per item, 100x off. */
void tdm__cm_map_key(char *key, size_t len, const tdm_kernel_def *def, const void *params,
                     size_t params_size);

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
/* Merges a run's estimate into the model (and counts the lane as having run: tdm__cm_passed
 * 0): a value within 2x of the stored one is averaged in
 * by sample count (each counted up to 64); a value further off is averaged in geometrically,
 * weighted the same way, and the count becomes half the larger of the two, so one odd run
 * moves a calibrated model little while a figure from an exploration's few batches gives way
 * to a whole map's (PoCL, pi: stored at 4.5e5 ns per item from 5 exploration batches, then
 * measured at 1.9e5 over 94 batches of a map: the old rule, halfway and half the stored
 * count, kept 2.9e5 "from 2 batches"; now 2.0e5 from 47). Thread-safe. */
void tdm__cm_put(tdm__costmodel *cm, const char *kernel, const char *lane, int size_class,
                 double ns_per_item, double lat_ns, int samples);
/* Merges what a map measured into the lane's entry that is read (the one with the most
 * samples: tdm__cm_get), or into size class `cls` when the lane has none or the figure is 8x
 * or more off it (another parameter set of the kernel: pi over 1000 terms against 350000
 * keeps its own entry, as before, and the one from more batches is read); otherwise as
 * tdm__cm_put(). Stored in the class of its own batches, a figure was not read until that
 * class came from more batches than the lane's entry read: PoCL's pi figure from AUTO maps
 * (batches of 4-15 items, 141 batches) sat beside the one read (654 batches), and no AUTO
 * map moved what the next one started from. Thread-safe. */
void tdm__cm_put_read(tdm__costmodel *cm, const char *kernel, const char *lane, int size_class,
                      double ns_per_item, double lat_ns, int samples);
/* As tdm__cm_put_read, for a device lane whose stored figure was a close call from fewer than
 * TDM__CM_SETTLED batches (tdm__cm_close_unsettled) that the map measured again from scratch
 * (tdm__jsched_destroy: not a lane seeded with the figure, whose first batches' estimate is
 * still mostly the stored figure, nor a far figure): when the lane is a device's and the map's
 * figure is within 1.5x of the entry read, which comes from fewer than TDM__CM_SETTLED
 * batches, two maps agree on it and the merged entry counts as settled (its count raised to
 * TDM__CM_SETTLED). A close call is measured again while its figure is not settled, and each
 * measure adds a few batches: PoCL 2.8x slower than the threads on pi was measured again in
 * every map until the eighth (a 4-item rung beside the threads, then 16 items alone while
 * they stood down: 3-8% of a 0.5 s map each time). Settled, it is measured again after
 * TDM__CM_RECHECK maps without it. Thread-safe. */
void tdm__cm_put_confirm(tdm__costmodel *cm, const char *kernel, const char *lane, int cls,
                         double ns_per_item, double lat_ns, int samples);
/* Forgets every entry of `kernel` on `lane` whose time per item is 8x or more off `ns_per_item`,
 * what a map has just measured after finding the stored figure stale (tdm__est_add): kept, it
 * would seed every later map with it again. Thread-safe. */
void tdm__cm_drop_stale(tdm__costmodel *cm, const char *kernel, const char *lane,
                        double ns_per_item);
/* A device's stored figure is settled once it comes from this many batches or more. */
#define TDM__CM_SETTLED 32
/* ...and a settled close call is measured again once this many maps ran without the device. */
#define TDM__CM_RECHECK 8
/* A close call loses to the CPU threads by less than this factor. */
#define TDM__CM_CLOSE 3.0
/* Whether a device's stored time per item (dev_tpi, from dev_samples batches, passed over by
 * dev_passed maps since it last ran: tdm__cm_passed) is a close call not settled: it loses to
 * `cpu_lanes` CPU threads of cpu_tpi ns per item each (it is not 5% faster than them together)
 * by less than TDM__CM_CLOSE, and comes from fewer than TDM__CM_SETTLED batches or has been
 * passed over by TDM__CM_RECHECK maps or more. One exploration gives a device a few batches,
 * measured in a few milliseconds, and the host's cores can run at half speed for a second or
 * more (a shared 2-vCPU VM: PoCL's 64-item pi batch took 16 to 32 ms with both its threads
 * running throughout): such a figure is measured again (a map explores the device, and the
 * devices open) rather than trusted for good. 3x, not 2x: a host-CPU device's rung that ran on
 * one of two cores reads 2x slow, and noise puts it either side of 2x (PoCL, pi, cold maps:
 * stored at 4.68e5 and 4.84e5 ns per item from 4 batches, the two threads 2.27e5 and 2.35e5
 * together: 2.06x, never measured again, and every later map ran on the threads, in 2 runs of
 * 6; PoCL alone ran at 1.8-2.0e5). A settled figure can be wrong too, and a device that loses
 * never runs to correct it: PoCL stored at 2.75e5 ns per item from 94 batches (a cold map's
 * exploration and its slow cores) kept every later pi map on the threads, at 0.80 of OpenCL
 * alone's speed. Every TDM__CM_RECHECK maps such a close call is explored again (at most 3% of
 * one map: tdm__explore_budget_of). Any argument not positive: false. Pure. */
bool tdm__cm_close_unsettled(double dev_tpi, int dev_samples, int dev_passed, double cpu_tpi,
                             int cpu_lanes);
/* Whether a device's stored figure that loses to the threads is measured again in this map:
 * a close call not settled (tdm__cm_close_unsettled), or a far loss from fewer than
 * TDM__CM_SETTLED batches passed over by TDM__CM_RECHECK maps. An exploration cut short on a
 * slow minute stores a far figure from a few batches (PoCL, pi, under load: 1.81e6 ns per item
 * after 1 and 4 items, 7x the threads' 2.45e5 together, while it runs at 2.0-2.2e5), and the
 * devices were then left closed for that kernel in every later map; a device truly far off
 * (exp_sinh on PoCL, hundreds of times slower) is measured again every TDM__CM_RECHECK maps
 * until its figure is settled (each exploration adds its batches). Pure. */
bool tdm__cm_measure_again(double dev_tpi, int dev_samples, int dev_passed, double cpu_tpi,
                           int cpu_lanes);
/* How many maps ran without `lane` since it last ran (its entry with the most samples; 0 when
 * it has none). Thread-safe. */
int tdm__cm_passed(tdm__costmodel *cm, const char *kernel, const char *lane);
/* Counts a map of `kernel` that ran without `lane` (on its entry with the most samples; none:
 * nothing). tdm__cm_put() for the lane sets the count back to 0. Thread-safe. */
void tdm__cm_pass(tdm__costmodel *cm, const char *kernel, const char *lane);
/* A settled close call about to be measured again (tdm__cm_close_unsettled with dev_passed):
 * its count of maps run without the lane goes back to 0, whether or not the map gets to run
 * it (a map too short for the device would otherwise measure it again in every map after).
 * Returns the size class of the lane's entry with the most samples, -1 when it has none.
 * Thread-safe. */
int tdm__cm_recheck(tdm__costmodel *cm, const char *kernel, const char *lane);
/* Stores what a map measured again for a figure tdm__cm_recheck'ed: the lane's entries of
 * other size classes are forgotten, its entry with the most samples has its count cut to
 * TDM__CM_SETTLED - 1, and the figure is merged into that entry (tdm__cm_put; into size class
 * `cls` when the lane has no entry left). So the new figure weighs against 31 batches, not up
 * to 64, and stays the one read: merged against 64, a device stored at 2.9e5 ns per item from
 * 94 batches and measured again at 1.82e5 over 42 batches of a map read 2.47e5, still losing to
 * the threads' 2.5e5 by the 2% a device needs; stored apart in its own size class, it was not
 * read at all (an entry with more samples was), and cutting every entry to 31 let an older far
 * figure be the one read, so that the device was never measured again. A figure not
 * positive, or no samples: nothing. Thread-safe. */
void tdm__cm_put_again(tdm__costmodel *cm, const char *kernel, const char *lane, int cls,
                       double tpi, double lat, int samples);
/* Counts a map of `kernel` that ran without any device (the devices left closed), for each
 * device lane ("opencl:..." or "cuda:...") the model holds for it. Thread-safe. */
void tdm__cm_pass_devices(tdm__costmodel *cm, const char *kernel);
/* Whether the model says no device beats the CPU for `kernel`: it holds a "cpu" entry and at
 * least one device entry ("opencl:..." or "cuda:...") for it, no device's time per item (from
 * each lane's entry with the most samples) is 5% faster than `cpu_lanes` CPU threads
 * together, and none is to be measured again (tdm__cm_measure_again). On true, `why`
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
