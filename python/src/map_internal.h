/* SPDX-License-Identifier: MIT */
/* What the files of rt.map share (python/src/map.c: the wait, rt.map, Cache.map and the module
 * set-up; map_args.c: a call's arguments; map_job.c: rt.map_async's tandem.MapJob). */
#ifndef TDM_PY_MAP_INTERNAL_H
#define TDM_PY_MAP_INTERNAL_H

#include "module.h"

#define MAX_ARGS 16

/* A map call's arguments, as tensors (no copy) and options. */
typedef struct {
    const char *kernel;
    PyObject *kernel_name; /* owned str */
    tdm_tensor *ins[MAX_ARGS], *outs[MAX_ARGS];
    int n_in, n_out;
    PyObject *out_arrays; /* tuple of ndarrays (created or given), owned */
    int out_given;
    PyObject *out_obj; /* the out= argument as given (borrowed from the call's kwargs) */
    PyObject *params;  /* owned bytes, or NULL */
    tdm_map_opts opts;
    PyObject *progress_cb; /* borrowed callable, or NULL */
    int progress_bar;
    int want_report;
    /* Last: only the first n_in / n_out entries are ever set (not zeroed per call). */
    tdm_py_arg in[MAX_ARGS], out[MAX_ARGS];
} call;

/* Parses map's arguments (positional: kernel, *inputs) into *c. `async` accepts order= and
 * window=; `alloc`: outputs not given are allocated. Returns 0 or -1 with an exception
 * (everything acquired is released). */
int tdm_py_call_parse(RuntimeObject *self, PyObject *args, PyObject *kw, int async, int alloc,
                      call *c);
/* Drops what a parsed call holds. */
void tdm_py_call_release(call *c);
/* The call's rows (the largest dim 0 of its tensors) and the bytes its tensors hold. */
int64_t tdm_py_call_rows(const call *c);
size_t tdm_py_call_bytes(const call *c);

/* tandem._tandem._set_async(True): every map takes the async path (tests). */
extern int tdm_py_force_async;
/* tandem.Batch and tandem.MapJob. */
extern PyTypeObject tdm_py_BatchType, tdm_py_MapJobType;

#endif
