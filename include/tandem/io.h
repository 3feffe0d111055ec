/* SPDX-License-Identifier: MIT */
/* tandem — tensor files: .npy / .npz (NumPy's formats), compressed tensor files (zstd, lz4,
 * deflate), memory-mapped loads, and a streaming writer for results larger than memory.
 *
 * joblib's dump/load for tandem's tensors. Files move freely between tandem and NumPy:
 *   - .npy, versions 1.0, 2.0 and 3.0, C or Fortran order, dtypes b1 (bool) u1 u2 u4 u8 i1 i2
 *     i4 i8 f2 f4 f8 (little- or big-endian on load; written little-endian) and bf16 as '<V2'
 *     (the raw two bytes, as ml_dtypes' bfloat16 arrays are saved by numpy.save);
 *   - .npz, a zip of .npy members, stored or deflated (numpy.savez / savez_compressed), zip64;
 *   - compressed tensor files (".tdz", tandem's own): the bytes in independent chunks, each
 *     compressed with zstd, lz4 or deflate and checksummed (xxh3), compressed and decompressed
 *     in parallel on the runtime's threads and streamed, so a file larger than memory can be
 *     written (tdm_writer) and read back into a memory-mapped tensor (tdm_npy_create +
 *     tdm_load_into).
 *
 * Every loader checks the header against the file's size before allocating anything: a
 * corrupt or hostile file gives TDM_EFORMAT (or TDM_EDTYPE for a dtype tandem lacks, TDM_ESHAPE
 * for more than TDM_MAX_DIMS dims, TDM_ECORRUPT for a checksum mismatch), never a crash or a
 * huge allocation. Every writer writes a temporary file next to the target and renames it into
 * place at the end: a reader never sees a half-written file, and a failed save leaves any
 * previous file untouched.
 *
 * Errors common to all functions here: TDM_EINVAL (NULL arguments, bad options), TDM_EIO (the
 * file cannot be opened, read or written: the message has the path and the system's reason),
 * TDM_ENOMEM. Functions that take a runtime record their message there (tdm_errmsg()).
 */
#ifndef TANDEM_IO_H
#define TANDEM_IO_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"
#include "tandem/map.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"

/** How tdm_load() gives the data (numpy.load's mmap_mode). */
typedef enum tdm_mmap_mode {
    TDM_MMAP_NONE = 0,      /**< read into new memory (storage as tdm_load_opts.mem asks) */
    TDM_MMAP_READ = 1,      /**< 'r': the file mapped read-only (writing to it faults) */
    TDM_MMAP_READWRITE = 2, /**< 'r+': mapped shared read-write: writes go to the file */
    TDM_MMAP_COPY = 3       /**< 'c': copy-on-write: writes stay in memory, the file is unchanged */
} tdm_mmap_mode;

/** Compression codecs. NONE writes a .npy; ZSTD, LZ4 and DEFLATE write a compressed tensor
 *  file (tdm_save) or, for .npz members, only NONE (stored) and DEFLATE are valid. */
typedef enum tdm_codec {
    TDM_CODEC_NONE = 0,
    TDM_CODEC_ZSTD = 1,   /**< levels 1..19 (default 3); negative levels are zstd's fast modes */
    TDM_CODEC_LZ4 = 2,    /**< level 0..2: LZ4 fast (default); 3..12: LZ4 HC */
    TDM_CODEC_DEFLATE = 3 /**< zlib's deflate, levels 1..9 (default 6) */
} tdm_codec;

/** What kind of file a path holds (tdm_file_info.kind). */
typedef enum tdm_file_kind {
    TDM_FILE_NPY = 1, /**< a .npy file */
    TDM_FILE_NPZ = 2, /**< a zip archive (.npz) */
    TDM_FILE_TDZ = 3  /**< a tandem compressed tensor file */
} tdm_file_kind;

#define TDM_SAVE_OPTS_VERSION 1u

/** Options of tdm_save(), tdm_npz_save() and tdm_writer_open(). NULL = all defaults. */
typedef struct tdm_save_opts {
    uint32_t size;       /**< sizeof(tdm_save_opts) */
    uint32_t version;    /**< TDM_SAVE_OPTS_VERSION */
    tdm_codec codec;     /**< TDM_CODEC_NONE (default): .npy / stored .npz members */
    int level;           /**< codec level; 0 = the codec's default */
    int npy_version;     /**< .npy format version to write: 0 = lowest that fits (1.0, else
                          *   2.0), or 1, 2, 3 */
    int64_t chunk_bytes; /**< compressed files: raw bytes per chunk (4 KiB .. 64 MiB);
                          *   0 = 1 MiB */
    int fsync;           /**< 1: fsync the file (and its directory) before returning */
} tdm_save_opts;

#define TDM_SAVE_OPTS_INIT                                                                         \
    {                                                                                              \
        sizeof(tdm_save_opts), TDM_SAVE_OPTS_VERSION, TDM_CODEC_NONE, 0, 0, 0, 0                   \
    }

#define TDM_LOAD_OPTS_VERSION 1u

/** Options of tdm_load() and tdm_npz_load(). NULL = all defaults. */
typedef struct tdm_load_opts {
    uint32_t size;      /**< sizeof(tdm_load_opts) */
    uint32_t version;   /**< TDM_LOAD_OPTS_VERSION */
    tdm_mmap_mode mmap; /**< TDM_MMAP_NONE (default) reads into memory */
    unsigned mem;       /**< without mmap: storage of the new tensor (TDM_MEM_HOST, SHARED,
                         *   PINNED, STRICT), as tdm_tensor_empty() takes */
    int c_order;        /**< 1: a Fortran-order file comes back C-contiguous (one extra copy;
                         *   not with mmap). 0 (default): as NumPy, a Fortran-order file gives
                         *   a tensor with column-major strides. */
    int64_t max_bytes;  /**< refuse (TDM_EFORMAT) data larger than this; 0 = no limit beyond
                         *   what the file's size allows */
} tdm_load_opts;

#define TDM_LOAD_OPTS_INIT                                                                         \
    {                                                                                              \
        sizeof(tdm_load_opts), TDM_LOAD_OPTS_VERSION, TDM_MMAP_NONE, TDM_MEM_HOST, 0, 0            \
    }

/** What a file's header says (tdm_file_info_get). */
typedef struct tdm_file_info {
    tdm_file_kind kind;          /**< the file's format */
    tdm_dtype dtype; /**< npy / tdz */
    int ndim;                    /**< dimensions of the stored tensor */
    int64_t shape[TDM_MAX_DIMS]; /**< its shape (ndim entries used) */
    int fortran_order;   /**< npy: 1 if the data is column-major */
    int big_endian;      /**< npy: 1 if the data is big-endian (cannot be memory-mapped) */
    int npy_version;     /**< npy: 1, 2 or 3 */
    tdm_codec codec;     /**< tdz: the codec */
    int64_t data_offset; /**< npy: where the data starts in the file */
    int64_t data_bytes;  /**< npy / tdz: raw bytes of the elements */
    int64_t file_bytes;  /**< size of the file */
    int npz_members;     /**< npz: number of members */
} tdm_file_info;

TDM_BEGIN_DECLS

/** Fills *o with the defaults. Returns 0 or TDM_EINVAL. */
TDM_EXTERN int tdm_save_opts_init(tdm_save_opts *o);
TDM_EXTERN int tdm_load_opts_init(tdm_load_opts *o);

/** Looks a codec up by name, as joblib's compress=('zstd', 3): "none"/"raw", "zstd", "lz4",
 *  "deflate"/"zlib"/"gzip" (case-insensitive). Returns 0 and *codec, or TDM_EINVAL (unknown
 *  name or NULL). Thread-safe. */
TDM_EXTERN int tdm_codec_from_name(const char *name, tdm_codec *codec);
/** "none", "zstd", "lz4", "deflate", or "invalid". Static string. */
TDM_EXTERN const char *tdm_codec_name(tdm_codec codec);

/** Saves a tensor to `path`: a .npy file with opts->codec NONE (default), else a compressed
 *  tensor file. A C-contiguous tensor is written as it is, a Fortran-contiguous one (column-
 *  major strides) with fortran_order True, any other layout gathered into C order (one
 *  temporary copy). The file appears atomically (temporary file + rename); a previous file at
 *  `path` stays intact if the save fails. A .npy of a C- or Fortran-contiguous tensor of 32 MiB
 *  or more, on ext4, XFS or tmpfs, is written on up to tdm_runtime_threads() threads (at most
 *  8) made for the call (never the pool's), through a shared mapping of the file, its blocks
 *  reserved first (fallocate), so a full disk fails the save before any data is written (the
 *  final rename can still fail with TDM_EIO where the directory needs a new block). Elsewhere,
 *  and for a tensor mapped from a file (TDM_MEM_MAPPED) or imported (tdm_tensor_import), it is
 *  written on the calling thread. A copy into the mapping cannot fail for lack of space, but
 *  a file system that shuts down during the save (an I/O error, errors=remount-ro) ends the
 *  process with SIGBUS, where a write on the calling thread fails with TDM_EIO. Wrapped memory
 *  that is itself a file mapping (numpy.memmap) must not be truncated during the save: a
 *  helper thread's copy from it would end the process with SIGBUS, as any read of it would.
 *  Returns 0; TDM_EINVAL (NULL, bad opts: unknown codec, level out of range, npy_version not
 *  0..3, chunk_bytes out of range); TDM_EIO (with the path and reason; a full disk is
 *  TDM_EIO too); TDM_ENOMEM. Thread-safe (distinct paths; the tensor must not be written
 *  meanwhile). */
TDM_EXTERN int tdm_save(const tdm_tensor *t, const char *path, const tdm_save_opts *opts);

/** Loads a .npy or compressed tensor file (the kind is found from the magic bytes). With a
 *  mmap mode (.npy only, little-endian, data aligned to the element size) the tensor's storage
 *  is the mapped file (tdm_tensor_mem() has TDM_MEM_MAPPED): nothing is read until touched.
 *  Worker processes: a READ or READWRITE mapping is shared, and placed in the runtime's shared
 *  arena while it has a free slot (256 mapped files and imports at most), so maps on worker
 *  processes read (and through READWRITE write) the same pages, with nothing copied; a COPY
 *  mapping is private to this process (its changes are not in the file), so a map on worker
 *  processes refuses it (TDM_EINVAL, "not in shared memory") until tdm_tensor_share() copies
 *  it into shared memory, as it does a shared mapping that found no free slot. The file must
 *  not be truncated while mapped. The caller releases *out.
 *  Returns 0; TDM_EINVAL (NULL, bad opts, a mmap mode for a compressed file or with c_order,
 *  a .npz archive: use tdm_npz_open()); TDM_EIO (cannot open / read; READWRITE on a read-only
 *  file); TDM_EFORMAT (wrong magic, bad or truncated header, data shorter than the header
 *  says, more than max_bytes); TDM_EDTYPE (a dtype tandem has not: structured, object,
 *  strings, complex, datetime...); TDM_ESHAPE (more than TDM_MAX_DIMS dims); TDM_ELAYOUT (a
 *  mmap of big-endian or misaligned data); TDM_ECORRUPT (a compressed chunk fails its checksum
 *  or does not decompress); TDM_ENOMEM / TDM_ENOSPC / TDM_EPERM (as tdm_tensor_empty for
 *  opts->mem). On error *out is NULL. Thread-safe. */
TDM_EXTERN int tdm_load(tdm_runtime *rt, const char *path, const tdm_load_opts *opts,
                        tdm_tensor **out);

/** Reads a .npy or compressed file into an existing tensor `dst` of the same dtype and shape,
 *  whose strides are the file's layout (C-contiguous, or column-major for a Fortran-order
 *  file), chunk by chunk: with a tensor from tdm_npy_create(), a compressed file larger than
 *  memory is decompressed into a mapped file. Returns 0, TDM_EDTYPE / TDM_ESHAPE (dst differs
 *  from the file), TDM_ELAYOUT (dst's layout is not the file's), and the errors of tdm_load().
 *  On error dst may hold part of the data. Thread-safe (dst must not be used meanwhile). */
TDM_EXTERN int tdm_load_into(tdm_runtime *rt, const char *path, tdm_tensor *dst);

/** Creates a new .npy file of the given dtype and shape (zero-filled, sparse) and returns it
 *  memory-mapped read-write (numpy.lib.format.open_memmap(mode='w+')): what is written into
 *  the tensor goes to the file. The file appears atomically, complete. An existing file at
 *  `path` is replaced. Returns 0, TDM_EINVAL (bad dtype or shape), TDM_EOVERFLOW, TDM_EIO
 *  (including a file system that cannot hold the size). The caller releases *out.
 *  Thread-safe. */
TDM_EXTERN int tdm_npy_create(tdm_runtime *rt, const char *path, tdm_dtype dtype, int ndim,
                              const int64_t *shape, tdm_tensor **out);

/** Reads a file's header only: kind, dtype, shape... Returns 0 and *info, or the errors of
 *  tdm_load() (for .npz only the archive's directory is checked). Thread-safe. */
TDM_EXTERN int tdm_file_info_get(tdm_runtime *rt, const char *path, tdm_file_info *info);

/* ---- .npz archives ------------------------------------------------------------------------ */

/** An open .npz archive (its directory read and checked). Opaque. */
typedef struct tdm_npz tdm_npz;

/** Writes `n` tensors (n >= 0) as the members "<names[i]>.npy" of a zip archive at `path`
 *  (numpy.savez with opts->codec NONE, savez_compressed with TDM_CODEC_DEFLATE; other codecs
 *  are TDM_EINVAL). Names: 1..250 bytes, no NUL, unique. Stored members are aligned so their
 *  data can be memory-mapped by tdm_npz_load(). Zip64 is used where sizes or offsets need it.
 *  Atomic like tdm_save(). Returns 0, TDM_EINVAL (NULL, a bad or duplicate name, bad opts),
 *  TDM_EIO, TDM_ENOMEM. Thread-safe. */
TDM_EXTERN int tdm_npz_save(tdm_runtime *rt, const char *path, const char *const *names,
                            const tdm_tensor *const *tensors, int n, const tdm_save_opts *opts);

/** Opens a .npz archive (numpy.load of an .npz): reads and checks its central directory (every
 *  member must lie inside the file). The caller closes *out with tdm_npz_close(). Returns 0,
 *  TDM_EIO, TDM_EFORMAT (not a zip, a truncated or inconsistent directory, a member that
 *  points outside the file, encrypted or multi-disk archives), TDM_ENOMEM. Thread-safe. */
TDM_EXTERN int tdm_npz_open(tdm_runtime *rt, const char *path, tdm_npz **out);

/** Number of members. 0 for NULL. */
TDM_EXTERN int tdm_npz_count(const tdm_npz *z);

/** Name of member `i` without its ".npy" suffix (numpy's NpzFile keys); NULL when out of
 *  range. Valid until tdm_npz_close(). */
TDM_EXTERN const char *tdm_npz_name(const tdm_npz *z, int i);

/** Loads member `name` (with or without ".npy"). Stored members can be memory-mapped (mmap
 *  modes as tdm_load(); the data must be aligned to the element size, which tdm_npz_save()
 *  ensures); deflated members are inflated, never mapped. The member's CRC-32 is checked
 *  whenever the whole member is read (not for mmap). Returns 0; TDM_ENOTFOUND (no such
 *  member); TDM_EFORMAT (unsupported compression method, bad member header, sizes that do
 *  not match); TDM_ECORRUPT (CRC mismatch, a deflate stream that does not inflate); TDM_EINVAL
 *  (a mmap mode for a deflated member); and the errors of tdm_load(). Not thread-safe for
 *  one archive (use one tdm_npz per thread). */
TDM_EXTERN int tdm_npz_load(tdm_npz *z, const char *name, const tdm_load_opts *opts,
                            tdm_tensor **out);

/** Closes the archive. Tensors loaded from it stay valid. NULL is a no-op. */
TDM_EXTERN void tdm_npz_close(tdm_npz *z);

/* ---- streaming writer ---------------------------------------------------------------------- */

/** A file being written row block by row block. Opaque. */
typedef struct tdm_writer tdm_writer;

/** Starts writing a tensor file of `dtype` and `shape` (C order) to `path`, .npy or compressed
 *  as opts->codec says. shape[0] may be -1: the row count is then whatever has been written
 *  when the writer is closed. Nothing is visible at `path` until tdm_writer_close() succeeds.
 *  Memory stays flat: a .npy writer writes through, a compressed one holds a few chunks.
 *  The caller owns *out: tdm_writer_close() or tdm_writer_abort() frees it.
 *  Returns 0, TDM_EINVAL (bad dtype, ndim 0, a negative dim other than shape[0] = -1, bad
 *  opts), TDM_EOVERFLOW, TDM_EIO, TDM_ENOMEM. Thread-safe (one thread per writer). */
TDM_EXTERN int tdm_writer_open(tdm_runtime *rt, const char *path, tdm_dtype dtype, int ndim,
                               const int64_t *shape, const tdm_save_opts *opts, tdm_writer **out);

/** Appends the rows of `rows` (same dtype, same dims after the first, any layout) after
 *  those already written. Returns 0, TDM_EDTYPE, TDM_ESHAPE (wrong dims, or more rows than a
 *  fixed shape[0]), TDM_EIO, TDM_ENOMEM, TDM_ECANCELED (an earlier write failed: the writer
 *  only accepts close/abort now). */
TDM_EXTERN int tdm_writer_append(tdm_writer *w, const tdm_tensor *rows);

/** Writes `rows` at row `row` (.npy writers only: batches that finish out of order, as a
 *  TDM_ORDER_COMPLETION job gives them). Rows must not be written twice. Returns 0,
 *  TDM_EINVAL (a compressed writer, or a negative row), and the errors of
 *  tdm_writer_append(). */
TDM_EXTERN int tdm_writer_write_at(tdm_writer *w, int64_t row, const tdm_tensor *rows);

/** Rows written so far (the highest row end for write_at). 0 for NULL. */
TDM_EXTERN int64_t tdm_writer_rows(const tdm_writer *w);

/** Finishes the file (header with the final row count, compressed index, optional fsync) and
 *  renames it into place; frees the writer whatever happens. Returns 0, TDM_ESHAPE (fewer
 *  rows than a fixed shape[0], or gaps left by write_at: nothing is created), TDM_EIO, or the
 *  error that failed an earlier write. NULL returns TDM_EINVAL. */
TDM_EXTERN int tdm_writer_close(tdm_writer *w);

/** Drops the file being written and frees the writer. NULL is a no-op. */
TDM_EXTERN void tdm_writer_abort(tdm_writer *w);

/** Drains a streaming job into writers: for each finished batch (tdm_job_next), output k's
 *  rows are written to writers[k] (at the batch's rows: any order for .npy writers, submission
 *  order for compressed ones). The job must have been started by tdm_map_async() with
 *  outputs NULL (ring buffers), so memory stays flat however many rows there are; n_writers
 *  is its output count. Afterwards it waits for the job (tdm_job_wait(), filling `report`,
 *  which may be NULL). The writers stay open: the caller closes them.
 *  Returns 0; the job's status (a failed batch: rows of failed batches are not written);
 *  TDM_EINVAL (NULL, n_writers not the job's output count, a job with its own outputs, a
 *  compressed writer given batches out of order); a write error (the job is then cancelled
 *  and drained). Only one thread at a time per job. */
TDM_EXTERN int tdm_job_save(tdm_job *job, tdm_writer *const *writers, int n_writers,
                            tdm_report *report);

TDM_END_DECLS

#endif
