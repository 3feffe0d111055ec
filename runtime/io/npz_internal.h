/* SPDX-License-Identifier: MIT */
/* tandem — .npz internals shared by runtime/io/io_npz*.c and io_zip_read.c. Not API. */
#ifndef TANDEM_IO_NPZ_INTERNAL_H
#define TANDEM_IO_NPZ_INTERNAL_H

#include <stdint.h>

#include "io/io_internal.h"

#define TDM__ZIP_SIG_LOCAL 0x04034b50u
#define TDM__ZIP_SIG_CENTRAL 0x02014b50u
#define TDM__ZIP_SIG_EOCD 0x06054b50u
#define TDM__ZIP_SIG_EOCD64 0x06064b50u
#define TDM__ZIP_SIG_LOC64 0x07064b50u
#define TDM__ZIP_LOCAL_BYTES 30u
#define TDM__ZIP_CENTRAL_BYTES 46u
#define TDM__ZIP_EOCD_BYTES 22u
#define TDM__ZIP_EOCD64_BYTES 56u
#define TDM__ZIP_LOC64_BYTES 20u
#define TDM__ZIP_DEFLATE_MAX_RATIO 1032u
#define TDM__ZIP_DOS_DATE 0x21u /* 1980-01-01: reproducible archives */

typedef struct tdm__zip_member {
    char *name; /* without ".npy" */
    uint16_t method, flags;
    uint32_t crc;
    uint64_t csize, usize, local_off, data_off;
} tdm__zip_member;

struct tdm_npz {
    tdm_runtime *rt;
    char *path;
    int fd;
    uint64_t size;
    int n;
    tdm__zip_member *m;
};

/* Finds the end of central directory record; gives the directory's extent, its entry count
 * and the offset no member may reach (*limit). */
int tdm__zip_find_directory(tdm_runtime *rt, const char *who, const char *path, int fd,
                            uint64_t size, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count,
                            uint64_t *limit);
/* Reads and checks the central directory into z->m / z->n (.npy members only). */
int tdm__zip_read_members(tdm_npz *z, const char *who, uint64_t cd_off, uint64_t cd_size,
                          uint64_t count);
/* Frees n members and the array. */
void tdm__zip_free_members(tdm__zip_member *m, int n);

#endif
