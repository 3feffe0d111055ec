/* SPDX-License-Identifier: MIT */
/* tandem — the core's internal interface (runtime/core/): storage and the shared arena, the
 * kernel registry's set-up, shared-memory accounting. What other areas may call of the core
 * beyond the shared base in runtime/internal.h. Not API. */
#ifndef TANDEM_CORE_H
#define TANDEM_CORE_H

#include "internal.h"

/* Residency (runtime/sched/residency.c). Brings a storage's bytes back from its device copy if that
 * is newer; with `for_write`, also forgets the device copy (the host is about to change).
 * 0 or an error (message set). Thread-safe. */
int tdm__storage_sync_host(tdm__storage *s, bool for_write);
/* Frees the storage's device copy (at release). */
void tdm__storage_drop_mirror(tdm__storage *s);

/* Storage (runtime/core/storage.c). `who` names the public function for error messages.
 * Creates storage of `bytes` as `mem` asks (TDM_MEM_SHARED / _PINNED / _STRICT, already
 * validated); s->mem says what it really got. 0 and *out with refcount 1, or an error code
 * (message set) and *out NULL. */
int tdm__storage_create(tdm_runtime *rt, size_t bytes, unsigned mem, const char *who,
                        tdm__storage **out);
/* Storage over user memory (may be NULL when bytes is 0); never freed by tandem. */
int tdm__storage_wrap(tdm_runtime *rt, void *data, size_t bytes, const char *who,
                      tdm__storage **out);
/* ---- mapped files (runtime/io/storage_file.c; used by runtime/io_*.c) ---- */
/* Storage over bytes [offset, offset + bytes) of the open file `fd`, mapped with `prot`
 * (PROT_READ, or PROT_READ | PROT_WRITE) and `flags` (MAP_SHARED, or MAP_PRIVATE for
 * copy-on-write). The mapping starts at the page below `offset`; s->base points at `offset`.
 * s->mem is TDM_MEM_MAPPED, s->mmapped is true; nothing is accounted against shm_limit. On
 * success the storage owns `fd`: for MAP_SHARED it stays open in s->fd (a worker process may
 * map it and sees the same bytes), for MAP_PRIVATE it is closed and s->fd is -1 (private
 * pages cannot be shared: a backend must copy). On error the caller still owns fd. */
int tdm__storage_map_file(tdm_runtime *rt, int fd, uint64_t offset, size_t bytes, int prot,
                          int flags, const char *who, tdm__storage **out);
/* A tensor over `s`, taking over the caller's reference on success, with `strides` (elements;
 * NULL = row-major) and element 0 at s->base (aligned to the dtype's size). 0 and *out, or an
 * error code (message set; s not released). */
int tdm__tensor_over_storage(tdm__storage *s, tdm_dtype dtype, int ndim, const int64_t *shape,
                             const int64_t *strides, const char *who, tdm_tensor **out);
void tdm__storage_retain(tdm__storage *s);
/* Drops a reference; the last one unlocks, unmaps/frees, closes and unaccounts. NULL no-op. */
void tdm__storage_release(tdm__storage *s);
/* Moves the bytes into a new shared mapping inside the same object (every view sees it);
 * no-op when already shared; on error s is unchanged. Not thread-safe for one storage. */
int tdm__storage_make_shared(tdm__storage *s, const char *who);

/* Memory the system can still give (MemAvailable, or less under a memory cgroup), and which of
 * the two it is; false when unknown (runtime/core/storage.c). */
bool tdm__memory_available(uint64_t *bytes, const char **source);

/* ---- the shared arena (runtime/core/arena.c) --------------------------------------------------- */

/* Creates the arena: the memfd mapped over a large reserved range (sparse: costs nothing but
 * address space), sized by TDM_SHM_REGION_GB or 2 x RAM and fitted under RLIMIT_AS. `lazy`
 * (no worker processes): the range is reserved only when a shared tensor first needs it. */
int tdm__arena_open(tdm_runtime *rt, uint64_t min_size, bool lazy, tdm__arena **out);
/* Reserves a lazy arena's range now if not yet done: 0, or TDM_ESYS naming TDM_SHM_REGION_GB
 * and the address-space limit. Thread-safe. */
int tdm__arena_ensure(tdm_runtime *rt, tdm__arena *a, const char *who);
void tdm__arena_close(tdm__arena *a);
/* Takes `len` bytes (page multiple), with its pages reserved when `reserve` (else the caller
 * fills the range with tdm__arena_write at once): 0, TDM_ENOSPC or TDM_ESYS. */
int tdm__arena_alloc(tdm_runtime *rt, tdm__arena *a, uint64_t len, bool reserve, const char *who,
                     void **out);
/* Writes n bytes at dst (inside the arena) through the file: no page faults here; a page the
 * system cannot give is TDM_ENOSPC. */
int tdm__arena_write(tdm_runtime *rt, tdm__arena *a, void *dst, const void *src, uint64_t n,
                     const char *who);
/* A small block for internal use (reused from a cache when one of that size is free, zeroed),
 * given back with tdm__arena_block_put. */
int tdm__arena_block_get(tdm_runtime *rt, tdm__arena *a, uint64_t len, const char *who, void **out);
void tdm__arena_block_put(tdm__arena *a, void *p, uint64_t len);
/* Returns a range (its pages go back to the system), unless it was exported: then it is
 * retired (kept, never reused). */
void tdm__arena_free(tdm__arena *a, void *p, uint64_t len);
/* Marks the range at p as exported to another program (tdm_tensor_export): freeing it later
 * retires it instead. 0 or TDM_ENOMEM. Thread-safe. */
int tdm__arena_mark_exported(tdm__arena *a, const void *p, uint64_t len);
/* Bytes of exported ranges released by this program and kept for the importers. */
uint64_t tdm__arena_retired_bytes(tdm__arena *a);
/* The arena's reserved size and its largest free range (the biggest shared tensor it can still
 * place). Thread-safe. */
void tdm__arena_space(tdm__arena *a, uint64_t *size, uint64_t *largest_free);
int tdm__arena_fd(const tdm__arena *a);

/* sendmsg of len bytes at p with the descriptor fd attached (SCM_RIGHTS), MSG_NOSIGNAL, again on
 * EINTR: what tdm_tensor_export sends (runtime/core/export.c). Returns what sendmsg returns. */
ssize_t tdm__send_with_fd(int sock, const void *p, size_t len, int fd);
/* Maps `len` bytes of file `fd` from file_off (page aligned) MAP_SHARED inside the arena's
 * address range, so worker processes can map it at the same address (they do, before their
 * next batch: tdm__arena_worker_sync). TDM_ENOSPC when the arena has no room or no free
 * entry (the caller then maps the file elsewhere). The caller keeps fd open while mapped. */
int tdm__arena_map_file(tdm_runtime *rt, tdm__arena *a, int fd, uint64_t file_off, uint64_t len,
                        int prot, const char *who, void **out);
/* Undoes tdm__arena_map_file (the arena's memory goes back over the range). */
void tdm__arena_unmap_file(tdm__arena *a, void *p, uint64_t len);
/* In a worker process: brings its file mappings up to date with the parent's. 0 or TDM_EIO
 * (detail says why). */
int tdm__arena_worker_sync(tdm__arena *a, char *detail, size_t dlen);
bool tdm__arena_contains(const tdm__arena *a, const void *p);
uint64_t tdm__arena_offset(const tdm__arena *a, const void *p);

/* ---- kernels (runtime/core/kernel_registry.c, kernels/builtin.c) ---- */

/* The device launch description of a built-in kernel (kernels/builtin_dev.c), NULL if none. */
tdm_kernel_dev_fn tdm__builtin_dev_fn(const char *name);
/* Marks a registered kernel as built-in (kernel_registry.c). */
void tdm__kernel_mark_builtin(tdm_runtime *rt, const char *name);

/* Registers the built-in kernels (kernels/builtin.c); called by tdm_runtime_open. */
int tdm__register_builtin_kernels(tdm_runtime *rt);
void tdm__kernel_registry_free(tdm_runtime *rt);

/* Shared-memory accounting against cfg.shm_limit: 0 or TDM_ENOSPC. */
int tdm__shm_reserve(tdm_runtime *rt, size_t bytes);
void tdm__shm_unreserve(tdm_runtime *rt, size_t bytes);

#endif
