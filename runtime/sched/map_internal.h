/* SPDX-License-Identifier: MIT */
/* tandem — what the map files share (runtime/sched/map.c: validation and entry points;
 * map_place.c: options and placement; map_job.c: a job's allocation, descriptor, start and
 * teardown). Not API. */
#ifndef TANDEM_MAP_INTERNAL_H
#define TANDEM_MAP_INTERNAL_H

#include "sched/job.h"

/* Copies and checks the caller's options into *o (defaults when in is NULL); 0 or TDM_EINVAL. */
int tdm__map_check_opts(tdm_runtime *rt, const char *fn, const tdm_map_opts *in, tdm_map_opts *o,
                        bool streaming);
/* True when every tensor of ts[0..n) lives in the shared arena (worker processes see it). */
bool tdm__map_all_in_arena(tdm_tensor *const *ts, int n);
/* Decides job->on (which kinds of worker may run its batches) under its policy; `proc_safe`:
 * the job's data is visible to worker processes. 0 or an error (message set). */
int tdm__map_place(tdm__job *job, const char *fn, bool has_cpu, bool proc_safe,
                   const char *why_not_safe, const char *why_no_dev);
/* Where the bytes must be for the job to run (device residency or host copies current). */
int tdm__map_place_data(tdm__job *job, tdm_tensor *const *inputs, int n_in,
                        tdm_tensor *const *outputs, int n_out);
/* Debug aid (TDM_DEBUG=map or pool): logs each pointer-sized value of a parameter block that
 * points into this process's memory outside the shared arena, when worker processes may run
 * the job (a write through it there would be lost). */
void tdm__map_check_params(tdm__job *job, const char *fn, const void *params, size_t size);

tdm__job *tdm__map_job_alloc(tdm_runtime *rt, const char *fn);
/* Gives an AUTO map lanes for the devices, still closed, that a background open may bring
 * while it runs (a lazy job, see wants_devices() in map.c): true; false, and nothing kept,
 * when the runtime knows it has no device. */
bool tdm__map_job_lazy_devices(tdm__job *job);
/* Gives the job its private copy of params and its counters and publishes the descriptor. */
int tdm__map_finalize(tdm__job *job, const char *fn, const void *params, size_t psize);
/* Ring buffers for a streaming map with NULL outputs. */
int tdm__map_setup_ring(tdm__job *job, const char *fn, const tdm_tensor_desc *descs);
int tdm__map_setup_streaming(tdm__job *job, const char *fn);
/* Submits a prepared job to the pool (or finishes it at once when it has no items). */
int tdm__map_start(tdm__job *job);

#endif
