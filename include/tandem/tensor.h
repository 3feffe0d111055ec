/* SPDX-License-Identifier: MIT */
/* tandem — tensors: dtype, shape, strides, storage kinds, views, sharing. */
#ifndef TANDEM_TENSOR_H
#define TANDEM_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/runtime.h"

/** Element types. The numbers are ABI: new types are added at the end, before
 *  TDM_DTYPE_COUNT (which is not a type: it is what tdm_tensor_dtype(NULL) returns, and it grows
 *  with the list). f16 and bf16 are storage types; bool (one byte, 0 or 1, numpy's bool_), i8,
 *  i16, u16, u32 and u64 are stored, loaded and saved (.npy, .npz, compressed files, the cache)
 *  like every other type, but most built-in kernels refuse them with TDM_EDTYPE (each kernel's
 *  accepted dtypes are in tandem/kernel.h). */
typedef enum tdm_dtype {
    TDM_U8 = 0,
    TDM_I32 = 1,
    TDM_I64 = 2,
    TDM_F32 = 3,
    TDM_F64 = 4,
    TDM_F16 = 5,
    TDM_BF16 = 6,
    TDM_BOOL = 7,
    TDM_I8 = 8,
    TDM_I16 = 9,
    TDM_U16 = 10,
    TDM_U32 = 11,
    TDM_U64 = 12,
    TDM_DTYPE_COUNT
} tdm_dtype;

/** At most this many dimensions. */
#define TDM_MAX_DIMS 8

/** Storage flags. Ask for them at creation; tdm_tensor_mem() reports what the tensor really has.
 *  - TDM_MEM_HOST (0): private host memory, 64-byte aligned.
 *  - TDM_MEM_SHARED: a range of the runtime's shared arena (one memfd mapped MAP_SHARED when
 *    the runtime opens, before its worker processes are forked), with its pages reserved at
 *    creation: every worker process sees the same bytes at the same address without a copy,
 *    and exhaustion is TDM_ENOSPC at creation rather than SIGBUS on first touch.
 *  - TDM_MEM_PINNED: page-locked (mlock) memory; with no device backend it is mlock'ed host
 *    memory. If the system refuses to lock (RLIMIT_MEMLOCK), the tensor is still created
 *    unlocked and tdm_tensor_mem() lacks TDM_MEM_PINNED — unless TDM_MEM_STRICT is given too,
 *    in which case creation fails with TDM_EPERM.
 *  - TDM_MEM_WRAPPED (reported only): the storage is user memory given to tdm_tensor_wrap().
 *  - TDM_MEM_MAPPED (reported only): the storage is a memory-mapped file (tdm_load() with a
 *    mmap mode, tdm_npy_create(); see tandem/io.h).
 *  SHARED | PINNED is allowed (a shared mapping that is also locked). */
enum {
    TDM_MEM_HOST = 0,
    TDM_MEM_SHARED = 1u << 0,
    TDM_MEM_PINNED = 1u << 1,
    TDM_MEM_WRAPPED = 1u << 2,
    TDM_MEM_MAPPED = 1u << 3,
    TDM_MEM_STRICT = 1u << 8
};

/** A tensor: a refcounted view (dtype, shape, strides, offset) of a refcounted storage.
 *  Opaque. Views share the storage of their base and keep it alive. */
typedef struct tdm_tensor tdm_tensor;

TDM_BEGIN_DECLS

/** Size of one element in bytes (u8 1, i32 4, i64 8, f32 4, f64 8, f16 2, bf16 2, bool 1, i8 1,
 *  i16 2, u16 2, u32 4, u64 8), or 0 for an invalid dtype. Thread-safe. */
TDM_EXTERN size_t tdm_dtype_size(tdm_dtype dtype);

/** Short name of a dtype ("u8", "i32", "i64", "f32", "f64", "f16", "bf16", "bool", "i8", "i16",
 *  "u16", "u32", "u64"), "invalid" otherwise. A static string: do not free. Thread-safe. */
TDM_EXTERN const char *tdm_dtype_name(tdm_dtype dtype);

/** Creates an uninitialised contiguous (row-major) tensor of `ndim` dims (0..TDM_MAX_DIMS;
 *  0 = a scalar of one element) with storage as `mem` asks. Shared storage is zero-filled by
 *  the system; host and pinned storage are not initialised.
 *  A dimension may be 0 (an empty tensor). Returns 0 and sets *out (refcount 1, owned by the
 *  caller: release with tdm_tensor_release()); TDM_EINVAL (NULL rt/out, shape NULL with
 *  ndim > 0, ndim out of range, negative dim, bad dtype, unknown mem flags), TDM_EOVERFLOW
 *  (element count or byte size overflows), TDM_ENOMEM, TDM_ENOSPC (shared memory cannot be
 *  reserved, or the runtime's shm_limit would be exceeded), TDM_EPERM (PINNED|STRICT and the
 *  pages cannot be locked), TDM_ESYS. On error *out is NULL. Thread-safe. */
TDM_EXTERN int tdm_tensor_empty(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape,
                                unsigned mem, tdm_tensor **out);

/** As tdm_tensor_empty(), then every byte set to zero. */
TDM_EXTERN int tdm_tensor_zeros(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape,
                                unsigned mem, tdm_tensor **out);

/** Wraps user memory without taking ownership: the caller keeps `data` alive and valid for
 *  at least as long as the tensor and its views, and frees it afterwards. `strides` (in
 *  elements, may be NULL for row-major contiguous) must be non-negative. `data` must be
 *  aligned to the dtype's size. Returns 0 and *out (caller releases it), TDM_EINVAL (NULL
 *  rt/out, NULL data with a non-empty shape, misaligned data, negative strides, bad dtype or
 *  shape), TDM_EOVERFLOW, TDM_ENOMEM. Thread-safe. */
TDM_EXTERN int tdm_tensor_wrap(tdm_runtime *rt, tdm_dtype dtype, int ndim, const int64_t *shape,
                               const int64_t *strides, void *data, tdm_tensor **out);

/** A view of rows [begin, end) along dim 0 of `t`, sharing its storage (no copy). The view
 *  holds a reference to the storage; the caller releases the view. 0 <= begin <= end <=
 *  shape[0]. Returns 0 and *out, TDM_EINVAL (NULL, a 0-dim tensor, bad range), TDM_ENOMEM.
 *  Thread-safe. */
TDM_EXTERN int tdm_tensor_view_rows(tdm_tensor *t, int64_t begin, int64_t end, tdm_tensor **out);

/** Adds a reference. Returns t (NULL stays NULL). Thread-safe (atomic). */
TDM_EXTERN tdm_tensor *tdm_tensor_retain(tdm_tensor *t);

/** Drops a reference; the last one frees the tensor, and the last view of a storage frees
 *  the storage (unmapping shared memory, unlocking pinned pages; wrapped user memory is never
 *  freed). NULL is a no-op. Thread-safe (atomic). */
TDM_EXTERN void tdm_tensor_release(tdm_tensor *t);

/** Moves the tensor's storage into shared memory, like torch's share_memory_(): the bytes are
 *  copied once into a new shared mapping and every view of that storage now uses it; the old
 *  storage is freed (wrapped user memory is left to its owner, untouched). Pointers from
 *  tdm_tensor_data() taken before the call are invalid after it. Pinned stays pinned when the
 *  new mapping can be locked.
 *  Shared storage is never copied:
 *  - already in this runtime's arena (created with TDM_MEM_SHARED, shared before, or a file
 *    mapped shared by tdm_load()/tdm_npy_create() while the arena had a free slot): a no-op,
 *    O(1), the data pointer unchanged;
 *  - imported (tdm_tensor_import()): its pages are mapped again inside the arena, where the
 *    worker processes see them. O(1) in the tensor's size, nothing copied and nothing counted
 *    against shm_limit; the pages stay the exporter's (writes still reach it), only the data
 *    pointer changes. TDM_ENOSPC when the arena has no free slot for it (memory-mapped files
 *    and shared imports use at most 256).
 *  Returns 0, TDM_EINVAL (NULL), TDM_ENOSPC, TDM_ESYS, TDM_ENOMEM or TDM_EIO (an import
 *  cannot be mapped again). On error the tensor is unchanged.
 *  Not safe to call while a job reads or writes the tensor, or concurrently with itself on
 *  tensors sharing a storage. */
TDM_EXTERN int tdm_tensor_share(tdm_tensor *t);

/** Sends a shared tensor to another process over a connected Unix-domain socket `sock`: a
 *  small header (dtype, shape, strides, offset) and, as SCM_RIGHTS ancillary data, the file
 *  descriptor of the memory that holds it (torch's file_descriptor sharing strategy). The
 *  receiver calls tdm_tensor_import() and then reads and writes the same pages: nothing is
 *  copied. The tensor must be shared (TDM_MEM_SHARED, tdm_tensor_share(), or itself imported).
 *  Trust: the descriptor is that of the runtime's whole shared arena; the receiver maps only
 *  the tensor's pages, but a hostile receiver could map others — export only to processes you
 *  would give a pointer to. Either side may release its tensor first, in any order: the pages
 *  live as long as either side maps them. For that, once a tensor of the arena has been
 *  exported, its range is never reused by the exporter: releasing it keeps its pages (they
 *  are not returned to the system nor handed to a later tensor) until the exporting runtime
 *  closes and the importers have released theirs — export long-lived tensors, not one per
 *  batch. The exporter's shm_limit accounting does count them as released.
 *  Returns 0, TDM_EINVAL (NULL tensor, bad socket, a tensor not in shared memory), TDM_ENOMEM,
 *  TDM_ESYS (sendmsg failed: the message says why). Thread-safe for distinct sockets. */
TDM_EXTERN int tdm_tensor_export(const tdm_tensor *t, int sock);

/** Receives a tensor sent by tdm_tensor_export() on `sock` (blocking until it arrives) and maps
 *  it into this process as a shared tensor of runtime `rt` (tdm_tensor_mem() reports
 *  TDM_MEM_SHARED; it can be exported on; a tensor mapped read-only, TDM_MMAP_READ, imports
 *  read-only: writing to it faults). The caller owns *out and releases it. The header is
 *  validated against the mapping before use. Such a tensor is not in this runtime's arena, so
 *  this runtime's worker processes cannot see it: tdm_tensor_share() maps the same pages into
 *  the arena (no copy; the data pointer changes).
 *  Returns 0, TDM_EINVAL (NULL arguments, bad socket, a message that is not a tensor or whose
 *  header does not fit its memory, or a descriptor smaller than the storage it names),
 *  TDM_ESYS (recvmsg, fstat or mmap failed), TDM_ENOMEM. On error *out is NULL and the
 *  received descriptor is closed. */
TDM_EXTERN int tdm_tensor_import(tdm_runtime *rt, int sock, tdm_tensor **out);

/** Accessors. All are thread-safe and never fail for a valid tensor; for NULL they return
 *  0 / NULL / TDM_DTYPE_COUNT. */
TDM_EXTERN tdm_dtype tdm_tensor_dtype(const tdm_tensor *t);
TDM_EXTERN int tdm_tensor_ndim(const tdm_tensor *t);
/** Size of dim `i`; 0 if `i` is out of range. */
TDM_EXTERN int64_t tdm_tensor_dim(const tdm_tensor *t, int i);
/** Pointer to the tensor's TDM_MAX_DIMS-sized shape array (first ndim entries valid). */
TDM_EXTERN const int64_t *tdm_tensor_shape(const tdm_tensor *t);
/** Pointer to the strides array, in elements. */
TDM_EXTERN const int64_t *tdm_tensor_strides(const tdm_tensor *t);
/** Number of elements (product of the shape; 1 for a 0-dim tensor). */
TDM_EXTERN int64_t tdm_tensor_numel(const tdm_tensor *t);
/** Bytes spanned by the elements (numel * dtype size for a contiguous tensor). */
TDM_EXTERN size_t tdm_tensor_nbytes(const tdm_tensor *t);
/** Pointer to element 0 (NULL for an empty tensor is allowed). Valid while the tensor lives
 *  and until tdm_tensor_share() moves its storage. When a map left newer bytes on a device
 *  (tdm_map_opts.keep_on_device), they are copied back first (blocking), and since the caller
 *  may write through the pointer the device copy is no longer used afterwards. */
TDM_EXTERN void *tdm_tensor_data(const tdm_tensor *t);
/** Copies the tensor's bytes back from a device copy that is newer than the host's (blocking);
 *  the device copy stays valid (unlike tdm_tensor_data()). Returns 0 (also when there is
 *  nothing to do), TDM_EINVAL (NULL), or the device's error. Not concurrent with a map that
 *  writes the tensor. */
TDM_EXTERN int tdm_tensor_to_host(tdm_tensor *t);
/** 1 if the tensor's storage has a copy in device memory (valid or not), else 0; t NULL
 *  gives 0. Nothing to free. Not concurrent with a map that moves the tensor to or from a
 *  device. */
TDM_EXTERN int tdm_tensor_on_device(const tdm_tensor *t);
/** The storage flags the tensor really has (TDM_MEM_SHARED, _PINNED, _WRAPPED). */
TDM_EXTERN unsigned tdm_tensor_mem(const tdm_tensor *t);
/** 1 when the elements are row-major contiguous, 0 otherwise. */
TDM_EXTERN int tdm_tensor_is_contiguous(const tdm_tensor *t);
/** The runtime the tensor was created with. */
TDM_EXTERN tdm_runtime *tdm_tensor_runtime(const tdm_tensor *t);

TDM_END_DECLS

#endif
