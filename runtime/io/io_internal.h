/* SPDX-License-Identifier: MIT */
/* tandem — internal helpers shared by the tensor-file code (runtime/io/io_*.c and cache*.c).
 * A format with more than one file has its own header besides: npz_internal.h,
 * tdz_internal.h, cache_internal.h. Not API. */
#ifndef TANDEM_IO_INTERNAL_H
#define TANDEM_IO_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* ---- byte order (the formats are little-endian; so is every machine tandem builds for) -- */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tandem's file formats are implemented for little-endian machines only"
#endif

static inline void tdm__put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void tdm__put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static inline void tdm__put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t tdm__get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t tdm__get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t tdm__get_u64(const unsigned char *p)
{
    return (uint64_t)tdm__get_u32(p) | ((uint64_t)tdm__get_u32(p + 4) << 32);
}

/* ---- errors ---------------------------------------------------------------------------- */

/* Re-labels the message of a failed inner call ("tdm_tensor_empty: ...") with the public
 * function `who` and returns rc. */
int tdm__io_reerr(tdm_runtime *rt, int rc, const char *who);
/* The checks every public call that opens a path into *out starts with (the caller sets *out to
 * NULL first when out is given): out given, rt and path not NULL; then clears rt's message.
 * 0 or TDM_EINVAL with the message "who: ... is NULL". */
int tdm__io_begin(tdm_runtime *rt, const char *who, bool out_given, const char *path);

/* ---- files (io_file.c; layouts in io_layout.c) ------------------------------------------ */

/* Opens `path` for reading (or read-write), checks it is a regular file and gives its size.
 * 0 and *fd, or TDM_EIO / TDM_EINVAL (not a regular file) with a message. */
int tdm__io_open_read(tdm_runtime *rt, const char *who, const char *path, bool rw, int *fd,
                      uint64_t *size);
/* pread of exactly n bytes at off: 0, TDM_EFORMAT (the file ends first: "truncated ... what"),
 * TDM_EIO. */
int tdm__io_pread(tdm_runtime *rt, const char *who, const char *path, int fd, void *buf, size_t n,
                  uint64_t off, const char *what);
/* pwrite of exactly n bytes at off: 0 or TDM_EIO. */
int tdm__io_pwrite(tdm_runtime *rt, const char *who, const char *path, int fd, const void *buf,
                   size_t n, uint64_t off);
/* ---- helper threads of one large read or write (io_npy.c, io_write.c) ---------------------- */

/* Threads made for the call, not the runtime's pool: a load or save may run inside a pool task
 * (a parallel_for over files), where waiting on the pool could deadlock. A thread costs ~50 us,
 * so only transfers of TDM__IO_PAR_MIN_BYTES or more are split. */
#define TDM__IO_PAR_MIN_BYTES (32u << 20)
#define TDM__IO_MAX_HELPERS 8
/* How many threads (the caller included, >= 1) move n bytes in `steps` steps: 1 below
 * TDM__IO_PAR_MIN_BYTES, else tdm_runtime_threads(rt), at most TDM__IO_MAX_HELPERS and one per
 * step. */
int tdm__io_threads_for(tdm_runtime *rt, uint64_t n, uint64_t steps);
/* Starts up to n threads fn(arg) into th[], every signal blocked in them (they are the
 * process's to handle where it chose); returns how many started (a failed start is not an
 * error: the caller's loop takes their share). */
int tdm__io_start_helpers(pthread_t *th, int n, void *(*fn)(void *), void *arg);

/* Reserves the file's blocks for [off, off + n) without changing its size (fallocate
 * FALLOC_FL_KEEP_SIZE; nothing below 4 MiB): a full disk shows up before anything is written.
 * 0; TDM_EIO on ENOSPC / EDQUOT; a file system that cannot reserve is no error. */
int tdm__io_reserve(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                    uint64_t n);
/* Writes n bytes from p at file offset off, the file's end (io_write.c): on several threads
 * for 32 MiB or more when the runtime has several and the file is on ext4, XFS or tmpfs, the
 * file's blocks reserved first; on the calling thread when src_may_fault (p is in a mapped
 * file, which another process may truncate). 0 or TDM_EIO (a full disk, a failed write: the
 * file's content is then undefined). */
int tdm__io_write_block(tdm_runtime *rt, const char *who, const char *path, int fd, const void *p,
                        uint64_t n, uint64_t off, bool src_may_fault);

/* A file written under a temporary name next to its target and renamed into place. */
typedef struct tdm__io_out {
    int fd;
    char *path; /* the target */
    char *tmp;  /* the temporary file */
} tdm__io_out;
/* Creates the temporary file (mode as a new file would get: 0666 & ~umask). */
int tdm__io_out_open(tdm_runtime *rt, const char *who, const char *path, tdm__io_out *o);
/* Optionally fsyncs, closes and renames into place (then fsyncs the directory); frees o. On
 * error the temporary file is removed. */
int tdm__io_out_commit(tdm_runtime *rt, const char *who, tdm__io_out *o, bool sync);
/* Closes and removes the temporary file; frees o. Safe on a zeroed or already-freed o. */
void tdm__io_out_abort(tdm__io_out *o);

/* ---- tensors --------------------------------------------------------------------------- */

/* 1 when t's strides are column-major contiguous and it is not also row-major contiguous. */
bool tdm__io_is_fortran(const tdm_tensor *t);
/* Column-major strides (elements) of a shape (0 dims count as 1). */
void tdm__io_fortran_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Copies the elements of a strided layout into another (both within valid memory). */
void tdm__io_copy_strided(void *dst, const int64_t *dst_strides, const void *src,
                          const int64_t *src_strides, int ndim, const int64_t *shape, size_t es);
/* Reverses the bytes of each of n elements of es bytes, in place. */
void tdm__io_byteswap(void *p, size_t n, size_t es);
/* Validates save options (NULL = defaults) into *o. */
int tdm__io_save_opts(tdm_runtime *rt, const char *who, const tdm_save_opts *in, tdm_save_opts *o);
int tdm__io_load_opts(tdm_runtime *rt, const char *who, const tdm_load_opts *in, tdm_load_opts *o);
/* Creates the tensor a non-mapped load fills: C order, or column-major strides when
 * `fortran`. */
int tdm__io_new_tensor(tdm_runtime *rt, const char *who, tdm_dtype dtype, int ndim,
                       const int64_t *shape, bool fortran, unsigned mem, tdm_tensor **out);
/* Converts a Fortran-order tensor into a new C-contiguous one (releases *t, replaces it). */
int tdm__io_to_c_order(tdm_runtime *rt, const char *who, tdm_tensor **t, unsigned mem);

/* ---- .npy (io_npy_header.c, io_npy.c) ----------------------------------------------------- */

typedef struct tdm__npy_header {
    tdm_dtype dtype;
    int ndim;
    int64_t shape[TDM_MAX_DIMS];
    bool fortran;
    bool big_endian;
    int version;          /* 1, 2, 3 */
    uint64_t data_offset; /* from the start of the .npy bytes */
    uint64_t data_bytes;
} tdm__npy_header;

/* Parses a .npy header from the first `avail` bytes of a region of `region_bytes` bytes
 * (avail may be less: then TDM_EFORMAT says "truncated" if more was needed; the caller
 * passes at least min(region_bytes, TDM__NPY_PREFIX_MAX)). Checks that the data fits in the
 * region. msg gets the reason on error (code TDM_EFORMAT / TDM_EDTYPE / TDM_ESHAPE). */
#define TDM__NPY_PREFIX_MAX (1u << 20) /* longest header accepted: 1 MiB */
int tdm__npy_parse(const unsigned char *buf, size_t avail, uint64_t region_bytes,
                   tdm__npy_header *h, char *msg, size_t msg_len);
/* Formats a header (magic through the final '\n') for dtype/shape/order into buf (cap bytes),
 * padded so the data starts at a multiple of 64 and the header is at least min_len bytes.
 * Gives its length in *len. version 0 = lowest that fits. TDM_EINVAL / TDM_EOVERFLOW. */
int tdm__npy_format(tdm_dtype dtype, int ndim, const int64_t *shape, bool fortran, int version,
                    size_t min_len, unsigned char *buf, size_t cap, size_t *len);
/* Reads and parses the .npy header at [off, off + len) of an open file. */
int tdm__npy_read_header(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                         uint64_t len, tdm__npy_header *h);
/* Loads the .npy held in [off, off + len) of an open file (a whole .npy, or a stored .npz
 * member) into a new tensor (*out), or into `dst` when non-NULL (same dtype, shape and
 * layout; *out untouched). crc: when non-NULL, the zip CRC-32 of the whole region is checked
 * on a full read. Does not take fd (it dups it for a mapping). */
int tdm__npy_load_region(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                         uint64_t len, const tdm_load_opts *o, const uint32_t *crc, tdm_tensor *dst,
                         tdm_tensor **out);
/* Checks that dst can receive data of this dtype/shape/order: 0, TDM_EDTYPE, TDM_ESHAPE,
 * TDM_ELAYOUT. */
int tdm__io_check_dst(tdm_runtime *rt, const char *who, const tdm_tensor *dst, tdm_dtype dtype,
                      int ndim, const int64_t *shape, bool fortran);

/* A byte sink: the .npy writer writes to a file, the .npz writer computes CRCs / deflates. */
typedef int (*tdm__io_sink)(void *ctx, const void *p, size_t n);
typedef struct tdm__io_fdsink {
    tdm_runtime *rt;
    const char *who, *path;
    int fd;
    uint64_t off; /* advanced by each write */
} tdm__io_fdsink;
int tdm__io_fdsink_write(void *ctx, const void *p, size_t n);
/* Emits the elements of t (any layout) in the order of a header written with fortran =
 * tdm__io_is_fortran(t): the raw bytes of a C- or F-contiguous tensor, else gathered into C
 * order through a bounded buffer. */
int tdm__io_emit_elements(tdm_runtime *rt, const char *who, const tdm_tensor *t, tdm__io_sink sink,
                          void *ctx);

/* ---- compressed tensor files (io_tdz*.c) ------------------------------------------------ */

#define TDM__TDZ_MAGIC "\x93TDZ\x01\r\n\x1a"
bool tdm__tdz_is(const unsigned char *buf, size_t n);
int tdm__tdz_save(const tdm_tensor *t, const char *path, const tdm_save_opts *o);
int tdm__tdz_load(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                  const tdm_load_opts *o, tdm_tensor *dst, tdm_tensor **out);
int tdm__tdz_info(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t size,
                  tdm_file_info *info);

/* Streaming compressed writer used by tdm_writer (io_writer.c). */
typedef struct tdm__tdz_writer tdm__tdz_writer;
int tdm__tdz_writer_open(tdm_runtime *rt, const char *who, const char *path, tdm_dtype dtype,
                         int ndim, const int64_t *shape, const tdm_save_opts *o,
                         tdm__tdz_writer **out);
/* Appends raw C-order bytes. */
int tdm__tdz_writer_write(tdm__tdz_writer *w, const void *p, size_t n);
/* Sets shape[0] to `rows`, writes index and footer, commits. Frees w. */
int tdm__tdz_writer_close(tdm__tdz_writer *w, int64_t rows);
void tdm__tdz_writer_abort(tdm__tdz_writer *w);

/* ---- .npz (io_npz.c) ------------------------------------------------------------------- */
int tdm__npz_info(tdm_runtime *rt, const char *who, const char *path, tdm_file_info *info);

#endif
