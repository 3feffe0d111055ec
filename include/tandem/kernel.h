/* SPDX-License-Identifier: MIT */
/* tandem — kernels: named operations with an implementation per backend kind. */
#ifndef TANDEM_KERNEL_H
#define TANDEM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

/** What a kernel's CPU implementation receives for one batch: rows [begin, end) of every
 *  argument tensor. `in[k]` / `out[k]` point at row `begin` of argument k (rows are
 *  contiguous: tdm_map only accepts contiguous tensors). `row_elems` gives the elements per
 *  row of each argument. The struct and the pointers are valid only during the call. */
typedef struct tdm_kernel_args {
    int64_t begin;                 /**< first row of this batch */
    int64_t end;                   /**< one past its last row (end > begin) */
    int n_in;                      /**< input tensors */
    int n_out;                     /**< output tensors */
    const void *const *in;         /**< row `begin` of each input */
    void *const *out;              /**< row `begin` of each output */
    const tdm_tensor *const *tin;  /**< the whole input tensors (dtype, shape) */
    const tdm_tensor *const *tout; /**< the whole output tensors */
    const int64_t *in_row_elems;   /**< elements per row of each input */
    const int64_t *out_row_elems;  /**< elements per row of each output */
    const void *params;            /**< the map's by-value parameter block (may be NULL) */
    size_t params_size;            /**< its size in bytes (0 with no block) */
    int worker; /**< index of the worker running the batch */
} tdm_kernel_args;

/** A CPU implementation: processes rows [a->begin, a->end). Returns 0, or a negative TDM_E*
 *  code (typically TDM_EKERNEL) to fail the batch. Called concurrently from several workers
 *  on disjoint row ranges. */
typedef int (*tdm_kernel_cpu_fn)(const tdm_kernel_args *a);

/** What an output must look like (filled by a kernel's infer function). */
typedef struct tdm_tensor_desc {
    tdm_dtype dtype;             /**< element type */
    int ndim;                    /**< dimensions, 1..TDM_MAX_DIMS */
    int64_t shape[TDM_MAX_DIMS]; /**< shape (ndim entries used) */
} tdm_tensor_desc;

/** Validates a call before any batch runs and describes the outputs. Receives the whole input
 *  tensors and the parameter block; fills out[0..n_out-1]. Dim 0 of each output is the map's
 *  row count, set by the runtime afterwards (a kernel without inputs cannot know it); for a
 *  kernel whose inputs are all given whole (whole_inputs), a dim 0 set here (> 0) must be the
 *  map's rows, else the map fails with TDM_ESHAPE before any batch runs. Returns 0, or
 * TDM_EDTYPE / TDM_ESHAPE / TDM_EINVAL with a message written into msg (msg_len bytes,
 * NUL-terminated). */
typedef int (*tdm_kernel_infer_fn)(const tdm_tensor *const *in, int n_in, const void *params,
                                   size_t params_size, tdm_tensor_desc *out, int n_out, char *msg,
                                   size_t msg_len);

/** How a kernel's device entry point takes its arguments, for the device backends (OpenCL,
 *  CUDA). A device batch passes batch-sized buffers: every tensor argument points at the
 *  batch's first row; BEGIN and END are 64-bit item indices (tdm_idx) 0 and
 *  rows * items_per_row, so the entry's grid-stride loop covers the batch. */
typedef enum tdm_dev_arg_kind {
    TDM_DEV_ARG_INPUT = 0,  /**< input tensor `index` */
    TDM_DEV_ARG_OUTPUT = 1, /**< output tensor `index` */
    TDM_DEV_ARG_NULL = 2,   /**< a NULL global pointer (an optional tensor not given) */
    TDM_DEV_ARG_VALUE = 3,  /**< `size` bytes of `value` (a scalar or a by-value struct) */
    TDM_DEV_ARG_BEGIN = 4,  /**< the first item of the batch (tdm_idx) */
    TDM_DEV_ARG_END = 5,    /**< one past the last item of the batch (tdm_idx) */
    TDM_DEV_ARG_ROW0 = 6    /**< the global index of the batch's first row (tdm_idx), for
                             *  kernels that index inputs given whole by the output row */
} tdm_dev_arg_kind;

#define TDM_DEV_MAX_ARGS 16

/** One argument of a device launch (tdm_dev_launch.args). */
typedef struct tdm_dev_arg {
    tdm_dev_arg_kind kind; /**< what the argument is */
    int index;             /**< for tensor arguments: which input or output */
    uint32_t size;         /**< for by-value arguments: bytes used in value */
    TDM_ALIGNAS(16) unsigned char value[64]; /**< a by-value argument's bytes */
} tdm_dev_arg;

/** A device launch: entry point name, argument list, and items per tensor row (e.g. 1 for a
 *  per-row reduction, the row's element count for an elementwise kernel).
 *
 *  Its shape: by default (dims 0 or 1) a 1-D launch whose global and work-group sizes the
 *  backend picks; the entry covers items [BEGIN, END) with a grid-stride loop. dims = 2 asks
 *  for a 2-D launch in work-groups of exactly local[0] x local[1] work items, for an entry that
 *  shares tiles through work-group memory (the dialect's TDM_KERNEL_GROUP, TDM_SHARED,
 *  TDM_BARRIER): dimension 0 spans items_per_row (an output row's elements), dimension 1 the
 *  batch's rows, each rounded up to whole work-groups; a backend may launch fewer groups than
 *  that (at least one per dimension), so the entry loops over its tiles by group index. BEGIN
 *  and END are still the batch's items (whole rows). local[0] * local[1] is at most 1024; a
 *  device that cannot run such a group fails the batch with TDM_EINVAL. */
typedef struct tdm_dev_launch {
    char entry[64];                     /**< the entry point's name in the device source */
    int n_args;                         /**< arguments used in args[] */
    tdm_dev_arg args[TDM_DEV_MAX_ARGS]; /**< the entry's arguments, in order */
    int64_t items_per_row;              /**< work items per tensor row */
    int32_t dims;     /**< 0 or 1: 1-D grid-stride launch; 2: 2-D launch in work-groups */
    int32_t local[2]; /**< dims == 2: the work-group size along dimensions 0 and 1 */
} tdm_dev_launch;

/** Describes the device launch of a call (after infer accepted it): fills *launch from the
 *  input tensors and the parameter block. Returns 0, or TDM_EDTYPE / TDM_EINVAL with a message
 *  (e.g. no device entry for that dtype). */
typedef int (*tdm_kernel_dev_fn)(const tdm_tensor *const *in, int n_in, const void *params,
                                 size_t params_size, tdm_dev_launch *launch, char *msg,
                                 size_t msg_len);

/** How much work one item of a call does, from its parameter block (pi_leibniz: its terms),
 *  in any unit of the kernel's choosing; > 0. The scheduler keeps what it learns of a kernel's
 *  time per item (tdm_config.sched_model_dir) apart for each power of 2 of this figure, so a
 *  map whose items do 16x the work does not start from the figures of lighter ones. Called once
 *  per map as it is set up, with the block given to the map (params NULL when params_size is
 *  0), on the thread that starts the map: maps started from several threads (or a pipeline's
 *  and a cache group's own threads) call it concurrently, so it must be thread-safe, and it
 *  should be pure (the same block, the same answer). A result that is not a finite number > 0
 *  counts as none (the kernel's one set of figures, as with no work function). */
typedef double (*tdm_kernel_work_fn)(const void *params, size_t params_size);

#define TDM_KERNEL_DEF_VERSION 1u

/** A kernel definition (StarPU's codelet). Registered with tdm_kernel_register(), which copies
 *  it (strings included). */
typedef struct tdm_kernel_def {
    uint32_t size;             /**< sizeof(tdm_kernel_def) */
    uint32_t version;          /**< TDM_KERNEL_DEF_VERSION */
    const char *name;          /**< unique per runtime, 1..63 chars of [A-Za-z0-9_.] */
    uint32_t kernel_version;   /**< bump when results change (result caches key on it, and on
                                *  `source` and `code_hash`: see tandem/cache.h) */
    int n_in_min;              /**< fewest inputs accepted */
    int n_in_max;              /**< most inputs accepted */
    int n_out;                 /**< output count (>= 0) */
    size_t params_size;        /**< exact size of the parameter block; 0 = none accepted */
    tdm_kernel_infer_fn infer; /**< may be NULL: then only row counts are checked */
    tdm_kernel_cpu_fn cpu;     /**< CPU implementation (threads and processes); may be NULL */
    const char *source;        /**< device code in the single-source dialect, may be NULL. Compiled
                                *  after the dialect header and the built-in kernels (kernels/), so it
                                *  can use the TDM_* macros and tdm_k_* functions; copied at
                                *  registration. Built on a device's first map of the kernel. If
                                *  it does not build, a map under a device policy or ROUND_ROBIN
                                *  fails with TDM_EKERNEL and the build log in tdm_errmsg().
                                *  Under AUTO, a kernel with `cpu` runs on the CPU instead
                                *  (TDM_DEBUG=sched: "cannot run it"): the device leaves the
                                *  map, or with share caps runs its batches on the host, which
                                *  no_cpu_fallback forbids (TDM_EKERNEL then). Not for a map
                                *  whose data is kept on the device (keep_on_device, or inputs
                                *  left there): TDM_EKERNEL. The OpenCL driver may print its
                                *  compiler's diagnostics on stderr (PoCL does), not tandem */
    tdm_kernel_dev_fn dev;     /**< how to launch `source`'s entry; NULL = no device version */
    uint32_t whole_inputs;     /**< bit k set: input k is not split by rows but given whole to
                                *  every batch (weights, a lookup table): its row count is free,
                                *  tdm_kernel_args.in[k] points at its first element, and on a
                                *  device it is uploaded once and kept while valid. It must be
                                *  contiguous (and a whole storage, offset 0, for devices). A map
                                *  whose inputs are all whole takes its rows from the outputs. */
    uint64_t code_hash;        /**< any value that changes when the CPU implementation's code
                                *  does (a hash of its source file made by the build, a git
                                *  blob id...): result caches key on it, so a changed body is a
                                *  miss without a kernel_version bump. 0 = none. (`source`, when
                                *  given, is keyed on by itself.) */
    tdm_kernel_work_fn work;   /**< how much work an item does, from the params: what the
                                *  scheduler's stored times per item are kept by (see
                                *  tdm_kernel_work_fn). NULL: the items of every call cost
                                *  alike. Added after the first release of this struct: a
                                *  `size` of exactly offsetof(tdm_kernel_def, work) (a program
                                *  built against the header before it) is accepted, as NULL */
} tdm_kernel_def;

#define TDM_KERNEL_DEF_INIT                                                                        \
    {                                                                                              \
        sizeof(tdm_kernel_def), TDM_KERNEL_DEF_VERSION, NULL, 1u, 0, 0, 0, 0, NULL, NULL, NULL,    \
            NULL, 0u, 0u, NULL                                                                     \
    }

/* Parameter blocks of the built-in kernels (passed by value to tdm_map). */

/** "exp_sinh": y = exp(x) * sinh(x), elementwise, f32 or f64. 1 input, 1 output; no params. */
/** "axpy": z = a * x + y, elementwise, f32 or f64; inputs x, y; output z (may be y itself). */
typedef struct tdm_axpy_params {
    double a; /**< the factor of x */
} tdm_axpy_params;

/** "scale_shift": y = x * scale + shift, elementwise, f32 or f64. */
typedef struct tdm_scale_shift_params {
    double scale; /**< multiplies x */
    double shift; /**< then added */
} tdm_scale_shift_params;

/** "sum", "mean", "sumsq": per-row reduction of x [N, ...] (f32/f64) into y [N] of the same
 *  dtype, accumulated in double. No params. */

/** "normalize_u8": u8 images [N, H, W, C] (HWC, C <= 4) → f32 [N, C, H, W] with
 *  y = (x / 255 - mean[c]) / std[c]. Horizontal flip: `flip` = 0 none, 1 every image; or pass
 *  an optional second input, u8 or bool [N], whose non-zero entries flip that image. */
typedef struct tdm_normalize_params {
    float mean[4];    /**< per channel, on the 0..1 scale */
    float std[4];     /**< per channel */
    int32_t flip;     /**< 0: no flip, 1: flip every image (see above) */
    int32_t reserved; /**< 0 */
} tdm_normalize_params;

/** "pi_leibniz": item i writes 4 * sum_{k<terms} (-1)^k / (2k+1) into y[i] (f64 [N]); no
 *  inputs. An optional input i64 [N] gives each item its own number of terms instead. */
typedef struct tdm_pi_params {
    int64_t terms; /**< terms of each item's series; with the terms input, pass 0 (the
                    *  stored model keys a map's figures by this: tdm_kernel_def.work) */
} tdm_pi_params;

/* ---- training kernels (all f32; "given whole" inputs are not split by rows) ---------------- */

/** "linear": y = x W (+ b), then ReLU when `relu`: x [M, K] (rows), W [K, N] and the optional
 *  b [N] given whole; y [M, N]. */
typedef struct tdm_linear_params {
    int32_t relu;     /**< 1: ReLU after the product (and bias) */
    int32_t reserved; /**< 0 */
} tdm_linear_params;

/** "linear_grad_x": dx = dy W^T, zeroed where h <= 0 when h is given (the ReLU's gradient):
 *  dy [M, N] (rows), W [K, N] given whole, optional h [M, K] (rows); dx [M, K]. No params. */

/** "linear_grad_w": dW = x^T dy: x [M, K] and dy [M, N] given whole; dW [K, N] (its rows are
 *  the map's rows). No params. */

/** "colsum": y[n] = sum_m x[m, n]: x [M, N] given whole; y [N]. No params. */

/** "softmax_xent": z [B, C] logits and label [B] i32 (rows); outputs dz [B, C] =
 *  (softmax(z) - onehot(label)) * grad_scale, loss [B] = -log softmax(z)[label], and pred [B]
 *  i32 = argmax z. */
typedef struct tdm_softmax_xent_params {
    float grad_scale; /**< usually 1 / batch size */
    int32_t reserved; /**< 0 */
} tdm_softmax_xent_params;

/** "sgd_momentum": v = momentum v + (g + weight_decay w); w -= lr v, elementwise over f32
 *  tensors of one shape: inputs g, w, v; outputs w, v (pass the same tensors: in place). */
typedef struct tdm_sgd_params {
    float lr;           /**< learning rate */
    float momentum;     /**< momentum factor (0: plain SGD) */
    float weight_decay; /**< L2 penalty added to the gradient */
    int32_t reserved;   /**< 0 */
} tdm_sgd_params;

/** "adam": Adam (Kingma & Ba; torch.optim.Adam's L2 weight_decay) at step `step` >= 1:
 *  inputs g, w, m, v; outputs w, m, v (pass the same tensors: in place). */
typedef struct tdm_adam_params {
    float lr;           /**< learning rate */
    float beta1;        /**< first-moment decay (0.9) */
    float beta2;        /**< second-moment decay (0.999) */
    float eps;          /**< added to the denominator (1e-8) */
    float weight_decay; /**< L2 penalty added to the gradient */
    int32_t step;       /**< the step number, from 1 (bias correction) */
} tdm_adam_params;

TDM_BEGIN_DECLS

/** Registers a kernel with the runtime (copying the definition). `def->size` is
 *  sizeof(tdm_kernel_def), or offsetof(tdm_kernel_def, work) for a program built against the
 *  header before that field. Returns 0, TDM_EINVAL (NULL,
 *  bad size/version, bad name, n_in_min > n_in_max, no implementation at all), TDM_EEXIST (the
 *  name is taken), TDM_ENOMEM. Thread-safe. */
TDM_EXTERN int tdm_kernel_register(tdm_runtime *rt, const tdm_kernel_def *def);

/** 1 if a kernel of that name is registered with `rt`, else 0. rt or name NULL gives 0 (no
 *  error code, no message: the answer is simply "not registered"). Thread-safe. */
TDM_EXTERN int tdm_kernel_exists(const tdm_runtime *rt, const char *name);

/** Number of kernels registered with `rt` (built-in ones included), >= 0. rt NULL gives 0 (a
 *  runtime with nothing registered); never a negative code. Kernels are never unregistered,
 *  so the count only grows during the runtime's life. Thread-safe. */
TDM_EXTERN int tdm_kernel_count(const tdm_runtime *rt);

/** The name of kernel `i`, 0 <= i < tdm_kernel_count(rt), in registration order (the
 *  built-in kernels first). Returns NULL when rt is NULL or i is out of range (negative, or
 *  >= the count); no message is set. The string is owned by the runtime and stays valid and
 *  unchanged until tdm_runtime_close(): do not free it. Index i names the same kernel for the
 *  runtime's whole life. Thread-safe (also against a concurrent tdm_kernel_register()). */
TDM_EXTERN const char *tdm_kernel_name(const tdm_runtime *rt, int i);

TDM_END_DECLS

#endif
