/* SPDX-License-Identifier: MIT */
/* tandem — compressed tensor file internals shared by runtime/io/io_tdz*.c. Not API. */
#ifndef TANDEM_IO_TDZ_INTERNAL_H
#define TANDEM_IO_TDZ_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/io_internal.h"

#define TDM__TDZ_HDR_BYTES 96u
#define TDM__TDZ_FOOTER_BYTES 40u
#define TDM__TDZ_ENTRY_BYTES 24u
#define TDM__TDZ_END_MAGIC "TDZEND\0\0"
#define TDM__TDZ_DEFAULT_CHUNK (1u << 20)

typedef struct tdm__tdz_chunk {
    const char *src; /* compress: raw chunk; decompress: compressed chunk */
    size_t src_len;
    char *dst;
    size_t dst_cap;
    size_t out_len; /* compress: compressed size */
    uint64_t hash;  /* compress: xxh3 of the output; decompress: expected xxh3 of src */
    int status;     /* 0, TDM_ECORRUPT, TDM_ENOMEM */
} tdm__tdz_chunk;

typedef struct tdm__tdz_group {
    tdm__tdz_chunk *jobs;
    tdm_codec codec;
    int level;
    void **ctx; /* per worker: a ZSTD_CCtx / ZSTD_DCtx, made on first use */
    int n_ctx;
    bool compress;
} tdm__tdz_group;

/* Largest raw/compressed ratio each codec can produce, with a little slack. */
uint64_t tdm__tdz_max_ratio(tdm_codec c);
/* Largest compressed size of n raw bytes. */
size_t tdm__tdz_bound(tdm_codec c, size_t n);
/* Runs n chunk jobs of g on the runtime's threads. */
int tdm__tdz_run_group(tdm_runtime *rt, tdm__tdz_group *g, int n);
/* Frees the per-worker codec contexts of g. */
void tdm__tdz_free_ctx(tdm__tdz_group *g);
/* How many chunks a group holds on this runtime. */
int tdm__tdz_group_size(tdm_runtime *rt);
/* Formats the 96-byte header (checksummed) into h. */
void tdm__tdz_write_header(unsigned char *h, tdm_codec codec, int level, tdm_dtype dtype, int ndim,
                           const int64_t *shape, uint32_t chunk);

#endif
